"""Gene features from training cells: what an amortised edge encoder knows about each GRN node.

A GRN node that is a measured gene gets two embeddings, both computed from training cells only:

- ``expression``: its loadings on the top principal components of the controls'
  standardised log-normalised expression (co-expression: genes that vary together in unperturbed
  cells are close);
- ``response``: its row of the top principal-component scores of the training perturbations'
  mean responses (genes x perturbations, as the gene embedding of the linear baseline of
  Ahlmann-Eltze et al., Nat Methods 2025: genes that respond alike to the seen perturbations
  are close).

Each block is scaled to unit mean squared norm over measured genes. A last column flags
measured nodes; a node that is not a measured gene (e.g. a guide target outside the panel) has
zeros everywhere, so an edge encoder gives it the average of what it learned.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..recipe import FEATURES
from ..utils import bilinear_ridge, pca_scores

log = logging.getLogger(__name__)


def _unit(block: np.ndarray) -> np.ndarray:
    if block.size == 0:
        return block
    norm = np.sqrt(np.mean(np.sum(block ** 2, axis=1)))
    return block / norm if norm > 0 else block


def node_features(data, kinds: Sequence[str] = FEATURES, expression_pcs: int = 20, response_pcs: int = 10,
                  max_cells: int = 10000, seed: int = 0) -> np.ndarray:
    """Features of every GRN node ``[V, F]`` (see the module docstring), from training cells."""
    V = len(data.nodes)
    measured = np.nonzero(data.node_gene >= 0)[0]
    cols = data.node_gene[measured]
    blocks = []
    if "expression" in kinds:
        train = data.split_index("train")
        ctrl = train[data.pair[train] == -1]
        cells = ctrl if len(ctrl) >= 2 * expression_pcs else train
        rng = np.random.default_rng(seed)
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, size=max_cells, replace=False))
        Z = data.lognorm_rows(cells, cols).toarray().astype(np.float64)
        Z = (Z - Z.mean(0)) / np.maximum(Z.std(0), 1e-6)
        # gene loadings: rows of the genes x cells matrix projected on its top components
        blocks.append(_unit(pca_scores(Z.T, expression_pcs)))
    if "response" in kinds:
        responses = data.condition_effects("train", max_cells=2000, seed=seed)
        if responses:
            Y = np.stack([r[cols] for r in responses.values()], axis=1)  # genes x perturbations
            blocks.append(_unit(pca_scores(Y, response_pcs)))
    F = np.zeros((V, sum(b.shape[1] for b in blocks) + 1), dtype=np.float32)
    start = 0
    for b in blocks:
        F[measured, start:start + b.shape[1]] = b
        start += b.shape[1]
    F[measured, -1] = 1.0
    return F


def expected_lognorm_map(data, cells: np.ndarray, grid: np.ndarray, library_bins: int = 8,
                         exact_below: float = 50.0) -> np.ndarray:
    """How a change ``w`` of a gene's log-rate moves its mean log-normalised value in these cells:
    ``T[k, g] = E[log1p(x' / l * 1e4)] - E[log1p(x / l * 1e4)]`` with ``x'`` the counts of gene g
    at ``grid[k]`` times its rate, ``[K, G]``, increasing in ``w`` for every expressed gene.

    Counts are negative binomial with each gene's moment-estimated dispersion around a rate
    proportional to the cell's library; libraries enter through ``library_bins`` quantile
    groups. The expectation is summed exactly up to ``exact_below`` expected counts; above, where
    log1p of the scaled counts is their log, it grows as ``w`` (slope 1). This is the map the
    model's prediction (the expected log-normalised value under its likelihood) applies to a
    node's effect on its own gene, estimated from the data alone.
    """
    from scipy.special import gammaln

    grid = np.asarray(grid, dtype=np.float64)
    lib = np.maximum(data.library[cells].astype(np.float64), 1.0)
    X = data.read_rows(cells).astype(np.float64)
    total = np.asarray(X.sum(axis=0)).ravel()
    level = total / lib.sum()  # counts per unit library
    mu2 = (lib ** 2).sum() * level ** 2  # sum over cells of mu^2
    sq = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    cross = np.asarray(X.T @ lib).ravel() * level  # sum over cells of x * mu
    excess = sq - 2 * cross + mu2 - total
    alpha = np.clip(excess / np.maximum(mu2, 1e-12), 1e-4, 10.0)  # 1 / theta
    edges = np.quantile(lib, np.linspace(0, 1, library_bins + 1))
    which = np.clip(np.searchsorted(edges, lib, side="right") - 1, 0, library_bins - 1)
    groups = [(lib[which == b].mean(), np.mean(which == b)) for b in range(library_bins) if np.any(which == b)]
    out = np.zeros((len(grid), len(level)))
    for g in np.nonzero(level > 0)[0]:
        theta = 1.0 / alpha[g]
        kmax = int(min(exact_below + 10 * np.sqrt(exact_below * (1 + alpha[g] * exact_below)) + 10, 5000))
        k = np.arange(kmax, dtype=np.float64)
        base = gammaln(k + theta) - gammaln(theta) - gammaln(k + 1)
        for lb, share in groups:
            m = lb * level[g] * np.exp(grid)  # expected counts at each w
            exact = m <= exact_below
            val = grid.copy()  # all above: a pure shift
            if exact.any():
                ms = m[exact, None]
                logp = base + theta * np.log(theta / (theta + ms)) + k * np.log(ms / (theta + ms))
                val[exact] = (np.exp(logp) * np.log1p(k * 1e4 / lb)).sum(1)
                last = np.nonzero(exact)[0][-1]
                val[last + 1:] = val[last] + grid[last + 1:] - grid[last]
            out[:, g] += share * val
    zero = int(np.argmin(np.abs(grid)))
    return out - out[zero]


WEIGHT_GRID = np.linspace(-6.0, 3.0, 91)  # log-rate changes the data prior can express
#: the form of :func:`response_weights`' prior: 2 adds a measured regulator's own change beyond the
#: linear fit and the composition shift (runs trained before stored no form: 1)
RESPONSE_FORM = 2


def to_weights(delta: np.ndarray, columns: np.ndarray, table: np.ndarray, grid: np.ndarray = WEIGHT_GRID,
               slope: bool = False):
    """Invert :func:`expected_lognorm_map`: for each entry of ``delta`` (any shape), the log-rate
    change of gene ``columns`` (same shape; a column of ``table``) whose expected log-normalised
    change it is; clipped to what the grid reaches, 0 for a gene the map cannot move. With
    ``slope``, also the derivative of each weight in its ``delta`` (0 where clipped)."""
    delta = np.asarray(delta, dtype=np.float64)
    columns = np.broadcast_to(np.asarray(columns), delta.shape)
    x, c = delta.ravel(), columns.ravel()
    # [G, K], non-decreasing along each row: a gene's table in one cache line or a few
    mono = np.ascontiguousarray(np.maximum.accumulate(np.asarray(table, dtype=np.float64), axis=0).T)
    grid = np.asarray(grid, dtype=np.float64)
    K = len(grid)
    flat, base = mono.ravel(), c.astype(np.int64) * K
    # vectorised bisection (all entries at once): i = number of table values <= x, as np.interp
    lo, hi = np.zeros(len(x), dtype=np.int64), np.full(len(x), K, dtype=np.int64)
    for _ in range(int(np.ceil(np.log2(K + 1)))):
        mid = (lo + hi) // 2
        below = x < flat[base + np.minimum(mid, K - 1)]
        active = lo < hi
        hi = np.where(active & below, mid, hi)
        lo = np.where(active & ~below, mid + 1, lo)
    i = np.clip(lo - 1, 0, K - 2)
    x0, x1 = flat[base + i], flat[base + i + 1]
    step = x1 - x0
    t = np.divide(x - x0, step, out=np.zeros_like(x), where=step > 0)
    out = grid[i] + np.clip(t, 0.0, 1.0) * (grid[i + 1] - grid[i])
    below_grid, above_grid = x <= mono[c, 0], x >= mono[c, -1]
    out = np.where(below_grid, grid[0], np.where(above_grid, grid[-1], out))
    moves = mono[c, -1] - mono[c, 0] > 1e-9
    out = np.where(moves, out, 0.0)  # a gene the map cannot move
    if not slope:
        return out.reshape(delta.shape)
    d = np.divide(grid[i + 1] - grid[i], step, out=np.zeros_like(x), where=step > 0)
    d = np.where(moves & ~below_grid & ~above_grid, d, 0.0)
    return out.reshape(delta.shape), d.reshape(delta.shape)


#: relative ridges that ``linear_ridge: auto`` chooses among (:func:`left_out_scores`)
RIDGE_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
#: at most this many measured regulators are left out in turn (evenly spaced, deterministic)
RIDGE_HELD_OUT = 40


def _embed(Y: np.ndarray, regulators: np.ndarray, row: dict, pcs: int):
    """The linear map's embeddings: the targets' principal-component scores ``G`` of ``Y``
    (targets x regulators) and each regulator's row of them ``P`` (zeros for a regulator that is
    not a measured target)."""
    G = pca_scores(Y, pcs)
    P = np.zeros((len(regulators), G.shape[1]))
    for i, r in enumerate(regulators):
        if int(r) in row:
            P[i] = G[row[int(r)]]
    return G, P


def _own_change(Y: np.ndarray, regulators: np.ndarray, row: dict, mean: np.ndarray, G: np.ndarray, W: np.ndarray,
                P: np.ndarray) -> float:
    """How much more a measured regulator's own gene changes than the map predicts: the mean,
    over the fitted regulators that are measured targets, of their own gene's change less the
    map's (in-sample) prediction of it; 0 when none is. A knock-down or knock-out lowers its own
    gene's reads as no embedding of the others' responses does."""
    own = [Y[row[int(r)], k] - (mean[row[int(r)]] + G[row[int(r)]] @ W @ P[k])
           for k, r in enumerate(regulators) if int(r) in row]
    return float(np.mean(own)) if own else 0.0


def left_out_table(response: np.ndarray, regulators: np.ndarray, targets: np.ndarray, pcs: int = 10,
                   grid=RIDGE_GRID) -> tuple:
    """Each seen regulator that is a measured target (at most :data:`RIDGE_HELD_OUT` of them,
    evenly spaced) left out in turn: the map of :func:`linear_response_map` is fitted to the
    others' changes (``response`` ``[S, T]``, as there) and predicts the left-out one's from its
    target embedding, its own gene's change raised by the others' own change beyond the map
    (:func:`_own_change`), as the model predicts it; the score is the Pearson correlation of
    prediction and observed change over the targets (NaN when either is constant). Returns
    ``(held, {ridge: [score per held]})`` with ``held`` the left-out rows of ``response``."""
    Y = np.asarray(response, dtype=np.float64).T  # targets x regulators
    regulators, targets = np.asarray(regulators), np.asarray(targets)
    row = {int(t): i for i, t in enumerate(targets)}
    held = [s for s, r in enumerate(regulators) if int(r) in row]
    if len(held) > RIDGE_HELD_OUT:
        held = [held[i] for i in np.linspace(0, len(held) - 1, RIDGE_HELD_OUT).round().astype(int)]
    scores = {float(r): [] for r in grid}
    for s in held:
        keep = np.arange(len(regulators)) != s
        Yk = Y[:, keep]
        G, P = _embed(Yk, regulators[keep], row, pcs)
        mean = Yk.mean(axis=1)
        centred = Yk - mean[:, None]
        t = row[int(regulators[s])]
        for r in scores:
            W = bilinear_ridge(G, centred, P, r, relative=True)
            pred, obs = mean + G @ W @ G[t], Y[:, s]
            pred[t] += _own_change(Yk, regulators[keep], row, mean, G, W, P)
            ok = pred.std() > 0 and obs.std() > 0
            scores[r].append(float(np.corrcoef(pred, obs)[0, 1]) if ok else float("nan"))
    return held, scores


def left_out_scores(response: np.ndarray, regulators: np.ndarray, targets: np.ndarray, pcs: int = 10,
                    grid=RIDGE_GRID) -> tuple:
    """How well the linear map predicts a regulator it was not fitted to, per relative ridge: the
    mean over left-out regulators of :func:`left_out_table`. Returns ``({ridge: mean score},
    number left out)``; the scores are NaN when fewer than three regulators can be left out.
    """
    held, scores = left_out_table(response, regulators, targets, pcs, grid)
    if len(held) < 3:
        return {float(r): float("nan") for r in grid}, len(held)
    return {r: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for r, v in scores.items()}, len(held)


def choose_ridge(response: np.ndarray, regulators: np.ndarray, targets: np.ndarray, pcs: int = 10,
                 default: float = 0.1) -> tuple:
    """``linear_ridge: auto``: the relative ridge of :data:`RIDGE_GRID` whose map best predicts
    left-out regulators (:func:`left_out_scores`; ties go to the larger ridge), or ``default``
    when fewer than three can be left out. Returns ``(ridge, scores, number left out)``."""
    scores, n = left_out_scores(response, regulators, targets, pcs)
    finite = {r: v for r, v in scores.items() if np.isfinite(v)}
    if not finite:
        return float(default), scores, n
    best = max(finite.values())
    return max(r for r, v in finite.items() if v >= best - 1e-12), scores, n


def linear_response_map(response: np.ndarray, regulators: np.ndarray, targets: np.ndarray, num_nodes: int,
                        pcs: int = 10, ridge: float = 0.1):
    """The ``linear`` baseline (Ahlmann-Eltze et al. 2025) fitted to the seen regulators'
    responses, as a map on GRN nodes: ``(emb [V, K], W [K, K], own)`` such that the predicted
    change of target node j under a perturbation of node i is ``mean_j + emb[j] @ W @ emb[i]``,
    plus ``own`` on a measured regulator's own gene (j = i; :func:`_own_change`).

    ``response`` ``[S, T]`` holds regulator ``regulators[s]``'s mean change of target node
    ``targets[t]`` (measured genes). ``emb`` holds the targets' principal-component scores of
    those changes (:func:`grnvae.utils.pca_scores`, ``pcs`` of them) and zeros on every other
    node, so a regulator that is not a measured gene gets ``mean_j`` alone; ``W`` is the exact
    ridge fit (:func:`grnvae.utils.bilinear_ridge`) with a penalty *relative* to the fit's scale
    (the baseline's absolute 0.1 is about 1e-4 of it on Papalexi, where five measured regulators
    let the fit predict changes several times too large for held-out ones).
    """
    Y = np.asarray(response, dtype=np.float64).T  # targets x regulators
    targets, regulators = np.asarray(targets), np.asarray(regulators)
    row = {int(t): i for i, t in enumerate(targets)}
    G, P = _embed(Y, regulators, row, pcs)
    emb = np.zeros((num_nodes, G.shape[1]))
    emb[targets] = G
    mean = Y.mean(axis=1)
    W = bilinear_ridge(G, Y - mean[:, None], P, ridge, relative=True)
    own = _own_change(Y, regulators, row, mean, G, W, P)
    return emb, W, own


def response_weights(data, split: str = "train", max_cells: int = 2000, seed: int = 0) -> dict:
    """What each seen regulator does to each gene, from the data alone, in the units of edge
    weights: the mean log-normalised change of its single-target condition's cells from the
    controls (as the baselines compute it), with the map that turns such a change into a
    log-rate change (the weight of an edge into a measured node when its effect shifts its own
    gene's log-rate).

    For counts the map is :func:`expected_lognorm_map` over (at most ``max_cells``) control
    cells, so that averaging or regressing changes happens where the baselines do it and a weight
    reproduces the change under the model's likelihood; for log-normalised values it is the
    identity. A weight is the change per unit dosage: divide what the map gives by the dosage
    (activation screens: the change per unit loss). These are population averages (escapers
    included): the unit of the edge weights with ``model.penetrance.population``.

    Returns a dict of arrays: ``nodes [S]`` (the regulator node of each single-target condition
    with cells in the split), ``delta [S, G]`` (its changes), ``grid [K]`` and ``table [K, G]``
    (the map; for log-normalised values ``table[:, g] = grid``), for counts ``share [G]``: each
    gene's share of the controls' counts (what a cell's library is made of, the weights of
    :func:`calibrate_changes`), and ``form`` (:data:`RESPONSE_FORM`, the prior these inputs are
    for; a model loaded from a run of an earlier form keeps that run's prior).
    """
    idx = data.split_index(split)
    effects = data.condition_effects(split, max_cells=max_cells, seed=seed)
    nodes, rows = [], []
    for c, delta in effects.items():
        targets = data.condition_nodes[c]
        if len(targets) == 1:
            nodes.append(targets[0])
            rows.append(delta)
    G = len(data.genes)
    grid = WEIGHT_GRID.copy()
    extra = {}
    if data.values == "counts":
        ctrl = idx[data.pair[idx] == -1]
        rng = np.random.default_rng(seed)
        if len(ctrl) > max_cells:
            ctrl = np.sort(rng.choice(ctrl, size=max_cells, replace=False))
        table = expected_lognorm_map(data, ctrl, grid)
        counts = np.asarray(data.read_rows(ctrl).sum(axis=0), dtype=np.float64).ravel()
        extra["share"] = counts / max(counts.sum(), 1e-12)
    else:
        table = np.repeat(grid[:, None], G, axis=1)
    return {"nodes": np.asarray(nodes, dtype=np.int64),
            "delta": np.stack(rows) if rows else np.zeros((0, G)), "grid": grid, "table": table,
            "form": np.asarray(RESPONSE_FORM, dtype=np.int64), **extra}


#: the largest shift :func:`calibrate_changes` applies (log-normalised units)
CALIBRATION_RANGE = 3.0


def calibrate_changes(change: np.ndarray, columns: np.ndarray, sources: np.ndarray, share: np.ndarray,
                      table: np.ndarray, grid: np.ndarray = WEIGHT_GRID, iterations: int = 32) -> np.ndarray:
    """Shift each source's intended log-normalised changes by a constant so that its log-rate
    changes (:func:`to_weights`) keep the library's composition: ``sum_g share_g exp(w_g) =
    sum_g share_g`` over its genes (``change``, ``columns`` and ``sources`` are per entry;
    ``share`` per column, :func:`response_weights`). Returns the shifted changes.

    Log-normalised values are fractions of each cell's library, so the library of a cell whose
    genes' rates move by ``exp(w)`` moves by ``r = sum_g share_g exp(w_g)`` and every gene's
    log-normalised value with it: what the likelihood predicts is the change of ``w - log r``,
    not of ``w``. The changes the prior takes from the data (averages over regulators, the linear
    fit) do not keep the composition, so inverted gene by gene they come back shifted by ``-log
    r``, which the log-normalisation passes on to each gene in proportion to its slope: a
    gene-dependent distortion (on the Papalexi subset, +0.03 on the most expressed genes and 0.002
    on the least for the average effect). With the shift ``c`` of each source found
    (``r = 1``; safeguarded Newton steps on the exact slope of the piecewise-linear inversion, at most ``iterations`` of them), the prediction is the
    intended change plus ``c``, which no correlation sees."""
    change = np.asarray(change, dtype=np.float64)
    sources = np.asarray(sources)
    ids, src = np.unique(sources, return_inverse=True)
    weight = np.asarray(share, dtype=np.float64)[columns]

    def excess(c: np.ndarray):  # increasing in c; with its slope
        w, dw = to_weights(change + c[src], columns, table, grid, slope=True)
        return (np.bincount(src, weight * np.expm1(w), minlength=len(ids)),
                np.bincount(src, weight * np.exp(w) * dw, minlength=len(ids)))

    # Newton steps, kept inside a bracket that bisects when they leave it
    lo, hi = np.full(len(ids), -CALIBRATION_RANGE), np.full(len(ids), CALIBRATION_RANGE)
    shift = np.zeros(len(ids))
    for _ in range(iterations):
        f, slope = excess(shift)
        lo, hi = np.where(f < 0, shift, lo), np.where(f < 0, hi, shift)
        if np.all(np.abs(f) < 1e-13):
            break
        newton = shift - np.divide(f, slope, out=np.zeros_like(f), where=slope > 0)
        inside = (slope > 0) & (newton > lo) & (newton < hi)
        shift = np.where(np.abs(f) < 1e-13, shift, np.where(inside, newton, (lo + hi) / 2))
    shift[np.bincount(src, weight, minlength=len(ids)) <= 0] = 0.0  # no share: nothing to keep
    edge = np.abs(shift) > CALIBRATION_RANGE * (1 - 1e-6)
    if edge.any():
        log.warning("calibrate_changes: %d source(s) would need a shift beyond +-%g (log-normalised); "
                    "their changes are shifted by %g only", int(edge.sum()), CALIBRATION_RANGE, CALIBRATION_RANGE)
    return change + shift[src]
