"""Tests for grnvae.evaluation.grn_scoring: reference networks, reference scoring with the
evaluable-pair rule, the CausalBench-style causal test, BH correction, the correlation
baseline."""

from __future__ import annotations

import itertools
import json
import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats

from grnvae.errors import GRNError
from grnvae.evaluation.grn_scoring import (
    benjamini_hochberg,
    causal_test,
    correlation_grn,
    read_reference,
    score_reference,
)
from grnvae.grn import GRN

from .conftest import shared_file


def make_grn(edges, genes=None):
    """GRN from [(source, target, probability), ...]."""
    frame = pd.DataFrame(edges, columns=["source", "target", "probability"])
    if genes is None:
        genes = sorted(set(frame["source"]) | set(frame["target"]))
    index = {g: i for i, g in enumerate(genes)}
    edge_index = np.array([[index[s] for s in frame["source"]],
                           [index[t] for t in frame["target"]]], dtype=np.int64).reshape(2, -1)
    return GRN(genes, edge_index, {"probability": frame["probability"].to_numpy()})


# ----------------------------------------------------------------------------- score_reference
REFERENCE = pd.DataFrame({
    "source": ["A", "A", "B", "B"],
    "target": ["C", "D", "A", "E"],
})  # sources {A, B}; genes {A, B, C, D, E}


