"""Control-cell pairing: random / mean / entropic OT (grnvae.data.pairing)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from grnvae.data import pairing
from grnvae.data.pairing import _sinkhorn_log, ot_match, pair_controls, sinkhorn_plan
from grnvae.errors import DataError


# ------------------------------------------------------------------------------ references
def reference_sinkhorn(C: np.ndarray, reg: float, n_iter: int = 20000) -> np.ndarray:
    """Plain probability-domain Sinkhorn (Cuturi 2013) with uniform marginals."""
    n, m = C.shape
    K = np.exp(-C / reg)
    u, v = np.ones(n), np.ones(m)
    for _ in range(n_iter):
        u = (1.0 / n) / (K @ v)
        v = (1.0 / m) / (K.T @ u)
    return u[:, None] * K * v[None, :]


def reference_pairing(X: np.ndarray, cond, is_control, split, reg, cols=None) -> np.ndarray:
    """Per condition: squared Euclidean cost / max, dense Sinkhorn, argmax of each row."""
    pool = np.nonzero(is_control & (split == 0))[0]
    pair = np.full(len(X), -1, dtype=np.int64)
    for c in np.unique(cond[~is_control]):
        src = np.nonzero(~is_control & (cond == c))[0]
        use = slice(None) if cols is None or not len(cols.get(c, [])) else list(cols[c])
        a, b = X[src][:, use], X[pool][:, use]
        C = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        C = C / C.max()
        pair[src] = pool[reference_sinkhorn(C, reg).argmax(axis=1)]
    return pair


def toy(seed: int = 0, n_cells: int = 160, n_feat: int = 6, n_cond: int = 3):
    """Dense features, conditions 0..n_cond-1 (0 is control), a 60/20/20 split."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_cells, n_feat))
    cond = rng.integers(0, n_cond, size=n_cells)
    is_control = cond == 0
    split = rng.choice(np.array([0, 1, 2], dtype=np.int8), size=n_cells, p=[0.6, 0.2, 0.2])
    X[~is_control] += 0.5 * cond[~is_control, None]  # each condition shifted
    return X, cond, is_control, split


# ------------------------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize("reg", [1.0, 0.1, 0.03])
def test_sinkhorn_plan_matches_plain_sinkhorn(reg):
    C = np.random.default_rng(1).random((17, 11))
    P = sinkhorn_plan(C, reg=reg, max_iter=20000, tol=1e-13)
    np.testing.assert_allclose(P, reference_sinkhorn(C, reg), rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(P.sum(1), np.full(17, 1 / 17), atol=1e-15)
    np.testing.assert_allclose(P.sum(0), np.full(11, 1 / 11), atol=1e-12)


def test_fast_and_stable_column_updates_agree():
    C = torch.tensor(np.random.default_rng(2).random((40, 25)))

    def fill(k, out):
        out.copy_(C[k * 10:(k + 1) * 10])

    stable = _sinkhorn_log(fill, [10, 10, 10, 10], 25, 0.05, 3000, 1e-12, stable=True)
    fast = _sinkhorn_log(fill, [10, 10, 10, 10], 25, 0.05, 3000, 1e-12, stable=False)
    assert stable.converged and fast.converged
    assert stable.n_iter == fast.n_iter
    torch.testing.assert_close(stable.g, fast.g, rtol=0, atol=1e-12)


def test_small_reg_recovers_exact_assignment():
    # a clear-cut assignment problem: controls are the perturbed cells permuted plus small noise
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 3)) * 3
    perm = rng.permutation(12)
    Y = X[perm] + 0.05 * rng.normal(size=(12, 3))
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    _, exact = linear_sum_assignment(C)
    res = ot_match(X, Y, reg=0.01, max_iter=5000, tol=1e-6)
    assert res.converged
    np.testing.assert_array_equal(res.match, exact)
    np.testing.assert_array_equal(res.match, np.argsort(perm))


