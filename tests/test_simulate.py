"""The Perturb-seq simulator: structure, determinism, ground truth, the GRN driving counts."""

from __future__ import annotations

import anndata
import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from grnvae.data.simulate import simulate, true_grn_edges
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

    # no doubles, custom labels
    small = simulate(n_genes=30, n_regulators=6, n_cells=300, n_doubles=0, seed=2,
                     perturbation_key="guide", control="NTC", separator="_")
    small.write_h5ad(tmp_path / "small.h5ad")
    back = anndata.read_h5ad(tmp_path / "small.h5ad")
    assert set(back.obs["guide"].cat.categories) == {"NTC", *back.var_names[:6]}
    assert len(back.uns["grnvae_simulation"]["doubles"]) == 0
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
