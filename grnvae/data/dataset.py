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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..errors import DataError

log = logging.getLogger(__name__)

from .splits import SPLITS


def read_h5ad(path: str | Path, key: str = "data.path", backed: bool = False):
    """Read an h5ad file with errors that name the file and the fix."""
    import anndata as ad

    path = Path(path)
    if not path.exists():
        raise DataError(f"{key}: file '{path}' not found; give the path to an .h5ad file ({key}=FILE.h5ad)")
    if path.is_dir():
        raise DataError(f"{key}: '{path}' is a directory; give the path to an .h5ad file")
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as exc:  # h5py / anndata raise many types
        raise DataError(f"{key}: '{path}' could not be read as h5ad: {str(exc).splitlines()[0]}") from exc


#: share of the stored values that are not integers at or above which a matrix is read as
#: log-normalised; below it (a handful of stray values) it stays counts, with a warning
LOGNORM_FRACTION = 0.01


@dataclass
class ValueScan:
    """What one pass over an expression matrix found (see :func:`_scan`)."""

    source: str = "expression matrix"  # the file or object, for messages
    stored: int = 0  # stored (non-zero) values
    non_integer: int = 0
    negative: int = 0

    def add(self, X) -> None:
        """Count the values of a block; NaN or infinite values are a DataError."""
        data = X.data if sp.issparse(X) else np.asarray(X).ravel()
        if not np.all(np.isfinite(data)):
            bad = int((~np.isfinite(data)).sum())
            raise DataError(f"{self.source}: expression matrix has {bad} NaN/infinite values; remove or impute "
                            f"them first")
        data = data[data != 0]
        whole = np.mod(data, 1) == 0
        self.stored += int(data.size)
        self.non_integer += int((~whole).sum())
        self.negative += int((data < 0).sum())

    @property
    def non_integer_fraction(self) -> float:
        return self.non_integer / max(self.stored, 1)

    def kind(self) -> str:
        """``"counts"`` or ``"lognorm"`` by the share of non-integer values (never flipped by a few
        stray values; an ambiguous share is reported), after refusing what neither can be."""
        source = self.source
        if self.stored == 0:
            raise DataError(f"{source}: the expression matrix has no non-zero value; check the file, or point "
                            f"data.layer at the layer that holds the expression")
        frac = self.non_integer_fraction
        kind = "lognorm" if frac >= LOGNORM_FRACTION else "counts"
        if kind == "counts" and self.negative:
            raise DataError(
                f"{source}: expression matrix has {self.negative} negative values among integer counts: counts "
                f"cannot be negative; check the file or point data.layer at the raw counts")
        if 0 < frac < LOGNORM_FRACTION:
            log.warning("%s: %d of %d stored values (%.3g%%) are not integers; read as counts (negative-binomial "
                        "likelihood). Set data.expression=lognorm if the matrix is log-normalised",
                        source, self.non_integer, self.stored, 100 * frac)
        elif LOGNORM_FRACTION <= frac < 0.5:
            log.warning("%s: %.3g%% of the stored values are not integers; read as log-normalised (Normal "
                        "likelihood). Set data.expression=counts if these are counts", source, 100 * frac)
        if kind == "lognorm" and self.negative:
            log.warning(
                "%s: expression matrix has %d negative values: it looks scaled or centred; grnvae expects raw "
                "counts or log-normalised values (point data.layer at them)", source, self.negative)
        return kind

    def report(self, kind: str) -> Dict[str, Any]:
        return {"values": kind, "non_integer_fraction": self.non_integer_fraction, "stored_values": self.stored}


