"""The Perturb-seq simulator: structure, determinism, ground truth, the GRN driving counts."""

from __future__ import annotations

import hashlib

import anndata
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from grnvae.data.simulate import simulate, true_grn_edges, true_lfc
from grnvae.errors import DataError

N_CELLS = 6000  # > one chunk of 2000 cells, enough for stable statistical checks


@pytest.fixture(scope="module")
def adata() -> anndata.AnnData:
    return simulate(n_cells=N_CELLS, seed=7)


@pytest.fixture(scope="module")
def normalised(adata):
    """(labels, gene index, cells x genes counts per 10k)."""
    X = adata.X.toarray()
    norm = X / X.sum(axis=1, keepdims=True) * 1e4
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    index = {g: i for i, g in enumerate(adata.var_names)}
    return labels, index, norm


def _same(a: anndata.AnnData, b: anndata.AnnData) -> bool:
    return (
        (a.X != b.X).nnz == 0
        and a.obs.equals(b.obs)
        and true_grn_edges(a).equals(true_grn_edges(b))
    )


def test_deterministic_for_a_seed_and_different_across_seeds():
    kw = dict(n_genes=60, n_regulators=12, n_cells=600, n_doubles=3)
    a, b, c = simulate(seed=3, **kw), simulate(seed=3, **kw), simulate(seed=4, **kw)
    assert _same(a, b)
    assert (a.X != c.X).nnz > 0
    assert not true_grn_edges(a).equals(true_grn_edges(c))


def test_shapes_names_and_labels(adata):
    assert adata.shape == (N_CELLS, 200)
    assert list(adata.var_names[:3]) == ["G0000", "G0001", "G0002"]
    assert adata.var_names[-1] == "G0199"
    assert adata.var["is_regulator"].dtype == bool
    assert adata.var["is_regulator"].sum() == 40 and adata.var["is_regulator"].iloc[:40].all()
    assert adata.obs_names.is_unique

    pert = adata.obs["perturbation"]
    assert isinstance(pert.dtype, pd.CategoricalDtype)
    counts = pert.value_counts()
    assert counts["control"] == round(0.15 * N_CELLS)
    regulators = list(adata.var_names[:40])
    doubles = [c for c in pert.cat.categories if "+" in c]
    singles = [c for c in pert.cat.categories if c != "control" and "+" not in c]
    assert singles == regulators
    assert len(doubles) == 6 and len(set(doubles)) == 6
    for label in doubles:
        ga, gb = label.split("+")
        assert ga < gb and ga in regulators and gb in regulators
    per_condition = counts[singles + doubles]
    assert per_condition.max() - per_condition.min() <= 1  # doubles ~ as many cells as singles
    assert per_condition.sum() + counts["control"] == N_CELLS
    assert list(adata.uns["grnvae_simulation"]["doubles"]) == doubles
    assert list(adata.uns["grnvae_simulation"]["regulators"]) == regulators

    kd = adata.obs["true_knockdown"].to_numpy()
    is_ctrl = (pert == "control").to_numpy()
    assert np.all(kd[is_ctrl] == 0)
    assert np.all((kd[~is_ctrl] > 0) & (kd[~is_ctrl] < 1))
    assert abs(np.mean(kd[~is_ctrl]) - 0.85) < 0.05


def test_counts_are_integer_csr_with_requested_depth(adata):
    X = adata.X
    assert sp.issparse(X) and X.format == "csr" and X.dtype == np.float32
    X.check_format(full_check=True)
    assert X.data.min() >= 0 and np.all(X.data == np.round(X.data))
    totals = np.asarray(X.sum(axis=1)).ravel()
    np.testing.assert_array_equal(totals, adata.obs["n_counts"].to_numpy())
    assert 0.7 * 2000 <= np.median(totals) <= 1.3 * 2000
    big = simulate(n_genes=50, n_regulators=5, n_cells=400, n_doubles=0, library_size=10000.0)
    assert 0.7 * 10000 <= np.median(big.obs["n_counts"]) <= 1.3 * 10000