# ----------------------------------------------------------------------------- OT pairing
@pytest.mark.parametrize("reg", [1.0, 0.05])
def test_ot_matches_dense_reference(reg):
    X, cond, is_control, split = toy()
    pair = pair_controls(X, cond, is_control, split, "ot", reg=reg, max_iter=5000, tol=1e-12)
    np.testing.assert_array_equal(pair, reference_pairing(X, cond, is_control, split, reg))


@pytest.mark.parametrize("cache", [True, False])
def test_chunked_equals_single_chunk(monkeypatch, cache):
    X, cond, is_control, split = toy(seed=4, n_cells=240)
    if not cache:  # recompute every chunk's costs on every pass
        monkeypatch.setattr(pairing, "COST_CACHE_BYTES", 0)
    kw = dict(reg=0.1, max_iter=1000, tol=1e-10)
    whole = pair_controls(X, cond, is_control, split, "ot", chunk_size=10_000, **kw)
    for chunk in (1, 7, 64):
        np.testing.assert_array_equal(
            pair_controls(X, cond, is_control, split, "ot", chunk_size=chunk, **kw), whole)


def test_ot_is_deterministic_and_uses_training_controls_only():
    X, cond, is_control, split = toy(seed=5)
    a = pair_controls(X, cond, is_control, split, "ot", seed=0)
    b = pair_controls(X, cond, is_control, split, "ot", seed=0)
    np.testing.assert_array_equal(a, b)
    assert np.all(a[is_control] == -1)
    m = a[~is_control]
    assert np.all(m >= 0) and np.all(is_control[m]) and np.all(split[m] == 0)


def test_csr_and_dense_give_the_same_pairs():
    X, cond, is_control, split = toy(seed=6)
    X[np.abs(X) < 0.7] = 0.0  # sparse-ish, like log-normalised counts
    cols = {1: [2], 2: [0, 4]}
    for cf in (None, cols):
        dense = pair_controls(X, cond, is_control, split, "ot", condition_features=cf)
        csr = pair_controls(sp.csr_matrix(X.astype(np.float32)).astype(np.float64), cond,
                            is_control, split, "ot", condition_features=cf)
        np.testing.assert_array_equal(dense, csr)


def test_condition_feature_columns_are_respected():
    # column 0 is the perturbed gene, column 1 a high-variance nuisance gene: on column 0 the
    # perturbed cells 2, 3 resemble controls 0, 1; on all columns they resemble controls 1, 0
    X = np.array([[0.0, 0.0],      # control 0
                  [3.0, 10.0],     # control 1
                  [0.1, 10.0],     # perturbed, gene like control 0, nuisance like control 1
                  [2.9, 0.0]])     # perturbed, gene like control 1, nuisance like control 0
    cond = np.array([0, 0, 1, 1])
    is_control = cond == 0
    split = np.zeros(4, dtype=np.int8)
    kw = dict(reg=0.05, max_iter=2000, tol=1e-10)
    by_gene = pair_controls(X, cond, is_control, split, "ot", condition_features=[[], [0]], **kw)
    by_all = pair_controls(X, cond, is_control, split, "ot", condition_features=None, **kw)
    np.testing.assert_array_equal(by_gene, [-1, -1, 0, 1])
    np.testing.assert_array_equal(by_all, [-1, -1, 1, 0])
    # an empty entry, and a key missing from a mapping, both mean "all columns"
    np.testing.assert_array_equal(
        pair_controls(X, cond, is_control, split, "ot", condition_features=[[], []], **kw), by_all)
    np.testing.assert_array_equal(
        pair_controls(X, cond, is_control, split, "ot", condition_features={0: [0]}, **kw), by_all)
    np.testing.assert_array_equal(
        pair_controls(X, cond, is_control, split, "ot", condition_features={1: [0, 0]}, **kw),
        by_gene)


