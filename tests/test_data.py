"""AnnData registration: labels, controls, nodes, splits, pairing, batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import grnvae
from grnvae.data import PerturbationData
from grnvae.errors import DataError

from .conftest import RECIPES


@pytest.fixture(scope="module")
def adata():
    return grnvae.simulate(n_genes=50, n_regulators=10, n_cells=1200, n_doubles=3, seed=4)


def cfg(*overrides):
    return grnvae.load_recipe(RECIPES / "quickstart.yaml", list(overrides))


def test_registration_nodes_conditions_and_dosages(adata):
    d = PerturbationData.from_anndata(adata, cfg())
    assert d.values == "counts" and d.X.shape == adata.shape and sp.isspmatrix_csr(d.X)
    regs = adata.uns["grnvae_simulation"]["regulators"]
    assert d.nodes == sorted(regs)  # GRN nodes = perturbed genes
    assert [d.genes[g] for g in d.node_gene] == d.nodes  # every node is a measured gene
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    for c, name in enumerate(d.conditions):
        cells = d.cell_condition == c
        assert set(labels[cells]) == {name}
        want = [] if name == "control" else sorted(name.split("+"))
        assert [d.nodes[i] for i in d.condition_nodes[c]] == want
    doubles = [c for c, n in enumerate(d.conditions) if "+" in n]
    assert len(doubles) == 3
    dose = d.dosage(doubles)
    assert torch.equal(dose.sum(1), torch.full((3,), 2.0))


def test_measured_node_set_covers_all_genes(adata):
    d = PerturbationData.from_anndata(adata, cfg("grn.nodes=measured"))
    assert d.nodes[: len(d.genes)] == d.genes and len(d.nodes) == len(d.genes)


def test_split_is_seeded_stratified_and_pairs_come_from_training_controls(adata):
    a = PerturbationData.from_anndata(adata, cfg())
    b = PerturbationData.from_anndata(adata, cfg())
    c = PerturbationData.from_anndata(adata, cfg("seed=1"))
    assert np.array_equal(a.split, b.split) and np.array_equal(a.pair, b.pair)
    assert not np.array_equal(a.split, c.split)
    sizes = a.split_sizes()
    n = a.n_cells
    assert abs(sizes["train"] / n - 0.64) < 0.03 and abs(sizes["test"] / n - 0.20) < 0.03
    for k in range(len(a.conditions)):  # every condition is in every split
        assert set(a.split[a.cell_condition == k]) == {0, 1, 2}
    perturbed = a.pair != -1
    assert np.all(a.is_control[a.pair[perturbed]]) and np.all(a.split[a.pair[perturbed]] == 0)


def test_batch_tensors_and_delta(adata):
    d = PerturbationData.from_anndata(adata, cfg())
    cells = np.arange(0, 300, 3)
    b = d.batch(cells)
    assert b["x"].shape == (len(cells), d.X.shape[1])
    assert torch.allclose(b["x"], torch.from_numpy(d.X[cells].toarray()))
    assert torch.allclose(b["library"], b["x"].sum(1))
    # every cell's condition row is its dosage
    for i, cell in enumerate(cells):
        row = b["cond_dosage"][b["cond_index"][i]]
        assert torch.equal(row, d.dosage([d.cell_condition[cell]])[0])
    # delta x by hand for one perturbed cell: |lognorm(x) - lognorm(x_control)| on node genes
    i = int(np.nonzero(~d.is_control[cells])[0][0])
    cell, ctrl = cells[i], d.pair[cells[i]]
    def lognorm(c):
        x = d.X[c].toarray().ravel()
        return np.log1p(x / x.sum() * 1e4)[d.node_gene]
    assert np.allclose(b["delta"][i].numpy(), np.abs(lognorm(cell) - lognorm(ctrl)), atol=1e-5)
    assert not b["has_delta"][~torch.from_numpy(~d.is_control[cells])].any()


def test_loader_is_deterministic_and_covers_split(adata):
    d = PerturbationData.from_anndata(adata, cfg())
    one = [b["cells"] for b in d.loader("train", 100, shuffle=True, seed=3)]
    two = [b["cells"] for b in d.loader("train", 100, shuffle=True, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert sorted(torch.cat(one).tolist()) == sorted(d.split_index("train").tolist())


def test_epoch_order_depends_on_the_epoch_only():
    """Each epoch's batches follow from (seed, epoch), whether the loop calls set_epoch before or
    after creating the iterator (a resumed run does the latter, at any epoch, 1 included)."""
    from grnvae.data.dataset import EpochBatches

    straight = EpochBatches(50, 8, shuffle=True, seed=1)
    epochs = [list(straight) for _ in range(4)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[2], [])) == list(range(50))
    for e in range(4):
        before = EpochBatches(50, 8, shuffle=True, seed=1)
        before.set_epoch(e)
        assert list(before) == epochs[e]
        after = EpochBatches(50, 8, shuffle=True, seed=1)
        it = iter(after)  # created first, as when resuming
        after.set_epoch(e)
        assert list(it) == epochs[e], e
        if e + 1 < 4:
            assert list(after) == epochs[e + 1]  # and on to the next epoch


def test_every_rank_gets_as_many_batches_as_the_others(monkeypatch):
    """In a multi-process run each rank takes every world-th batch; a rank with fewer (one
    fewer, or none when there are fewer batches than ranks) repeats batches so that all ranks
    step equally often, and together they cover every position."""
    from grnvae.data.dataset import EpochBatches

    for n, batch, world in [(50, 8, 2), (50, 8, 3), (300, 512, 2), (600, 512, 4), (9, 2, 2)]:
        per_rank = []
        for rank in range(world):
            sampler = EpochBatches(n, batch, shuffle=True, seed=3)
            monkeypatch.setattr(sampler, "_world", lambda r=rank: (world, r))
            per_rank.append(list(sampler))
        counts = {len(b) for b in per_rank}
        assert counts == {max(1, -(-(-(-n // batch)) // world))}, (n, batch, world, counts)
        assert all(all(len(x) > 0 for x in b) for b in per_rank)
        assert sorted(set(sum((sum(b, []) for b in per_rank), []))) == list(range(n))


def test_bad_inputs_raise_clear_errors(adata):
    bad = adata.copy()
    bad.obs["perturbation"] = bad.obs["perturbation"].astype(str).replace("control", "NT")
    with pytest.raises(DataError, match=r"no control cells.*data\.control"):
        PerturbationData.from_anndata(bad, cfg())
    assert PerturbationData.from_anndata(bad, cfg("data.control=NT")).n_cells == bad.n_obs

    nan = adata.copy()
    nan.X = nan.X.copy()
    nan.X.data[0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        PerturbationData.from_anndata(nan, cfg())

    lognorm = adata.copy()
    lognorm.X = lognorm.X.copy()
    lognorm.X.data = np.log1p(lognorm.X.data) + 0.1
    assert PerturbationData.from_anndata(lognorm, cfg()).values == "lognorm"
    with pytest.raises(DataError, match="data.expression=counts"):
        PerturbationData.from_anndata(lognorm, cfg("data.expression=counts"))


def test_missing_file_error(tmp_path):
    from grnvae.data import read_h5ad

    with pytest.raises(DataError, match=r"data\.path.*missing\.h5ad.*not found"):
        read_h5ad(tmp_path / "missing.h5ad")
    junk = tmp_path / "junk.h5ad"
    junk.write_text("not hdf5")
    with pytest.raises(DataError, match="could not be read as h5ad"):
        read_h5ad(junk)


def test_inspect_never_suggests_a_covariate_that_follows_the_label_and_flags_pooled_datasets(tmp_path):
    """`grnvae inspect`: a column with one value per perturbation label (a dose that says single vs
    double, a type confounded with the label) is named as leaking, never suggested; nor is a
    clustering (leiden, Seurat's res.1), which is derived from the expression; a file that
    pools cell lines sharing one control label gets a warning that says how to subset."""
    from grnvae.data.inspect import describe

    a = grnvae.simulate(n_genes=20, n_regulators=4, n_cells=400, n_doubles=2, seed=0)
    labels = a.obs["perturbation"].astype(str)
    a.obs["dose"] = np.where(labels.str.contains(r"\+|_"), "double", "single")
    a.obs["perturbation_type"] = np.where(labels == "control", "none", "crispri")
    a.obs["replicate"] = np.where(np.arange(a.n_obs) % 3 == 0, "r1", "r2")
    a.obs["cell_line"] = np.where(np.arange(a.n_obs) % 2 == 0, "K562", "RPE1")
    a.obs["leiden"] = (np.arange(a.n_obs) % 4).astype(str)  # a clustering: derived from the expression
    a.obs["res.1"] = (np.arange(a.n_obs) % 5).astype(str)
    a.write_h5ad(tmp_path / "pooled.h5ad")
    report = describe(tmp_path / "pooled.h5ad")
    leak_line = next(line for line in report.splitlines() if "leak" in line)
    assert "dose" in leak_line and "perturbation_type" in leak_line and "replicate" not in leak_line
    suggested = report.split("suggested recipe keys:")[1]
    assert "data.covariates=[replicate]" in suggested
    assert "dose" not in suggested and "perturbation_type" not in suggested and "cell_line" not in suggested
    assert "leiden" not in suggested and "res.1" not in suggested
    derived = next(line for line in report.splitlines() if "derived from the expression" in line)
    assert "leiden" in derived and "res.1" in derived
    assert "'cell_line' has 2 values" in report and "share the label 'control'" in report
    assert "adata[adata.obs['cell_line'] ==" in report
