"""Perturbation-effect metrics, the split-half ceiling of the reference, and the baselines.

Expected values of the metrics are worked out by hand in the comments (not by calling the code
under test)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from grnvae.errors import DataError
from grnvae.evaluation.baselines import additive, linear, mean_effect, no_change, train_mean
from grnvae.evaluation.metrics import (
    EFFECT_METRICS,
    METRICS,
    discrimination,
    effect_metrics,
    score_effects,
    split_half_ceiling,
    top_k,
)

# --------------------------------------------------------------------------------------------
# effect_metrics on a hand-computed case
# --------------------------------------------------------------------------------------------

# six genes; both vectors sum to 0, so their means are 0
OBS = np.array([4.0, -3.0, 2.0, -1.0, -2.0, 0.0])
PRED = np.array([3.0, -1.0, -1.0, -2.0, 1.0, 0.0])


def test_effect_metrics_hand_computed():
    m = effect_metrics(PRED, OBS, top=3)
    assert set(m) == set(EFFECT_METRICS) == set(METRICS) - {"discrimination"}
    assert math.isnan(m["pearson_systema"])  # no ref given
    # cross = 4*3 + (-3)(-1) + 2(-1) + (-1)(-2) + (-2)(1) + 0 = 12 + 3 - 2 + 2 - 2 = 13
    # SS_obs = 16 + 9 + 4 + 1 + 4 = 34, SS_pred = 9 + 1 + 1 + 4 + 1 = 16
    # r = 13 / sqrt(34 * 16) = 13 / (4 sqrt 34)
    assert m["pearson_delta"] == pytest.approx(13 / (4 * math.sqrt(34)))
    # obs - pred = [1, -2, 3, 1, -3, 0] -> SS_res = 1 + 4 + 9 + 1 + 9 = 24
    assert m["mse"] == pytest.approx(24 / 6)
    assert m["r2_delta"] == pytest.approx(1 - 24 / 34)
    # |obs| = [4, 3, 2, 1, 2, 0]: top 3 = genes 0, 1 and 2 (2 ties with 4 at |2|, lower index wins)
    # pred there [3, -1, -1] (mean 1/3, deviations 8/3, -4/3, -4/3),
    # obs there [4, -3, 2] (mean 1, deviations 3, -4, 1)
    # cross = 8 + 16/3 - 4/3 = 12; SS_pred = 96/9 = 32/3; SS_obs = 9 + 16 + 1 = 26
    assert m["pearson_delta_top20"] == pytest.approx(12 / math.sqrt(32 / 3 * 26))
    # signs there: pred (+, -, -) vs obs (+, -, +) -> 2 of 3
    assert m["direction_acc_top20"] == pytest.approx(2 / 3)
    # |pred| = [3, 1, 1, 2, 1, 0]: top 3 = genes 0, 3, then 1 (ties 1, 2, 4 at |1|: lowest index)
    # {0, 1, 3} vs {0, 1, 2}: |intersection| 2, |union| 4
    assert m["jaccard_top20"] == pytest.approx(0.5)
    # only 6 genes: top-50 would be every gene for any prediction, so it says nothing
    assert math.isnan(m["jaccard_top50"])
    # a constant prediction has no top genes of its own (its set would be the tie-break order)
    assert math.isnan(effect_metrics(np.zeros(6), [4, -3, 2, 0, 1, 0.5], top=3)["jaccard_top20"])


def test_pearson_systema_hand_computed():
    ref = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 0.0])
    m = effect_metrics(PRED, OBS, top=3, ref=ref)
    # pred - ref = [2, 0, -2, -1, 1, 0], obs - ref = [3, -2, 1, 0, -2, 0]: both sum to 0
    # cross = 6 + 0 - 2 + 0 - 2 + 0 = 2; SS = 4 + 4 + 1 + 1 = 10 and 9 + 4 + 1 + 4 = 18
    assert m["pearson_systema"] == pytest.approx(2 / math.sqrt(10 * 18))
    # the other metrics do not depend on ref
    plain = effect_metrics(PRED, OBS, top=3)
    assert all(m[k] == plain[k] or (math.isnan(m[k]) and math.isnan(plain[k]))
               for k in EFFECT_METRICS if k != "pearson_systema")
    # a prediction equal to ref is constant once centred: undefined
    assert math.isnan(effect_metrics(ref, OBS, ref=ref)["pearson_systema"])
    assert math.isnan(effect_metrics(PRED, OBS, ref=np.full(6, np.nan))["pearson_systema"])
    with pytest.raises(DataError, match="ref has 5 genes"):
        effect_metrics(PRED, OBS, ref=ref[:5])


def test_effect_metrics_default_top_uses_20():
    # 25 genes, obs strength decreasing with index; pred matches obs on the first 20 genes only
    obs = np.linspace(25, 1, 25)
    pred = obs.copy()
    pred[20:] = -100.0  # large |pred| outside the obs top-20
    m = effect_metrics(pred, obs)
    assert m["pearson_delta_top20"] == pytest.approx(1.0)
    assert m["direction_acc_top20"] == 1.0
    # |pred| top 20: genes 20..24 (|-100|) then genes 0..14 -> 15 shared of 25 in the union
    assert m["jaccard_top20"] == pytest.approx(15 / 25)


def test_top_k_ties_are_broken_by_gene_index():
    assert top_k(np.array([1.0, -1.0, 1.0, -1.0, 2.0]), 3).tolist() == [4, 0, 1]
    assert top_k(np.array([0.0, 0.0, 0.0]), 2).tolist() == [0, 1]
    assert top_k(np.array([-3.0, 3.0]), 5).tolist() == [0, 1]  # k clipped to the number of genes


def test_direction_zero_is_its_own_sign():
    # signs pred (0, +, -, 0) vs obs (0, +, +, -): equal, equal, differ, differ -> 2 of 4
    m = effect_metrics(np.array([0.0, 1.0, -1.0, 0.0]), np.array([0.0, 1.0, 1.0, -5.0]), top=4)
    assert m["direction_acc_top20"] == pytest.approx(0.5)


def test_constant_vectors_give_nan_not_errors():
    obs = np.array([1.0, -2.0, 0.5, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        m = effect_metrics(np.zeros(4), obs)
        assert math.isnan(m["pearson_delta"]) and math.isnan(m["pearson_delta_top20"])
        # r2 of the zero prediction: 1 - sum(obs^2) / sum((obs - 0.625)^2)
        ss_tot = sum((v - 0.625) ** 2 for v in obs)
        assert m["r2_delta"] == pytest.approx(1 - (1 + 4 + 0.25 + 9) / ss_tot)
        assert m["mse"] == pytest.approx((1 + 4 + 0.25 + 9) / 4)
        c = effect_metrics(obs, np.full(4, 0.1))  # constant obs (0.1 is not exact in binary)
        assert math.isnan(c["pearson_delta"]) and math.isnan(c["r2_delta"])
        assert c["mse"] == pytest.approx(np.mean((obs - 0.1) ** 2))


def test_non_finite_prediction_is_undefined():
    m = effect_metrics(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert all(math.isnan(v) for v in m.values())


def test_effect_metrics_rejects_bad_shapes():
    with pytest.raises(DataError, match="3 genes but obs has 2"):
        effect_metrics(np.zeros(3), np.zeros(2))
    with pytest.raises(DataError, match="empty"):
        effect_metrics(np.zeros(0), np.zeros(0))


# --------------------------------------------------------------------------------------------
# score_effects
# --------------------------------------------------------------------------------------------


def _frames():
    genes = ["g0", "g1", "g2"]
    obs = pd.DataFrame({"p1": [1.0, 0.0, -1.0], "p2": [2.0, 0.0, -2.0], "p3": [1.0, 2.0, 3.0],
                        "only_obs": [0.0, 1.0, 0.0]}, index=genes)
    pred = pd.DataFrame({"p1": [1.0, -1.0, 0.0], "p2": [2.0, 0.0, -2.0], "p3": [np.nan] * 3,
                         "only_pred": [5.0, 5.0, 1.0]}, index=genes)
    return obs, pred.iloc[::-1]  # pred's genes in another order


def test_score_effects_alignment_and_pooling():
    obs, pred = _frames()
    frame, summary = score_effects(pred, obs)
    assert list(frame.index) == ["p1", "p2", "p3"]  # shared perturbations, obs' order
    assert list(frame.columns) == list(METRICS)
    # p1: obs [1, 0, -1], pred [1, -1, 0] (after aligning genes): cross 1, SS 2 and 2 -> 0.5
    assert frame.loc["p1", "pearson_delta"] == pytest.approx(0.5)
    # p1: obs - pred = [0, 1, -1] -> mse 2/3; r2 = 1 - 2/2 = 0
    assert frame.loc["p1", "mse"] == pytest.approx(2 / 3)
    assert frame.loc["p1", "r2_delta"] == pytest.approx(0.0)
    assert frame.loc["p2", "pearson_delta"] == pytest.approx(1.0)
    assert frame.loc["p2", "mse"] == 0.0
    assert frame.loc["p3"].isna().all()  # NaN prediction -> undefined
    assert summary["n_perturbations"] == 3
    assert summary["n_undefined"] == 1
    assert summary["pearson_delta"] == pytest.approx(0.75)  # mean of 0.5 and 1, p3 ignored
    assert summary["mse"] == pytest.approx(1 / 3)  # mean of 2/3 and 0
    # pooled over p1 and p2 (p3 undefined): obs [1,0,-1,2,0,-2], pred [1,-1,0,2,0,-2], means 0
    # cross = 1 + 4 + 4 = 9; SS_obs = 1 + 1 + 4 + 4 = 10; SS_pred = 1 + 1 + 4 + 4 = 10 -> 0.9
    assert summary["pearson_delta_pooled"] == pytest.approx(0.9)
    for m in METRICS:
        assert m in summary
    # discrimination among p1 and p2 (p3 undefined): p1's pred [1, -1, 0] is at squared distance
    # 0 + 1 + 1 = 2 from obs p1 and 1 + 1 + 4 = 6 from obs p2; p2's pred equals obs p2 -> both 1
    assert frame.loc["p1", "discrimination"] == 1.0 and frame.loc["p2", "discrimination"] == 1.0
    assert math.isnan(frame.loc["p3", "discrimination"])
    assert summary["discrimination"] == 1.0
    assert math.isnan(summary["pearson_systema"])  # no ref


def test_score_effects_pearson_systema_with_ref():
    obs, pred = _frames()
    # a Series is aligned on obs' genes whatever its order
    ref = pd.Series({"g2": 1.0, "g0": 0.0, "g1": -1.0})
    frame, summary = score_effects(pred, obs, ref=ref)
    # p1: pred - ref = [1, 0, -1], obs - ref = [1, 1, -2]: means 0 and 0
    # cross = 1 + 0 + 2 = 3; SS = 2 and 6 -> 3 / sqrt(12)
    assert frame.loc["p1", "pearson_systema"] == pytest.approx(3 / math.sqrt(12))
    # p2: pred == obs -> 1
    assert frame.loc["p2", "pearson_systema"] == pytest.approx(1.0)
    assert summary["pearson_systema"] == pytest.approx((3 / math.sqrt(12) + 1) / 2)
    # a vector is taken in obs' gene order; a one-column frame like a Series
    vec, _ = score_effects(pred, obs, ref=np.array([0.0, -1.0, 1.0]))
    one, _ = score_effects(pred, obs, ref=ref.to_frame("mean"))
    pd.testing.assert_frame_equal(vec, frame)
    pd.testing.assert_frame_equal(one, frame)
    with pytest.raises(DataError, match=r"ref lacks 1 genes of obs: \[g1\]"):
        score_effects(pred, obs, ref=ref.drop("g1"))
    with pytest.raises(DataError, match="ref has 2 genes but obs has 3"):
        score_effects(pred, obs, ref=np.zeros(2))


# --------------------------------------------------------------------------------------------
# discrimination
# --------------------------------------------------------------------------------------------


def test_discrimination_perfect_swapped_and_constant():
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((100, 8))  # distinct perturbations
    assert discrimination(obs, obs).tolist() == [1.0] * 8
    # orthogonal effects of equal size, each predicted as the opposite of itself: its own
    # observation is at squared distance 4, every other at 2 -> the farthest, score 0
    eye = np.eye(10, 5)
    assert discrimination(-eye, eye).tolist() == [0.0] * 5
    # predictions swapped for other perturbations' observations: effects x = 0, 1, ..., 5 along one
    # direction; p = 0, 1, 2 are predicted as x = 5 and p = 3, 4, 5 as x = 0, so the end points
    # get the observation farthest from their own
    line = np.outer(np.ones(4), np.arange(6.0))
    far = line[:, [5, 5, 5, 0, 0, 0]]
    # p = 0: pred x=5, distances to x = 0..5 are 5, 4, 3, 2, 1, 0 -> own (5) farthest: 0
    # p = 2: pred x=5, own at 3; closer: x = 3, 4, 5 (2, 1, 0) -> 1 - 3/5
    d = discrimination(far, line)
    assert d[0] == 0.0 and d[5] == 0.0 and d[2] == pytest.approx(1 - 3 / 5)
    # a constant prediction: all observations equidistant -> all ties -> 0.5 each
    assert discrimination(np.zeros((10, 5)), eye).tolist() == [0.5] * 5
    # and whatever the observations, its mean over perturbations is 0.5
    assert np.mean(discrimination(np.zeros((100, 8)), obs)) == pytest.approx(0.5)
    # a prediction opposite to each effect is about the worst, in high dimension
    assert np.mean(discrimination(-obs, obs)) < 0.1


def test_discrimination_hand_computed_ties_and_undefined():
    # one gene; observations x = 0, 1, 3; predictions 2, 2, 3 and a NaN one
    obs = np.array([[0.0, 1.0, 3.0, 7.0]])
    pred = np.array([[2.0, 2.0, 3.0, np.nan]])
    d = discrimination(pred, obs)
    # p0: distances to obs 2, 1, 1 -> own 2, two closer -> 1 - 2/2 = 0
    # p1: 2, 1, 1 -> own 1, one tie -> 1 - 0.5/2 = 0.75
    # p2: 3, 2, 0 -> own 0 -> 1 (the NaN perturbation does not take part: n = 3)
    assert d[:3].tolist() == [0.0, 0.75, 1.0] and math.isnan(d[3])
    # fewer than two perturbations with finite pred and obs: undefined
    assert np.isnan(discrimination(pred[:, [0, 3]], obs[:, [0, 3]])).all()
    with pytest.raises(DataError, match="one shape"):
        discrimination(np.zeros((3, 2)), np.zeros((3, 3)))


def test_score_effects_constant_prediction_discriminates_at_chance():
    rng = np.random.default_rng(2)
    genes, perts = [f"g{i}" for i in range(40)], [f"p{j}" for j in range(7)]
    obs = pd.DataFrame(rng.standard_normal((40, 7)), index=genes, columns=perts)
    _, summary = score_effects(no_change(genes, perts), obs)
    assert summary["discrimination"] == pytest.approx(0.5)
    _, good = score_effects(obs + 0.1 * rng.standard_normal(obs.shape), obs)
    assert good["discrimination"] == 1.0


def test_score_effects_gene_mismatch_names_the_genes():
    obs, pred = _frames()
    pred = pred.rename(index={"g1": "gX"})
    with pytest.raises(DataError, match=r"in obs but not pred: \[g1\]; in pred but not obs: \[gX\]"):
        score_effects(pred, obs)


def test_score_effects_rejects_empty_and_disjoint():
    obs, pred = _frames()
    with pytest.raises(DataError, match="share no perturbation"):
        score_effects(pred[["only_pred"]], obs)
    with pytest.raises(DataError, match="empty"):
        score_effects(pred.iloc[:, :0], obs)


# --------------------------------------------------------------------------------------------
# split-half ceiling
# --------------------------------------------------------------------------------------------

G_SIM, P_SIM, N_CELLS, N_CTRL, TAU = 200, 20, 61, 301, 0.15


def _simulate(rng, truth, sigma, mu0):
    """One full replicate: cells per perturbation and controls, Gaussian noise sigma per gene."""
    cells = {f"p{j}": mu0 + truth[j] + sigma * rng.standard_normal((N_CELLS, G_SIM)) for j in range(P_SIM)}
    controls = mu0 + sigma * rng.standard_normal((N_CTRL, G_SIM))
    return cells, controls


def _full_delta(cells, controls):
    return {k: v.mean(axis=0) - controls.mean(axis=0) for k, v in cells.items()}


@pytest.fixture(scope="module")
def sim():
    rng = np.random.default_rng(42)
    truth = TAU * rng.standard_normal((P_SIM, G_SIM))
    sigma = rng.uniform(0.5, 1.5, G_SIM)
    mu0 = rng.normal(2.0, 1.0, G_SIM)
    reps = [_simulate(rng, truth, sigma, mu0) for _ in range(6)]
    return truth, sigma, reps


def test_ceiling_matches_independent_replicates(sim):
    truth, sigma, reps = sim
    cells, controls = reps[0]
    frame, summary = split_half_ceiling(cells, controls, seed=0, n_splits=5)
    assert summary["n_perturbations"] == P_SIM and summary["n_undefined"] == 0

    deltas = [_full_delta(c, k) for c, k in reps]
    # reliability: the correlation between two independent full-size replicates of the reference
    rep_r = [np.corrcoef(deltas[a][f"p{j}"], deltas[a + 1][f"p{j}"])[0, 1]
             for a in (0, 2, 4) for j in range(P_SIM)]
    assert 0.3 < np.mean(rep_r) < 0.7  # the simulation is in the informative range
    assert summary["reliability_pearson_delta"] == pytest.approx(np.mean(rep_r), abs=0.05)
    pooled = [np.corrcoef(np.concatenate(list(deltas[a].values())),
                          np.concatenate(list(deltas[a + 1].values())))[0, 1] for a in (0, 2, 4)]
    assert summary["pearson_delta_pooled"] ** 2 == pytest.approx(np.mean(pooled), abs=0.05)
    # a noise-free prediction correlates with the reference by about sqrt(reliability)
    truth_r = [np.corrcoef(truth[j], deltas[a][f"p{j}"])[0, 1] for a in range(6) for j in range(P_SIM)]
    assert summary["pearson_delta"] == pytest.approx(np.mean(truth_r), abs=0.05)

    # mse ceiling: E||D - truth||^2 / G = mean_g sigma_g^2 (1/n + 1/m)
    analytic = float(np.mean(sigma**2) * (1 / N_CELLS + 1 / N_CTRL))
    empirical = np.mean([np.mean((deltas[a][f"p{j}"] - truth[j]) ** 2) for a in range(6) for j in range(P_SIM)])
    assert empirical == pytest.approx(analytic, rel=0.03)  # the simulation itself
    assert summary["mse"] == pytest.approx(analytic, rel=0.07)

    # r2 ceiling: 1 - mse / var_g(D), the R^2 the truth gets against the reference
    full = _full_delta(cells, controls)
    for j in (0, 7):
        p = f"p{j}"
        assert frame.loc[p, "r2_delta"] == pytest.approx(1 - frame.loc[p, "mse"] / np.var(full[p]))
    truth_r2 = [effect_metrics(truth[j], deltas[a][f"p{j}"])["r2_delta"] for a in range(6) for j in range(P_SIM)]
    assert summary["r2_delta"] == pytest.approx(np.mean(truth_r2), abs=0.07)

    # direction / overlap between halves understate what the truth gets against the reference
    truth_m = [effect_metrics(truth[j], deltas[a][f"p{j}"]) for a in range(6) for j in range(P_SIM)]
    for k in ("direction_acc_top20", "jaccard_top20", "jaccard_top50"):
        assert summary[k] < np.mean([m[k] for m in truth_m])


def test_ceiling_systema_and_discrimination_match_replicates(sim):
    truth, sigma, reps = sim
    cells, controls = reps[0]
    ref = truth.mean(axis=0)  # the mean perturbed effect (here: the true one)
    frame, summary = split_half_ceiling(cells, controls, seed=0, n_splits=5, ref=ref)
    assert np.isfinite(frame["pearson_systema"]).all() and np.isfinite(frame["discrimination"]).all()
    # the other metrics do not depend on ref
    plain, _ = split_half_ceiling(cells, controls, seed=0, n_splits=5)
    assert plain["pearson_systema"].isna().all()
    pd.testing.assert_frame_equal(frame.drop(columns="pearson_systema"), plain.drop(columns="pearson_systema"))
    # a noise-free prediction of the centred effect reaches about sqrt(reliability) against the
    # centred reference
    deltas = [_full_delta(c, k) for c, k in reps]
    truth_r = [np.corrcoef(truth[j] - ref, deltas[a][f"p{j}"] - ref)[0, 1] for a in range(6) for j in range(P_SIM)]
    assert summary["pearson_systema"] == pytest.approx(np.mean(truth_r), abs=0.05)
    # discrimination between halves is a lower bound on what the truth gets against the reference
    truth_d = [discrimination(truth.T, np.stack([deltas[a][f"p{j}"] for j in range(P_SIM)], axis=1))
               for a in range(6)]
    assert 0.5 < summary["discrimination"] <= np.mean(truth_d) + 1e-12
    with pytest.raises(DataError, match="ref has 3 genes"):
        split_half_ceiling(cells, controls, ref=np.zeros(3))


def test_ceiling_strong_distinct_effects():
    # six perturbations, each shifting its own block of 10 genes by +2 over unit noise
    rng = np.random.default_rng(5)
    G = 60
    effects = np.zeros((6, G))
    for j in range(6):
        effects[j, 10 * j: 10 * j + 10] = 2.0
    cells = {f"p{j}": effects[j] + rng.standard_normal((30, G)) for j in range(6)}
    controls = rng.standard_normal((40, G))
    frame, summary = split_half_ceiling(cells, controls, seed=0, n_splits=4, ref=effects.mean(axis=0))
    assert np.isfinite(summary["pearson_systema"]) and summary["pearson_systema"] > 0.9
    assert summary["discrimination"] == 1.0  # each half-delta is closest to its own other half
    assert np.isfinite(frame[list(METRICS)].to_numpy()).all()


def test_ceiling_mse_is_unbiased_for_odd_sizes():
    # with many random splits, the estimator's mean is mean_g(s_p^2 / n + s_c^2 / m), s^2 with
    # ddof 1 (simple random sampling without replacement: E(mean_A - mean_B)^2 = s^2 n/(n_A n_B))
    rng = np.random.default_rng(3)
    cells = rng.standard_normal((5, 40)) * 2.0
    controls = rng.standard_normal((7, 40))
    frame, _ = split_half_ceiling({"a": cells}, controls, seed=1, n_splits=3000)
    expected = np.mean(cells.var(axis=0, ddof=1) / 5 + controls.var(axis=0, ddof=1) / 7)
    assert frame.loc["a", "mse"] == pytest.approx(expected, rel=0.015)  # plain MSE/4 is ~4% high here


def test_ceiling_small_perturbations_sparse_and_determinism():
    rng = np.random.default_rng(0)
    controls = rng.normal(1.0, 1.0, (30, 12))
    cells = {"b": rng.normal(1.5, 1.0, (10, 12)), "tiny": rng.normal(1.0, 1.0, (3, 12)),
             "a": rng.normal(0.5, 1.0, (9, 12))}
    frame, summary = split_half_ceiling(cells, controls, seed=7, n_splits=3, ref=np.full(12, 0.25))
    assert frame.loc["tiny"].isna().all()
    assert summary["n_undefined"] == 1 and summary["n_perturbations"] == 3
    # every metric is defined for them, but the top-k overlaps: 12 genes, each top set is all of them
    assert np.isfinite(frame.loc[["a", "b"]].drop(columns=["jaccard_top20", "jaccard_top50"]).to_numpy()).all()
    assert frame.loc[["a", "b"], ["jaccard_top20", "jaccard_top50"]].isna().all().all()
    # with a single perturbation of >= 4 cells, discrimination has nothing to compare against
    alone, _ = split_half_ceiling({"a": cells["a"]}, controls, seed=7, n_splits=3)
    assert math.isnan(alone.loc["a", "discrimination"]) and np.isfinite(alone.loc["a", "pearson_delta"])
    # same seed -> same result, whatever the dict order; sparse input -> same result
    again, _ = split_half_ceiling(dict(reversed(list(cells.items()))), controls, seed=7, n_splits=3,
                                  ref=np.full(12, 0.25))
    pd.testing.assert_frame_equal(frame, again.loc[frame.index])
    sparse, _ = split_half_ceiling({k: sp.csr_matrix(v) for k, v in cells.items()}, sp.csr_matrix(controls),
                                   seed=7, n_splits=3, ref=pd.Series(np.full(12, 0.25)))
    pd.testing.assert_frame_equal(frame, sparse)
    other, _ = split_half_ceiling(cells, controls, seed=8, n_splits=3, ref=np.full(12, 0.25))
    assert not np.allclose(frame.loc["a"].to_numpy(), other.loc["a"].to_numpy())


def test_ceiling_errors():
    with pytest.raises(DataError, match="empty"):
        split_half_ceiling({}, np.zeros((5, 3)))
    with pytest.raises(DataError, match="at least 4 control"):
        split_half_ceiling({"a": np.zeros((5, 3))}, np.zeros((3, 3)))
    with pytest.raises(DataError, match="'a'"):
        split_half_ceiling({"a": np.zeros((5, 4))}, np.zeros((5, 3)))


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------

TRAIN = pd.DataFrame({"A": [1.0, 0.0, 2.0], "B": [0.0, 1.0, -1.0], "A+B": [9.0, 9.0, 9.0]},
                     index=["g0", "g1", "g2"])


def test_no_change_and_train_mean():
    z = no_change(["g0", "g1"], ["A", "C"])
    assert z.shape == (2, 2) and (z.to_numpy() == 0).all() and list(z.columns) == ["A", "C"]
    tm = train_mean(TRAIN, ["B", "Z"])
    assert tm["B"].tolist() == [0.0, 1.0, -1.0]
    assert tm["Z"].isna().all()  # unseen perturbation: undefined
    assert list(tm.index) == ["g0", "g1", "g2"]


def test_mean_effect_is_the_mean_training_delta():
    train = pd.DataFrame({"A": [1.0, 0.0, 2.0], "B": [0.0, 1.0, -1.0], "C": [2.0, -4.0, 5.0]},
                         index=["g0", "g1", "g2"])
    pred = mean_effect(train, ["A", "Z", "A+Z"])  # seen, unseen, combination: all the same
    assert list(pred.columns) == ["A", "Z", "A+Z"] and list(pred.index) == ["g0", "g1", "g2"]
    # g0: (1 + 0 + 2) / 3 = 1; g1: (0 + 1 - 4) / 3 = -1; g2: (2 - 1 + 5) / 3 = 2
    for p in pred.columns:
        assert pred[p].tolist() == pytest.approx([1.0, -1.0, 2.0])
        np.testing.assert_allclose(pred[p].to_numpy(), train.mean(axis=1).to_numpy())
    # a NaN training value is skipped: g1 over A and C only
    gap = train.copy()
    gap.loc["g1", "B"] = np.nan
    assert mean_effect(gap, ["A"])["A"].tolist() == pytest.approx([1.0, -2.0, 2.0])
    # centred on itself as ref, its pearson_systema is undefined; its discrimination is chance
    obs = pd.DataFrame({"A": [3.0, 0.0, 1.0], "B": [0.0, 2.0, -1.0], "C": [1.0, -1.0, 4.0]},
                       index=["g0", "g1", "g2"])
    pred = mean_effect(train, list(obs.columns))
    frame, summary = score_effects(pred, obs, ref=pred["A"])
    assert frame["pearson_systema"].isna().all()
    assert np.isfinite(frame["pearson_delta"]).all()
    assert summary["discrimination"] == pytest.approx(0.5)


def test_additive_sums_singles():
    pred = additive(TRAIN, ["A+B", "A+Z", "A", "Z", "B+A+A"])
    assert pred["A+B"].tolist() == [1.0, 1.0, 1.0]  # [1,0,2] + [0,1,-1]; the seen combo is ignored
    assert pred["A+Z"].isna().all()  # a single missing
    assert pred["A"].isna().all() and pred["Z"].isna().all()  # singles are train_mean's, not additive's
    assert pred["B+A+A"].tolist() == [2.0, 1.0, 3.0]
    assert additive(TRAIN.rename(columns={"A+B": "A|B"}), ["A|B"], separator="|")["A|B"].tolist() == [1.0, 1.0, 1.0]


def test_baselines_reject_empty_inputs():
    with pytest.raises(DataError):
        no_change([], ["A"])
    with pytest.raises(DataError):
        no_change(["g0"], [])
    for fn in (train_mean, mean_effect, additive, linear):
        with pytest.raises(DataError, match="empty"):
            fn(TRAIN.iloc[:, :0], ["A"])
        with pytest.raises(DataError, match="empty"):
            fn(TRAIN, [])


def _bilinear(seed=0, n_genes=30, k=3, n_train=8):
    """Y = E W P^T with gene embedding E (columns centred over genes) and training targets' rows
    summing to 0, so the row means b of Y are 0 and Y is exactly the model."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n_genes, k))
    E[:n_train] -= E[:n_train].mean(axis=0)  # training targets are genes 0..n_train-1
    E[n_train:] -= E[n_train:].mean(axis=0)  # -> every column of E also sums to 0
    W = rng.standard_normal((k, k))
    genes = [f"g{i}" for i in range(n_genes)]
    Y = E @ W @ E[:n_train].T
    return genes, E, W, pd.DataFrame(Y, index=genes, columns=genes[:n_train])


