"""Scoring perturbation-response predictions against held-out effects, and the reference's ceiling.

An *effect* of a perturbation is its mean change from control in log-normalised space, over genes::

    delta = mean(lognorm x of the perturbation's held-out cells) - mean(lognorm x of held-out controls)

a vector over G genes. Predictions (a model's or a baseline's, see :mod:`.baselines`) are delta
vectors too. Everything here is plain numpy/pandas.

* :func:`effect_metrics` scores one predicted delta against one observed delta;
* :func:`score_effects` scores genes x perturbations frames, adds ``discrimination`` (which
  compares each prediction with every scored perturbation's observation) and pools over
  perturbations;
* :func:`split_half_ceiling` estimates how well the held-out reference agrees with itself, i.e.
  what an ideal predictor could score against it given its finite number of cells.
"""

from __future__ import annotations

import zlib
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError

#: the per-perturbation metrics, in the column order of :func:`score_effects`' frame
METRICS = (
    "pearson_delta",
    "pearson_delta_top20",
    "pearson_systema",
    "r2_delta",
    "mse",
    "direction_acc_top20",
    "jaccard_top20",
    "jaccard_top50",
    "discrimination",
)

#: the metrics of one prediction against one observation (:func:`effect_metrics`): all of
#: :data:`METRICS` but ``discrimination``, which compares a prediction with the observations of
#: the other scored perturbations too (:func:`score_effects`)
EFFECT_METRICS = tuple(m for m in METRICS if m != "discrimination")

_CORRELATIONS = ("pearson_delta", "pearson_delta_top20", "pearson_systema")