def test_true_grn_is_a_dag_with_regulator_edges(adata):
    edges = true_grn_edges(adata)
    assert list(edges.columns) == ["source", "target", "weight"]
    regulators = set(adata.var_names[:40])
    assert set(edges["source"]) <= regulators
    assert set(edges["target"]) <= set(adata.var_names)
    assert not edges.duplicated(["source", "target"]).any()
    assert (edges["source"] != edges["target"]).all()
    graph = nx.DiGraph(list(zip(edges["source"], edges["target"])))
    assert nx.is_directed_acyclic_graph(graph)

    reg_reg = edges[edges["target"].isin(regulators)]
    assert len(reg_reg) >= 10
    assert 0.2 <= len(reg_reg) / len(edges) <= 0.6
    assert (reg_reg["source"] < reg_reg["target"]).all()  # only to higher-index regulators
    assert 1.5 <= len(edges) / 40 <= 4.5
    magnitude = edges["weight"].abs()
    assert magnitude.between(0.5, 1.5).all()
    assert 0.5 <= (edges["weight"] > 0).mean() <= 0.9  # mostly activating


def test_effect_scale_scales_weights():
    kw = dict(n_genes=60, n_regulators=12, n_cells=600, n_doubles=0, seed=1)
    w1 = true_grn_edges(simulate(**kw))["weight"].to_numpy()
    w2 = true_grn_edges(simulate(effect_scale=0.5, **kw))["weight"].to_numpy()
    np.testing.assert_allclose(w2, 0.5 * w1)


def test_cascade_sets_how_many_edges_run_between_regulators():
    kw = dict(n_genes=200, n_regulators=40, n_cells=600, n_doubles=0, seed=3)
    share = {}
    for cascade in (0.0, 0.4, 0.9):
        grn = true_grn_edges(simulate(cascade=cascade, **kw))
        to_regulator = grn["target"].str[1:].astype(int).to_numpy() < 40
        share[cascade] = to_regulator.mean()
        assert simulate(cascade=cascade, **kw).uns["grnvae_simulation"]["params"]["cascade"] == cascade
    assert share[0.0] == 0.0 and 0.25 < share[0.4] < 0.55 and share[0.9] > 0.7
    with pytest.raises(DataError, match="cascade"):
        simulate(cascade=1.5, **kw)


def test_knocked_down_gene_is_lower_in_its_cells(adata, normalised):
    labels, index, norm = normalised
    control = norm[labels == "control"].mean(axis=0)
    regulators = list(adata.var_names[:40])
    lower = [norm[labels == g, index[g]].mean() < 0.7 * control[index[g]] for g in regulators]
    assert np.mean(lower) >= 0.8
    # both genes of a double are knocked down
    for label in adata.uns["grnvae_simulation"]["doubles"]:
        cells = labels == label
        for g in label.split("+"):
            assert norm[cells, index[g]].mean() < control[index[g]]


def test_grn_drives_downstream_expression(adata, normalised):
    """Knocking down a regulator moves its strong targets against the sign of the edge."""
    labels, index, norm = normalised
    control = norm[labels == "control"].mean(axis=0)
    edges = true_grn_edges(adata)
    strong = edges[edges["weight"].abs() >= 1.0]
    assert len(strong) >= 20
    agree = []
    for source, target, weight in strong.itertuples(index=False):
        perturbed = norm[labels == source, index[target]].mean()
        shift = np.log(perturbed + 1e-3) - np.log(control[index[target]] + 1e-3)
        agree.append(np.sign(shift) == -np.sign(weight))
    assert np.mean(agree) >= 0.8


