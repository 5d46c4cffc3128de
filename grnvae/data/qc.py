"""Per-cell quality control: which cells are low-quality / technical-artifact cells.

CRADLE-VAE-style models learn a separate "technical artifact" embedding that is switched on for
low-quality cells; they need a per-cell boolean label saying which cells those are. This module
makes that label, either from the counts (:func:`compute_qc`) or from an existing obs column
(:func:`qc_from_column`).

Metrics (one value per cell, computed in row chunks so a backed matrix is never loaded whole):

==================  ==========================================================  =============
criterion           metric                                                      tails flagged
==================  ==========================================================  =============
``library_size``    ``log1p(total counts)``                                     both
``genes_detected``  ``log1p(number of genes with a count > 0)``                 both
``mito``            fraction of counts in mitochondrial genes                   upper
``ribo``            fraction of counts in ribosomal-protein genes               upper
``hemo``            fraction of counts in haemoglobin genes                     upper
``doublet``         the given doublet score (only when ``doublet_scores``)      upper
==================  ==========================================================  =============

Gene sets (matched on the gene symbol with the regular expressions below, case-insensitive):

* mitochondrial: ``^MT-`` (human ``MT-ND1``, mouse ``mt-Nd1``);
* ribosomal protein: ``^RP[SL]`` but not ``^RPS6K`` (the RPS6KA/B/C/L kinases) nor ``^RPS19BP``
  (a nucleolar binding protein), e.g. ``RPS3``, ``RPL13A``, ``RPLP0``, ``RPSA``, mouse ``Rps3``.
  Mitochondrial ribosomal proteins (``MRPL*``/``MRPS*``) are not included;
* haemoglobin: ``^(HB(A[12]?|B|D|E1|G[12]|M|Q1|Z)|HB[AB]-.+)$``, i.e. HBA1, HBA2, HBB, HBD,
  HBE1, HBG1, HBG2, HBM, HBQ1, HBZ and the mouse ``Hba-*``/``Hbb-*`` forms (``Hba-a1``,
  ``Hbb-bs``, ...). The common scanpy pattern ``^HB[^(P)]`` is *not* used because it also
  matches HBEGF (an EGF-family growth factor) and HBS1L (a translation GTPase); HBP1 (a
  transcription factor) is excluded by both.

Outliers follow the scanpy / single-cell best-practices ``is_outlier`` rule: a cell fails a
criterion when its metric is beyond ``median ± nmads * MAD`` (strictly), with the **unscaled**
median absolute deviation ``MAD = median(|x - median(x)|)`` (``scipy.stats.median_abs_deviation``
with its default ``scale=1``; the normal-consistent MAD is 1.4826 times larger, so 3 unscaled
MADs are about 2 standard deviations of a normal distribution). When the MAD is 0 (e.g. most
cells have no haemoglobin counts), the mean absolute deviation from the median is used instead,
so that a handful of cells with any count at all are not all flagged; if that is 0 too (all
values equal), no cell fails. For the three fraction criteria the upper bound is in addition at
least ``min_fraction_diff`` (default 0.01, one percentage point) above the median, like the
``min.diff`` argument of scater's ``isOutlier``: without it a criterion where nearly every cell
has a fraction of ~0 (haemoglobin in most tissues) would flag cells for one or two stray counts.
When ``groups`` is given, medians and MADs are computed within each group (batch / replicate).

Cells with zero total counts have all fractions set to 0 (they fail ``library_size``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "CRITERIA", "GENE_SET_PATTERNS", "QCReport", "compute_qc", "gene_set_masks", "mad_bounds",
    "qc_from_column",
]

#: the count-based criteria :func:`compute_qc` knows, in report order
CRITERIA: Tuple[str, ...] = ("library_size", "genes_detected", "mito", "ribo", "hemo")

#: gene-symbol regular expressions of the three gene sets (matched case-insensitively)
GENE_SET_PATTERNS: Dict[str, str] = {
    "mito": r"^MT-",
    "ribo": r"^RP[SL](?!6K)(?!19BP)",
    "hemo": r"^(HB(A[12]?|B|D|E1|G[12]|M|Q1|Z)|HB[AB]-.+)$",
}

_SET_NAMES = {"mito": "mitochondrial", "ribo": "ribosomal protein", "hemo": "haemoglobin"}

_DESCRIPTION = {
    "library_size": "log1p(total counts)",
    "genes_detected": "log1p(genes detected)",
    "mito": "fraction of counts in MT- genes",
    "ribo": "fraction of counts in RPS/RPL genes",
    "hemo": "fraction of counts in haemoglobin genes",
    "doublet": "doublet score",
}

_TWO_TAILED = {"library_size", "genes_detected"}

_TRUE_WORDS = {"true", "t", "yes", "y", "1", "1.0", "fail", "failed", "low_quality", "low-quality",
               "lowquality", "low quality", "bad", "artifact", "artefact", "outlier"}
_FALSE_WORDS = {"false", "f", "no", "n", "0", "0.0", "pass", "passed", "ok", "good",
                "high_quality", "high-quality", "highquality", "high quality", "normal"}


@dataclass
class QCReport:
    """What :func:`compute_qc` did: thresholds, failing counts and skipped criteria.

    Attributes
    ----------
    n_cells : int
        Number of cells.
    nmads : float
        Number of (unscaled) MADs used for the automatic thresholds.
    criteria : list of str
        Criteria that ran, in order (``"doublet"`` last when doublet scores were given).
    thresholds : dict
        ``criterion -> group -> (lower, upper)`` on the metric's scale (see
        :attr:`descriptions`); ``lower`` is ``-inf`` for upper-tail criteria. Without ``groups``
        the only group is ``"all"``. A cell fails when its metric is ``< lower`` or ``> upper``.
    n_failing : dict
        ``criterion -> number of cells failing it`` (a cell may fail several).
    n_failing_total : int
        Number of cells failing at least one criterion.
    skipped : dict
        ``criterion -> reason`` for requested criteria that did not run.
    descriptions : dict
        ``criterion -> what its metric is``.
    groups : list of str or None
        Group labels when thresholds were computed within groups.
    notes : list of str
        Anything else worth knowing (zero-MAD fallbacks, user-given doublet threshold).
    failing : dict
        ``criterion -> bool[n_cells]`` per-criterion failure masks.
    metrics : dict
        ``criterion -> float[n_cells]`` per-cell metric values.
    """

    n_cells: int
    nmads: float
    criteria: List[str] = field(default_factory=list)
    thresholds: Dict[str, Dict[str, Tuple[float, float]]] = field(default_factory=dict)
    n_failing: Dict[str, int] = field(default_factory=dict)
    n_failing_total: int = 0
    skipped: Dict[str, str] = field(default_factory=dict)
    descriptions: Dict[str, str] = field(default_factory=dict)
    groups: Optional[List[str]] = None
    notes: List[str] = field(default_factory=list)
    failing: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    metrics: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def fraction_failing(self) -> float:
        """Fraction of cells failing at least one criterion."""
        return self.n_failing_total / self.n_cells if self.n_cells else 0.0

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable summary (no per-cell arrays; infinite bounds become ``None``)."""

        def bound(v: float) -> Optional[float]:
            return None if not np.isfinite(v) else float(v)

        return {
            "n_cells": self.n_cells,
            "nmads": self.nmads,
            "criteria": list(self.criteria),
            "thresholds": {c: {g: [bound(lo), bound(hi)] for g, (lo, hi) in per.items()}
                           for c, per in self.thresholds.items()},
            "n_failing": dict(self.n_failing),
            "n_failing_total": self.n_failing_total,
            "skipped": dict(self.skipped),
            "groups": None if self.groups is None else list(self.groups),
            "notes": list(self.notes),
        }

    def summary(self, max_groups: int = 4) -> str:
        """Short human-readable text: one line per criterion, then skipped criteria.

        Parameters
        ----------
        max_groups : int
            With per-group thresholds, show the bounds of at most this many groups per line.

        Returns
        -------
        str
            Multi-line text without a trailing newline.
        """
        pct = 100.0 * self.fraction_failing
        scope = ("global thresholds" if self.groups is None
                 else f"thresholds within each of {len(self.groups)} groups")
        lines = [f"QC: {self.n_failing_total} / {self.n_cells} cells ({pct:.2f}%) fail at least one "
                 f"criterion (median ± {self.nmads:g} unscaled MADs, {scope})"]
        width = max([len(c) for c in self.criteria] + [8])
        for crit in self.criteria:
            per = self.thresholds[crit]
            shown = [(g, b) for g, b in per.items()][:max_groups]
            parts = [_format_bounds(crit, lo, hi) if self.groups is None
                     else f"{g} {_format_bounds(crit, lo, hi)}" for g, (lo, hi) in shown]
            if len(per) > max_groups:
                parts.append(f"... ({len(per) - max_groups} more groups)")
            n = self.n_failing[crit]
            frac = 100.0 * n / self.n_cells if self.n_cells else 0.0
            lines.append(f"  {crit:<{width}}  {self.descriptions.get(crit, crit)}: "
                         f"{'; '.join(parts)} -> {n} cells fail ({frac:.2f}%)")
        for crit, reason in self.skipped.items():
            lines.append(f"  {crit:<{width}}  skipped: {reason}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _format_bounds(crit: str, lo: float, hi: float) -> str:
    if crit in ("library_size", "genes_detected"):
        # log1p scale: show raw numbers too
        raw_lo = "-" if not np.isfinite(lo) else f"{np.expm1(max(lo, 0.0)):.0f}"
        raw_hi = "-" if not np.isfinite(hi) else f"{np.expm1(hi):.0f}"
        return f"[{lo:.3f}, {hi:.3f}] (= {raw_lo}..{raw_hi})"
    if crit in ("mito", "ribo", "hemo"):
        return f"> {hi:.4f}"
    if np.isfinite(lo):
        return f"[{lo:.4g}, {hi:.4g}]"
    return f"> {hi:.4g}"


def gene_set_masks(genes: Sequence[str]) -> Dict[str, np.ndarray]:
    """Boolean masks over ``genes`` for the mitochondrial, ribosomal and haemoglobin sets.

    Parameters
    ----------
    genes : sequence of str
        Gene symbols.

    Returns
    -------
    dict
        ``{"mito": bool[G], "ribo": bool[G], "hemo": bool[G]}`` (see :data:`GENE_SET_PATTERNS`).
    """
    symbols = [str(g) for g in np.asarray(genes, dtype=object).ravel()]
    out = {}
    for name, pat in GENE_SET_PATTERNS.items():
        rx = re.compile(pat, flags=re.IGNORECASE)
        out[name] = np.fromiter((rx.search(g) is not None for g in symbols), dtype=bool, count=len(symbols))
    return out


def mad_bounds(values: np.ndarray, nmads: float, two_tailed: bool,
               min_diff: float = 0.0) -> Tuple[float, float, bool]:
    """Outlier bounds ``median ± max(nmads * MAD, min_diff)`` (unscaled MAD) of one set of values.

    Parameters
    ----------
    values : ndarray
        Metric values (finite).
    nmads : float
        Number of MADs.
    two_tailed : bool
        If False the lower bound is ``-inf``.
    min_diff : float
        Smallest allowed distance of a bound from the median.

    Returns
    -------
    lower, upper : float
        Bounds; a value fails when strictly outside them.
    fallback : bool
        True when the MAD was 0 and the mean absolute deviation from the median was used.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return -np.inf, np.inf, False
    med = float(np.median(values))
    dev = np.abs(values - med)
    spread = float(np.median(dev))
    fallback = False
    if spread == 0.0:
        spread = float(dev.mean())
        fallback = spread > 0.0
    width = max(nmads * spread, float(min_diff))
    lower = med - width if two_tailed else -np.inf
    upper = med + width
    return lower, upper, fallback


def _rows(X, start: int, stop: int) -> sp.csr_matrix:
    block = X[start:stop]
    if sp.issparse(block):
        return sp.csr_matrix(block)
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise DataError(f"row slice X[{start}:{stop}] has shape {arr.shape}; expected a 2-D [cells, genes] block")
    return sp.csr_matrix(arr)


def _count_metrics(X, n_genes: int, sets: Dict[str, np.ndarray], chunk_size: int) -> Dict[str, np.ndarray]:
    """Per-cell total counts, detected genes and per-set counts, in row chunks."""
    n_cells = int(X.shape[0])
    # one sparse product gives total and per-set sums: columns = [all, mito, ribo, hemo]
    names = list(sets)
    indicator = np.column_stack([np.ones(n_genes)] + [sets[s].astype(np.float64) for s in names])
    total = np.zeros(n_cells)
    detected = np.zeros(n_cells)
    set_counts = {s: np.zeros(n_cells) for s in names}
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        block = _rows(X, start, stop)
        if block.shape != (stop - start, n_genes):
            raise DataError(f"row slice X[{start}:{stop}] has shape {block.shape}; expected "
                            f"({stop - start}, {n_genes})")
        data = block.data
        if data.size:
            if not np.all(np.isfinite(data)):
                bad = int((~np.isfinite(data)).sum())
                raise DataError(f"count matrix has {bad} NaN/infinite values in rows {start}..{stop - 1}; "
                                "remove or impute them before QC")
            if data.min() < 0:
                row = start + int(np.searchsorted(block.indptr, int(np.argmax(data < 0)), side="right") - 1)
                raise DataError(f"count matrix has negative values (first in cell row {row}); QC needs raw "
                                "non-negative counts (give data.layer with raw counts, not scaled data)")
        block = block.astype(np.float64)
        sums = np.asarray(block @ indicator)
        total[start:stop] = sums[:, 0]
        for j, s in enumerate(names, start=1):
            set_counts[s][start:stop] = sums[:, j]
        detected[start:stop] = np.asarray((block > 0).sum(axis=1)).ravel()
    return {"total": total, "detected": detected, **set_counts}


def _group_codes(groups, n_cells: int) -> Tuple[np.ndarray, List[str]]:
    labels = pd.Series(np.asarray(groups, dtype=object).ravel())
    if len(labels) != n_cells:
        raise DataError(f"groups has {len(labels)} labels but X has {n_cells} cells; give one label per cell")
    if labels.isna().any():
        raise DataError(f"groups has {int(labels.isna().sum())} missing (NaN) labels; fill them "
                        "(e.g. with 'unknown') before QC")
    codes, uniques = pd.factorize(labels.astype(str), sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def compute_qc(
    X,
    genes: Sequence[str],
    groups: Optional[Sequence] = None,
    nmads: float = 3.0,
    criteria: Sequence[str] = CRITERIA,
    doublet_scores: Optional[Sequence[float]] = None,
    doublet_threshold: Optional[float] = None,
    chunk_size: int = 10000,
    *,
    min_fraction_diff: float = 0.01,
) -> Tuple[np.ndarray, QCReport]:
    """Flag low-quality (technical artifact) cells by MAD outliers of per-cell QC metrics.

    Parameters
    ----------
    X : scipy.sparse matrix, ndarray or row-sliceable matrix
        Raw counts ``[N, G]``. Anything with ``.shape`` whose ``X[start:stop]`` returns a sparse
        or dense block works (e.g. ``anndata.read_h5ad(path, backed="r").X``); rows are read
        ``chunk_size`` at a time, so a backed matrix is never loaded whole.
    genes : sequence of str
        Gene symbols ``[G]`` (e.g. ``adata.var_names``).
    groups : sequence, optional
        Per-cell labels (batch, replicate); thresholds are then computed within each group.
    nmads : float
        A cell fails a criterion when its metric is beyond ``median ± nmads * MAD`` (unscaled
        MAD; see the module docstring for the zero-MAD fallback).
    criteria : sequence of str
        Which of ``library_size``, ``genes_detected``, ``mito``, ``ribo``, ``hemo`` to apply.
        Gene-set criteria whose genes are not measured are skipped and reported.
    doublet_scores : sequence of float, optional
        Per-cell doublet scores (e.g. from scrublet); adds the ``doublet`` criterion.
    doublet_threshold : float, optional
        Cells with a score strictly above it fail. If None, the upper MAD bound (per group when
        ``groups`` is given) is used.
    chunk_size : int
        Rows read per chunk.
    min_fraction_diff : float
        For ``mito``/``ribo``/``hemo``, a cell fails only if its fraction is also more than this
        above the (group) median (scater's ``min.diff``); 0 gives the plain MAD rule.

    Returns
    -------
    qc_fail : ndarray of bool, shape [N]
        True for cells failing at least one criterion (low-quality / artifact cells).
    report : QCReport
        Thresholds, failing counts, skipped criteria; ``report.summary()`` for text.

    Raises
    ------
    DataError
        Negative / NaN counts, gene or group or score counts that do not match ``X``, unknown
        criteria, or a non-positive ``chunk_size`` / negative ``nmads``.
    """
    if not hasattr(X, "shape") or len(X.shape) != 2:
        raise DataError("X must be a 2-D [cells, genes] count matrix (scipy sparse, ndarray or a backed "
                        "anndata matrix)")
    n_cells, n_genes = int(X.shape[0]), int(X.shape[1])
    genes = [str(g) for g in np.asarray(genes, dtype=object).ravel()]
    if len(genes) != n_genes:
        raise DataError(f"genes has {len(genes)} symbols but X has {n_genes} columns; give one symbol per gene")
    if isinstance(criteria, str):
        criteria = (criteria,)
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise DataError(f"unknown QC criteria {unknown}; choose from {list(CRITERIA)} "
                        "(doublets are added by passing doublet_scores)")
    if int(chunk_size) < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size}")
    if not np.isfinite(nmads) or nmads < 0:
        raise DataError(f"nmads must be a finite non-negative number, got {nmads}")
    if not np.isfinite(min_fraction_diff) or not 0 <= min_fraction_diff < 1:
        raise DataError(f"min_fraction_diff must be in [0, 1), got {min_fraction_diff}")
    chunk_size = int(chunk_size)

    if groups is not None:
        codes, group_names = _group_codes(groups, n_cells)
    else:
        codes, group_names = np.zeros(n_cells, dtype=np.int64), ["all"]

    scores = None
    if doublet_scores is not None:
        scores = np.asarray(doublet_scores, dtype=np.float64).ravel()
        if scores.shape[0] != n_cells:
            raise DataError(f"doublet_scores has {scores.shape[0]} values but X has {n_cells} cells")
        if not np.all(np.isfinite(scores)):
            raise DataError(f"doublet_scores has {int((~np.isfinite(scores)).sum())} NaN/infinite values")

    sets = gene_set_masks(genes)
    counts = _count_metrics(X, n_genes, sets, chunk_size)
    total = counts["total"]
    safe_total = np.where(total > 0, total, 1.0)

    metrics: Dict[str, np.ndarray] = {}
    skipped: Dict[str, str] = {}
    for crit in CRITERIA:
        if crit not in criteria:
            continue
        if crit == "library_size":
            metrics[crit] = np.log1p(total)
        elif crit == "genes_detected":
            metrics[crit] = np.log1p(counts["detected"])
        else:
            n_set = int(sets[crit].sum())
            if n_set == 0:
                skipped[crit] = f"no {_SET_NAMES[crit]} genes among the measured genes"
                log.info("QC criterion %s skipped: %s", crit, skipped[crit])
                continue
            metrics[crit] = np.where(total > 0, counts[crit] / safe_total, 0.0)

    report = QCReport(n_cells=n_cells, nmads=float(nmads), skipped=skipped,
                      groups=None if groups is None else group_names)
    qc_fail = np.zeros(n_cells, dtype=bool)
    run: List[str] = list(metrics)
    if scores is not None:
        metrics["doublet"] = scores
        run.append("doublet")

    for crit in run:
        values = metrics[crit]
        fail = np.zeros(n_cells, dtype=bool)
        per_group: Dict[str, Tuple[float, float]] = {}
        floored: List[str] = []
        for k, name in enumerate(group_names):
            idx = np.flatnonzero(codes == k)
            if crit == "doublet" and doublet_threshold is not None:
                lo, hi, fallback = -np.inf, float(doublet_threshold), False
            else:
                min_diff = min_fraction_diff if crit in _SET_NAMES else 0.0
                lo, hi, fallback = mad_bounds(values[idx], nmads, two_tailed=crit in _TWO_TAILED,
                                              min_diff=min_diff)
                if min_diff > 0 and idx.size and hi - float(np.median(values[idx])) <= min_diff + 1e-15:
                    floored.append(name)
            where = "" if groups is None else f" in group {name}"
            if fallback:
                report.notes.append(f"{crit}{where}: MAD is 0, used the mean absolute deviation instead")
            per_group[name] = (float(lo), float(hi))
            v = values[idx]
            fail[idx] = (v < lo) | (v > hi)
        if floored:
            where = "" if groups is None else f" in {len(floored)} of {len(group_names)} groups"
            report.notes.append(f"{crit}{where}: upper bound raised to median + {min_fraction_diff:g} "
                                "(min_fraction_diff)")
        if crit == "doublet" and doublet_threshold is not None:
            report.notes.append(f"doublet: user-given threshold {float(doublet_threshold):g}")
        report.thresholds[crit] = per_group
        report.failing[crit] = fail
        report.n_failing[crit] = int(fail.sum())
        report.descriptions[crit] = _DESCRIPTION[crit]
        qc_fail |= fail

    report.criteria = run
    report.metrics = metrics
    report.n_failing_total = int(qc_fail.sum())
    log.info("QC: %d / %d cells fail at least one criterion (%s)", report.n_failing_total, n_cells,
             ", ".join(f"{c}={report.n_failing[c]}" for c in run))
    return qc_fail, report


def qc_from_column(obs: pd.DataFrame, column: str) -> np.ndarray:
    """Use an existing obs column as the per-cell QC label (True = low-quality / artifact cell).

    Parameters
    ----------
    obs : pandas.DataFrame
        Cell metadata (``adata.obs``).
    column : str
        Column holding the labels: bool; integers 0/1 (1 = fail); or strings, case-insensitive:
        ``true``/``false``, ``fail``/``pass``, ``low_quality``/``ok``, ``yes``/``no``,
        ``1``/``0`` (and a few synonyms: ``failed``, ``bad``, ``artifact``, ``outlier`` /
        ``passed``, ``good``, ``high_quality``, ``normal``).

    Returns
    -------
    ndarray of bool, shape [N]
        True where the cell fails QC.

    Raises
    ------
    DataError
        The column is missing (the available columns are listed), has missing values, or has
        values that cannot be read as pass/fail (up to 5 are shown).
    """
    if column not in obs.columns:
        cols = [str(c) for c in obs.columns]
        shown = ", ".join(cols[:20]) + (f", ... ({len(cols) - 20} more)" if len(cols) > 20 else "")
        raise DataError(f"QC label column '{column}' not found in obs; available columns: "
                        f"{shown or '(none)'}")
    series = obs[column]
    if series.isna().any():
        raise DataError(f"QC label column '{column}' has {int(series.isna().sum())} missing (NaN) values; "
                        "every cell needs a pass/fail label")
    values = series.to_numpy()
    if isinstance(series.dtype, pd.CategoricalDtype):
        values = series.astype(object).to_numpy()
    if values.dtype == bool:
        return values.astype(bool)
    if np.issubdtype(values.dtype, np.number):
        uniq = np.unique(values)
        bad = [v for v in uniq if v not in (0, 1)]
        if bad:
            raise DataError(f"QC label column '{column}' has numeric values other than 0/1: "
                            f"{_show(bad)}; use 1 (fail) / 0 (pass) or booleans")
        return values.astype(np.float64) == 1
    # object / string / categorical values: booleans and ints mixed with strings are allowed
    out = np.zeros(len(values), dtype=bool)
    bad: List[Any] = []
    lookup: Dict[Any, Optional[bool]] = {}
    for i, v in enumerate(values):
        if v not in lookup:
            lookup[v] = _word_to_bool(v)
            if lookup[v] is None:
                bad.append(v)
        flag = lookup[v]
        out[i] = bool(flag)
    if bad:
        raise DataError(f"QC label column '{column}' has unrecognised values {_show(bad)}; use booleans, "
                        "0/1, or pass/fail, ok/low_quality, true/false")
    return out


def _word_to_bool(v: Any) -> Optional[bool]:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer, float, np.floating)):
        return bool(v) if v in (0, 1) else None
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    word = str(v).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    return None


def _show(values: Sequence[Any], limit: int = 5) -> str:
    vals = list(values)
    text = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in vals[:limit])
    if len(vals) > limit:
        text += f", ... ({len(vals) - limit} more)"
    return f"[{text}]"
