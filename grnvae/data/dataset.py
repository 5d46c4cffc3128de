"""AnnData -> PerturbationData: the registration step between a screen and a model.

Which obs column holds the perturbation, which labels are controls, what the GRN nodes are,
which cells are train/val/test and which control each perturbed cell is matched with are decided
here, once, and kept as small arrays beside the sparse count matrix. Batches are densified on the
fly; nothing of size cells x genes is ever made dense.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def read_h5ad(path: str | Path, key: str = "data.path"):
    """Read an h5ad file with errors that name the file and the fix."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"{key}: file '{path}' not found; give the path to an .h5ad file ({key}=FILE.h5ad)")
    if path.is_dir():
        raise DataError(f"{key}: '{path}' is a directory; give the path to an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py / anndata raise many types
        raise DataError(f"{key}: '{path}' could not be read as h5ad: {str(exc).splitlines()[0]}") from exc


def detect_values(X) -> str:
    """``"counts"`` if every stored value is a non-negative integer, else ``"lognorm"``.

    Raises DataError on NaN, infinite or (for counts) negative values.
    """
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return "counts"
    if not np.all(np.isfinite(data)):
        bad = int((~np.isfinite(data)).sum())
        raise DataError(f"expression matrix has {bad} NaN/infinite values; remove or impute them first")
    if np.all(data >= 0) and np.all(np.mod(data, 1) == 0):
        return "counts"
    return "lognorm"


def _as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = sp.csr_matrix(np.asarray(X))
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    X.sort_indices()
    return X


def lognormalise(X: sp.csr_matrix, library: np.ndarray, scale: float = 1e4) -> sp.csr_matrix:
    """log1p(x / library * scale) row-wise, keeping sparsity."""
    inv = np.where(library > 0, scale / np.maximum(library, 1e-12), 0.0).astype(np.float32)
    out = sp.diags(inv) @ X
    out = sp.csr_matrix(out, dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


@dataclass
class PerturbationData:
    """A perturbation screen registered for training.

    Attributes
    ----------
    X : csr_matrix ``[N, G]`` float32 (counts or log-normalised values, see ``values``)
    genes : gene names ``[G]``; obs_names : cell names ``[N]``
    labels : the raw perturbation label of each cell ``[N]``
    conditions : unique condition labels ``[C]``; ``cell_condition`` ``[N]`` indexes it
    condition_nodes : GRN node indices perturbed in each condition (empty for controls)
    nodes : GRN node names ``[V]``; ``node_gene`` ``[V]`` gene column of each node or -1
    split : ``[N]`` int8, 0/1/2 = train/val/test
    pair : ``[N]`` matched control cell of each perturbed cell (-1 for controls; -2 = mean)
    library : ``[N]`` total counts (or row sums of the values)
    """

    X: sp.csr_matrix
    genes: List[str]
    obs_names: List[str]
    labels: np.ndarray
    conditions: List[str]
    cell_condition: np.ndarray
    condition_nodes: List[Tuple[int, ...]]
    nodes: List[str]
    node_gene: np.ndarray
    split: np.ndarray
    pair: np.ndarray
    library: np.ndarray
    values: str
    control_labels: List[str]
    source: str = "<AnnData>"
    true_grn: Optional[pd.DataFrame] = None
    _cache: Dict[str, object] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def from_anndata(cls, adata, cfg, source: str = "<AnnData>") -> "PerturbationData":
        """Register an AnnData using the ``data`` and ``grn`` sections of a recipe."""
        dcfg = cfg.data
        key = dcfg.perturbation_key
        if key not in adata.obs.columns:
            cols = ", ".join(map(str, adata.obs.columns[:20])) or "none"
            raise DataError(
                f"{source}: obs has no column '{key}' (data.perturbation_key); available columns: "
                f"{cols}. Set data.perturbation_key=<column>"
            )
        X = adata.layers[dcfg.layer] if dcfg.layer else adata.X
        if dcfg.layer and dcfg.layer not in adata.layers:
            raise DataError(f"{source}: no layer '{dcfg.layer}' (data.layer); layers: {list(adata.layers)}")
        X = _as_csr(X)
        genes = [str(g) for g in adata.var_names]
        if len(set(genes)) != len(genes):
            dup = pd.Index(genes)[pd.Index(genes).duplicated()].unique()[:5].tolist()
            raise DataError(f"{source}: duplicated gene names in var_names, e.g. {dup}; run adata.var_names_make_unique()")
        detected = detect_values(X)
        values = detected if dcfg.expression == "auto" else dcfg.expression
        if values == "counts" and detected != "counts":
            raise DataError(
                f"{source}: data.expression=counts but the matrix holds non-integer or negative values; "
                f"use data.expression=lognorm or point data.layer at the raw counts"
            )

        raw = adata.obs[key]
        labels = raw.astype(str).to_numpy()
        missing = raw.isna().to_numpy() | (np.char.strip(labels.astype(str)) == "")
        from ..recipe import control_labels

        controls = control_labels(cfg)
        keep = ~missing
        if missing.any():
            log.warning("%s: dropping %d cells with an empty '%s' label", source, int(missing.sum()), key)
        is_control = np.isin(labels, controls)
        if not is_control[keep].any():
            top = pd.Series(labels[keep]).value_counts().index[:8].tolist()
            raise DataError(
                f"{source}: no control cells: no '{key}' label equals {controls} (data.control); "
                f"most common labels: {top}. Set data.control=<label>"
            )
        if len(np.unique(labels[keep])) < 2:
            raise DataError(f"{source}: column '{key}' has a single value {labels[keep][0]!r}: no perturbations to learn from")

        X = X[keep]
        labels = labels[keep]
        obs_names = [str(o) for o in adata.obs_names[keep]]
        is_control = is_control[keep]

        # conditions and their targets
        cond_labels = np.where(is_control, "__control__", labels)
        conditions, cell_condition = np.unique(cond_labels, return_inverse=True)
        conditions = conditions.tolist()
        sep = dcfg.separator
        cond_targets = [() if c == "__control__" else tuple(t.strip() for t in c.split(sep) if t.strip() and t.strip() not in controls)
                        for c in conditions]
        perturbed = sorted({t for ts in cond_targets for t in ts})
        gene_pos = {g: i for i, g in enumerate(genes)}
        if cfg.grn.nodes == "perturbed":
            nodes = perturbed
        else:  # measured: every measured gene, then perturbed targets that are not measured
            nodes = genes + [t for t in perturbed if t not in gene_pos]
        node_pos = {n: i for i, n in enumerate(nodes)}
        condition_nodes = [tuple(sorted(node_pos[t] for t in set(ts))) for ts in cond_targets]
        node_gene = np.array([gene_pos.get(n, -1) for n in nodes], dtype=np.int64)
        conditions = ["control" if c == "__control__" else c for c in conditions]

        library = np.asarray(X.sum(axis=1)).ravel().astype(np.float64)
        if values == "counts" and np.any(library <= 0):
            n0 = int((library <= 0).sum())
            log.warning("%s: %d cells have zero total counts; they are kept but carry no signal", source, n0)

        seed = int(cfg.seed)
        split = stratified_split(cell_condition, list(dcfg.split.fractions), seed)
        pair = pair_controls(cell_condition, is_control, split, dcfg.pairing, seed)

        true_grn = None
        if "grnvae_simulation" in adata.uns:
            from .simulate import true_grn_edges

            true_grn = true_grn_edges(adata)
        data = cls(
            X=X, genes=genes, obs_names=obs_names, labels=labels, conditions=conditions,
            cell_condition=cell_condition.astype(np.int64), condition_nodes=condition_nodes,
            nodes=nodes, node_gene=node_gene, split=split, pair=pair, library=library,
            values=values, control_labels=controls, source=source, true_grn=true_grn,
        )
        log.info(
            "%s: %d cells x %d genes (%s), %d conditions, %d GRN nodes (%d measured), split %s",
            source, X.shape[0], X.shape[1], values, len(conditions), len(nodes),
            int((node_gene >= 0).sum()), data.split_sizes(),
        )
        return data

    # ------------------------------------------------------------------------------ summaries
    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def is_control(self) -> np.ndarray:
        return self.pair == -1

    def split_sizes(self) -> Dict[str, int]:
        return {name: int((self.split == i).sum()) for i, name in enumerate(SPLITS)}

    def split_index(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
        return np.nonzero(self.split == SPLITS.index(name))[0]

    def dosage(self, conditions: Sequence[int]) -> torch.Tensor:
        """Dense dosage rows ``[len(conditions), V]`` (1 on each targeted node)."""
        out = torch.zeros(len(conditions), len(self.nodes))
        for r, c in enumerate(conditions):
            nodes = self.condition_nodes[c]
            if nodes:
                out[r, list(nodes)] = 1.0
        return out

    def node_counts(self, split: str = "train") -> np.ndarray:
        """Cells of a split with a non-zero dosage on each node ``[V]``."""
        idx = self.split_index(split)
        per_cond = np.bincount(self.cell_condition[idx], minlength=len(self.conditions))
        counts = np.zeros(len(self.nodes), dtype=np.int64)
        for c, nodes in enumerate(self.condition_nodes):
            for n in nodes:
                counts[n] += per_cond[c]
        return counts

    def standardisation(self, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
        """Per-gene mean and std of log1p counts (or of the values) over a split's cells."""
        X = self.X[self.split_index(split)]
        if self.values == "counts":
            X = X.copy()
            X.data = np.log1p(X.data)
        n = X.shape[0]
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = X.multiply(X)
        var = np.asarray(sq.sum(axis=0)).ravel() / max(n, 1) - mean ** 2
        std = np.sqrt(np.clip(var, 0, None))
        std = np.where(std > 1e-6, std, 1.0)
        return mean.astype(np.float32), std.astype(np.float32)

    # ------------------------------------------------------------------------------ batches
    def _measured(self) -> Tuple[sp.csr_matrix, np.ndarray]:
        """Log-normalised expression of the measured GRN nodes ``[N, Vm]`` and the control mean."""
        if "measured" not in self._cache:
            cols = self.node_gene[self.node_gene >= 0]
            Xm = self.X[:, cols]
            if self.values == "counts":
                Xm = lognormalise(Xm, self.library)
            Xm = sp.csr_matrix(Xm, dtype=np.float32)
            ctrl = np.nonzero(self.is_control & (self.split == 0))[0]
            mean = np.asarray(Xm[ctrl].mean(axis=0)).ravel().astype(np.float32)
            self._cache["measured"] = (Xm, mean)
        return self._cache["measured"]  # type: ignore[return-value]

    def batch(self, cells: Sequence[int]) -> Dict[str, torch.Tensor]:
        """Densify a batch of cells into the tensors the model consumes (see ``GRNVAE``)."""
        cells = np.asarray(cells, dtype=np.int64)
        x = torch.from_numpy(self.X[cells].toarray())
        conds, cond_index = np.unique(self.cell_condition[cells], return_inverse=True)
        Xm, ctrl_mean = self._measured()
        pair = self.pair[cells]
        has = pair != -1
        delta = np.zeros((len(cells), Xm.shape[1]), dtype=np.float32)
        if has.any():
            own = Xm[cells[has]].toarray()
            ref = np.empty_like(own)
            by_cell = pair[has] >= 0
            if by_cell.any():
                ref[by_cell] = Xm[pair[has][by_cell]].toarray()
            ref[~by_cell] = ctrl_mean
            delta[has] = np.abs(own - ref)
        return {
            "x": x,
            "library": torch.from_numpy(self.library[cells].astype(np.float32)),
            "cond_index": torch.from_numpy(cond_index.astype(np.int64)),
            "cond_dosage": self.dosage(conds),
            "delta": torch.from_numpy(delta),
            "has_delta": torch.from_numpy(has),
            "cells": torch.from_numpy(cells),
        }

    def loader(self, split: str, batch_size: int, shuffle: bool, seed: int = 0,
               num_workers: int = 0) -> torch.utils.data.DataLoader:
        """A DataLoader of densified batches over one split (seeded shuffling)."""
        idx = self.split_index(split)
        if len(idx) == 0:
            raise DataError(f"split '{split}' has no cells; change data.split.fractions")
        ds = _Batches(self, idx)
        if shuffle:
            gen = torch.Generator().manual_seed(seed)
            sampler = torch.utils.data.RandomSampler(range(len(idx)), generator=gen)
        else:
            sampler = torch.utils.data.SequentialSampler(range(len(idx)))
        batches = torch.utils.data.BatchSampler(sampler, batch_size=batch_size, drop_last=False)
        return torch.utils.data.DataLoader(ds, sampler=batches, batch_size=None, num_workers=num_workers)


class _Batches(torch.utils.data.Dataset):
    """Maps a list of positions within a split to a densified batch."""

    def __init__(self, data: PerturbationData, index: np.ndarray):
        self.data, self.index = data, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, positions):
        return self.data.batch(self.index[np.asarray(positions)])


# ---------------------------------------------------------------------------------- helpers
def stratified_split(groups: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Per-cell train/val/test split, stratified by condition and seeded.

    Within each condition, cells are shuffled and the first ``round(n * f_test)`` go to test,
    the next ``round(n * f_val)`` to val, the rest to train (a condition always keeps at least
    one training cell).
    """
    rng = np.random.default_rng(seed)
    split = np.zeros(len(groups), dtype=np.int8)
    f_train, f_val, f_test = fractions
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = min(int(round(n * f_test)), max(n - 1, 0))
        n_val = min(int(round(n * f_val)), max(n - 1 - n_test, 0))
        split[idx[:n_test]] = 2
        split[idx[n_test:n_test + n_val]] = 1
    return split


def pair_controls(cell_condition: np.ndarray, is_control: np.ndarray, split: np.ndarray,
                  method: str, seed: int) -> np.ndarray:
    """Match every perturbed cell with a training control cell.

    ``random``: a control drawn uniformly (seeded); ``mean``: the mean of the training controls
    (encoded as -2). Controls get -1.
    """
    pair = np.full(len(cell_condition), -1, dtype=np.int64)
    pool = np.nonzero(is_control & (split == 0))[0]
    if len(pool) == 0:
        raise DataError("no control cells in the training split; lower data.split.fractions for val/test")
    perturbed = np.nonzero(~is_control)[0]
    if method == "mean":
        pair[perturbed] = -2
    else:
        rng = np.random.default_rng(seed + 1)
        pair[perturbed] = pool[rng.integers(0, len(pool), size=len(perturbed))]
    return pair