def test_h5ad_round_trip(adata, tmp_path):
    path = tmp_path / "sim.h5ad"
    adata.write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert _same(adata, back)
    pd.testing.assert_frame_equal(true_grn_edges(back), true_grn_edges(adata))
    sim, sim_back = adata.uns["grnvae_simulation"], back.uns["grnvae_simulation"]
    assert dict(sim_back["params"]) == sim["params"]
    assert list(sim_back["regulators"]) == list(sim["regulators"])
    assert list(sim_back["doubles"]) == list(sim["doubles"])
    assert back.var["is_regulator"].dtype == bool
    pd.testing.assert_frame_equal(true_lfc(back), true_lfc(adata))
    np.testing.assert_array_equal(sim_back["additive_deviation"], sim["additive_deviation"])
    np.testing.assert_array_equal(sim_back["grn_additive_deviation"],
                                  sim["grn_additive_deviation"])

    # no doubles, custom labels
    small = simulate(n_genes=30, n_regulators=6, n_cells=300, n_doubles=0, seed=2,
                     perturbation_key="guide", control="NTC", separator="_")
    small.write_h5ad(tmp_path / "small.h5ad")
    back = anndata.read_h5ad(tmp_path / "small.h5ad")
    assert set(back.obs["guide"].cat.categories) == {"NTC", *back.var_names[:6]}
    assert len(back.uns["grnvae_simulation"]["doubles"]) == 0
    assert len(back.uns["grnvae_simulation"]["additive_deviation"]) == 0
    assert true_lfc(back).shape == (30, 6)
    pd.testing.assert_frame_equal(true_grn_edges(back), true_grn_edges(small))


def test_custom_separator_in_double_labels():
    a = simulate(n_genes=30, n_regulators=6, n_cells=300, n_doubles=2, separator="_")
    doubles = [c for c in a.obs["perturbation"].cat.categories if "_" in c]
    assert len(doubles) == 2 and all(len(d.split("_")) == 2 for d in doubles)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_regulators=300), "n_regulators"),
    (dict(n_regulators=4, n_doubles=7), "n_doubles"),
    (dict(control_fraction=0.0), "control_fraction"),
    (dict(control_fraction=1.0), "control_fraction"),
    (dict(knockdown=1.0), "knockdown"),
    (dict(knockdown=-0.1), "knockdown"),
    (dict(n_cells=50), "n_cells"),
    (dict(n_cells=2.5), "n_cells"),
    (dict(n_genes=0), "n_genes"),
    (dict(n_doubles=-1), "n_doubles"),
    (dict(library_size=0), "library_size"),
    (dict(dispersion=-1.0), "dispersion"),
    (dict(library_sigma=float("nan")), "library_sigma"),
    (dict(effect_scale=-1.0), "effect_scale"),
    (dict(seed=True), "seed"),
    (dict(control="G0001"), "control"),
    (dict(separator="0"), "separator"),
    (dict(perturbation_key=""), "perturbation_key"),
    (dict(basal_grn=-0.1), "basal_grn"),
    (dict(basal_grn=float("inf")), "basal_grn"),
    (dict(saturation=-1.0), "saturation"),
    (dict(saturation="1"), "saturation"),
    (dict(double_targets="converging"), "double_targets"),
    (dict(activation=1), "activation"),
    (dict(activation="yes"), "activation"),
])
def test_bad_arguments_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match):
        simulate(**kwargs)


def test_true_grn_edges_requires_simulated_data():
    plain = anndata.AnnData(X=np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="not made by"):
        true_grn_edges(plain)
    plain.uns["grnvae_simulation"] = {"params": {}}
    with pytest.raises(DataError, match="not made by"):
        true_grn_edges(plain)


# --------------------------------------------------------------------------------------------
# basal variation through the GRN, saturation, doubles, activation, true effects
# --------------------------------------------------------------------------------------------
def _digest(a: anndata.AnnData) -> str:
    m = hashlib.sha256()
    for arr in (a.X.data, a.X.indices, a.X.indptr, a.obs["n_counts"].to_numpy(),
                a.obs["true_knockdown"].to_numpy(), a.obs["perturbation"].cat.codes.to_numpy()):
        m.update(np.ascontiguousarray(arr).tobytes())
    m.update(repr(list(a.obs["perturbation"].cat.categories)).encode())
    grn = a.uns["grnvae_simulation"]["true_grn"]
    m.update(repr((grn["source"], grn["target"])).encode())
    m.update(np.asarray(grn["weight"]).tobytes())
    return m.hexdigest()