def test_score_reference_hand_computed():
    grn = make_grn([
        ("A", "C", 0.9),   # evaluable, positive
        ("A", "E", 0.8),   # evaluable (E is a reference target), negative
        ("B", "A", 0.7),   # evaluable, positive
        ("A", "D", 0.3),   # evaluable, positive
        ("B", "C", 0.2),   # evaluable, negative
        ("C", "A", 0.95),  # C is not a reference source -> not evaluable
        ("A", "X", 0.99),  # X is nowhere in the reference -> not evaluable
        ("A", "A", 1.0),   # self loop -> never evaluable
    ])
    out = score_reference(grn, REFERENCE, ks=(1, 2, 3, 10))
    assert out["edges"] == 7
    assert out["evaluable_pairs"] == 5
    assert out["positives"] == 3
    assert out["reference_pairs"] == 4
    # reference pairs among GRN nodes {A, C, D, E, X, B}: all four
    assert out["reference_pairs_among_nodes"] == 4
    assert out["auprc_random"] == pytest.approx(3 / 5)
    # ranking: AC(+) AE(-) BA(+) AD(+) BC(-)
    assert out["precision_at_1"] == 1.0 and out["recall_at_1"] == pytest.approx(1 / 3)
    assert out["precision_at_2"] == 0.5 and out["recall_at_2"] == pytest.approx(1 / 3)
    assert out["precision_at_3"] == pytest.approx(2 / 3)
    assert out["recall_at_3"] == pytest.approx(2 / 3)
    assert out["precision_at_10"] == pytest.approx(3 / 5)  # all 5 evaluable edges
    assert out["recall_at_10"] == 1.0
    assert out["early_precision"] == pytest.approx(2 / 3)  # k = 3 positives
    # AP = (1/3)*1 + (1/3)*(2/3) + (1/3)*(3/4)
    assert out["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # AUROC: positives ranked above negatives in 4 of 6 pairs
    assert out["auroc"] == pytest.approx(4 / 6)
    # thresholded at 0.5: AC, AE, BA -> 2 TP of 3 predicted, 3 positives
    assert out["predicted"] == 3
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    json.dumps(out)  # JSON-friendly


def test_a_complete_truth_scores_every_pair():
    """complete=True (a simulator's truth): every edge between distinct nodes is evaluable, so an
    edge from a regulator the truth gives no target is a false positive, not left out."""
    grn = make_grn([("A", "B", 0.9), ("D", "B", 0.8), ("A", "C", 0.1), ("B", "B", 0.99)])
    truth = pd.DataFrame({"source": ["A"], "target": ["B"]})
    partial = score_reference(grn, truth)
    full = score_reference(grn, truth, complete=True)
    assert partial["evaluable_pairs"] == 1  # D is no source and C is not in the truth: left out
    assert full["evaluable_pairs"] == 3 and full["positives"] == 1  # the self loop never counts
    assert full["auprc"] == 1.0 and full["auprc_random"] == 1 / 3
    worse = score_reference(make_grn([("A", "B", 0.5), ("D", "B", 0.8), ("A", "C", 0.1)]), truth, complete=True)
    assert worse["auprc"] == 0.5 and worse["early_precision"] == 0.0


def test_signed_accuracy_reads_weights_as_changes_per_loss_of_the_regulator():
    # top k = 3 positives: AC(+), AE(-), BA(+); AD(+) ranks 4th. The reference activates A -> C
    # and represses B -> A, so a loss of A lowers C (weight < 0) and a loss of B raises A (> 0)
    grn = make_grn([("A", "C", 0.9), ("A", "E", 0.8), ("B", "A", 0.7), ("A", "D", 0.3), ("B", "C", 0.2)])
    reference = REFERENCE.assign(weight=[1.0, 1.0, -1.0, 2.0])

    def weighted(weights):  # values by edge name, in the GRN's (coalesced) edge order
        frame = grn.to_dataframe()
        return grn.with_edge_attr("weight", [weights[s + t] for s, t in zip(frame["source"], frame["target"])])

    right = weighted({"AC": -0.5, "AE": 0.3, "BA": 0.4, "AD": 0.9, "BC": 0.1})
    out = score_reference(right, reference)
    assert out["signed_accuracy"] == 1.0 and out["signed_edges"] == 2  # AC, BA (AE is no reference edge)
    half = score_reference(weighted({"AC": -0.5, "AE": 0.3, "BA": -0.4, "AD": 0.9, "BC": 0.1}), reference)
    assert half["signed_accuracy"] == 0.5 and half["signed_edges"] == 2
    # no weights on either side: undefined, nothing counted
    assert math.isnan(score_reference(right, REFERENCE)["signed_accuracy"])
    nothing = score_reference(grn, reference)
    assert math.isnan(nothing["signed_accuracy"]) and nothing["signed_edges"] == 0


def test_score_reference_ties_names_and_errors():
    # equal scores: ties broken by source, then target name -> deterministic top-k
    grn = make_grn([("B", "A", 0.5), ("A", "E", 0.5), ("A", "C", 0.5)])
    out = score_reference(grn, REFERENCE, ks=(1,))
    assert out["precision_at_1"] == 1.0  # A->C comes first (A < B, C < E)
    # case and whitespace of gene names do not matter
    grn_lower = make_grn([("a", "c", 0.9), ("b", "e ", 0.1)])
    ref = pd.DataFrame({"source": [" A", "B"], "target": ["C", "e"]})
    out = score_reference(grn_lower, ref, ks=(1,))
    assert out["evaluable_pairs"] == 2 and out["positives"] == 2
    # no evaluable pair: counts are 0, metrics NaN
    out = score_reference(make_grn([("X", "Y", 0.9)]), REFERENCE)
    assert out["evaluable_pairs"] == 0 and math.isnan(out["auprc"])
    # nothing above the threshold: precision undefined, recall and F1 zero; NaN scores last
    out = score_reference(make_grn([("A", "C", float("nan")), ("A", "E", 0.2)]), REFERENCE,
                          ks=(1,))
    assert out["predicted"] == 0 and math.isnan(out["precision"])
    assert out["recall"] == 0.0 and out["f1"] == 0.0
    assert out["precision_at_1"] == 0.0  # A->E (0.2) outranks A->C (NaN)
    with pytest.raises(GRNError, match="weight"):
        score_reference(grn, REFERENCE, score="weight")
    with pytest.raises(GRNError, match="source"):
        score_reference(grn, pd.DataFrame({"tf": ["A"], "gene": ["B"]}))


# ----------------------------------------------------------------------------- read_reference
def test_read_reference_formats_and_errors(tmp_path):
    tsv = tmp_path / "net.tsv"
    tsv.write_text("TF\tTarget\tmode\n gata1 \tklf1\t+\nGATA1\tKLF1\t+\nSPI1\tSPI1\t-\nSPI1\tCEBPA\t+\n")
    df = read_reference(tsv)
    assert list(df.columns) == ["source", "target"]
    assert list(map(tuple, df.to_numpy())) == [("GATA1", "KLF1"), ("SPI1", "CEBPA")]
    assert df.attrs["rows"] == 4 and df.attrs["self_pairs"] == 1

    csv = tmp_path / "lr.csv.gz"
    pd.DataFrame({"Ligand": ["a"], "Receptor": ["b"]}).to_csv(csv, index=False)
    assert list(map(tuple, read_reference(csv).to_numpy())) == [("A", "B")]

    custom = tmp_path / "custom.txt"
    custom.write_text("reg,tgt\nx,y\n")
    assert list(map(tuple, read_reference(custom, source="REG", target="tgt", sep=",")
                    .to_numpy())) == [("X", "Y")]

    corum = tmp_path / "corum.csv"
    corum.write_text('ID,Name,Genes,Length\n1,c1,"A;B;C",3\n2,c2,"B;A",2\n3,c3,"D",1\n')
    pairs = set(map(tuple, read_reference(corum).to_numpy()))
    assert pairs == {(a, b) for a, b in itertools.permutations("ABC", 2)}

    bad = tmp_path / "bad.tsv"
    bad.write_text("gene_a\tgene_b\nA\tB\n")
    with pytest.raises(GRNError) as info:
        read_reference(bad)
    assert "bad.tsv" in str(info.value) and "gene_a" in str(info.value)
    with pytest.raises(GRNError, match="nope"):
        read_reference(bad, source="gene_a", target="nope")
    with pytest.raises(GRNError, match="does not exist"):
        read_reference(tmp_path / "missing.tsv")


def test_read_reference_chipseq_k562():
    path = shared_file("reference_networks", "chipseq_K562.csv.gz")
    start = time.perf_counter()
    df = read_reference(path)
    elapsed = time.perf_counter() - start
    attrs = df.attrs
    print(f"chipseq_K562: {attrs['rows']} rows, {attrs['pairs']} unique pairs, "
          f"{attrs['self_pairs']} self pairs, {df['source'].nunique()} sources, "
          f"{len(set(df['source']) | set(df['target']))} genes, {elapsed:.1f} s")
    assert attrs["columns"] == ["source", "target"]
    assert 850_000 <= attrs["rows"] <= 1_050_000
    assert len(df) == attrs["pairs"] and not df.duplicated().any()
    assert attrs["pairs"] + attrs["self_pairs"] <= attrs["rows"]
    assert 100 <= df["source"].nunique() <= 1000
    assert (df["source"] != df["target"]).all()
    assert elapsed < 15


def test_read_reference_corum_and_ligand_receptor():
    path = shared_file("reference_networks", "corum_complexes.csv")
    df = read_reference(path)
    raw = pd.read_csv(path)
    expected = set()
    for members in raw["Genes"].dropna():
        genes = {g.strip().upper() for g in members.split(";") if g.strip()}
        expected |= set(itertools.permutations(genes, 2))
    print(f"CORUM: {len(raw)} complexes -> {len(df)} ordered pairs")
    assert set(map(tuple, df.to_numpy())) == expected and len(df) == len(expected)
    assert 10_000 < len(df) < 1_000_000
    pairs = set(map(tuple, df.to_numpy()))
    assert all((b, a) in pairs for a, b in itertools.islice(pairs, 1000))  # both directions

    path = shared_file("reference_networks", "ligand_receptor_shao2020.tsv")
    lr = read_reference(path)
    print(f"ligand-receptor: {lr.attrs['rows']} rows -> {len(lr)} pairs")
    assert lr.attrs["columns"] == ["ligand_gene_symbol", "receptor_gene_symbol"]
    assert 1000 < len(lr) <= lr.attrs["rows"]


# ----------------------------------------------------------------------------- BH
def test_benjamini_hochberg_hand_example():
    p = [0.01, 0.04, 0.03, 0.20, np.nan]
    # sorted: 0.01, 0.03, 0.04, 0.20 with m = 4 -> 0.04, 0.06, 0.0533, 0.20 -> monotone
    q = benjamini_hochberg(p)
    np.testing.assert_allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert math.isnan(q[4])
    rng = np.random.default_rng(1)
    p = rng.random(50) ** 3
    if hasattr(scipy.stats, "false_discovery_control"):
        np.testing.assert_allclose(benjamini_hochberg(p),
                                   scipy.stats.false_discovery_control(p, method="bh"))
    assert len(benjamini_hochberg([])) == 0


# ----------------------------------------------------------------------------- causal test
def synthetic_screen(seed=0, n_genes=30, n_cells=80, n_ctrl=300):
    """Controls and perturbations P0..P4; perturbing Pi shifts gene Ti = G(10+i) strongly."""
    rng = np.random.default_rng(seed)
    genes = [f"P{i}" for i in range(5)] + [f"G{i}" for i in range(5, n_genes)]
    controls = rng.normal(size=(n_ctrl, n_genes))
    cells = {}
    for i in range(5):
        x = rng.normal(size=(n_cells, n_genes))
        x[:, genes.index(f"G{10 + i}")] += 3.0
        cells[f"P{i}"] = x
    return genes, cells, controls


def test_causal_test_true_edges_significant_non_edges_not():
    genes, cells, controls = synthetic_screen()
    edges = [(f"P{i}", f"G{10 + i}", 0.9) for i in range(5)]  # true edges
    null = [(f"P{i}", f"G{j}", 0.8) for i in range(5) for j in range(20, 26)]  # 30 non-effects
    edges += null
    edges += [("P0", "P0", 0.99),  # self loop: excluded
              ("G5", "G6", 0.99),  # G5 has no perturbed cells: not testable
              ("P1", "NOTMEASURED", 0.99),  # target not measured: not testable
              ("P2", "G11", 0.1)]  # below threshold
    grn = make_grn(edges)
    summary, table = causal_test(grn, cells, controls, genes, n_random=500, seed=3)
    json.dumps(summary)
    assert summary["n_predicted"] == 37  # score > 0.5 and not a self loop
    assert summary["n_tested"] == 35
    pred = table[table["predicted"]].set_index(["source", "target"])
    for i in range(5):
        assert pred.loc[(f"P{i}", f"G{10 + i}"), "significant"]
        assert pred.loc[(f"P{i}", f"G{10 + i}"), "q_value"] < 1e-6
        assert pred.loc[(f"P{i}", f"G{10 + i}"), "wasserstein"] > 2.0
    null_sig = pred.loc[null, "significant"]
    assert null_sig.sum() <= 1  # FDR control: at most a stray false discovery
    assert pred.loc[null, "wasserstein"].max() < 0.5
    assert summary["n_significant"] == 5 + null_sig.sum()
    # non-edges: 5 perturbations x 30 genes - 5 self pairs - 35 predicted = 110 pairs, all
    # tested (fewer than n_random); every real effect is predicted, so all non-edges are null
    assert summary["non_edge_pairs"] == 110 and summary["n_non_edges_tested"] == 110
    assert summary["false_omission_rate"] <= 0.05
    non = table[~table["predicted"]]
    assert not set(zip(non["source"], non["target"])) & set(pred.index)
    assert (non["source"] != non["target"]).all()
    assert summary["non_edge_mean_wasserstein"] < summary["mean_wasserstein"]
    # the q-values are BH of the p-values within each group
    np.testing.assert_allclose(table.loc[table["predicted"], "q_value"],
                               benjamini_hochberg(table.loc[table["predicted"], "p_value"]))
    # p-values and Wasserstein match scipy directly
    row = table.iloc[0]
    col = genes.index(row["target"])
    x, y = cells[row["source"]][:, col], controls[:, col]
    assert row["p_value"] == pytest.approx(
        scipy.stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    assert row["wasserstein"] == pytest.approx(scipy.stats.wasserstein_distance(x, y))


def test_causal_test_top_k_sparse_sampling_and_determinism():
    genes, cells, controls = synthetic_screen(seed=1)
    # the true edges get the highest scores; a non-edge between them
    edges = [(f"P{i}", f"G{10 + i}", 0.9 - 0.01 * i) for i in range(5)]
    edges += [("P0", "G25", 0.3)]
    grn = make_grn(edges)
    sparse_cells = {k: sp.csr_matrix(v) for k, v in cells.items()}
    a, ta = causal_test(grn, sparse_cells, sp.csr_matrix(controls), genes, top_k=3,
                        n_random=20, seed=7)
    b, tb = causal_test(grn, cells, controls, genes, top_k=3, n_random=20, seed=7)
    assert a == b
    pd.testing.assert_frame_equal(ta, tb)
    assert a["n_tested"] == 3 and a["fraction_significant"] == 1.0
    assert list(ta.loc[ta["predicted"], "target"]) == ["G10", "G11", "G12"]
    # exactly n_random non-edges, none of them predicted
    non = ta[~ta["predicted"]]
    assert len(non) == 20 and not non.duplicated(["source", "target"]).any()
    assert not ({("P0", "G10"), ("P1", "G11"), ("P2", "G12")}
                & set(zip(non["source"], non["target"])))
    # a different seed draws different non-edges
    _, tc = causal_test(grn, cells, controls, genes, top_k=3, n_random=20, seed=8)
    assert set(zip(tc["source"], tc["target"])) != set(zip(ta["source"], ta["target"]))
    # FOR over the random non-edges: the only real effects (P3->G13, P4->G14) are 2 of 135
    s, _ = causal_test(grn, cells, controls, genes, top_k=3, n_random=1000, seed=0)
    assert s["n_non_edges_tested"] == 150 - 5 - 3
    assert s["false_omission_rate"] == pytest.approx(2 / 142)


# ----------------------------------------------------------------------------- correlation
def test_correlation_grn_known_pair_and_top_k():
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 6))
    x[:, 2] = 0.9 * x[:, 0] + 0.1 * rng.normal(size=n)  # G0 ~ G2
    x[:, 4] = 0.0  # constant gene: |r| = 0
    genes = [f"G{i}" for i in range(6)]
    nodes = ["G2", "G0", "G1", "G3", "G4", "UNMEASURED"]
    grn = correlation_grn(x, genes, nodes)
    assert grn.genes == tuple(nodes)
    assert grn.num_edges == 5 * 4 and not grn.has_self_loops()
    frame = grn.to_dataframe().set_index(["source", "target"])["probability"]
    r = abs(np.corrcoef(x[:, [0, 1, 2, 3, 5]], rowvar=False))
    assert frame[("G0", "G2")] == pytest.approx(abs(np.corrcoef(x[:, 0], x[:, 2])[0, 1]), abs=1e-6)
    assert frame[("G0", "G2")] > 0.99 and frame[("G2", "G0")] == frame[("G0", "G2")]
    assert frame[("G0", "G1")] == pytest.approx(r[0, 1], abs=1e-6)
    assert frame[("G4", "G1")] == 0.0 and frame[("G1", "G4")] == 0.0
    assert "UNMEASURED" not in set(frame.index.get_level_values(0)) | set(
        frame.index.get_level_values(1))
    # sparse input gives the same scores
    sparse = correlation_grn(sp.csr_matrix(x), genes, nodes)
    np.testing.assert_allclose(sparse.edge_attr["probability"].numpy(),
                               grn.edge_attr["probability"].numpy(), atol=1e-6)
    # top-k keeps the two directions of the correlated pair
    top = correlation_grn(x, genes, nodes, k=2)
    assert {(grn.genes[s], grn.genes[t]) for s, t in top.edge_index.t().tolist()} == {
        ("G0", "G2"), ("G2", "G0")}
    # scored the same way as learned GRNs
    truth = pd.DataFrame({"source": ["G0", "G2"], "target": ["G2", "G0"]})
    assert score_reference(grn, truth, complete=True)["auprc"] == 1.0
    assert score_reference(grn, truth, ks=(2,))["precision_at_2"] == 1.0