def test_linear_recovers_exact_bilinear_model():
    genes, E, W, Y = _bilinear()
    assert np.allclose(Y.mean(axis=1), 0)
    unseen = ["g20", "g21+g25", "g3+g22"]
    truth = {"g20": E @ W @ E[20], "g21+g25": E @ W @ (E[21] + E[25]), "g3+g22": E @ W @ (E[3] + E[22])}
    for emb in (pd.DataFrame(E, index=genes), E, None):  # given (frame, array) or PCA of Y
        kw = {"gene_embedding": emb} if emb is not None else {"n_components": 3}
        fit = linear(Y, list(Y.columns), ridge=0.0, **kw)
        np.testing.assert_allclose(fit.to_numpy(), Y.to_numpy(), atol=1e-8)
        pred = linear(Y, unseen, ridge=0.0, **kw)
        for p, t in truth.items():
            np.testing.assert_allclose(pred[p].to_numpy(), t, atol=1e-8)
    # deterministic
    pd.testing.assert_frame_equal(linear(Y, unseen), linear(Y, unseen))


def test_linear_unmeasured_target_and_combination_additivity():
    genes, E, W, Y = _bilinear(seed=1)
    Y = Y + 0.3  # b = 0.3 for every gene
    pred = linear(Y, ["NOT_MEASURED", "g11", "g12", "g11+g12", "g11+NOT_MEASURED"], ridge=0.5, n_components=3)
    np.testing.assert_allclose(pred["NOT_MEASURED"].to_numpy(), Y.mean(axis=1).to_numpy())
    b = pred["NOT_MEASURED"].to_numpy()
    # a combination adds its targets' embeddings, so its effect over b is the sum of theirs
    np.testing.assert_allclose(pred["g11+g12"] - b, (pred["g11"] - b) + (pred["g12"] - b), atol=1e-10)
    np.testing.assert_allclose(pred["g11+NOT_MEASURED"], pred["g11"], atol=1e-12)
    # an embedding frame may hold rows for unmeasured targets
    emb = pd.DataFrame(np.vstack([E, np.ones((1, 3))]), index=genes + ["EXTRA"])
    p2 = linear(Y, ["EXTRA"], gene_embedding=emb, ridge=0.0)
    assert not np.allclose(p2["EXTRA"].to_numpy(), b)
    with pytest.raises(DataError, match="lacks 1 genes"):
        linear(Y, ["g1"], gene_embedding=pd.DataFrame(E[1:], index=genes[1:]))