@pytest.mark.parametrize("kwargs, digest", [
    # computed with the simulator before basal_grn / saturation / double_targets / activation
    # existed; the new options at their defaults must not change a single count. (The digest
    # relies on numpy's Generator streams, stable across numpy releases in practice.)
    (dict(), "340125532a376da19ed1fc71f9725a531ff22ff33dbc91f1c7e49bf88c925c9f"),
    (dict(n_genes=60, n_regulators=12, n_cells=2500, n_doubles=5, seed=11),
     "512fa7f29057c2c48de1238bb9baa0042504cfb1b187f43c52fdb7349bb409ee"),
    (dict(n_cells=4500, n_doubles=60, seed=0),
     "81b371a6db0c331aa3e6c38bb7791c4ab6ea4e7e9c6eefead948b2e18b239da1"),
])
def test_defaults_reproduce_the_previous_simulator_bit_for_bit(kwargs, digest):
    assert _digest(simulate(**kwargs)) == digest
    explicit = simulate(basal_grn=0.0, saturation=0.0, double_targets="random",
                        activation=False, cascade=0.4, **kwargs)
    assert _digest(explicit) == digest


def test_new_options_are_recorded_in_params():
    a = simulate(n_genes=60, n_regulators=12, n_cells=600, n_doubles=3, basal_grn=0.2,
                 saturation=1.5, double_targets="shared", activation=True)
    params = a.uns["grnvae_simulation"]["params"]
    assert params["basal_grn"] == 0.2 and params["saturation"] == 1.5
    assert params["double_targets"] == "shared" and params["activation"] is True
    assert params["modality"] == "activation"
    assert simulate(n_genes=30, n_regulators=6, n_cells=300, n_doubles=0
                    ).uns["grnvae_simulation"]["params"]["modality"] == "knockdown"


def _reference_lfc(adata: anndata.AnnData, saturation: float) -> pd.DataFrame:
    """Independent per-node propagation over the true GRN (topological order), efficiency 1."""
    params = adata.uns["grnvae_simulation"]["params"]
    unit = np.log1p(-params["knockdown"]) * (-1.0 if params["activation"] else 1.0)
    edges = true_grn_edges(adata)
    genes = list(adata.var_names)
    graph = nx.DiGraph()
    graph.add_nodes_from(genes)
    graph.add_weighted_edges_from(edges.itertuples(index=False))
    order = list(nx.topological_sort(graph))
    cols = {}
    for condition in true_lfc(adata).columns:
        targets = set(condition.split(params["separator"]))
        lfc = {}
        for g in order:
            incoming = sum(graph[p][g]["weight"] * lfc[p] for p in graph.predecessors(g))
            if saturation > 0:
                incoming = saturation * np.tanh(incoming / saturation)
            lfc[g] = (unit if g in targets else 0.0) + incoming
        cols[condition] = np.clip([lfc[g] for g in genes], -5.0, 5.0)
    return pd.DataFrame(cols, index=genes)


@pytest.mark.parametrize("saturation, activation", [(0.0, False), (0.7, False), (1.5, True)])
def test_true_lfc_is_the_propagation_over_the_true_grn(saturation, activation):
    a = simulate(n_genes=50, n_regulators=10, n_cells=800, n_doubles=4, seed=5,
                 saturation=saturation, activation=activation)
    table = true_lfc(a)
    sim = a.uns["grnvae_simulation"]
    assert list(table.index) == list(a.var_names)
    assert list(table.columns) == list(a.obs["perturbation"].cat.categories[1:])
    assert list(table.columns[10:]) == list(sim["doubles"])
    pd.testing.assert_frame_equal(table, _reference_lfc(a, saturation), atol=1e-10, rtol=0)


def test_basal_grn_draws_from_a_separate_generator():
    kw = dict(n_genes=60, n_regulators=12, n_cells=2500, n_doubles=3, seed=4)
    plain, noisy = simulate(**kw), simulate(basal_grn=0.5, **kw)
    assert plain.obs["perturbation"].equals(noisy.obs["perturbation"])
    # the first chunk's efficiencies too (later ones follow a count sampler whose number of
    # draws depends on the means)
    np.testing.assert_array_equal(plain.obs["true_knockdown"][:2000],
                                  noisy.obs["true_knockdown"][:2000])
    assert true_grn_edges(plain).equals(true_grn_edges(noisy))
    pd.testing.assert_frame_equal(true_lfc(plain), true_lfc(noisy))
    assert (plain.X != noisy.X).nnz > 0
    assert _same(noisy, simulate(basal_grn=0.5, **kw))