def test_ot_prefers_controls_of_the_same_cluster():
    # two well-separated control clusters; the condition's cells sit next to both, half each.
    # (Balanced OT must spread a condition over the pool in proportion, so a condition lying
    # next to a single cluster would still be sent half to the far one; see the module doc.)
    rng = np.random.default_rng(7)
    centre = np.array([[-6.0, 0, 0, 0], [6.0, 0, 0, 0]])
    ctrl_cluster = np.repeat([0, 1], 60)
    pert_cluster = np.repeat([0, 1], 80)
    X = np.vstack([centre[ctrl_cluster] + rng.normal(size=(120, 4)),
                   centre[pert_cluster] + 0.5 * rng.normal(size=(160, 4))])
    cluster = np.r_[ctrl_cluster, pert_cluster]
    is_control = np.r_[np.ones(120, bool), np.zeros(160, bool)]
    cond = np.where(is_control, 0, 1)
    split = np.zeros(len(X), dtype=np.int8)
    ot = pair_controls(X, cond, is_control, split, "ot", reg=0.1)
    rnd = pair_controls(X, cond, is_control, split, "random", seed=0)
    same_ot = np.mean(cluster[ot[~is_control]] == pert_cluster)
    same_rnd = np.mean(cluster[rnd[~is_control]] == pert_cluster)
    assert same_ot > 0.95
    assert same_rnd < 0.7


def test_ot_input_errors():
    X, cond, is_control, split = toy()
    with pytest.raises(DataError, match="outside"):
        pair_controls(X, cond, is_control, split, "ot", condition_features={1: [-1]})
    with pytest.raises(DataError, match="condition id 2"):
        pair_controls(X, cond, is_control, split, "ot", condition_features=[[], [0]])
    with pytest.raises(DataError, match="features"):
        pair_controls(None, cond, is_control, split, "ot")
    with pytest.raises(DataError, match="rows"):
        pair_controls(X[:-1], cond, is_control, split, "ot")
    with pytest.raises(DataError, match="reg"):
        pair_controls(X, cond, is_control, split, "ot", reg=0)
    X[np.nonzero(~is_control)[0][0], 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pair_controls(X, cond, is_control, split, "ot")


# ------------------------------------------------------------------------ random and mean
def test_random_pairing_is_reproducible_and_from_training_controls():
    X, cond, is_control, split = toy(seed=8)
    a = pair_controls(X, cond, is_control, split, "random", seed=3)
    b = pair_controls(None, cond, is_control, split, "random", seed=3)
    np.testing.assert_array_equal(a, b)
    # exactly the historical draw: pool[default_rng(seed + 1).integers(0, len(pool), n)]
    pool = np.nonzero(is_control & (split == 0))[0]
    perturbed = np.nonzero(~is_control)[0]
    expect = np.full(len(cond), -1, dtype=np.int64)
    expect[perturbed] = pool[np.random.default_rng(4).integers(0, len(pool), size=len(perturbed))]
    np.testing.assert_array_equal(a, expect)
    assert a.dtype == np.int64
    assert np.all(split[a[~is_control]] == 0) and np.all(is_control[a[~is_control]])
    assert not np.array_equal(a, pair_controls(None, cond, is_control, split, "random", seed=4))


def test_mean_pairing_and_controls():
    X, cond, is_control, split = toy(seed=9)
    pair = pair_controls(None, cond, is_control, split, "mean")
    assert pair.dtype == np.int64
    assert np.all(pair[~is_control] == -2) and np.all(pair[is_control] == -1)


def test_errors_for_empty_pool_and_bad_method():
    X, cond, is_control, split = toy()
    no_train_ctrl = np.where(is_control, 1, split).astype(np.int8)
    for method in ("random", "mean", "ot"):
        with pytest.raises(DataError, match="no control cells in the training split"):
            pair_controls(X, cond, is_control, no_train_ctrl, method)
    with pytest.raises(DataError, match=r"data\.pairing.*random, mean, ot"):
        pair_controls(X, cond, is_control, split, "nearest")