def test_correlation_grn_blockwise_matches_dense(monkeypatch):
    import grnvae.evaluation.grn_scoring as module

    rng = np.random.default_rng(2)
    x = rng.poisson(1.0, size=(50, 40)).astype(np.float32)
    genes = [f"G{i}" for i in range(40)]
    full = correlation_grn(x, genes, genes)
    monkeypatch.setattr(module, "_BLOCK_FLOATS", 7 * 50)  # blocks of 7 sources
    blocked = correlation_grn(x, genes, genes)
    blocked_sparse = correlation_grn(sp.csc_matrix(x), genes, genes, k=25)
    np.testing.assert_allclose(blocked.edge_attr["probability"].numpy(),
                               full.edge_attr["probability"].numpy(), atol=1e-6)
    r = np.abs(np.corrcoef(x, rowvar=False))
    np.fill_diagonal(r, -1)
    flat = np.sort(r.ravel())[::-1][:25]
    np.testing.assert_allclose(np.sort(blocked_sparse.edge_attr["probability"].numpy())[::-1],
                               flat, atol=1e-6)
    # top-k from blocks equals top-k computed in one go
    one = correlation_grn(x, genes, genes, k=25)
    assert one.edge_index.tolist() == blocked_sparse.edge_index.tolist()


def test_calibration_is_the_gap_between_probability_and_truth():
    from grnvae.evaluation.grn_scoring import calibration

    scores = np.r_[np.full(10, 0.05), np.full(10, 0.95)]
    labels = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    out = calibration(scores, labels)
    assert out["ece"] == pytest.approx(0.05)
    assert [row[2] for row in out["reliability"]] == [10, 10]
    # calibrated: 30% of the edges given 0.3 are true
    out = calibration(np.full(10, 0.3), np.arange(10) < 3)
    assert out["ece"] == pytest.approx(0.0)
    # over-confident: everything at 0.9, half true
    assert calibration(np.full(10, 0.9), np.arange(10) < 5)["ece"] == pytest.approx(0.4)
    assert calibration(np.array([1.5, 0.2]), np.array([True, False])) == {}  # not probabilities