def _control_edge_coexpression(a: anndata.AnnData) -> float:
    """Mean |Pearson correlation| of log-normalised expression over the true edges, controls."""
    X = a.X.toarray()[(a.obs["perturbation"] == "control").to_numpy()]
    X = np.log1p(X / X.sum(axis=1, keepdims=True) * 1e4)
    index = {g: i for i, g in enumerate(a.var_names)}
    r = []
    for source, target in zip(*(true_grn_edges(a)[c] for c in ("source", "target"))):
        x, y = X[:, index[source]], X[:, index[target]]
        if x.std() > 0 and y.std() > 0:
            r.append(abs(np.corrcoef(x, y)[0, 1]))
    assert len(r) >= 50
    return float(np.mean(r))


def test_basal_grn_makes_regulators_coexpressed_with_their_targets():
    kw = dict(n_cells=N_CELLS, seed=7, control_fraction=0.3)
    r0 = _control_edge_coexpression(simulate(**kw))
    r5 = _control_edge_coexpression(simulate(basal_grn=0.5, **kw))
    assert r5 > r0 + 0.1, (r0, r5)


def test_additive_deviation_is_zero_without_saturation_and_positive_with_it():
    kw = dict(n_genes=200, n_regulators=40, n_cells=4500, n_doubles=60, seed=0)
    for basal in (0.0, 0.3):  # basal noise does not enter the truth at efficiency 1
        linear = simulate(basal_grn=basal, **kw).uns["grnvae_simulation"]
        assert len(linear["grn_additive_deviation"]) == 60
        assert np.all(np.abs(linear["grn_additive_deviation"]) < 1e-9)
    # small effects: nothing reaches the [-5, 5] clip, so the data are additive as well
    small = simulate(effect_scale=0.3, **kw)
    assert np.abs(true_lfc(small).to_numpy()).max() < 5.0
    assert np.all(small.uns["grnvae_simulation"]["additive_deviation"] < 1e-9)

    sat = simulate(saturation=1.0, **kw)
    dev = sat.uns["grnvae_simulation"]["additive_deviation"]
    assert (dev > 0.1).sum() >= 10
    np.testing.assert_allclose(sat.uns["grnvae_simulation"]["grn_additive_deviation"], dev)
    table = true_lfc(sat)
    recomputed = [np.linalg.norm(table[d] - table[d.split("+")[0]] - table[d.split("+")[1]])
                  for d in sat.uns["grnvae_simulation"]["doubles"]]
    np.testing.assert_allclose(dev, recomputed, rtol=1e-12, atol=1e-12)


def _descendants(a: anndata.AnnData) -> dict:
    edges = true_grn_edges(a)
    graph = nx.DiGraph(list(zip(edges["source"], edges["target"])))
    graph.add_nodes_from(a.var_names)
    return {g: nx.descendants(graph, g) for g in a.var_names}


def test_shared_doubles_share_a_descendant():
    a = simulate(n_genes=200, n_regulators=40, n_cells=4500, n_doubles=60, seed=0,
                 double_targets="shared")
    doubles = list(a.uns["grnvae_simulation"]["doubles"])
    assert len(doubles) == len(set(doubles)) == 60
    desc = _descendants(a)
    for label in doubles:
        ga, gb = label.split("+")
        assert ga < gb and desc[ga] & desc[gb], label
    counts = a.obs["perturbation"].value_counts()[doubles]
    assert counts.min() >= 30
    # same seed, random doubles: same GRN, and saturation shows more in shared doubles
    sat = dict(n_genes=200, n_regulators=40, n_cells=4500, n_doubles=60, seed=0, saturation=1.0)
    shared = simulate(double_targets="shared", **sat)
    rand = simulate(**sat)
    assert true_grn_edges(shared).equals(true_grn_edges(rand))
    assert (shared.uns["grnvae_simulation"]["additive_deviation"].mean()
            > rand.uns["grnvae_simulation"]["additive_deviation"].mean())