# --------------------------------------------------------------------------------------------
# one prediction against one observation
# --------------------------------------------------------------------------------------------


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either vector is constant (or has fewer than 2 entries)."""
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc = x - x.mean()
    yc = y - y.mean()
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if denom == 0:  # pragma: no cover - guarded by ptp above; underflow only
        return float("nan")
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k entries of largest |x|, ties broken by lower index first (deterministic).

    A stable sort of ``-|x|``; ``k`` is clipped to ``len(x)``.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.argsort(-np.abs(x), kind="stable")[: min(int(k), x.size)]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return float(len(sa & sb) / len(union)) if union else float("nan")


def _as_vector(x, name: str, where: str = "effect_metrics") -> np.ndarray:
    if sp.issparse(x):
        x = x.toarray()
    v = np.asarray(x, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:
        v = v.ravel()
    if v.ndim != 1:
        raise DataError(f"{where}: {name} must be a vector over genes, got shape {v.shape}")
    if v.size == 0:
        raise DataError(f"{where}: {name} is empty (no genes)")
    return v


def effect_metrics(pred, obs, top: int = 20, ref=None) -> Dict[str, float]:
    """Score one predicted delta (vector over genes) against one observed delta.

    With ``T`` the ``top`` genes of largest ``|obs|`` (ties: lower gene index first, see
    :func:`top_k`; ``top`` is clipped to the number of genes):

    * ``pearson_delta``: Pearson r of pred vs obs over all genes;
    * ``pearson_delta_top20``: Pearson r of pred vs obs over the genes in ``T``;
    * ``pearson_systema``: Pearson r of ``pred - ref`` vs ``obs - ref`` over all genes, where
      ``ref`` (a vector over the same genes) is the mean perturbed effect, e.g. the mean of the
      training perturbations' deltas (:func:`.baselines.mean_effect`; never from the cells scored
      against). Centring on it removes the response shared by all perturbations, which
      ``pearson_delta`` rewards (Systema, Vinas Torne et al. 2025), so this asks whether the
      prediction gets what is *specific* to the perturbation. NaN when ``ref`` is None, holds a
      non-finite value, or either centred vector is constant (e.g. the mean-effect baseline
      itself, whose centred prediction is zero);
    * ``r2_delta``: coefficient of determination of pred *as a prediction of* obs (no refitting),
      ``1 - sum((obs - pred)^2) / sum((obs - mean(obs))^2)`` over all genes; can be negative;
    * ``mse``: ``mean((pred - obs)^2)`` over all genes;
    * ``direction_acc_top20``: fraction of genes in ``T`` with ``sign(pred) == sign(obs)``, where
      ``sign`` is -1, 0 or +1: an exact zero is its own sign (a zero prediction is a wrong
      direction for a non-zero observation, and right only for an exactly-zero observation);
    * ``jaccard_top20`` / ``jaccard_top50``: Jaccard index ``|A & B| / |A | B|`` between the sets
      of the ``top`` (resp. 50) genes of largest ``|pred|`` and of largest ``|obs|``.

    The key names are fixed (they are :data:`EFFECT_METRICS`: :data:`METRICS` but
    ``discrimination``, which needs the other perturbations, see :func:`score_effects`); ``top`` changes the ``*_top20`` metrics
    and ``jaccard_top20`` (``jaccard_top50`` always uses 50). A Jaccard index is NaN when ``k``
    covers every gene (both sets would be all genes, 1 for any prediction) or either vector is
    constant (e.g. the no-change baseline: its top set would be the tie-break order).

    Undefined values are NaN, never an exception: Pearson r when either vector is constant over
    the genes considered (zero variance, e.g. the no-change baseline), ``r2_delta`` when obs is
    constant. If pred or obs holds any non-finite value (e.g. a baseline undefined for this
    perturbation), every metric is NaN.
    """
    p = _as_vector(pred, "pred")
    o = _as_vector(obs, "obs")
    if p.shape != o.shape:
        raise DataError(f"effect_metrics: pred has {p.size} genes but obs has {o.size}")
    r = None
    if ref is not None:
        r = _as_vector(ref, "ref")
        if r.shape != o.shape:
            raise DataError(f"effect_metrics: ref has {r.size} genes but obs has {o.size}")
    if not (np.isfinite(p).all() and np.isfinite(o).all()):
        return {m: float("nan") for m in EFFECT_METRICS}
    systema = _pearson(p - r, o - r) if (r is not None and np.isfinite(r).all()) else float("nan")
    t_obs = top_k(o, top)
    resid = o - p
    ss_res = float(np.dot(resid, resid))
    oc = o - o.mean()
    ss_tot = float(np.dot(oc, oc))
    return {
        "pearson_delta": _pearson(p, o),
        "pearson_delta_top20": _pearson(p[t_obs], o[t_obs]),
        "pearson_systema": systema,
        "r2_delta": (1.0 - ss_res / ss_tot) if (ss_tot > 0 and np.ptp(o) > 0) else float("nan"),
        "mse": ss_res / o.size,
        "direction_acc_top20": float(np.mean(np.sign(p[t_obs]) == np.sign(o[t_obs]))),
        "jaccard_top20": _top_overlap(p, o, top),
        "jaccard_top50": _top_overlap(p, o, 50),
    }


def _top_overlap(p: np.ndarray, o: np.ndarray, k: int) -> float:
    """Jaccard index of the ``k`` genes of largest ``|p|`` and of largest ``|o|``; NaN when it
    says nothing: ``k`` covers every gene (both sets are all genes) or either vector is constant
    (its top set is only the tie-break order)."""
    if k >= p.size or np.ptp(p) == 0 or np.ptp(o) == 0:
        return float("nan")
    return _jaccard(top_k(p, k), top_k(o, k))


def discrimination(pred, obs) -> np.ndarray:
    """Per-perturbation discrimination score: is a prediction closest to its own observation?

    ``pred`` and ``obs`` are genes x perturbations arrays (or frames, taken as arrays: columns
    aligned, the same perturbation in column j of both). With ``d(p, q)`` the Euclidean distance
    over all genes between ``pred[:, p]`` and ``obs[:, q]``, and n the number of perturbations
    taking part, perturbation p scores::

        1 - (#{q != p : d(p, q) < d(p, p)} + 0.5 #{q != p : d(p, q) == d(p, p)}) / (n - 1)

    i.e. one minus the fraction of the other perturbations' observations that are closer to p's
    prediction than p's own observation (ties count half): 1 = its own observed effect is the
    closest, 0 = the farthest, 0.5 = chance. This is the rank-based discrimination score of
    cell-eval and PerturBench (Wu et al. 2024), as 1 - normalised rank. A prediction that is the
    same for every perturbation (no-change, mean-effect baselines) scores 0.5 on average over the
    perturbations, whatever the observations.

    Only perturbations whose pred and obs columns are all finite take part (n counts them; the
    others get NaN); with fewer than 2 taking part every score is NaN. The score depends on
    which perturbations are compared (more, or more similar, perturbations make it harder), so
    compare methods over the same perturbations.
    """
    P = np.asarray(pred, dtype=np.float64)
    O = np.asarray(obs, dtype=np.float64)
    if P.ndim != 2 or P.shape != O.shape:
        raise DataError(
            f"discrimination: pred and obs must be genes x perturbations of one shape, got {P.shape} and {O.shape}"
        )
    out = np.full(P.shape[1], np.nan)
    idx = np.flatnonzero(np.isfinite(P).all(axis=0) & np.isfinite(O).all(axis=0))
    n = idx.size
    if n < 2:
        return out
    Pf, Of = P[:, idx], O[:, idx]
    sq_o = np.einsum("gi,gi->i", Of, Of)
    # squared distances of each prediction to every observation, |p|^2 + |o|^2 - 2 p.o (the same
    # order as the distances), one product for a block of predictions at a time: O(n^2 G) in BLAS
    for a in range(0, n, 1024):
        b = min(a + 1024, n)
        block = Pf[:, a:b]
        d = np.einsum("gi,gi->i", block, block)[:, None] + sq_o[None, :] - 2.0 * (block.T @ Of)
        own = d[np.arange(b - a), np.arange(a, b)][:, None]
        closer = np.count_nonzero(d < own, axis=1)
        ties = np.count_nonzero(d == own, axis=1) - 1  # not itself
        out[idx[a:b]] = 1.0 - (closer + 0.5 * ties) / (n - 1)
    return out


# --------------------------------------------------------------------------------------------
# genes x perturbations frames
# --------------------------------------------------------------------------------------------


def _names(items, limit: int = 10) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _check_frame(df: pd.DataFrame, name: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"score_effects: {name} must be a pandas DataFrame (genes x perturbations)")
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise DataError(f"score_effects: {name} is empty (shape {df.shape}); expected genes x perturbations")
    if df.index.has_duplicates:
        raise DataError(f"score_effects: {name} has duplicate genes: {_names(df.index[df.index.duplicated()].unique())}")
    if df.columns.has_duplicates:
        raise DataError(
            f"score_effects: {name} has duplicate perturbations: {_names(df.columns[df.columns.duplicated()].unique())}"
        )


def _summary(frame: pd.DataFrame) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for m in METRICS:
        col = frame[m].to_numpy(dtype=np.float64)
        out[m] = float(np.nanmean(col)) if np.isfinite(col).any() else float("nan")
    out["n_perturbations"] = int(frame.shape[0])
    out["n_undefined"] = int(frame[list(METRICS)].isna().all(axis=1).sum())
    return out


def _ref_vector(ref, genes: pd.Index, where: str) -> Optional[np.ndarray]:
    """``ref`` as a float vector in the order of ``genes``: a Series (or one-column frame) is
    aligned on its gene index, anything else must already be a vector over ``genes``."""
    if ref is None:
        return None
    if isinstance(ref, pd.DataFrame):
        if ref.shape[1] != 1:
            raise DataError(f"{where}: ref must be one vector over genes, got a frame with {ref.shape[1]} columns")
        ref = ref.iloc[:, 0]
    if isinstance(ref, pd.Series):
        if ref.index.has_duplicates:
            raise DataError(f"{where}: ref has duplicate genes: {_names(ref.index[ref.index.duplicated()].unique())}")
        missing = genes.difference(ref.index)
        if len(missing):
            raise DataError(f"{where}: ref lacks {len(missing)} genes of obs: [{_names(missing)}]")
        return ref.reindex(genes).to_numpy(dtype=np.float64)
    v = _as_vector(ref, "ref", where)
    if v.size != len(genes):
        raise DataError(f"{where}: ref has {v.size} genes but obs has {len(genes)}")
    return v


def score_effects(
    pred: pd.DataFrame, obs: pd.DataFrame, ref=None
) -> Tuple[pd.DataFrame, Dict[str, float]]:
    """Score predicted against observed deltas, per perturbation and pooled.

    ``pred`` and ``obs`` are genes x perturbations frames (index genes, columns perturbations).
    Both must hold the same set of genes (order may differ: pred is aligned on obs' gene order);
    otherwise a :class:`~grnvae.errors.DataError` names the genes missing from each. Only the
    perturbations present in both are scored, in obs' column order (so compare methods on the
    same columns; ``n_perturbations`` says how many were scored).

    ``ref`` is the mean perturbed effect that ``pearson_systema`` centres on (see
    :func:`effect_metrics`): a pandas Series indexed by gene (aligned on obs' genes; it must
    cover them all), or a vector in obs' gene order. In :func:`.evaluate.evaluate` it is the mean
    of the training perturbations' deltas (:func:`.baselines.mean_effect`), never computed from
    the cells scored against. Without ``ref``, ``pearson_systema`` is NaN.

    Returns ``(frame, summary)``:

    * ``frame``: rows perturbations, columns :data:`METRICS`: :func:`effect_metrics` and
      ``discrimination`` from :func:`discrimination`, computed across the scored perturbations
      whose pred and obs are finite (NaN for the others, and for all with fewer than 2 of them);
    * ``summary``: for each metric, the mean over perturbations ignoring NaN (a perturbation whose
      metric is undefined does not count for that metric); ``n_perturbations`` (scored);
      ``n_undefined`` (perturbations whose metrics are all NaN because pred or obs held a
      non-finite value, e.g. a baseline not defined for them: the means exclude these, so read
      them together with this count); and ``pearson_delta_pooled``: one Pearson r over all
      (gene, perturbation) entries of the perturbations with finite pred and obs, concatenated.
      The pooled r also rewards getting the relative *size* of effects across perturbations right
      (strong perturbations dominate it), unlike the per-perturbation mean. The mean
      ``discrimination`` of a prediction that is the same for every perturbation is 0.5.
    """
    _check_frame(pred, "pred")
    _check_frame(obs, "obs")
    genes_obs, genes_pred = pd.Index(obs.index), pd.Index(pred.index)
    if not genes_obs.equals(genes_pred) and set(genes_obs) != set(genes_pred):
        only_obs = genes_obs.difference(genes_pred)
        only_pred = genes_pred.difference(genes_obs)
        raise DataError(
            "score_effects: pred and obs must hold the same genes; "
            f"in obs but not pred: [{_names(only_obs)}]; in pred but not obs: [{_names(only_pred)}]"
        )
    pred_cols = set(pred.columns)
    perts = [p for p in obs.columns if p in pred_cols]
    if not perts:
        raise DataError(
            "score_effects: pred and obs share no perturbation; "
            f"obs has [{_names(obs.columns)}], pred has [{_names(pred.columns)}]"
        )
    r = _ref_vector(ref, genes_obs, "score_effects")
    o = obs.loc[:, perts].to_numpy(dtype=np.float64)
    p = pred.reindex(index=genes_obs).loc[:, perts].to_numpy(dtype=np.float64)
    rows = [effect_metrics(p[:, j], o[:, j], ref=r) for j in range(len(perts))]
    frame = pd.DataFrame(rows, index=pd.Index(perts, name="perturbation"), columns=list(METRICS))
    frame["discrimination"] = discrimination(p, o)
    summary = _summary(frame)
    finite = np.isfinite(p).all(axis=0) & np.isfinite(o).all(axis=0)
    summary["pearson_delta_pooled"] = (
        _pearson(p[:, finite].ravel(), o[:, finite].ravel()) if finite.any() else float("nan")
    )
    return frame, summary


# --------------------------------------------------------------------------------------------
# the reference's own reliability
# --------------------------------------------------------------------------------------------


def _spearman_brown(r: float) -> float:
    """``2 r / (1 + r)``, clipped to [-1, 1] (it leaves [-1, 1] for r < -1/3); NaN stays NaN."""
    if not np.isfinite(r):
        return float("nan")
    if r <= -1.0:
        return -1.0
    return float(np.clip(2.0 * r / (1.0 + r), -1.0, 1.0))


def _row_mean(x, idx: np.ndarray) -> np.ndarray:
    """Mean of rows ``idx`` of a dense or scipy-sparse matrix, as a dense float64 vector."""
    sub = x[idx]
    if sp.issparse(sub):
        return np.asarray(sub.mean(axis=0), dtype=np.float64).ravel()
    return np.asarray(sub, dtype=np.float64).mean(axis=0)


def _halves(rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    return perm[: n // 2], perm[n // 2 :]


def _pert_seed(seed: int, split: int, name: str) -> np.random.Generator:
    # a perturbation's split depends on (seed, split, its name) only, not on the dict's order
    return np.random.default_rng([int(seed), int(split), 1, zlib.crc32(str(name).encode("utf-8"))])


def split_half_ceiling(
    cells_by_pert: Mapping[str, np.ndarray],
    controls,
    seed: int = 0,
    n_splits: int = 5,
    ref=None,
) -> Tuple[pd.DataFrame, Dict[str, float]]:
    """Reliability ceiling of the held-out reference deltas, by repeated split halves.

    Inputs: ``cells_by_pert[p]`` is the ``[n_p, G]`` log-normalised held-out expression of
    perturbation p's cells, ``controls`` the ``[m, G]`` held-out control cells (dense or scipy
    sparse; a perturbation's matrix is densified on its own, controls are averaged without
    densifying). The reference a prediction is scored against is the full-size delta
    ``D = mean(cells_p) - mean(controls)``.

    Estimator. For each of ``n_splits`` seeded random splits s, the controls are split at random
    into halves ``C_A, C_B`` (sizes ``floor(m/2)``, ``ceil(m/2)``; one control split per s, shared
    by all perturbations, as all perturbations share one control mean in D) and each
    perturbation's cells into halves ``P_A, P_B`` likewise (seeded by seed, s and the
    perturbation's name, so independent of dict order). Then ``delta_A = mean(P_A) - mean(C_A)``,
    ``delta_B = mean(P_B) - mean(C_B)`` and ``effect_metrics(delta_A, delta_B, ref=ref)``
    (delta_B in the role of obs). ``ref`` is the mean perturbed effect ``pearson_systema`` centres
    on (as in :func:`score_effects`, from training cells, not from these), a vector over the G
    genes in the cells' column order (a Series is taken in its order, unaligned); without it
    ``pearson_systema`` is NaN. Per perturbation, over the splits:

    * ``pearson_delta``, ``pearson_delta_top20``, ``pearson_systema``: the half-vs-half r
      (for ``pearson_systema``, of ``delta_A - ref`` vs ``delta_B - ref``) averaged over splits, then
      Spearman-Brown corrected to full size, ``rel = 2 r / (1 + r)`` (clipped to [-1, 1]): the
      *reliability* ``corr(D, D')`` between the reference and an independent replicate of it with
      as many cells. The ceiling reported is ``sqrt(max(rel, 0))``: the correlation a noise-free
      prediction of the true effect T is expected to reach against D (classical test theory:
      ``corr(T, T + E)^2 = corr(T + E, T + E') = rel``), i.e. the best score the reference's noise
      allows. The summary also gives ``reliability_pearson_delta`` (the mean of rel). For the
      top-20 variant the gene set is chosen on the noisy delta_B, so it is approximate.
    * ``mse``: the expected squared error, per gene, of the full-size reference around the true
      effect, ``E[(D - truth)^2] = s_p^2 / n + s_c^2 / m`` averaged over genes (s_p^2, s_c^2: the
      per-gene cell variances of the perturbation and the controls). This is exactly the MSE a
      perfect predictor of the true effect is expected to get against D; any prediction that does
      not use the held-out cells is expected to get ``||pred - truth||^2 / G`` more. Derivation:
      the mean of k cells has variance s^2 / k, so a half of n cells (n/2) has twice the variance
      of the full mean; delta_A - delta_B is a difference of independent halves, so
      ``Var(delta_A - delta_B) = 2 * 2 (s_p^2/n + s_c^2/m) = 4 Var(D)`` and
      ``E[(delta_A - delta_B)^2] / 4 = E[(D - truth)^2]``. The estimator used is this, made exact
      for odd sizes by weighting the perturbation and control parts separately::

          mse = mean_g[ (n_A n_B / n^2) (mean(P_A) - mean(P_B))^2 + (m_A m_B / m^2) (mean(C_A) - mean(C_B))^2 ]

      (``E[(mean(P_A) - mean(P_B))^2] = s_p^2 (1/n_A + 1/n_B) = s_p^2 n / (n_A n_B)``, so each
      weighted term is unbiased for s_p^2 / n resp. s_c^2 / m; for even n and m the weights are
      1/4 and the estimator is the half-vs-half MSE / 4 with the perturbation-control cross term,
      whose expectation is zero, left out), averaged over splits.
    * ``r2_delta``: ``1 - mse / var_g(D)`` with ``var_g(D)`` the variance over genes of the
      full-size observed delta (ddof 0): the plug-in estimate of the R^2 that the true effect
      would get against D (``r2 = 1 - MSE / var_g(obs)`` is how ``r2_delta`` is defined).
    * ``direction_acc_top20``, ``jaccard_top20``, ``jaccard_top50``: as observed between the two
      halves, averaged over splits, with no correction. Each half is noisier than D, so these
      understate what an ideal predictor would get against D: they are lower bounds on the
      ceiling (conservative as "the reference agrees with itself at least this well"; a model
      may exceed them).
    * ``discrimination``: :func:`discrimination` with the delta_A of every perturbation (with
      >= 4 cells) as the predictions and their delta_B as the observations, within each split,
      averaged over splits; uncorrected, so a lower bound like the Jaccard ones (NaN with fewer
      than 2 such perturbations).

    Perturbations with fewer than 4 cells get NaN in every metric. Fewer than 4 control cells, no
    perturbation, or mismatched gene counts raise :class:`~grnvae.errors.DataError`.

    Returns ``(frame, summary)`` as :func:`score_effects`: rows perturbations, columns
    :data:`METRICS`; the summary holds nan-aware means over perturbations, ``n_perturbations``,
    ``n_undefined`` (perturbations with < 4 cells) and ``pearson_delta_pooled``: the half-vs-half
    Pearson over all (gene, perturbation) entries of the perturbations with >= 4 cells, averaged
    over splits, Spearman-Brown corrected and square-rooted like the per-perturbation values.
    """
    if not cells_by_pert:
        raise DataError("split_half_ceiling: no perturbation given (cells_by_pert is empty)")
    if int(n_splits) < 1:
        raise DataError(f"split_half_ceiling: n_splits must be >= 1, got {n_splits}")
    if not sp.issparse(controls):
        controls = np.asarray(controls, dtype=np.float64)
    if controls.ndim != 2:
        raise DataError(f"split_half_ceiling: controls must be [n_cells, G], got shape {controls.shape}")
    m, G = controls.shape
    if G == 0:
        raise DataError("split_half_ceiling: controls have no genes")
    if m < 4:
        raise DataError(f"split_half_ceiling: need at least 4 control cells to split in halves, got {m}")
    if sp.issparse(controls):
        controls = controls.tocsr()
    r = None
    if ref is not None:
        r = _as_vector(ref.to_numpy() if isinstance(ref, (pd.Series, pd.DataFrame)) else ref, "ref",
                       "split_half_ceiling")
        if r.size != G:
            raise DataError(f"split_half_ceiling: ref has {r.size} genes but the cells have {G}")

    names = list(cells_by_pert)
    cells: Dict[str, np.ndarray] = {}
    for name in names:
        x = cells_by_pert[name]
        x = x.toarray() if sp.issparse(x) else x
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != G:
            raise DataError(
                f"split_half_ceiling: perturbation {name!r} has cells of shape {x.shape}; "
                f"expected [n_cells, {G}] like the controls"
            )
        cells[name] = x
    ok = [nm for nm in names if cells[nm].shape[0] >= 4]

    ctrl_full = _row_mean(controls, np.arange(m))
    acc = {nm: {k: [] for k in METRICS} for nm in ok}
    pooled_r = []
    for s in range(int(n_splits)):
        ca, cb = _halves(np.random.default_rng([int(seed), s, 0]), m)
        ctrl_a, ctrl_b = _row_mean(controls, ca), _row_mean(controls, cb)
        w_c = len(ca) * len(cb) / m**2
        da_all, db_all = [], []
        for nm in ok:
            x = cells[nm]
            n = x.shape[0]
            pa, pb = _halves(_pert_seed(seed, s, nm), n)
            mean_a, mean_b = x[pa].mean(axis=0), x[pb].mean(axis=0)
            delta_a, delta_b = mean_a - ctrl_a, mean_b - ctrl_b
            met = effect_metrics(delta_a, delta_b, ref=r)
            w_p = len(pa) * len(pb) / n**2
            met["mse"] = float(np.mean(w_p * (mean_a - mean_b) ** 2 + w_c * (ctrl_a - ctrl_b) ** 2))
            for k in EFFECT_METRICS:
                acc[nm][k].append(met[k])
            da_all.append(delta_a)
            db_all.append(delta_b)
        if ok:
            pooled_r.append(_pearson(np.concatenate(da_all), np.concatenate(db_all)))
            disc = discrimination(np.stack(da_all, axis=1), np.stack(db_all, axis=1))
            for nm, v in zip(ok, disc):
                acc[nm]["discrimination"].append(float(v))

    rows = []
    for nm in names:
        if nm not in acc:
            rows.append({k: float("nan") for k in METRICS})
            continue
        a = {k: np.asarray(v, dtype=np.float64) for k, v in acc[nm].items()}
        mean = {k: (float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")) for k, v in a.items()}
        row = dict(mean)
        for k in _CORRELATIONS:
            row[k] = _ideal_r(_spearman_brown(mean[k]))
        full = cells[nm].mean(axis=0) - ctrl_full
        var_full = float(np.var(full))
        row["r2_delta"] = (1.0 - mean["mse"] / var_full) if var_full > 0 else float("nan")
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index(names, name="perturbation"), columns=list(METRICS))
    summary = _summary(frame)
    pr = np.asarray(pooled_r, dtype=np.float64)
    summary["pearson_delta_pooled"] = (
        _ideal_r(_spearman_brown(float(np.nanmean(pr)))) if np.isfinite(pr).any() else float("nan")
    )
    summary["reliability_pearson_delta"] = float(np.nanmean(frame["pearson_delta"] ** 2)) \
        if frame["pearson_delta"].notna().any() else float("nan")
    return frame, summary


def _ideal_r(reliability: float) -> float:
    """The correlation a noise-free prediction of the true effect is expected to reach against a
    reference of the given reliability: ``sqrt(reliability)`` (classical test theory; a
    reliability <= 0 gives 0)."""
    if not np.isfinite(reliability):
        return float("nan")
    return float(np.sqrt(max(reliability, 0.0)))