def test_perturbation_de_grn_calls_changed_genes():
    """Regulator A moves gene B (and, downstream, C) but not D: A -> B and A -> C are called, A -> D
    is not, no self loop, and the weight is the signed mean change."""
    from grnvae.evaluation.grn_scoring import perturbation_de_grn

    rng = np.random.default_rng(0)
    genes = ["A", "B", "C", "D"]
    ctrl = rng.normal(0, 1, (300, 4))
    pert = rng.normal(0, 1, (300, 4)) + np.array([-3.0, 2.0, -1.0, 0.0])
    grn = perturbation_de_grn({"A": pert, "X": pert[:1]}, ctrl, genes, genes + ["X"])
    edges = {(grn.genes[s], grn.genes[t]): (p, w) for (s, t), p, w in zip(
        grn.edge_index.t().tolist(), grn.edge_attr["probability"].tolist(), grn.edge_attr["weight"].tolist())}
    assert set(edges) == {("A", "B"), ("A", "C"), ("A", "D")}  # X has one cell: not tested
    assert edges[("A", "B")][0] > 0.99 and edges[("A", "C")][0] > 0.99 and edges[("A", "D")][0] < 0.9
    assert edges[("A", "B")][1] == pytest.approx(2.0, abs=0.2) and edges[("A", "C")][1] < 0


def test_welch_pvalues_equal_scipy_including_constant_groups():
    from grnvae.evaluation.grn_scoring import _moments, welch_pvalues

    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, (30, 40)).astype(float)
    y = rng.poisson(1.3, (200, 40)).astype(float)
    x[:, 0] = y[:, 0] = 0.0  # the same constant: undefined
    x[:, 1], y[:, 1] = 1.0, 0.0  # different constants: a certain change
    x[:, 2] = 2.0  # one constant group
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = scipy.stats.ttest_ind(x, y, equal_var=False, axis=0).pvalue
    ours = welch_pvalues(_moments(x), _moments(y))
    assert np.isnan(ours[0]) and ours[1] == 0.0
    np.testing.assert_allclose(ours[1:], ref[1:], rtol=1e-9, atol=1e-15)
