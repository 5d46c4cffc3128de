"""Scoring a learned GRN against external references and against held-out perturbation data.

Four tools, all deterministic:

:func:`read_reference`
    Read a reference network (CausalBench ChIP-seq tables, CORUM complexes, ligand-receptor
    lists, any CSV/TSV edge list) into a de-duplicated ``DataFrame[source, target]`` of
    stripped, upper-cased gene symbols.
:func:`score_reference`
    Precision/recall, AUPRC, AUROC and early precision of a GRN's edge scores on the pairs the
    reference can speak to (the *evaluable-pair rule*, below).
:func:`causal_test`
    CausalBench-style statistical evaluation on held-out cells: does perturbing the regulator
    of a predicted edge ``a -> b`` shift the distribution of ``b``? (Mann-Whitney U with
    Benjamini-Hochberg correction, Wasserstein distance, false omission rate on random
    non-edges.)
:func:`correlation_grn`
    A |Pearson r| baseline GRN, scored the same way.

Evaluable-pair rule (:func:`score_reference`)
--------------------------------------------
A reference only lists the edges it found for the regulators it measured (a ChIP-seq table
has peaks for the profiled transcription factors only; a target gene that never appears may
simply not have been captured). So a learned edge ``s -> t`` with ``s != t`` is *evaluable*
when ``s`` is a **source** in the reference (a regulator the reference has data for) **and**
``t`` appears **anywhere** in the reference (as a target or as a source). Only evaluable edges
enter the metrics; a learned edge is *positive* when the reference has the directed pair
``(s, t)``. Gene names of the GRN are compared after ``strip().upper()``, like the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.stats
import scipy.special
import torch

from ..errors import DataError, GRNError
from ..grn import GRN
from ..utils import PathLike
from ..tables import read_header, read_table
from .grn import average_precision, roc_auc

__all__ = [
    "read_reference",
    "score_reference",
    "causal_test",
    "benjamini_hochberg",
    "correlation_grn",
    "perturbation_de_grn",
    "calibration",
]

logger = logging.getLogger(__name__)


#: (source, target) column names tried in this order, case-insensitively.
PAIR_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("source", "target"),
    ("tf", "target"),
    ("regulator", "target"),
    ("source_genesymbol", "target_genesymbol"),  # OmniPath
    ("ligand", "receptor"),
    ("ligand_gene_symbol", "receptor_gene_symbol"),  # Shao et al. 2020 (CellTalkDB)
    ("ligand_symbol", "receptor_symbol"),
    ("from", "to"),
)
#: columns holding a complex's member genes (CORUM), tried in this order, case-insensitively.
COMPLEX_COLUMNS: Tuple[str, ...] = ("genes", "subunits(gene name)", "subunits_gene_name")
COMPLEX_SEPARATOR = ";"


# ---------------------------------------------------------------------------------- reading
def _normalise(values: pd.Series) -> np.ndarray:
    """Strip and upper-case gene symbols (via categories: fast on millions of rows).
    Missing or empty symbols become None."""
    cat = values.astype("category")
    names = pd.Index(cat.cat.categories.astype(str)).str.strip().str.upper()
    table = np.asarray(names, dtype=object)
    table[table == ""] = None
    codes = cat.cat.codes.to_numpy()
    out = np.empty(len(codes), dtype=object)
    ok = codes >= 0
    out[ok] = table[codes[ok]]
    out[~ok] = None
    return out


def _pick(columns: Sequence[str], wanted: str) -> Optional[str]:
    """The column whose name equals ``wanted`` case-insensitively (after strip), else None."""
    lowered = {str(c).strip().lower(): c for c in columns}
    return lowered.get(wanted.strip().lower())


def read_reference(
    path: PathLike,
    source: Optional[str] = None,
    target: Optional[str] = None,
    sep: Optional[str] = None,
) -> pd.DataFrame:
    """Read a reference network as a de-duplicated ``DataFrame`` with columns
    ``source``, ``target`` (str).

    Supported layouts (column names matched case-insensitively):

    * an edge list with explicit ``source=`` / ``target=`` columns, or auto-detected pairs, tried
      in order: ``source/target``, ``tf/target``, ``regulator/target``,
      ``source_genesymbol/target_genesymbol``, ``ligand/receptor``,
      ``ligand_gene_symbol/receptor_gene_symbol``, ``ligand_symbol/receptor_symbol``,
      ``from/to``. The CausalBench ChIP-seq tables (``,target,weight,source``) and the
      Shao et al. 2020 ligand-receptor table are read this way;
    * a complex table (CORUM: a ``Genes`` or ``subunits(Gene name)`` column of
      ``;``-separated symbols): every ordered pair of distinct members of a complex, in both
      directions.

    Only the two gene columns are parsed (``usecols``), so gzipped tables with millions of rows
    read in seconds. Symbols are stripped and upper-cased; rows with a missing symbol and self
    pairs (``source == target``) are dropped, then duplicate pairs (first occurrence kept, file
    order). ``sep`` defaults to tab for ``.tsv/.tab/.txt`` and comma for ``.csv`` (compression
    suffixes ignored), else it is sniffed from the header.

    ``DataFrame.attrs`` records ``path``, ``layout`` (``"pairs"`` or ``"complexes"``),
    ``columns`` (the columns used), ``rows`` (data rows or complexes read), ``self_pairs``
    (dropped) and ``pairs`` (unique pairs returned).

    Raises
    ------
    GRNError
        When the file is missing or unreadable, or the gene columns cannot be found (the
        message names the file and its columns).
    """
    path = Path(path)
    if not path.exists():
        raise GRNError(f"reference network {str(path)!r} does not exist; check the path")
    where = f"reference network {str(path)!r}"
    header = read_header(path, sep, where)

    def missing(what: str) -> GRNError:
        return GRNError(
            f"reference network {str(path)!r}: {what}; available columns: {header}. Pass "
            "source=/target= column names, or use a file with source/target, TF/target, "
            "regulator/target, ligand/receptor or from/to columns (or CORUM 'Genes')"
        )

    if (source is None) != (target is None):
        raise missing("pass both source= and target= or neither")
    src_col = tgt_col = None
    complex_col = None
    if source is not None:
        src_col, tgt_col = _pick(header, source), _pick(header, target)
        if src_col is None or tgt_col is None:
            absent = [c for c, got in ((source, src_col), (target, tgt_col)) if got is None]
            raise missing(f"no column(s) {absent}")
    else:
        for want_src, want_tgt in PAIR_COLUMNS:
            src_col, tgt_col = _pick(header, want_src), _pick(header, want_tgt)
            if src_col is not None and tgt_col is not None:
                break
        else:
            src_col = tgt_col = None
            for want in COMPLEX_COLUMNS:
                complex_col = _pick(header, want)
                if complex_col is not None:
                    break
            if complex_col is None:
                raise missing("cannot find the source/target (or complex member) columns")

    genes = [src_col, tgt_col] if complex_col is None else [complex_col]
    frame = read_table(path, gene_columns=genes, usecols=genes, sep=sep, where=where)

    if complex_col is None:
        rows = len(frame)
        src = _normalise(frame[src_col])
        tgt = _normalise(frame[tgt_col])
        columns = [src_col, tgt_col]
        layout = "pairs"
    else:
        rows = len(frame)
        src_parts: List[np.ndarray] = []
        tgt_parts: List[np.ndarray] = []
        for members in frame[complex_col].dropna():
            genes = [g.strip().upper() for g in str(members).split(COMPLEX_SEPARATOR)]
            genes = np.asarray(list(dict.fromkeys(g for g in genes if g)), dtype=object)
            n = len(genes)
            if n < 2:
                continue
            i, j = np.nonzero(~np.eye(n, dtype=bool))
            src_parts.append(genes[i])
            tgt_parts.append(genes[j])
        empty = np.empty(0, dtype=object)
        src = np.concatenate(src_parts) if src_parts else empty
        tgt = np.concatenate(tgt_parts) if tgt_parts else empty
        columns = [complex_col]
        layout = "complexes"

    keep = pd.notna(src) & pd.notna(tgt)
    src, tgt = src[keep], tgt[keep]
    self_pair = src == tgt
    n_self = int(self_pair.sum())
    src, tgt = src[~self_pair], tgt[~self_pair]
    # de-duplicate on integer codes (much faster than on string tuples)
    codes, _ = pd.factorize(np.concatenate([src, tgt]))
    n = len(src)
    key = codes[:n].astype(np.int64) * (int(codes.max(initial=0)) + 1) + codes[n:]
    first = ~pd.Series(key).duplicated().to_numpy()
    out = pd.DataFrame({"source": src[first], "target": tgt[first]})
    out.attrs.update(
        path=str(path), layout=layout, columns=columns, rows=int(rows),
        self_pairs=n_self, pairs=int(len(out)),
    )
    return out


# ---------------------------------------------------------------------------------- helpers
def _edge_scores(grn: GRN, score: str, where: str) -> np.ndarray:
    attrs = grn.edge_attr
    if score not in attrs:
        raise GRNError(
            f"{where}: the GRN has no edge attribute {score!r}; available: {list(attrs)}"
        )
    values = attrs[score].detach().cpu().numpy().astype(np.float64)
    return values


def _rank_order(scores: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Indices sorting by score descending (NaN last), ties by source then target name."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((tgt, src, -s))


# ---------------------------------------------------------------------------------- scoring
def score_reference(
    grn: GRN,
    reference: pd.DataFrame,
    score: str = "probability",
    ks: Iterable[int] = (10, 50, 100),
    threshold: float = 0.5,
    complete: bool = False,
) -> Dict[str, Any]:
    """Score a GRN's edge scores against a reference network on evaluable pairs only.

    **Evaluable-pair rule**: a GRN edge ``s -> t`` (``s != t``; self loops are never scored) is
    evaluable when ``s`` is a source of ``reference`` (a regulator the reference has data for)
    and ``t`` appears anywhere in ``reference`` (as a target or a source). This is the usual
    way to avoid counting pairs the reference cannot speak to as false positives. With
    ``complete`` the reference is the whole truth (a simulator's GRN): every edge between two
    distinct nodes is evaluable, and one the reference lacks is a false positive. Gene names
    are matched after ``strip().upper()``. An evaluable edge is *positive* when the reference
    has the directed pair ``(s, t)``; precision and recall are over evaluable edges only
    (recall is relative to the positives among the GRN's evaluable edges, not to the whole
    reference; ``reference_pairs_among_nodes`` gives the number of reference pairs between
    nodes of the GRN for context).

    Ranking: by ``score`` descending, ties broken by source then target name (NaN scores
    rank last), so top-k sets are deterministic. A GRN that carries ``log_odds`` beside its
    ``probability`` (the learned GRN) is ranked by them when ``score`` is ``probability``: the
    same order, without the ties of probabilities that round to 1 (calibration still reads the
    probabilities). AUPRC (average precision) and AUROC group tied
    scores (see :func:`grnvae.evaluation.grn.average_precision`, :func:`roc_auc`).

    Parameters
    ----------
    grn : GRN with edge attribute ``score``.
    reference : DataFrame with ``source`` and ``target`` columns (e.g. from
        :func:`read_reference`).
    score : edge attribute to rank by (default ``"probability"``).
    ks : cut-offs for ``precision_at_{k}`` / ``recall_at_{k}``; with fewer than ``k`` evaluable
        edges the top-k set is all of them (precision is over ``min(k, n)`` edges).
    threshold : edges with ``score > threshold`` form the thresholded set.

    Returns
    -------
    dict (JSON-friendly: ints and floats, NaN where undefined):
        ``edges`` (GRN edges without self loops), ``evaluable_pairs``, ``positives``,
        ``reference_pairs``, ``reference_pairs_among_nodes``, ``auprc``, ``auprc_random``
        (= positives / evaluable_pairs), ``auroc``, ``precision_at_{k}``, ``recall_at_{k}``
        for each k, ``early_precision`` (precision at k = positives), and for the thresholded
        set ``threshold``, ``predicted`` (evaluable edges with score > threshold),
        ``precision`` (NaN when nothing is predicted), ``recall``, ``f1`` (= 2 TP / (predicted +
        positives), 0 when nothing is predicted but positives exist); for scores in [0, 1],
        ``ece`` and ``reliability`` (see :func:`calibration`); ``signed_accuracy`` and
        ``signed_edges``: among the true edges in the top k = positives, the fraction whose
        GRN ``weight`` has the reference's sign (NaN unless the GRN has a ``weight`` attribute
        and the reference a numeric ``weight`` column, e.g. a simulator's truth). GRN weights
        are read as the change of the target per unit *loss* of the regulator (grnvae's edge
        weights in knock-down and activation screens alike), so an activating reference edge
        (weight > 0) is signed right by a negative GRN weight.
    """
    if not isinstance(grn, GRN):
        raise GRNError(f"score_reference() takes a GRN, got {type(grn).__name__}")
    if not isinstance(reference, pd.DataFrame) or not {"source", "target"} <= set(reference):
        cols = list(reference.columns) if isinstance(reference, pd.DataFrame) else None
        raise GRNError(
            "score_reference(): reference must be a DataFrame with 'source' and 'target' "
            f"columns (got columns {cols}); read it with read_reference()"
        )
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise GRNError(f"score_reference(): ks must be positive integers, got {ks}")
    scores_all = _edge_scores(grn, score, "score_reference()")
    ranks_all = (_edge_scores(grn, "log_odds", "score_reference()")
                 if score == "probability" and "log_odds" in grn.edge_attr else scores_all)

    # integer ids over the normalised names of the GRN and the reference (hash-based)
    node_names = np.asarray([g.strip().upper() for g in grn.genes], dtype=object)
    ref_src = _normalise(reference["source"])
    ref_tgt = _normalise(reference["target"])
    ref_ok = pd.notna(ref_src) & pd.notna(ref_tgt)
    ids, vocab = pd.factorize(np.concatenate([node_names, ref_src[ref_ok], ref_tgt[ref_ok]]))
    vocab = np.asarray(vocab, dtype=object)
    n_vocab = len(vocab)
    name_rank = np.empty(n_vocab, dtype=np.int64)  # tie-breaking by name
    name_rank[np.argsort(vocab.astype(str), kind="mergesort")] = np.arange(n_vocab)
    v = len(node_names)
    node_id = ids[:v]
    r = int(ref_ok.sum())
    rs, rt = ids[v:v + r].astype(np.int64), ids[v + r:].astype(np.int64)
    not_self = rs != rt
    rs, rt = rs[not_self], rt[not_self]
    ref_keys = np.unique(rs * n_vocab + rt)
    ref_sign = None  # the reference's sign per key, where it gives one
    if "weight" in reference.columns:
        w = pd.to_numeric(reference["weight"], errors="coerce").to_numpy(np.float64)[np.asarray(ref_ok)][not_self]
        known = np.isfinite(w) & (w != 0)
        ref_sign = pd.Series(np.sign(w[known]), index=(rs * n_vocab + rt)[known])
        ref_sign = ref_sign[~ref_sign.index.duplicated()]
    is_source = np.zeros(n_vocab, dtype=bool)
    is_source[rs] = True
    in_ref = is_source.copy()
    in_ref[rt] = True
    in_grn = np.zeros(n_vocab, dtype=bool)
    in_grn[node_id] = True

    ei = grn.edge_index.numpy()
    es, et = node_id[ei[0]].astype(np.int64), node_id[ei[1]].astype(np.int64)
    loop = es == et
    es, et, scores, ranks = es[~loop], et[~loop], scores_all[~loop], ranks_all[~loop]
    evaluable = np.ones(len(es), dtype=bool) if complete else is_source[es] & in_ref[et]
    es, et, scores, ranks = es[evaluable], et[evaluable], scores[evaluable], ranks[evaluable]
    labels = np.isin(es * n_vocab + et, ref_keys)
    n, n_pos = int(len(scores)), int(labels.sum())

    order = _rank_order(ranks, name_rank[es], name_rank[et])
    ranked = labels[order]
    hits = np.cumsum(ranked)
    nan = float("nan")

    def at(k: int) -> Tuple[float, float]:
        if n == 0:
            return nan, nan
        kk = min(k, n)
        tp = int(hits[kk - 1])
        return tp / kk, (tp / n_pos if n_pos else nan)

    finite = np.where(np.isnan(ranks), -np.inf, ranks)
    out: Dict[str, Any] = {
        "edges": int((~loop).sum()),
        "evaluable_pairs": n,
        "positives": n_pos,
        "reference_pairs": int(len(ref_keys)),
        "reference_pairs_among_nodes": int(
            np.sum(in_grn[ref_keys // n_vocab] & in_grn[ref_keys % n_vocab])
        ),
        "auprc": average_precision(finite, labels) if n else nan,
        "auprc_random": n_pos / n if n else nan,
        "auroc": roc_auc(finite, labels) if n else nan,
    }
    for k in ks:
        out[f"precision_at_{k}"], out[f"recall_at_{k}"] = at(k)
    out["early_precision"] = at(n_pos)[0] if n_pos else nan
    out["signed_accuracy"], out["signed_edges"] = nan, 0
    if ref_sign is not None and "weight" in grn.edge_attr and n_pos:
        weight = _edge_scores(grn, "weight", "score_reference()")[~loop][evaluable]
        top = order[:n_pos]
        top = top[labels[top]]  # the true edges among the top k = positives
        truth = ref_sign.reindex(es[top] * n_vocab + et[top]).to_numpy()
        ok = np.isfinite(truth) & np.isfinite(weight[top]) & (weight[top] != 0)
        if ok.any():
            out["signed_accuracy"] = float(np.mean(-np.sign(weight[top][ok]) == truth[ok]))
            out["signed_edges"] = int(ok.sum())
    out.update(calibration(scores, labels))
    chosen = scores > threshold  # NaN compares False
    n_pred = int(chosen.sum())
    tp = int((chosen & labels).sum())
    precision = tp / n_pred if n_pred else nan
    recall = tp / n_pos if n_pos else nan
    f1 = 2 * tp / (n_pred + n_pos) if (n_pred + n_pos) else nan  # = 2TP / (2TP + FP + FN)
    out.update(threshold=float(threshold), predicted=n_pred, precision=precision,
               recall=recall, f1=f1)
    return out


# ---------------------------------------------------------------------------------- causal test
def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> Dict[str, Any]:
    """How far edge probabilities are from the fraction of true edges among the edges given them.

    Evaluable edges are grouped into ``bins`` equal-width bins of their score in [0, 1];
    ``reliability`` lists ``[low, high, edges, mean score, fraction true]`` per non-empty bin and
    ``ece`` (expected calibration error) is the edge-weighted mean of ``|mean score - fraction
    true|``: 0 for calibrated probabilities. Empty (``{}``) when a score lies outside [0, 1] or
    is NaN (not a probability) or there is no edge; read it against a complete truth, as a partial
    reference's "false" edges are only unknown.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if not len(scores) or np.isnan(scores).any() or scores.min() < 0 or scores.max() > 1:
        return {}
    which = np.minimum((scores * bins).astype(np.int64), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        at = which == b
        n = int(at.sum())
        if n:
            conf, frac = float(scores[at].mean()), float(labels[at].mean())
            table.append([b / bins, (b + 1) / bins, n, conf, frac])
            ece += n * abs(conf - frac)
    return {"ece": ece / len(scores), "reliability": table}


def perturbation_de_grn(
    cells_by_pert: Mapping[str, Any],
    controls: Any,
    genes: Sequence[str],
    nodes: Sequence[str],
    name: str = "perturbation_de",
) -> GRN:
    """The perturbation differential-expression baseline GRN: regulator ``a`` -> every measured
    gene, scored by how surely ``a``'s perturbation changes it.

    For every node ``a`` with cells in ``cells_by_pert`` (pass *training* cells) and every
    measured gene ``b != a``, Welch's t-test of ``b``'s expression in ``a``'s cells against the
    controls; p-values are Benjamini-Hochberg corrected over all pairs. Edge attributes:
    ``probability = 1 - q`` (a change called at FDR q has score 1 - q) and ``weight`` = the mean
    change. It calls indirect targets too (anything downstream changes), which is what a GRN
    method using the same perturbations should beat on direct edges.
    """
    genes = [str(g) for g in genes]
    nodes = [str(g) for g in nodes]
    gene_index = {g: i for i, g in enumerate(genes)}
    node_index = {g: i for i, g in enumerate(nodes)}
    src, tgt, pvals, delta = [], [], [], []
    measured = np.asarray([gene_index.get(n, -1) for n in nodes])
    targets = np.flatnonzero(measured >= 0)
    y = _columns(controls, measured[targets])  # the controls' measured columns, once
    y_stats = _moments(y)
    for a, cells in cells_by_pert.items():
        if a not in node_index or _n_rows_cols(cells)[0] < 2:
            continue
        x_stats = _moments(_columns(cells, measured[targets]))
        pvalue = welch_pvalues(x_stats, y_stats)
        keep = targets != node_index[a]  # no self loop
        src.append(np.full(int(keep.sum()), node_index[a]))
        tgt.append(targets[keep])
        pvals.append(np.where(np.isnan(pvalue), 1.0, pvalue)[keep])
        delta.append((x_stats[0] - y_stats[0])[keep])
    if src:
        src, tgt = np.concatenate(src), np.concatenate(tgt)
        q = benjamini_hochberg(np.concatenate(pvals))
        attrs = {"probability": 1.0 - q, "weight": np.concatenate(delta)}
    else:
        src = tgt = np.zeros(0, dtype=np.int64)
        attrs = {"probability": np.zeros(0), "weight": np.zeros(0)}
    order = np.lexsort((tgt, src))
    edge_index = torch.as_tensor(np.stack([src[order], tgt[order]]), dtype=torch.long)
    return GRN(nodes, edge_index, {k: torch.as_tensor(v[order], dtype=torch.float32) for k, v in attrs.items()},
               name=name)


def _moments(x: np.ndarray):
    """Column means, variances (ddof 1) and the row count of ``x`` ``[n, m]``."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(0), x.var(0, ddof=1), x.shape[0]


def welch_pvalues(x_stats, y_stats) -> np.ndarray:
    """Two-sided p-values of Welch's t-test per column from ``(mean, variance, n)`` of each group
    (as ``scipy.stats.ttest_ind(x, y, equal_var=False)``: NaN where both groups are the same
    constant, 0 where they are different constants),
    so that the controls' moments are computed once for every regulator."""
    (mx, vx, nx), (my, vy, ny) = x_stats, y_stats
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = vx / nx, vy / ny
        t = (mx - my) / np.sqrt(a + b)
        df = (a + b) ** 2 / (a ** 2 / (nx - 1) + b ** 2 / (ny - 1))
        # two constant groups with different means: t is infinite and the change certain
        return np.where(np.isinf(t), 0.0, 2.0 * scipy.special.stdtr(df, -np.abs(t)))


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), in input order
    (``scipy.stats.false_discovery_control``): ``q_(i) = min_{j >= i} m p_(j) / j`` over the
    p-values sorted ascending, capped at 1, with ``m`` the number of non-NaN p-values; NaN stays
    NaN. A test is significant at FDR ``alpha`` when ``q <= alpha``.
    """
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        q[ok] = false_discovery_control(p[ok], method="bh")
    return q


def _n_rows_cols(matrix: Any) -> Tuple[int, int]:
    shape = getattr(matrix, "shape", None)
    if shape is None or len(shape) != 2:
        raise DataError(f"causal_test(): expected a 2-D cells x genes matrix, got {type(matrix)}")
    return int(shape[0]), int(shape[1])


def _columns(matrix: Any, cols: np.ndarray) -> np.ndarray:
    """Dense float64 [n, len(cols)] of the given columns (CSC for sparse input)."""
    if sp.issparse(matrix):
        return np.asarray(matrix[:, cols].toarray(), dtype=np.float64)
    return np.asarray(np.asarray(matrix)[:, cols], dtype=np.float64)


def _test_pairs(
    pairs: Sequence[Tuple[str, str]],
    cells_by_pert: Mapping[str, Any],
    controls: Any,
    gene_index: Mapping[str, int],
    chunk: int = 256,
) -> pd.DataFrame:
    """Mann-Whitney U (two-sided) and Wasserstein distance of target expression in
    source-perturbed cells vs controls, for each (source, target) pair."""
    n = len(pairs)
    u = np.full(n, np.nan)
    p = np.full(n, np.nan)
    w = np.full(n, np.nan)
    by_source: Dict[str, List[int]] = {}
    for i, (a, _) in enumerate(pairs):
        by_source.setdefault(a, []).append(i)
    for a, rows in by_source.items():
        cells = cells_by_pert[a]
        if sp.issparse(cells):
            cells = sp.csc_matrix(cells)
        rows = np.asarray(rows)
        cols = np.asarray([gene_index[pairs[i][1]] for i in rows], dtype=np.int64)
        for start in range(0, len(rows), chunk):
            r, c = rows[start:start + chunk], cols[start:start + chunk]
            x = _columns(cells, c)
            y = _columns(controls, c)
            res = scipy.stats.mannwhitneyu(x, y, alternative="two-sided", axis=0)
            u[r] = res.statistic
            p[r] = res.pvalue
            for j, i in enumerate(r):
                w[i] = scipy.stats.wasserstein_distance(x[:, j], y[:, j])
    p = np.where(np.isnan(p), 1.0, p)  # no evidence either way (e.g. both samples constant)
    return pd.DataFrame({
        "source": [a for a, _ in pairs],
        "target": [b for _, b in pairs],
        "u_stat": u,
        "p_value": p,
        "wasserstein": w,
    })


def causal_test(
    grn: GRN,
    cells_by_pert: Mapping[str, Any],
    controls: Any,
    genes: Sequence[str],
    score: str = "probability",
    threshold: float = 0.5,
    top_k: Optional[int] = None,
    n_random: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> Tuple[Dict[str, Any], pd.DataFrame]:
    """CausalBench-style statistical evaluation of a GRN's edges on held-out cells.

    **The cells must be held out** (cells the model was not trained on); the caller guarantees
    this - the function cannot check it.

    Predicted edges: GRN edges ``a -> b`` with ``score > threshold`` (or, when ``top_k`` is
    given, the ``top_k`` highest-scoring *testable* edges, ties broken by source then target
    name), without self loops, restricted to *testable* edges: ``a`` has at least one cell in
    ``cells_by_pert`` and ``b`` is a measured gene (in ``genes``). Gene names are matched
    exactly (GRN names, perturbation keys and ``genes`` come from the same data set).

    For each predicted edge, gene ``b``'s expression in the ``a``-perturbed cells is compared
    with the control cells: two-sided Mann-Whitney U test (``scipy.stats.mannwhitneyu``; a NaN
    p-value, e.g. when both samples are constant, counts as 1) and 1-D Wasserstein distance
    (``scipy.stats.wasserstein_distance``). P-values are corrected with Benjamini-Hochberg
    across the tested edges; an edge is significant when ``q <= alpha``.

    False omission rate: up to ``n_random`` pairs ``(a, b)`` with ``a`` perturbed (a key of
    ``cells_by_pert`` with cells), ``b`` measured, ``a != b``, that are not predicted edges, are
    drawn uniformly without replacement (``numpy.random.default_rng(seed)``; all of them when
    there are fewer), tested the same way, with BH correction across the non-edges on their
    own. ``false_omission_rate`` = significant non-edges / tested non-edges.

    Parameters
    ----------
    grn : GRN with edge attribute ``score``.
    cells_by_pert : perturbation (gene name) -> cells x genes matrix (numpy or scipy sparse),
        columns in the order of ``genes``. Only the needed columns are densified.
    controls : control cells x genes matrix (numpy or scipy sparse), same columns.
    genes : measured gene names, the columns of all matrices.

    Returns
    -------
    (summary, edges) :
        ``summary`` - JSON-friendly dict: ``n_predicted`` (predicted edges before the
        testability restriction; with ``top_k``, the testable edges ranked), ``n_tested``,
        ``n_significant``, ``fraction_significant`` (after BH), ``fraction_significant_raw``
        (p <= alpha, uncorrected), ``mean_wasserstein``, ``n_non_edges_tested``,
        ``n_non_edges_significant``, ``false_omission_rate``, ``non_edge_mean_wasserstein``,
        ``non_edge_pairs`` (size of the pool sampled from), ``alpha``, ``threshold``,
        ``top_k``, ``n_random``, ``seed``; NaN where undefined.
        ``edges`` - DataFrame, one row per tested pair: ``source``, ``target``, ``u_stat``,
        ``p_value``, ``q_value``, ``wasserstein``, ``significant`` and ``predicted`` (True for
        predicted edges, sorted first in rank order; False for the random non-edges, sorted by
        source then target). ``q_value`` is BH within each group.
    """
    if not isinstance(grn, GRN):
        raise GRNError(f"causal_test() takes a GRN, got {type(grn).__name__}")
    if not 0 < alpha < 1:
        raise DataError(f"causal_test(): alpha must be in (0, 1), got {alpha}")
    if top_k is not None and int(top_k) < 0:
        raise DataError(f"causal_test(): top_k must be a non-negative integer, got {top_k}")
    genes = [str(g) for g in genes]
    gene_index = {g: i for i, g in enumerate(genes)}
    if len(gene_index) != len(genes):
        raise DataError("causal_test(): `genes` has duplicate names")
    n_genes = len(genes)
    n_ctrl, c_cols = _n_rows_cols(controls)
    if c_cols != n_genes:
        raise DataError(
            f"causal_test(): controls have {c_cols} columns but {n_genes} genes were given"
        )
    if n_ctrl == 0:
        raise DataError("causal_test(): no control cells")
    if sp.issparse(controls):
        controls = sp.csc_matrix(controls)
    perturbed = []
    for key in sorted(cells_by_pert):
        rows, cols = _n_rows_cols(cells_by_pert[key])
        if cols != n_genes:
            raise DataError(
                f"causal_test(): cells of perturbation {key!r} have {cols} columns but "
                f"{n_genes} genes were given"
            )
        if rows > 0:
            perturbed.append(str(key))
    perturbed_set = set(perturbed)

    # predicted (testable) edges in rank order
    scores = _edge_scores(grn, score, "causal_test()")
    names = np.asarray(grn.genes, dtype=object)
    ei = grn.edge_index.numpy()
    not_loop = ei[0] != ei[1]
    node_perturbed = np.fromiter((g in perturbed_set for g in grn.genes), bool, grn.num_nodes)
    node_measured = np.fromiter((g in gene_index for g in grn.genes), bool, grn.num_nodes)
    testable = not_loop & node_perturbed[ei[0]] & node_measured[ei[1]]
    gene_rank = np.empty(len(names), dtype=np.int64)  # tie-breaking by name
    gene_rank[np.argsort(names.astype(str), kind="mergesort")] = np.arange(len(names))
    order = _rank_order(scores, gene_rank[ei[0]], gene_rank[ei[1]])
    if top_k is None:
        chosen = not_loop & (scores > threshold)
        n_predicted = int(chosen.sum())
        picked = order[(chosen & testable)[order]]
    else:
        picked = order[testable[order]][: int(top_k)]
        n_predicted = len(picked)
    edge_pairs = [(str(names[ei[0, i]]), str(names[ei[1, i]])) for i in picked]
    predicted_set = set(edge_pairs)

    # random non-edges: flat index f -> (perturbed[f // G], genes[f % G])
    n_pert = len(perturbed)
    total = n_pert * n_genes
    n_self = sum(1 for a in perturbed if a in gene_index)
    pool = total - n_self - len(predicted_set)
    non_pairs: List[Tuple[str, str]] = []
    if n_random > 0 and pool > 0:
        rng = np.random.default_rng(seed)
        size = min(total, int(n_random) + n_self + len(predicted_set))
        for f in rng.choice(total, size=size, replace=False):
            a, b = perturbed[int(f) // n_genes], genes[int(f) % n_genes]
            if a == b or (a, b) in predicted_set:
                continue
            non_pairs.append((a, b))
            if len(non_pairs) == n_random:
                break
        non_pairs.sort()

    frames = []
    for pairs, flag in ((edge_pairs, True), (non_pairs, False)):
        frame = _test_pairs(pairs, cells_by_pert, controls, gene_index)
        frame["q_value"] = benjamini_hochberg(frame["p_value"].to_numpy())
        frame["significant"] = frame["q_value"].to_numpy() <= alpha
        frame["predicted"] = flag
        frames.append(frame)
    edges = pd.concat(frames, ignore_index=True)[
        ["source", "target", "u_stat", "p_value", "q_value", "wasserstein", "significant",
         "predicted"]
    ]
    pred, non = frames

    def mean(values: pd.Series) -> float:
        return float(values.mean()) if len(values) else float("nan")

    summary = {
        "n_predicted": int(n_predicted),
        "n_tested": int(len(pred)),
        "n_significant": int(pred["significant"].sum()),
        "fraction_significant": mean(pred["significant"].astype(float)),
        "fraction_significant_raw": mean((pred["p_value"] <= alpha).astype(float)),
        "mean_wasserstein": mean(pred["wasserstein"]),
        "n_non_edges_tested": int(len(non)),
        "n_non_edges_significant": int(non["significant"].sum()),
        "false_omission_rate": mean(non["significant"].astype(float)),
        "non_edge_mean_wasserstein": mean(non["wasserstein"]),
        "non_edge_pairs": int(max(pool, 0)),
        "alpha": float(alpha),
        "threshold": float(threshold),
        "top_k": None if top_k is None else int(top_k),
        "n_random": int(n_random),
        "seed": int(seed),
    }
    return summary, edges


# ---------------------------------------------------------------------------------- baseline
#: floats per block in correlation_grn (about 128 MiB of float64)
_BLOCK_FLOATS = 1 << 24


def correlation_grn(
    expression: Any,
    genes: Sequence[str],
    nodes: Sequence[str],
    k: Optional[int] = None,
    name: str = "correlation",
) -> GRN:
    """A |Pearson correlation| baseline GRN.

    For every ordered pair ``(i, j)``, ``i != j``, of ``nodes`` that are measured genes (in
    ``genes``), the edge score is ``|r|`` of their expression across the given cells (pass
    *training* cells only). The result is a :class:`GRN` over ``nodes`` (unmeasured nodes have
    no edges) with edge attribute ``probability`` = ``|r|`` in ``[0, 1]``, so it can go through
    :func:`score_reference` (with ``complete`` for a simulator's truth) and :func:`causal_test`.
    A gene with zero variance gets
    ``|r| = 0`` with every other gene.

    Parameters
    ----------
    expression : cells x genes matrix (numpy or scipy sparse), columns in ``genes`` order.
    genes : the column names.
    nodes : the GRN's nodes, in order.
    k : keep only the ``k`` highest-scoring edges overall (ties broken by source then target
        node index); default ``None`` keeps the complete graph over measured nodes, i.e.
        ``M (M - 1)`` edges for ``M`` measured nodes.

    Notes
    -----
    The correlation is computed in blocks of source genes against the genes after them (the
    upper triangle, mirrored, so ``|r|`` is exactly symmetric), so at most about 16 M floats of
    the M x M correlation matrix exist at a time (plus one float64 copy of the n x M expression
    matrix for dense input; sparse input stays sparse and only an n x block slice is
    densified). The complete graph itself holds ``M (M - 1)`` edges: fine up to M = 5000
    (25 M edges, roughly 0.5 GB); beyond that pass ``k``.
    """
    genes = [str(g) for g in genes]
    nodes = [str(g) for g in nodes]
    gene_index = {g: i for i, g in enumerate(genes)}
    if len(gene_index) != len(genes):
        raise DataError("correlation_grn(): `genes` has duplicate names")
    n_cells, n_cols = _n_rows_cols(expression)
    if n_cols != len(genes):
        raise DataError(
            f"correlation_grn(): expression has {n_cols} columns but {len(genes)} genes were given"
        )
    if k is not None and int(k) < 0:
        raise DataError(f"correlation_grn(): k must be a non-negative integer, got {k}")
    node_pos = np.asarray([i for i, g in enumerate(nodes) if g in gene_index], dtype=np.int64)
    cols = np.asarray([gene_index[nodes[i]] for i in node_pos], dtype=np.int64)
    m = len(cols)
    if k is None and m > 5000:
        logger.warning(
            "correlation_grn(): complete graph over %d measured nodes has %d edges; pass k= to "
            "keep only the top edges", m, m * (m - 1),
        )
    if m < 2 or n_cells < 2:
        return GRN(nodes, np.zeros((2, 0), dtype=np.int64), {"probability": np.zeros(0)},
                   name=name)

    if sp.issparse(expression):
        x = sp.csc_matrix(expression)[:, cols].astype(np.float64)
        mean = np.asarray(x.mean(axis=0)).ravel()
        sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
        var = np.maximum(sq - mean**2, 0.0)
    else:
        x = np.array(np.asarray(expression)[:, cols], dtype=np.float64)  # own copy
        mean = x.mean(axis=0)
        x -= mean  # centred: exact products below
        var = x.var(axis=0)
        mean = np.zeros(m)
    sd = np.sqrt(var)
    sd_safe = np.where(sd > 0, sd, 1.0)
    block = max(1, min(m, _BLOCK_FLOATS // max(n_cells, m)))

    src_parts: List[np.ndarray] = []
    tgt_parts: List[np.ndarray] = []
    val_parts: List[np.ndarray] = []
    kept = 0
    for start in range(0, m, block):
        stop = min(m, start + block)
        xb = x[:, start:stop]
        xb = xb.toarray() if sp.issparse(xb) else xb
        zb = (xb - mean[start:stop]) / sd_safe[start:stop]  # n x b, centred, scaled
        # upper triangle only (targets j >= start), mirrored below: |r| is exactly symmetric.
        # sum_c z_ci x_cj = n r_ij sd_j; x need not be centred since z_i sums to ~0 (dense x is
        # centred anyway).
        rest = x[:, start:]
        prod = (rest.T @ zb).T if sp.issparse(rest) else zb.T @ rest  # b x (M - start)
        r = np.abs(np.asarray(prod) / (n_cells * sd_safe[None, start:]))
        r[:, sd[start:] == 0] = 0.0
        r[sd[start:stop] == 0, :] = 0.0
        np.clip(r, 0.0, 1.0, out=r)
        upper = np.arange(m - start)[None, :] > np.arange(stop - start)[:, None]
        bi, bj = np.nonzero(upper)
        vals = r[bi, bj].astype(np.float32)  # the stored precision: ranks match stored scores
        bi, bj = bi + start, bj + start
        bi, bj = np.concatenate([bi, bj]), np.concatenate([bj, bi])
        vals = np.concatenate([vals, vals])
        if k is not None:
            if len(vals) > k:
                # all values >= the k-th largest (ties included), then a total order
                kth = np.partition(vals, len(vals) - k)[len(vals) - k] if k else np.inf
                sel = vals >= kth
                bi, bj, vals = bi[sel], bj[sel], vals[sel]
            src_parts.append(bi)
            tgt_parts.append(bj)
            val_parts.append(vals)
            kept += len(vals)
            if kept > 2 * max(int(k), 1) or start + block >= m:
                si, ti, vv = (np.concatenate(p) for p in (src_parts, tgt_parts, val_parts))
                top = np.lexsort((ti, si, -vv))[: int(k)]
                src_parts, tgt_parts, val_parts = [si[top]], [ti[top]], [vv[top]]
                kept = len(top)
        else:
            src_parts.append(bi)
            tgt_parts.append(bj)
            val_parts.append(vals)
    si = np.concatenate(src_parts) if src_parts else np.zeros(0, dtype=np.int64)
    ti = np.concatenate(tgt_parts) if tgt_parts else np.zeros(0, dtype=np.int64)
    vv = np.concatenate(val_parts) if val_parts else np.zeros(0, dtype=np.float32)
    edge_index = np.stack([node_pos[si], node_pos[ti]])
    return GRN(nodes, edge_index, {"probability": vv}, name=name)