def test_shared_doubles_fall_back_to_random_pairs():
    # a sparse GRN over 12 regulators with only 24 pairs that share a descendant
    a = simulate(n_genes=400, n_regulators=12, n_cells=2000, n_doubles=30, seed=0,
                 edges_per_regulator=1.0, double_targets="shared")
    doubles = list(a.uns["grnvae_simulation"]["doubles"])
    assert len(doubles) == len(set(doubles)) == 30
    desc = _descendants(a)
    regs = list(a.var_names[:12])
    n_shared_pairs = sum(bool(desc[x] & desc[y]) for i, x in enumerate(regs) for y in regs[i + 1:])
    assert 0 < n_shared_pairs < 30
    shared = [bool(desc[x] & desc[y]) for x, y in (d.split("+") for d in doubles)]
    assert sum(shared) == n_shared_pairs  # every shared pair is taken, then random others


def test_activation_raises_the_targeted_gene():
    a = simulate(n_cells=N_CELLS, seed=7, activation=True)
    X = a.X.toarray()
    norm = X / X.sum(axis=1, keepdims=True) * 1e4
    labels = a.obs["perturbation"].astype(str).to_numpy()
    control = norm[labels == "control"].mean(axis=0)
    index = {g: i for i, g in enumerate(a.var_names)}
    regulators = list(a.var_names[:40])
    higher = [norm[labels == g, index[g]].mean() > 1.3 * control[index[g]] for g in regulators]
    assert np.mean(higher) >= 0.8
    table = true_lfc(a)
    direct = -np.log1p(-0.85)
    assert all(table.loc[g, g] >= direct - 5.0 for g in regulators)
    assert np.mean([table.loc[g, g] > 0 for g in regulators]) >= 0.9
    kd = a.obs["true_knockdown"].to_numpy()
    assert np.all(kd[labels != "control"] < 0) and np.all(kd[labels == "control"] == 0)
    # the knockdown screen of the same seed has the same GRN and the opposite direct change
    knock = simulate(n_cells=N_CELLS, seed=7)
    assert true_grn_edges(a).equals(true_grn_edges(knock))
    np.testing.assert_allclose(np.diag(table.to_numpy()[:40]), -np.diag(
        true_lfc(knock).to_numpy()[:40]), atol=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(saturation=1.0, basal_grn=0.3),
    dict(saturation=1.0, activation=True, double_targets="shared"),
])
def test_true_lfc_matches_the_counts(kwargs):
    a = simulate(n_cells=N_CELLS, seed=7, n_doubles=10, **kwargs)
    X = a.X.toarray()
    norm = X / X.sum(axis=1, keepdims=True) * 1e4
    labels = a.obs["perturbation"].astype(str).to_numpy()
    control = norm[labels == "control"].mean(axis=0)
    table = true_lfc(a)
    index = {g: i for i, g in enumerate(a.var_names)}
    sign_ok, truths, observed = [], [], []
    for condition in table.columns:
        mean = norm[labels == condition].mean(axis=0)
        obs_lfc = np.log(mean + 1e-2) - np.log(control + 1e-2)
        for g in condition.split("+"):  # targeted gene(s)
            sign_ok.append(np.sign(obs_lfc[index[g]]) == np.sign(table.loc[g, condition]))
        strong = np.abs(table[condition].to_numpy()) >= 0.5
        strong[[index[g] for g in condition.split("+")]] = False  # downstream genes only
        truths.append(table[condition].to_numpy()[strong])
        observed.append(obs_lfc[strong])
    assert np.mean(sign_ok) >= 0.9
    truths, observed = np.concatenate(truths), np.concatenate(observed)
    assert truths.size >= 200
    assert np.mean(np.sign(truths) == np.sign(observed)) >= 0.85
    assert np.corrcoef(truths, observed)[0, 1] >= 0.8


def test_true_lfc_requires_simulated_data():
    plain = anndata.AnnData(X=np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="not made by"):
        true_lfc(plain)
    plain.uns["grnvae_simulation"] = {"true_lfc": {"values": np.zeros((2, 3)),
                                                   "genes": ["a", "b"], "conditions": ["x"]}}
    with pytest.raises(DataError, match="shape"):
        true_lfc(plain)
