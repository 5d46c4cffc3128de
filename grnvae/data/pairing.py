"""Matching perturbed cells with control cells.

GPO-VAE's GRN alignment loss compares every perturbed cell with a control cell,
``Delta x = |lognorm(x_cell) - lognorm(x_matched_control)|``. :func:`pair_controls` chooses that
control. The candidate controls (the *pool*) are always the control cells of the training split,
so validation and test controls are never looked at. Three methods:

``random``
    Each perturbed cell gets a control drawn uniformly from the pool, seeded with
    ``np.random.default_rng(seed + 1)``.
``mean``
    No individual control: every perturbed cell is compared with the mean of the training
    controls (encoded as ``-2``).
``ot``
    Entropic optimal transport per perturbation condition, as in GPO-VAE. For each condition the
    source is its perturbed cells (all splits) with uniform weights, the target is the pool with
    uniform weights, and the cost is the squared Euclidean distance between the cells' feature
    vectors (``metric="sqeuclidean"``; ``metric="euclidean"`` gives the plain distance) on the
    condition's feature columns, divided by its maximum so that ``reg`` is relative to the
    largest cost. The entropic plan is found by log-domain Sinkhorn and each perturbed cell is
    matched with the control of largest transport mass in its row of the plan.

Cost and scaling, compared with upstream
----------------------------------------
POT's :func:`ot.dist` defaults to ``metric="sqeuclidean"``, but the GPO-VAE code
(``calculate_ot`` in ``gpo_vae/data/*/data_module.py``) passes ``metric="euclidean"`` explicitly,
divides the cost by a fixed 100 rather than by its maximum, solves ``ot.sinkhorn(p, q, C, 1.0)``,
uses the columns of all perturbed genes for every condition, and takes the controls of each
split separately. Here the cost defaults to the squared Euclidean distance (the usual entropic-OT
ground cost, and POT's default), is divided by its maximum (so the result does not depend on the
number or scale of the features), and the pool is the training controls only;
``metric="euclidean"`` and ``condition_features`` reproduce the upstream choice of cost and
columns.

Memory
------
Conditions can hold tens of thousands of cells and the pool tens of thousands of controls, so the
``n_pert x n_ctrl`` cost matrix is never built in one piece unless it fits in
:data:`COST_CACHE_BYTES`: the solver works on row chunks of ``chunk_size`` perturbed cells,
recomputing each chunk's costs on every Sinkhorn pass and accumulating the column log-sum-exps
across chunks. Peak memory is about ``16 * chunk_size * n_ctrl`` bytes for two float64 work
buffers, plus the pool's feature columns (``n_ctrl x |cols|``), plus O(n_pert + n_ctrl); sparse
features are densified one chunk at a time, on the needed columns only.

The matching needs only the column potential ``g`` of the converged plan: row ``i`` of the plan is
``exp((f_i + g_j - C_ij) / reg)``, whose argmax over ``j`` is the argmax of ``g_j - C_ij``. Ties
go to the lowest pool index (the lowest cell index); the OT method uses no randomness.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import DataError

log = logging.getLogger(__name__)

#: pairing methods accepted by :func:`pair_controls`
METHODS = ("random", "mean", "ot")
#: cost metrics accepted by the ``ot`` method
METRICS = ("sqeuclidean", "euclidean")
#: a condition's whole (normalised) cost matrix is kept between Sinkhorn passes when it takes at
#: most this many bytes; larger ones are recomputed chunk by chunk on every pass
COST_CACHE_BYTES = 256 * 2**20

# the fast column update (one exp per entry and a matrix-vector product) is used while the
# potentials guarantee that every plan entry is at least exp(-_FAST_LIMIT), a normal float64
_FAST_LIMIT = 600.0

Features = Union[np.ndarray, sp.spmatrix, sp.sparray]
ConditionFeatures = Union[Sequence[Sequence[int]], Mapping[int, Sequence[int]]]


# ------------------------------------------------------------------------------------ Sinkhorn
@dataclass
class SinkhornResult:
    """Column potential of an entropic OT plan and how the solver ended.

    Attributes
    ----------
    g : ``[n_cols]`` float64 column potential; the plan is ``exp((f_i + g_j - C_ij) / reg)``.
    n_iter : Sinkhorn iterations run.
    err : L1 violation of the column marginal, ``sum_j |sum_i P_ij - b_j|``, at the last
        iteration (rows are exact at that point).
    converged : ``err <= tol``.
    """

    g: torch.Tensor
    n_iter: int
    err: float
    converged: bool


def _sinkhorn_log(fill_cost: Callable[[int, torch.Tensor], None], chunk_rows: Sequence[int],
                  n_cols: int, reg: float, max_iter: int, tol: float,
                  buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
                  stable: bool | None = None) -> SinkhornResult:
    """Log-domain Sinkhorn with uniform marginals over a cost matrix given in row chunks.

    Parameters
    ----------
    fill_cost : ``fill_cost(k, out)`` writes the cost rows of chunk ``k`` into ``out``
        (``[chunk_rows[k], n_cols]`` float64).
    chunk_rows : number of rows of each chunk; the chunks in order make up the rows.
    n_cols : number of columns (targets).
    reg : entropic regularisation (> 0), in the units of the cost.
    max_iter, tol : at most ``max_iter`` iterations; stop once the column-marginal L1 error is
        at most ``tol``.
    buffers : two float64 work tensors of at least ``max(chunk_rows) * n_cols`` elements each.
    stable : ``True`` always takes the column log-sum-exp with a second exponential pass;
        ``False`` always uses the plan's column sums (one exponential pass and a matrix-vector
        product, valid while no plan entry underflows); ``None`` picks the fast form whenever the
        potentials bound the plan's dynamic range safely.

    Each iteration updates the row potential ``f`` chunk by chunk against the current ``g``
    (``f_i = reg * (log a_i - logsumexp_j((g_j - C_ij) / reg))``, exact per row) and
    accumulates the resulting plan's column sums across chunks, then sets
    ``g_j += reg * (log b_j - log colsum_j)``. ``f`` is never stored.
    """
    n_rows = int(sum(chunk_rows))
    if n_rows == 0 or n_cols == 0:
        raise ValueError("empty transport problem")
    max_rows = max(chunk_rows)
    if buffers is None:
        buffers = (torch.empty(max_rows * n_cols, dtype=torch.float64),
                   torch.empty(max_rows * n_cols, dtype=torch.float64))
    buf_a, buf_b = buffers
    inv = 1.0 / reg
    log_a = -math.log(n_rows)
    log_b = -math.log(n_cols)
    b = 1.0 / n_cols
    g = torch.zeros(n_cols, dtype=torch.float64)
    crange = None  # max C - min C, for the dynamic-range bound of the fast update
    cmin, cmax = math.inf, -math.inf
    err = math.inf
    it = 0
    for it in range(1, max_iter + 1):
        g_scaled = g * inv
        if stable is None:
            if crange is None:
                fast = False  # the first pass also measures the cost range
            else:
                # every row of (g_j - C_ij) / reg spans at most this much, so no plan entry
                # can underflow in the fast update
                spread = (float(g.max() - g.min()) + crange) * inv
                fast = spread + math.log(n_rows) + math.log(n_cols) < _FAST_LIMIT
        else:
            fast = not stable
        colsum = torch.zeros(n_cols, dtype=torch.float64) if fast else None
        logcol = torch.full((n_cols,), -math.inf, dtype=torch.float64) if not fast else None
        for k, r in enumerate(chunk_rows):
            A = buf_a[: r * n_cols].view(r, n_cols)
            B = buf_b[: r * n_cols].view(r, n_cols)
            fill_cost(k, A)
            if it == 1:
                cmin, cmax = min(cmin, float(A.min())), max(cmax, float(A.max()))
            A.mul_(-inv).add_(g_scaled)                       # (g_j - C_ij) / reg
            mr = A.amax(dim=1, keepdim=True)
            torch.sub(A, mr, out=B).exp_()
            s = B.sum(dim=1, keepdim=True)                    # >= 1: the row max is exp(0)
            if fast:
                # P_ij = a * B_ij / s_i, so the plan's column sums are B^T (a / s)
                colsum += torch.mv(B.t(), (math.exp(log_a) / s).squeeze(1))
            else:
                A.sub_(mr + torch.log(s) - log_a)             # log P_ij
                mc = A.amax(dim=0)
                torch.sub(A, mc, out=B).exp_()
                logcol = torch.logaddexp(logcol, mc + torch.log(B.sum(dim=0)))
        if it == 1:
            crange = cmax - cmin
        if fast:
            logcol = torch.log(colsum)
        err = float((torch.exp(logcol) - b).abs().sum())
        g = g + reg * (log_b - logcol)
        if not bool(torch.isfinite(g).all()):
            raise FloatingPointError("Sinkhorn produced non-finite potentials (non-finite costs?)")
        if err <= tol:
            break
    return SinkhornResult(g=g, n_iter=it, err=err, converged=err <= tol)


def _row_lse(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    mr = A.amax(dim=1, keepdim=True)
    torch.sub(A, mr, out=B).exp_()
    return (mr + torch.log(B.sum(dim=1, keepdim=True))).squeeze(1)


def sinkhorn_plan(cost: np.ndarray, reg: float = 1.0, max_iter: int = 200,
                  tol: float = 1e-6) -> np.ndarray:
    """Dense entropic OT plan with uniform marginals (small problems; the reference).

    Solves ``min_P <P, C> - reg * H(P)`` subject to ``P 1 = 1/n`` and ``P^T 1 = 1/m`` with the
    same log-domain Sinkhorn iterations as the chunked solver behind
    :func:`pair_controls` (run here as a single chunk). The cost is used as given (no
    normalisation).

    Parameters
    ----------
    cost : ``[n, m]`` cost matrix.
    reg : entropic regularisation (> 0).
    max_iter, tol : iteration limit and column-marginal L1 tolerance.

    Returns
    -------
    ``[n, m]`` float64 plan ``exp((f_i + g_j - C_ij) / reg)``; rows sum to ``1/n`` exactly,
    columns to ``1/m`` within about ``tol``.
    """
    C = torch.as_tensor(np.asarray(cost, dtype=np.float64))
    if C.ndim != 2 or C.shape[0] == 0 or C.shape[1] == 0:
        raise ValueError(f"cost must be a non-empty 2-D matrix, got shape {tuple(C.shape)}")
    _check_solver_args(reg, max_iter, tol, 1)
    n, m = C.shape

    def fill(k: int, out: torch.Tensor) -> None:
        out.copy_(C)

    res = _sinkhorn_log(fill, [n], m, reg, max_iter, tol)
    A = (res.g[None, :] - C) / reg
    f = reg * (-math.log(n) - _row_lse(A, torch.empty_like(A)))
    return torch.exp((f[:, None] + res.g[None, :] - C) / reg).numpy()


# ------------------------------------------------------------------------------- OT matching
@dataclass
class OTMatch:
    """Result of matching one source set with the pool (see :func:`ot_match`).

    Attributes
    ----------
    match : ``[n]`` int64 row of the target matched with each source row.
    n_iter, err, converged : the Sinkhorn run (see :class:`SinkhornResult`).
    scale : the largest cost, which the costs were divided by (1.0 when all costs are 0).
    """

    match: np.ndarray
    n_iter: int
    err: float
    converged: bool
    scale: float


def ot_match(source: Features, target: np.ndarray | torch.Tensor, reg: float = 1.0,
             chunk_size: int = 4096, max_iter: int = 200, tol: float = 1e-6,
             metric: str = "sqeuclidean", buffers: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> OTMatch:
    """Match each source row with a target row by the argmax of an entropic OT plan.

    Parameters
    ----------
    source : ``[n, d]`` source features, dense or sparse (densified ``chunk_size`` rows at a
        time).
    target : ``[m, d]`` dense target features.
    reg : entropic regularisation relative to the largest cost (the cost is divided by its
        maximum).
    chunk_size : source rows per chunk; bounds the work memory at ``16 * chunk_size * m`` bytes.
    max_iter, tol : Sinkhorn iteration limit and column-marginal L1 tolerance.
    metric : ``"sqeuclidean"`` (default) or ``"euclidean"``.
    buffers : optional preallocated float64 work tensors (``>= min(chunk_size, n) * m``
        elements each), reused across calls.

    Returns
    -------
    :class:`OTMatch`.
    """
    if metric not in METRICS:
        raise DataError(f"data.pairing: unknown OT metric {metric!r}; use one of {', '.join(METRICS)}")
    _check_solver_args(reg, max_iter, tol, chunk_size)
    if isinstance(target, torch.Tensor):
        Y = target.to(torch.float64)
    else:
        Y = torch.as_tensor(np.asarray(target, dtype=np.float64))
    n, m = source.shape[0], Y.shape[0]
    if source.shape[1] != Y.shape[1]:
        raise ValueError(f"source has {source.shape[1]} features, target {Y.shape[1]}")
    if n == 0:
        return OTMatch(np.zeros(0, dtype=np.int64), 0, 0.0, True, 1.0)
    y_norm = (Y * Y).sum(dim=1)
    starts = list(range(0, n, chunk_size))
    rows = [min(chunk_size, n - s0) for s0 in starts]
    if sp.issparse(source):
        src = sp.csr_matrix(source)
        pieces: list = [src[s0:s0 + r] for s0, r in zip(starts, rows)]
    else:
        src = np.asarray(source)
        pieces = [src[s0:s0 + r] for s0, r in zip(starts, rows)]

    def chunk_x(k: int) -> torch.Tensor:
        p = pieces[k]
        x = p.toarray() if sp.issparse(p) else p
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    def raw_cost(k: int, out: torch.Tensor) -> None:
        x = chunk_x(k)
        torch.addmm(y_norm[None, :], x, Y.t(), beta=1.0, alpha=-2.0, out=out)  # |y|^2 - 2 x.y
        out.add_((x * x).sum(dim=1, keepdim=True)).clamp_(min=0.0)
        if metric == "euclidean":
            out.sqrt_()

    if buffers is None or buffers[0].numel() < max(rows) * m or buffers[1].numel() < max(rows) * m:
        buffers = (torch.empty(max(rows) * m, dtype=torch.float64),
                   torch.empty(max(rows) * m, dtype=torch.float64))

    # pass 0: the largest cost (normalisation), caching the chunks when they fit
    cache: list[torch.Tensor] | None = [] if n * m * 8 <= COST_CACHE_BYTES else None
    scale = 0.0
    for k, r in enumerate(rows):
        out = buffers[0][: r * m].view(r, m)
        raw_cost(k, out)
        cmax = float(out.max())
        if not math.isfinite(cmax):
            raise DataError("data.pairing: the OT features contain NaN or infinite values")
        scale = max(scale, cmax)
        if cache is not None:
            cache.append(out.clone())
    if scale <= 0.0:
        scale = 1.0
    inv_scale = 1.0 / scale
    if cache is not None:
        for c in cache:
            c.mul_(inv_scale)

    def fill(k: int, out: torch.Tensor) -> None:
        if cache is not None:
            out.copy_(cache[k])
        else:
            raw_cost(k, out)
            out.mul_(inv_scale)

    res = _sinkhorn_log(fill, rows, m, reg, max_iter, tol, buffers=buffers)

    # the argmax over j of the plan row, exp((f_i + g_j - C_ij) / reg), is that of g_j - C_ij
    match = np.empty(n, dtype=np.int64)
    g_scaled = res.g / reg
    for k, (s0, r) in enumerate(zip(starts, rows)):
        A = buffers[0][: r * m].view(r, m)
        fill(k, A)
        A.mul_(-1.0 / reg).add_(g_scaled)
        match[s0:s0 + r] = A.argmax(dim=1).numpy()  # first maximum: lowest index wins ties
    return OTMatch(match, res.n_iter, res.err, res.converged, scale)


# ------------------------------------------------------------------------------- entry point
def pair_controls(features: Features | None, cell_condition: np.ndarray, is_control: np.ndarray,
                  split: np.ndarray, method: str = "random", seed: int = 0,
                  condition_features: ConditionFeatures | None = None, reg: float = 1.0,
                  chunk_size: int = 4096, max_iter: int = 200, tol: float = 1e-6,
                  progress: bool = False, metric: str = "sqeuclidean") -> np.ndarray:
    """Match every perturbed cell with a control cell of the training split.

    Parameters
    ----------
    features : ``[N, F]`` per-cell features for the OT cost (``scipy.sparse`` CSR or dense), e.g.
        log-normalised expression of the measured genes or a PCA embedding. Only read by
        ``method="ot"`` (may be None otherwise).
    cell_condition : ``[N]`` int condition id of each cell.
    is_control : ``[N]`` bool, True for control cells.
    split : ``[N]`` int8 split (0 train, 1 val, 2 test). The pool is the controls with
        ``split == 0``.
    method : ``"random"``, ``"mean"`` or ``"ot"`` (see the module docstring).
    seed : seed of the ``random`` method (``np.random.default_rng(seed + 1)``); the ``ot``
        method is deterministic and does not use it.
    condition_features : for ``ot``, ``condition_features[c]`` lists the feature columns the
        cost of condition ``c`` uses (e.g. the perturbed genes' columns); None, an empty entry
        or a key missing from a mapping means all columns. Duplicates are ignored.
    reg : for ``ot``, entropic regularisation relative to the largest cost of the condition
        (costs are divided by their maximum, so they lie in ``[0, 1]``).
    chunk_size : for ``ot``, perturbed cells per chunk; work memory is about
        ``16 * chunk_size * n_pool`` bytes.
    max_iter, tol : for ``ot``, Sinkhorn iteration limit and tolerance on the L1 error of the
        plan's control marginal; a condition that does not converge logs a warning and keeps
        its last iterate.
    progress : for ``ot``, show a tqdm bar over conditions.
    metric : for ``ot``, ``"sqeuclidean"`` (default) or ``"euclidean"`` (GPO-VAE's upstream
        choice).

    Returns
    -------
    ``[N]`` int64: the index of the matched control cell for each perturbed cell, ``-1`` for
    control cells, ``-2`` for every perturbed cell when ``method == "mean"``.

    Raises
    ------
    DataError
        Unknown method, no control cell in the training split, or unusable OT inputs.
    """
    cell_condition = np.asarray(cell_condition)
    is_control = np.asarray(is_control, dtype=bool)
    split = np.asarray(split)
    n = len(cell_condition)
    if len(is_control) != n or len(split) != n:
        raise DataError(f"data.pairing: cell_condition, is_control and split must have one entry "
                        f"per cell; got {n}, {len(is_control)}, {len(split)}")
    if method not in METHODS:
        raise DataError(f"data.pairing: unknown method {method!r}; use one of {', '.join(METHODS)}")
    pair = np.full(n, -1, dtype=np.int64)
    pool = np.nonzero(is_control & (split == 0))[0]
    if len(pool) == 0:
        raise DataError("no control cells in the training split; lower data.split.fractions for val/test")
    perturbed = np.nonzero(~is_control)[0]
    if method == "mean":
        pair[perturbed] = -2
    elif method == "random":
        rng = np.random.default_rng(seed + 1)
        pair[perturbed] = pool[rng.integers(0, len(pool), size=len(perturbed))]
    else:
        _pair_ot(pair, features, cell_condition, perturbed, pool, condition_features, reg,
                 chunk_size, max_iter, tol, progress, metric)
    return pair


def _pair_ot(pair: np.ndarray, features: Features | None, cell_condition: np.ndarray,
             perturbed: np.ndarray, pool: np.ndarray, condition_features: ConditionFeatures | None,
             reg: float, chunk_size: int, max_iter: int, tol: float, progress: bool,
             metric: str) -> None:
    if features is None:
        raise DataError("data.pairing: method 'ot' needs the per-cell features for its cost")
    if metric not in METRICS:
        raise DataError(f"data.pairing: unknown OT metric {metric!r}; use one of {', '.join(METRICS)}")
    _check_solver_args(reg, max_iter, tol, chunk_size)
    sparse = sp.issparse(features)
    X = sp.csr_matrix(features) if sparse else np.asarray(features)
    if X.ndim != 2 or X.shape[0] != len(pair):
        raise DataError(f"data.pairing: features must be [cells, features] with {len(pair)} rows; "
                        f"got shape {X.shape}")
    n_feat = X.shape[1]
    if n_feat == 0:
        raise DataError("data.pairing: the OT features have no columns")
    if len(perturbed) == 0:
        return
    conditions, counts = np.unique(cell_condition[perturbed], return_counts=True)
    m = len(pool)
    rows = int(min(chunk_size, counts.max()))
    buffers = (torch.empty(rows * m, dtype=torch.float64), torch.empty(rows * m, dtype=torch.float64))
    pool_key: object = ()
    Y = None

    it = conditions
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(conditions, desc="OT pairing", unit="condition")
    for c in it:
        cols = _condition_columns(condition_features, int(c), n_feat)
        key = None if cols is None else tuple(cols.tolist())
        if Y is None or key != pool_key:
            Y = None
            Yc = _take(X, pool, cols)
            Y = torch.as_tensor(np.asarray(Yc.toarray() if sparse else Yc, dtype=np.float64))
            pool_key = key
        src_idx = perturbed[cell_condition[perturbed] == c]
        src = _take(X, src_idx, cols)  # sparse stays sparse: densified a chunk at a time
        res = ot_match(src, Y, reg=reg, chunk_size=chunk_size, max_iter=max_iter, tol=tol,
                       metric=metric, buffers=buffers)
        pair[src_idx] = pool[res.match]
        log.debug("OT pairing: condition %d, %d cells x %d controls on %s columns: %d iterations, "
                  "err %.3g, %d distinct controls", int(c), len(src_idx), m,
                  n_feat if cols is None else len(cols), res.n_iter, res.err,
                  len(np.unique(res.match)),
                  extra={"ot_stats": {"condition": int(c), "n_cells": len(src_idx), "n_pool": m,
                                      "n_features": n_feat if cols is None else len(cols),
                                      "n_iter": res.n_iter, "err": res.err,
                                      "converged": res.converged, "scale": res.scale}})
        if not res.converged:
            log.warning("OT pairing for condition %d did not converge in %d iterations (marginal "
                        "error %.3g > tol %.3g); raise max_iter or reg", int(c), res.n_iter,
                        res.err, tol)


def _condition_columns(condition_features: ConditionFeatures | None, c: int,
                       n_feat: int) -> np.ndarray | None:
    """Sorted unique feature columns of condition ``c``, or None for all columns."""
    if condition_features is None:
        return None
    if isinstance(condition_features, Mapping):
        cols = condition_features.get(c)
    else:
        if c < 0 or c >= len(condition_features):
            raise DataError(f"data.pairing: condition_features has {len(condition_features)} "
                            f"entries, but condition id {c} occurs among the perturbed cells")
        cols = condition_features[c]
    if cols is None:
        return None
    cols = np.asarray(cols).ravel()
    if cols.size == 0:
        return None
    if not np.issubdtype(cols.dtype, np.integer):
        raise DataError(f"data.pairing: condition_features[{c}] must hold integer column indices, "
                        f"got dtype {cols.dtype}")
    bad = cols[(cols < 0) | (cols >= n_feat)]
    if bad.size:
        raise DataError(f"data.pairing: condition_features[{c}] has column {int(bad[0])} outside "
                        f"[0, {n_feat}); drop unmeasured genes (index -1) before pairing")
    cols = np.unique(cols)
    return None if cols.size == n_feat else cols


def _take(X: Features, rows: np.ndarray, cols: np.ndarray | None) -> Features:
    if cols is None:
        return X[rows]
    if sp.issparse(X):
        return X[rows][:, cols]
    return X[np.ix_(rows, cols)]


def _check_solver_args(reg: float, max_iter: int, tol: float, chunk_size: int) -> None:
    if not (isinstance(reg, numbers.Real) and math.isfinite(reg) and reg > 0):
        raise DataError(f"data.pairing: OT reg must be a positive number, got {reg!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise DataError(f"data.pairing: OT max_iter must be a positive integer, got {max_iter!r}")
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise DataError(f"data.pairing: OT tol must be >= 0, got {tol!r}")
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise DataError(f"data.pairing: OT chunk_size must be a positive integer, got {chunk_size!r}")
