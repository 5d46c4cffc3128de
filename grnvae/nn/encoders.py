"""Basal-state encoders q(z_b | x, z_p, q e_qc, covariates)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .effect import SparseEffects
from .mlp import Projected, SplitInputMLP


class BasalEncoder(nn.Module):
    """Normal posterior over the basal latent z_b.

    ``correlated`` (GPO-VAE): an MLP on ``[log-standardised x ; z_p ; q e_qc ; covariates]``
    where z_p is the cell's sampled latent perturbation effect and ``q e_qc`` the artifact
    offset (artifact module only); ``mean_field``: z_p is left out.

    Shapes: x ``[N, G]``, z_p ``[P, C, V]``, index ``[N]``, artifact ``[P, N, L]`` or None,
    covariates ``[N, K]`` or None -> loc, scale ``[P, N, L]``. x and z_p may be given as
    :class:`~grnvae.nn.mlp.Projected` (``project_input``, ``project_effect``) to share one
    projection between calls.
    """

    def __init__(self, n_genes: int, n_nodes: int, latent_dim: int, hidden: int, layers: int,
                 kind: str = "correlated", artifact: bool = False, n_covariates: int = 0):
        super().__init__()
        self.kind = kind
        dims = [n_genes, n_nodes if kind == "correlated" else 0, latent_dim if artifact else 0, n_covariates]
        self.mlp = SplitInputMLP(dims, hidden, max(layers, 1), sparse=(1,))  # effects may be sparse
        self.loc = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def project_input(self, x: Tensor) -> Projected:
        """The standardised expression ``[N, G]`` through the first layer, to reuse across calls."""
        return self.mlp.project(0, x)

    def project_effect(self, z_p: Union[Tensor, SparseEffects]) -> Optional[Projected]:
        """Effects ``[P, C, V]`` through the first layer (None for the mean-field encoder)."""
        return self.mlp.project(1, z_p) if self.mlp.has_input(1) else None

    def forward(self, x: Tensor, z_p: Optional[Tensor], index: Tensor, particles: int,
                artifact: Optional[Tensor] = None, covariates: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        effect = (z_p, index) if (self.kind == "correlated" and z_p is not None) else None
        h = self.mlp([x, effect, artifact, covariates])
        if h.dim() == 2:
            h = h.unsqueeze(0).expand(particles, -1, -1)
        loc = self.loc(h)
        scale = torch.exp(0.5 * self.logvar(h).clamp(-15.0, 15.0)) + 1e-4
        return loc, scale