def _as_csr(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = X.tocsr()
    else:
        X = sp.csr_matrix(np.asarray(X))
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    X.sort_indices()
    return X


#: the counts per cell that log-normalisation scales to: ``log1p(x / library * LOGNORM_SCALE)``
LOGNORM_SCALE = 1e4


def lognormalise(X: sp.csr_matrix, library: np.ndarray, scale: float = LOGNORM_SCALE) -> sp.csr_matrix:
    """log1p(x / library * scale) row-wise, keeping sparsity."""
    inv = np.where(library > 0, scale / np.maximum(library, 1e-12), 0.0).astype(np.float32)
    out = sp.diags(inv) @ X
    out = sp.csr_matrix(out, dtype=np.float32)
    out.data = np.log1p(out.data)
    return out


CHUNK = 20000


def _chunks(n: int, size: int = CHUNK):
    for start in range(0, n, size):
        yield start, min(start + size, n)


class BackedRows:
    """Row reads from an on-disk (backed) sparse matrix, without loading it.

    For CSR storage, the row pointer is read once; a request for sorted rows is served with two
    array reads (``data`` and ``indices``) per run of nearby rows (gaps of at most ``max_gap``
    rows are read and dropped), instead of one or two HDF5 reads per row. Other storage falls
    back to the backend's own indexing.
    """

    def __init__(self, X, max_gap: int = 32):
        self.X = X
        self.shape = X.shape
        self.max_gap = max_gap
        group = getattr(X, "group", None)
        self.csr = getattr(X, "format", None) == "csr" and group is not None
        if self.csr:
            self.indptr = np.asarray(group["indptr"][:], dtype=np.int64)
            self._data, self._indices = group["data"], group["indices"]

    def __getitem__(self, item) -> sp.csr_matrix:
        if isinstance(item, slice):
            return self.rows(np.arange(self.shape[0])[item])
        return self.rows(np.asarray(item, dtype=np.int64))

    def rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Rows in the given order (duplicates allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) > 1 and np.all(rows[1:] > rows[:-1]):
            return self._sorted(rows)
        uniq, inv = np.unique(rows, return_inverse=True)
        return self._sorted(uniq)[inv]

    def _sorted(self, uniq: np.ndarray) -> sp.csr_matrix:
        n_cols = self.shape[1]
        if len(uniq) == 0:
            return sp.csr_matrix((0, n_cols), dtype=np.float32)
        if not self.csr:
            return _as_csr(self.X[uniq])
        brk = np.flatnonzero(np.diff(uniq) > self.max_gap) + 1
        datas, inds, lens = [], [], []
        for a, b in zip(np.r_[0, brk], np.r_[brk, len(uniq)]):
            lo, hi = int(uniq[a]), int(uniq[b - 1]) + 1
            start, stop = int(self.indptr[lo]), int(self.indptr[hi])
            d, i = self._data[start:stop], self._indices[start:stop]
            lengths = np.diff(self.indptr[lo:hi + 1])
            if hi - lo != b - a:  # drop the rows inside the span that were not asked for
                wanted = np.zeros(hi - lo, dtype=bool)
                wanted[uniq[a:b] - lo] = True
                mask = np.repeat(wanted, lengths)
                d, i, lengths = d[mask], i[mask], lengths[wanted]
            datas.append(d)
            inds.append(i)
            lens.append(lengths)
        lengths = np.concatenate(lens)
        ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        return _as_csr(sp.csr_matrix((np.concatenate(datas), np.concatenate(inds), ptr), shape=(len(uniq), n_cols)))


def _read(X, rows: Optional[np.ndarray]) -> sp.csr_matrix:
    """CSR rows of an in-memory matrix or a :class:`BackedRows` (``rows`` any order; None = all)."""
    if sp.issparse(X):
        return _as_csr(X if rows is None else X[np.asarray(rows, dtype=np.int64)])
    if isinstance(X, BackedRows):
        return X.rows(np.arange(X.shape[0]) if rows is None else rows)
    return _as_csr(X[:] if rows is None else X[np.asarray(rows, dtype=np.int64)])


def _scan(X, rows: Optional[np.ndarray], source: str = "expression matrix") -> Tuple[np.ndarray, ValueScan]:
    """One chunked pass: library sizes and the value counts (NaN/inf checked)."""
    n = X.shape[0] if rows is None else len(rows)
    library = np.empty(n, dtype=np.float64)
    scan = ValueScan(source)
    for a, b in _chunks(n):
        block = _as_csr(X[a:b]) if rows is None else _read(X, rows[a:b])
        library[a:b] = np.asarray(block.sum(axis=1)).ravel()
        scan.add(block)
    return library, scan


def _node_set(cfg, genes: List[str], perturbed: List[str], cond_targets, gene_pos) -> List[str]:
    nodes = cfg.grn.nodes
    if nodes in ("perturbed", "perturbed+deg", "perturbed+hvg"):
        return list(perturbed)
    if nodes == "perturbed+measured":  # perturbed targets, then every other measured gene
        known = set(perturbed)
        return list(perturbed) + [g for g in genes if g not in known]
    if nodes == "measured":  # every measured gene, then perturbed targets that are not measured
        return list(genes) + [t for t in perturbed if t not in gene_pos]
    # prior: perturbed targets, then the prior's genes that are measured
    from ..priors import load_recipe_prior, match_genes

    prior, _ = load_recipe_prior(cfg.grn)
    mapped, _ = match_genes(prior, genes, aliases=cfg.grn.aliases, keep="data")
    known = set(perturbed)
    return list(perturbed) + [g for g in mapped.genes if g not in known and g in gene_pos]


def gene_names(adata, column: Optional[str] = None, source: str = "the AnnData") -> List[str]:
    """The names grnvae knows each gene by: ``adata.var[column]`` (``data.gene_symbols``: e.g.
    symbols beside Ensembl ids as var_names; a gene without one keeps its var_name), else the
    var_names. Duplicated names are a clear error (a target or model gene would be ambiguous)."""
    names = [str(g) for g in adata.var_names]
    if column is not None:
        if column not in adata.var.columns:
            raise DataError(f"{source}: var has no column '{column}' (data.gene_symbols); var columns: "
                            f"{list(map(str, adata.var.columns))[:20] or 'none'}")
        symbols = adata.var[column]
        names = [str(s).strip() if pd.notna(s) and str(s).strip() else n for s, n in zip(symbols, names)]
    index = pd.Index(names)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()[:5].tolist()
        where = f"var['{column}'] (data.gene_symbols)" if column else "var_names"
        fix = (f"keep one gene per name, e.g. adata = adata[:, ~adata.var['{column}'].duplicated().to_numpy()]"
               if column else "run adata.var_names_make_unique()")
        raise DataError(f"{source}: duplicated gene names in {where}, e.g. {dup}; {fix}")
    return names


def check_targets(targets: Sequence[str], nodes: Sequence[str], source: str = "the AnnData") -> None:
    """A clear error when perturbation ``targets`` are not among a trained model's GRN ``nodes``."""
    unknown = sorted(set(targets) - set(nodes))
    if unknown:
        raise DataError(f"{source}: perturbation targets the model has no GRN node for: {unknown[:10]}; "
                        f"a model reads and predicts for its GRN's nodes only")


def check_levels(values, known: Sequence[str], name: str, source: str = "the AnnData") -> None:
    """A clear error when a covariate's ``values`` hold a level outside a trained model's ``known``
    ones (its one-hot columns)."""
    new = sorted(set(map(str, values)) - set(known))
    if new:
        raise DataError(f"{source}: covariate '{name}' has levels the model never saw: {new[:10]} "
                        f"(known: {list(known)[:10]}); a model reads the levels it was trained on")


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
    rows: Optional[np.ndarray] = None  # backed mode: file row of each kept cell
    dropped: Dict[str, int] = field(default_factory=dict)
    covariates: Dict[str, np.ndarray] = field(default_factory=dict)
    levels: Optional[Dict[str, List[str]]] = None  # a trained model's covariate levels (else the data's)
    qc: Optional[np.ndarray] = None  # True = QC-failing (artifact) cell
    qc_report: Optional[str] = None
    cf_pair: Optional[np.ndarray] = None  # same condition and split, opposite QC status (-1: none)
    value_report: Dict[str, Any] = field(default_factory=dict)  # values, non-integer fraction
    modality: str = "knockdown"  # or "activation" (CRISPRa): the sign of the dosage
    _cache: Dict[str, object] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------------------ building
    @classmethod
    def from_anndata(cls, adata, cfg, source: str = "<AnnData>", nodes: Optional[Sequence[str]] = None,
                     spec: Any = None) -> "PerturbationData":
        """Register an AnnData (in memory or backed) using the ``data``/``grn`` recipe sections.

        ``nodes``: a trained model's GRN nodes, to register cells for that model to read (its
        latent states, expected expression): any cells, with or without controls, on exactly
        those nodes; no split, pairs, QC or filter by cell count (every split is ``train``).
        ``spec``: the :class:`grnvae.ModelSpec` of a trained model that is to read these cells:
        their values must be of its kind (counts or log-normalised), and their covariates are its
        one-hot columns (``spec.covariates``), whichever levels the cells hold; a level outside
        them is an error (default: the levels the cells hold)."""
        from ..recipe import control_labels
        from . import splits as S
        from .labels import _parts, canonical, gene_alias, parse_labels

        dcfg = cfg.data
        key = dcfg.perturbation_key
        if key not in adata.obs.columns:
            cols = ", ".join(map(str, adata.obs.columns[:20])) or "none"
            raise DataError(
                f"{source}: obs has no column '{key}' (data.perturbation_key); available columns: "
                f"{cols}. Set data.perturbation_key=<column>"
            )
        if dcfg.layer and dcfg.layer not in adata.layers:
            raise DataError(f"{source}: no layer '{dcfg.layer}' (data.layer); layers: {list(adata.layers)}")
        genes = gene_names(adata, dcfg.gene_symbols, source)

        trained = nodes is not None
        parsed = parse_labels(adata.obs[key], control_labels(cfg), dcfg.separator, list(dcfg.unassigned),
                              dcfg.on_unassigned, key, source, min_cells=1 if trained else int(dcfg.min_cells),
                              training=not trained, genes=genes)
        keep = parsed.keep
        backed = bool(getattr(adata, "isbacked", False))
        raw_X = adata.layers[dcfg.layer] if dcfg.layer else adata.X
        if backed:
            X = BackedRows(raw_X)  # rows are read on demand; ``rows`` maps kept cells to file rows
            rows = np.nonzero(keep)[0]
        else:
            X = _as_csr(raw_X)
            if not keep.all():
                X = X[keep]
            rows = None
        library, scan = _scan(X, rows, source)
        detected = scan.kind()
        values = detected if dcfg.expression == "auto" else dcfg.expression
        if values == "counts" and detected != "counts":
            raise DataError(
                f"{source}: data.expression=counts but the matrix holds non-integer or negative values; "
                f"use data.expression=lognorm or point data.layer at the raw counts"
            )
        if spec is not None and values != spec.values:
            kinds = {"counts": "raw counts", "lognorm": "log-normalised values"}
            raise DataError(f"{source}: the model was trained on {kinds.get(spec.values, spec.values)}, but this matrix "
                            f"holds {kinds.get(values, values)}; give it the same kind (data.layer names a layer "
                            f"that holds them, e.g. the raw counts)")
        if values == "counts" and np.any(library <= 0):
            log.warning("%s: %d cells have zero total counts; they are kept but carry no signal",
                        source, int((library <= 0).sum()))
        obs_names = [str(o) for o in adata.obs_names[keep]]

        gene_pos = {g: i for i, g in enumerate(genes)}
        cond_targets = parsed.condition_targets  # targets naming a gene up to case are that gene
        perturbed = sorted({t for ts in cond_targets for t in ts})

        seed = int(cfg.seed)
        conditions, cell_condition = parsed.conditions, parsed.cell_condition
        by = dcfg.split.by
        fractions = list(dcfg.split.fractions)
        held = None if dcfg.split.test is None else [  # named as the conditions are ('B+A' is 'A+B')
            canonical(t, control_labels(cfg), dcfg.separator, gene_alias(_parts(str(t), dcfg.separator), genes)) or str(t)
            for t in dcfg.split.test]
        if trained:
            split = np.zeros(len(cell_condition), dtype=np.int8)
            check_targets(parsed.targets, nodes, source)
        elif by == "cells":
            split = S.by_cells(cell_condition, fractions, seed)
        elif by == "perturbation":
            split = S.by_perturbation(conditions, cond_targets, cell_condition, fractions, held, seed,
                                      val=dcfg.split.val)
        elif by == "combination":
            split = S.by_combination(conditions, cond_targets, cell_condition, fractions, held, seed)
        else:
            col = dcfg.split.column
            if not col or col not in adata.obs.columns:
                raise DataError(f"{source}: data.split.by=column needs data.split.column naming an obs column; got {col!r}")
            split = S.by_column(adata.obs[col][keep], col)

        nodes = list(nodes) if trained else _node_set(cfg, genes, perturbed, cond_targets, gene_pos)
        node_pos = {n: i for i, n in enumerate(nodes)}
        condition_nodes = [tuple(sorted(node_pos[t] for t in ts)) for ts in cond_targets]
        node_gene = np.array([gene_pos.get(n, -1) for n in nodes], dtype=np.int64)

        true_grn = None
        if "grnvae_simulation" in adata.uns:
            from .simulate import true_grn_edges

            true_grn = true_grn_edges(adata)
        covariates = {}
        for c in dcfg.covariates:
            if c not in adata.obs.columns:
                raise DataError(f"{source}: covariate '{c}' (data.covariates) is not an obs column")
            column = adata.obs[c]
            missing = int(column.isna().to_numpy()[keep].sum())
            if missing:
                raise DataError(f"{source}: covariate '{c}' (data.covariates) is missing for {missing} cells; fill "
                                f"it (e.g. adata.obs['{c}'] = adata.obs['{c}'].astype(str).fillna('unknown')) or "
                                f"drop those cells")
            # plain Python strings: levels are stored in checkpoints, which hold plain values only
            covariates[c] = np.array([str(v) for v in column.to_numpy()[keep]], dtype=object)
            if spec is not None:
                check_levels(covariates[c], spec.covariates.get(c, ()), c, source)
        data = cls(
            X=X, genes=genes, obs_names=obs_names, labels=parsed.labels, conditions=conditions,
            cell_condition=cell_condition, condition_nodes=condition_nodes,
            nodes=nodes, node_gene=node_gene, split=split,
            pair=np.where(parsed.is_control, -1, -2).astype(np.int64), library=library,
            values=values, control_labels=control_labels(cfg), source=source, true_grn=true_grn,
            rows=rows, dropped=parsed.dropped, covariates=covariates,
            levels=None if spec is None else {c: list(spec.covariates[c]) for c in covariates},
            modality=dcfg.modality, value_report=scan.report(values),
        )
        if trained:
            return data
        if cfg.grn.nodes == "perturbed+deg":
            data._add_deg_nodes(int(cfg.grn.deg_per_perturbation))
        elif cfg.grn.nodes == "perturbed+hvg":
            data._add_hvg_nodes(int(cfg.grn.n_hvg), seed)
        qcfg = dcfg.qc
        if qcfg.column or qcfg.compute:
            data._set_qc(adata, qcfg, keep, seed)
        data.pair = data._pair(dcfg, seed)
        empty = [c for c, n in zip(conditions, np.bincount(cell_condition[split == 0], minlength=len(conditions))) if n == 0]
        if empty:
            held_out = by in ("perturbation", "combination")
            (log.info if held_out else log.warning)(
                "%s: %d conditions have no training cells%s: %s", source, len(empty),
                " (held out by data.split)" if held_out else "", [str(e) for e in empty[:10]])
        log.info(
            "%s: %d cells x %d genes (%s%s), %d conditions, %d GRN nodes (%d measured), split %s",
            source, data.n_cells, len(genes), values, ", backed" if backed else "", len(conditions),
            len(data.nodes), int((data.node_gene >= 0).sum()), data.split_sizes(),
        )
        return data

    def _set_qc(self, adata, qcfg, keep: np.ndarray, seed: int) -> None:
        """QC labels (from a column or computed) and counterfactual partners of opposite status."""
        from .qc import compute_qc, qc_from_column

        if qcfg.column:
            qc = qc_from_column(adata.obs, qcfg.column)[keep]
            self.qc_report = f"QC labels from obs column '{qcfg.column}': {int(qc.sum())} of {len(qc)} cells fail"
        else:
            if self.values != "counts":
                raise DataError(f"{self.source}: data.qc.compute needs raw counts; give data.qc.column instead")
            groups = None
            if qcfg.groups:
                if qcfg.groups not in adata.obs.columns:
                    raise DataError(f"{self.source}: data.qc.groups '{qcfg.groups}' is not an obs column")
                groups = adata.obs[qcfg.groups].astype(str).to_numpy()[keep]
            scores = None
            if qcfg.doublet_key:
                if qcfg.doublet_key not in adata.obs.columns:
                    raise DataError(f"{self.source}: data.qc.doublet_key '{qcfg.doublet_key}' is not an obs column")
                scores = adata.obs[qcfg.doublet_key].to_numpy(dtype=float)[keep]
            qc, report = compute_qc(_RowView(self), self.genes, groups=groups, nmads=float(qcfg.nmads),
                                    doublet_scores=scores)
            self.qc_report = report.summary()
        log.info("%s: %s", self.source, self.qc_report.splitlines()[0])
        self.qc = qc.astype(bool)
        rng = np.random.default_rng(seed + 2)
        cf = np.full(self.n_cells, -1, dtype=np.int64)
        key = self.cell_condition * 3 + self.split
        order = np.argsort(key, kind="stable")
        bounds = np.r_[0, np.nonzero(np.diff(key[order]))[0] + 1, len(order)]
        for a, b in zip(bounds[:-1], bounds[1:]):
            group = order[a:b]
            fail, ok = group[self.qc[group]], group[~self.qc[group]]
            if len(fail) and len(ok):
                cf[fail] = ok[rng.integers(0, len(ok), size=len(fail))]
                cf[ok] = fail[rng.integers(0, len(fail), size=len(ok))]
        self.cf_pair = cf

    def covariate_levels(self) -> Dict[str, List[str]]:
        """Each covariate's levels, in the order of the one-hot columns: a trained model's when
        registered for one (``spec``), else the sorted levels the cells hold."""
        if self.levels is not None:
            return {k: list(self.levels[k]) for k in self.covariates}
        return {k: sorted(set(v)) for k, v in self.covariates.items()}

    def covariate_onehot(self, cells: np.ndarray) -> Optional[torch.Tensor]:
        """One-hot covariates ``[len(cells), K]`` (levels concatenated over covariates), or None."""
        if not self.covariates:
            return None
        blocks = []
        for name, levels in self.covariate_levels().items():
            pos = {lvl: i for i, lvl in enumerate(levels)}
            codes = np.array([pos[v] for v in self.covariates[name][cells]], dtype=np.int64)
            blocks.append(torch.nn.functional.one_hot(torch.from_numpy(codes), len(levels)).float())
        return torch.cat(blocks, dim=1)

    def _pair(self, dcfg, seed: int) -> np.ndarray:
        from .pairing import pair_controls

        features = None
        ot = dcfg.ot
        if dcfg.pairing == "ot":
            features = self.ot_features(ot.features, int(ot.n_pcs), seed)
        return pair_controls(features, self.cell_condition, self.pair == -1, self.split, dcfg.pairing, seed,
                             reg=float(ot.reg), chunk_size=int(ot.chunk_size), metric=ot.metric,
                             progress=self.n_cells > 50000)

    def ot_features(self, kind: str, n_pcs: int, seed: int):
        """Per-cell features for the OT cost: log-normalised expression of the measured perturbed
        genes (``perturbed``, as GPO-VAE), or a PCA of all genes fitted on up to 20,000 training
        cells (``pca``)."""
        if kind == "perturbed":
            gene_pos = {g: i for i, g in enumerate(self.genes)}
            targets = sorted({self.nodes[n] for nodes in self.condition_nodes for n in nodes})
            cols = np.array([gene_pos[t] for t in targets if t in gene_pos], dtype=np.int64)
            if len(cols) == 0:
                raise DataError(
                    f"{self.source}: data.ot.features=perturbed but no perturbed gene is measured; "
                    f"use data.ot.features=pca"
                )
            return self.lognorm_rows(np.arange(self.n_cells), cols)
        train = self.split_index("train")
        rng = np.random.default_rng(seed)
        fit = np.sort(rng.choice(train, size=min(len(train), 20000), replace=False))
        Xf = torch.from_numpy(self.lognorm_rows(fit, None).toarray())
        mean = Xf.mean(0)
        k = min(n_pcs, min(Xf.shape) - 1)
        torch.manual_seed(seed)
        _, _, V = torch.pca_lowrank(Xf - mean, q=k, center=False, niter=4)
        out = np.empty((self.n_cells, k), dtype=np.float32)
        for a, b in _chunks(self.n_cells):
            block = torch.from_numpy(self.lognorm_rows(np.arange(a, b), None).toarray())
            out[a:b] = ((block - mean) @ V[:, :k]).numpy()
        return out

    def _add_hvg_nodes(self, k: int, seed: int) -> None:
        """Add the ``k`` most variable genes (log-normalised, over up to 20,000 training cells)."""
        train = self.split_index("train")
        rng = np.random.default_rng(seed)
        cells = np.sort(rng.choice(train, size=min(len(train), 20000), replace=False))
        X = self.lognorm_rows(cells, None)
        mean = np.asarray(X.mean(axis=0)).ravel()
        var = np.asarray(X.multiply(X).mean(axis=0)).ravel() - mean ** 2
        self._add_nodes([self.genes[g] for g in np.argsort(-var, kind="stable")[:k]])

    def _add_nodes(self, genes) -> None:
        """Append measured genes that are not yet GRN nodes (in sorted order)."""
        new = [g for g in sorted(set(genes)) if g not in set(self.nodes)]
        gene_pos = {g: i for i, g in enumerate(self.genes)}
        self.nodes = list(self.nodes) + new
        self.node_gene = np.r_[self.node_gene, [gene_pos[g] for g in new]].astype(np.int64)

    def _add_deg_nodes(self, k: int) -> None:
        """Add each perturbation's top-k differentially expressed genes (training cells) as nodes."""
        train = self.split == 0
        ctrl = np.nonzero(train & (self.pair == -1))[0]
        ctrl_mean = np.asarray(self.lognorm_rows(ctrl, None).mean(axis=0)).ravel()
        extra = set()
        for c, nodes in enumerate(self.condition_nodes):
            cells = np.nonzero(train & (self.cell_condition == c))[0]
            if not nodes or len(cells) == 0:
                continue
            diff = np.abs(np.asarray(self.lognorm_rows(cells, None).mean(axis=0)).ravel() - ctrl_mean)
            extra.update(self.genes[g] for g in np.argsort(-diff, kind="stable")[:k])
        self._add_nodes(extra)

    # ------------------------------------------------------------------------------ summaries
    @property
    def n_cells(self) -> int:
        return len(self.cell_condition)

    @property
    def backed(self) -> bool:
        return self.rows is not None

    def read_rows(self, cells: Sequence[int]) -> sp.csr_matrix:
        """Expression rows ``[len(cells), G]`` of kept cells, in the given order, as CSR."""
        cells = np.asarray(cells, dtype=np.int64)
        return _read(self.X, cells if self.rows is None else self.rows[cells])

    def lognorm_rows(self, cells: Sequence[int], cols: Optional[np.ndarray]) -> sp.csr_matrix:
        """log1p(x / library * 1e4) (or the values for log-normalised data) on gene columns."""
        X = self.read_rows(cells)
        if cols is not None:
            X = X[:, cols]
        if self.values == "counts":
            X = lognormalise(X, self.library[np.asarray(cells, dtype=np.int64)])
        return sp.csr_matrix(X, dtype=np.float32)

    @property
    def is_control(self) -> np.ndarray:
        return self.pair == -1

    def split_sizes(self) -> Dict[str, int]:
        return {name: int((self.split == i).sum()) for i, name in enumerate(SPLITS)}

    def split_index(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
        return np.nonzero(self.split == SPLITS.index(name))[0]

    def combination_categories(self, split: str = "test") -> Dict[str, str]:
        """Each combination with cells in ``split``: ``seen<k>``, k its targets perturbed alone in
        training cells (:func:`grnvae.data.splits.combination_categories`); empty without any."""
        from .splits import combination_categories

        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        return combination_categories(self.conditions, self.condition_nodes, self.cell_condition, self.split,
                                      held=SPLITS.index(split))

    def dosage(self, conditions: Sequence[int], support: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense dosage rows ``[len(conditions), V]``: :attr:`dose` on each targeted node
        (``support``: :meth:`dosage_support` of the same conditions, when the caller has it)."""
        rows, cols = self.dosage_support(conditions) if support is None else support
        out = torch.zeros(len(conditions), len(self.nodes))
        out[rows, cols] = self.dose
        return out

    def dosage_support(self, conditions: Sequence[int]) -> torch.Tensor:
        """Rows and columns of the non-zero entries of :meth:`dosage`, row-major: ``[2, nnz]``."""
        pairs = [(r, n) for r, c in enumerate(conditions) for n in sorted(self.condition_nodes[c])]
        return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2).t().contiguous()

    @property
    def dose(self) -> float:
        """Dosage of a targeted node: +1 for knock-out / knock-down (GPO-VAE's one-hot), -1 for
        activation (``data.modality``), so an edge weight is the change of its target per unit
        loss of its regulator in either kind of screen."""
        return -1.0 if self.modality == "activation" else 1.0

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
        idx = self.split_index(split)
        G = len(self.genes)
        total, total_sq = np.zeros(G), np.zeros(G)
        for a, b in _chunks(len(idx)):
            X = self.read_rows(idx[a:b])
            if self.values == "counts":
                X.data = np.log1p(X.data)
            total += np.asarray(X.sum(axis=0)).ravel()
            total_sq += np.asarray(X.multiply(X).sum(axis=0)).ravel()
        n = max(len(idx), 1)
        mean = total / n
        var = total_sq / n - mean ** 2
        std = np.sqrt(np.clip(var, 0, None))
        std = np.where(std > 1e-6, std, 1.0)
        return mean.astype(np.float32), std.astype(np.float32)

    # ------------------------------------------------------------------------------ batches
    def mean_lognorm(self, cells: np.ndarray, cols: Optional[np.ndarray] = None) -> np.ndarray:
        """Mean log-normalised expression of ``cells`` on gene columns ``cols`` (all if None),
        read in chunks: ``[len(cols)]`` float64."""
        cells = np.asarray(cells, dtype=np.int64)
        total = np.zeros(len(self.genes) if cols is None else len(cols))
        for a, b in _chunks(len(cells)):
            total += np.asarray(self.lognorm_rows(cells[a:b], cols).sum(axis=0)).ravel()
        return total / max(len(cells), 1)

    def condition_effects(self, split: str, max_cells: Optional[int] = None, seed: int = 0) -> Dict[int, np.ndarray]:
        """Mean log-normalised change from the split's controls of each perturbed condition with
        cells in the split (at most ``max_cells`` each, a seeded subset): condition -> ``[G]``.
        Only the split's cells enter (the honest reference for held-out splits). Computed once
        per arguments (the node features and the data prior both read the training effects)."""
        key = f"condition_effects:{split}:{max_cells}:{seed}"
        if key not in self._cache:
            self._cache[key] = self._condition_effects(split, max_cells, seed)
        return dict(self._cache[key])  # type: ignore[arg-type]

    def _condition_effects(self, split: str, max_cells: Optional[int], seed: int) -> Dict[int, np.ndarray]:
        idx = self.split_index(split)
        ctrl = idx[self.pair[idx] == -1]
        if len(ctrl) == 0:
            raise DataError(f"split '{split}' has no control cells: no effects can be computed")
        base = self.control_mean_genes() if split == "train" else self.mean_lognorm(ctrl)
        rng = np.random.default_rng(seed)
        out = {}
        for c, nodes in enumerate(self.condition_nodes):
            cells = idx[self.cell_condition[idx] == c]
            if not nodes or len(cells) == 0:
                continue
            if max_cells is not None and len(cells) > max_cells:
                cells = np.sort(rng.choice(cells, size=max_cells, replace=False))
            out[c] = self.mean_lognorm(cells) - base
        return out

    def control_mean_genes(self) -> np.ndarray:
        """Mean log-normalised expression of the training controls on every gene ``[G]``."""
        if "control_mean_genes" not in self._cache:
            self._cache["control_mean_genes"] = self.mean_lognorm(np.nonzero((self.pair == -1) & (self.split == 0))[0])
        return self._cache["control_mean_genes"]  # type: ignore[return-value]

    def control_mean(self) -> np.ndarray:
        """Mean log-normalised expression of the training controls on measured nodes ``[Vm]``."""
        return self.control_mean_genes()[self.node_gene[self.node_gene >= 0]].astype(np.float32)

    def batch(self, cells: Sequence[int], delta: bool = True) -> Dict[str, torch.Tensor]:
        """Densify a batch of cells into the tensors the model consumes (see ``GRNVAE``);
        ``delta`` false: no observed changes from the paired controls (``has_delta`` all false),
        for cells a trained model only reads."""
        cells = np.asarray(cells, dtype=np.int64)
        x = torch.from_numpy(self.read_rows(cells).toarray())
        conds, cond_index = np.unique(self.cell_condition[cells], return_inverse=True)
        support = self.dosage_support(conds)
        cols = self.node_gene[self.node_gene >= 0]
        pair = self.pair[cells]
        has = (pair != -1) & delta
        delta = np.zeros((len(cells), len(cols)), dtype=np.float32)
        if has.any():
            lib = self.library[cells[has]]
            own = x.numpy()[has][:, cols]
            if self.values == "counts":
                own = np.log1p(own / np.maximum(lib, 1e-12)[:, None] * LOGNORM_SCALE)
            ref = np.empty_like(own)
            by_cell = pair[has] >= 0
            if by_cell.any():
                ref[by_cell] = self.lognorm_rows(pair[has][by_cell], cols).toarray()
            ref[~by_cell] = self.control_mean()
            delta[has] = np.abs(own - ref)
        out = {
            "x": x,
            "library": torch.from_numpy(self.library[cells].astype(np.float32)),
            "cond_index": torch.from_numpy(cond_index.astype(np.int64)),
            "cond_dosage": self.dosage(conds, support),
            "cond_support": support,  # its non-zero pattern, so the model need not scan it
            "delta": torch.from_numpy(delta),
            "has_delta": torch.from_numpy(has),
            "cells": torch.from_numpy(cells),
        }
        cov = self.covariate_onehot(cells)
        if cov is not None:
            out["covariates"] = cov
        if self.qc is not None:
            cf = self.cf_pair[cells]
            has_cf = cf >= 0
            x_cf = torch.zeros_like(x)
            if has_cf.any():
                x_cf[torch.from_numpy(has_cf)] = torch.from_numpy(self.read_rows(cf[has_cf]).toarray())
            out["qc"] = torch.from_numpy(self.qc[cells].astype(np.float32))
            out["x_cf"] = x_cf
            out["has_cf"] = torch.from_numpy(has_cf)
            if cov is not None:
                out["covariates_cf"] = self.covariate_onehot(np.where(has_cf, cf, cells))
        return out

    def loader(self, split: str, batch_size: int, shuffle: bool, seed: int = 0,
               num_workers: int = 0, max_cells: Optional[int] = None) -> torch.utils.data.DataLoader:
        """A DataLoader of densified batches over one split (seeded shuffling).

        ``max_cells`` keeps a seeded random subset of the split (sorted, for sequential reads).
        """
        idx = self.split_index(split)
        if max_cells is not None and len(idx) > max_cells:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_cells, replace=False))
        if len(idx) == 0:
            raise DataError(f"split '{split}' has no cells; change data.split.fractions")
        ds = _Batches(self, idx)
        batches = EpochBatches(len(idx), batch_size, shuffle, seed)
        return torch.utils.data.DataLoader(ds, sampler=batches, batch_size=None, num_workers=num_workers)


class EpochBatches(torch.utils.data.Sampler):
    """Batches of positions for one epoch: a permutation seeded by (seed, epoch) (or the
    identity) cut into ``batch_size`` pieces.

    In a multi-process run (``torch.distributed`` initialised), every rank draws the same
    permutation (same seed, same number of epochs) and takes batches ``rank, rank + world, ...``;
    ranks with one batch fewer repeat their first one (a rank with none, when there are fewer
    batches than ranks, takes the first batch), so all ranks step equally often: a rank that
    stepped less would wait forever in the others' collective operations.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.seed = int(seed)
        self.epoch = 0
        self._was_set = False  # set_epoch called since the last iterator was created

    def set_epoch(self, epoch: int) -> None:
        """Draw the permutation of epoch ``epoch`` next (the training loop calls this at the start
        of every epoch, so a resumed run sees the same batches as an uninterrupted one)."""
        self.epoch = int(epoch)
        self._was_set = True

    def _world(self) -> Tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def __len__(self) -> int:
        world, _ = self._world()
        n_batches = -(-self.n // self.batch_size)
        return -(-n_batches // world)

    def __iter__(self):
        # each epoch's permutation depends on (seed, epoch) only; iterating again without
        # set_epoch moves on to the next epoch's
        start = self.epoch
        self.epoch += 1
        self._was_set = False
        return self._draw(start)

    def _draw(self, start: int):
        # runs at the first batch: a training loop may create the iterator before it calls
        # set_epoch (as when it resumes), and then the epoch it set wins
        epoch = self.epoch if self._was_set else start
        self.epoch, self._was_set = epoch + 1, False
        yield from self._batches(epoch)

    def _batches(self, epoch: int):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=generator) if self.shuffle else torch.arange(self.n)
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, self.n, self.batch_size)]
        world, rank = self._world()
        if world > 1:
            mine = batches[rank::world]
            mine += (mine or batches)[: len(self) - len(mine)]
            batches = mine
        return batches


class _RowView:
    """Row-sliceable view of a PerturbationData's kept cells (for chunked QC computation)."""

    def __init__(self, data: PerturbationData):
        self.data = data
        self.shape = (data.n_cells, len(data.genes))

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self.data.read_rows(np.arange(self.data.n_cells)[item])
        return self.data.read_rows(np.atleast_1d(item))


class _Batches(torch.utils.data.Dataset):
    """Maps a list of positions within a split to a densified batch."""

    def __init__(self, data: PerturbationData, index: np.ndarray):
        self.data, self.index = data, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, positions):
        return self.data.batch(self.index[np.asarray(positions)])


