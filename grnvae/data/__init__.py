"""Data: AnnData registration (PerturbationData) and the Perturb-seq simulator."""

from .dataset import PerturbationData, read_h5ad
from .simulate import simulate, true_grn_edges

__all__ = ["PerturbationData", "read_h5ad", "simulate", "true_grn_edges"]
