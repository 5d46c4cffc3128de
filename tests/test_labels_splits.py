"""Perturbation labels, combination handling and splits (issue: real data without surprises)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import grnvae
from grnvae.data import PerturbationData
from grnvae.data.labels import parse_labels
from grnvae.errors import DataError

from .conftest import RECIPES, shared_file


def cfg(*overrides):
    return grnvae.load_recipe(RECIPES / "quickstart.yaml", list(overrides))


def test_parse_labels_policies_and_gears_style():
    s = pd.Series(["ctrl", "A+ctrl", "A+B", "B", "multiple", None, "", "unassigned", "ctrl+ctrl", "B+A"])
    lab = parse_labels(s, ["ctrl"], "+", ["multiple", "unassigned"], "drop")
    assert lab.keep.tolist() == [True, True, True, True, False, False, False, False, True, True]
    assert lab.dropped == {"multiple": 1, "<empty>": 2, "unassigned": 1}
    targets = {c: ts for c, ts in zip(lab.conditions, lab.condition_targets)}
    # one condition per set of targets: A+ctrl is A, B+A is A+B, ctrl+ctrl a control
    assert targets == {"control": (), "A": ("A",), "A+B": ("A", "B"), "B": ("B",)}
    named = [lab.conditions[c] for c in lab.cell_condition]
    assert named == ["control", "A", "A+B", "B", "control", "A+B"]
    assert lab.is_control.tolist() == [True, False, False, False, True, False]
    # targets naming a measured gene up to case are that gene
    cased = parse_labels(pd.Series(["ctrl", "stat1", "STAT1+irf1"]), ["ctrl"], genes=["STAT1", "IRF1"])
    assert cased.conditions == ["control", "IRF1+STAT1", "STAT1"]
    with pytest.raises(DataError, match="unassigned labels.*data.on_unassigned=drop"):
        parse_labels(s, ["ctrl"], "+", ["multiple", "unassigned"], "error")
    with pytest.raises(DataError, match="single value"):
        parse_labels(pd.Series(["ctrl"] * 4), ["ctrl"])
    with pytest.raises(DataError, match="no control cells"):
        parse_labels(pd.Series(["A", "B"]), ["ctrl"])


def test_separator_that_never_occurs_warns(caplog):
    with caplog.at_level(logging.WARNING):
        parse_labels(pd.Series(["ctrl", "A_B", "A"]), ["ctrl"], "+")
    assert "data.separator='_'" in caplog.text or "data.separator=" in caplog.text


@pytest.fixture(scope="module")
def doubles():
    return grnvae.simulate(n_genes=60, n_regulators=16, n_cells=2400, n_doubles=12, seed=3)


def test_by_perturbation_split_never_leaks_held_out_cells(doubles):
    held = ["G0003", "G0007"]
    d = PerturbationData.from_anndata(doubles, cfg("data.split.by=perturbation", f"data.split.test=[{','.join(held)}]"))
    for h in held:
        c = d.conditions.index(h)
        assert np.all(d.split[d.cell_condition == c] == 2)
    train_conds = {d.conditions[c] for c in np.unique(d.cell_condition[d.split == 0])}
    assert not train_conds & set(held)
    assert "control" in train_conds and (d.split[d.pair == -1] == 2).any()  # controls split per cell
    frac = PerturbationData.from_anndata(doubles, cfg("data.split.by=perturbation"))
    n_pert = len(frac.conditions) - 1
    test_conds = {frac.conditions[c] for c in np.unique(frac.cell_condition[frac.split == 2])} - {"control"}
    assert len(test_conds) == round(0.2 * n_pert)
    for c in test_conds:
        assert np.all(frac.split[frac.cell_condition == frac.conditions.index(c)] == 2)
    # validation watches held-out cells of seen perturbations, never unseen ones
    val_conds = {frac.conditions[c] for c in np.unique(frac.cell_condition[frac.split == 1])} - {"control"}
    assert val_conds and not val_conds & test_conds
    assert all((frac.split[frac.cell_condition == frac.conditions.index(c)] == 0).any() for c in val_conds)
    whole = PerturbationData.from_anndata(doubles, cfg("data.split.by=perturbation", "data.split.val=perturbations"))
    for c in {whole.conditions[c] for c in np.unique(whole.cell_condition[whole.split == 1])} - {"control"}:
        assert np.all(whole.split[whole.cell_condition == whole.conditions.index(c)] == 1)
    with pytest.raises(DataError, match="not in the data"):
        PerturbationData.from_anndata(doubles, cfg("data.split.by=perturbation", "data.split.test=[NOPE]"))


def test_any_split_holding_combinations_has_their_categories(doubles):
    # categories belong to the held-out combinations, whatever split made them: by perturbation...
    d = PerturbationData.from_anndata(doubles, cfg("data.split.by=perturbation"))
    trained = {d.conditions[c] for c in np.unique(d.cell_condition[d.split == 0])}
    held = {d.conditions[c] for c in np.unique(d.cell_condition[d.split == 2])}
    cats = d.combination_categories()
    assert set(cats) == {c for c in held if "+" in c} and cats
    assert all(cat == f"seen{sum(g in trained for g in c.split('+'))}" for c, cat in cats.items())
    assert len(set(cats.values())) > 1  # this draw holds doubles with and without a held-out gene
    # ... or by cell, where every double's genes have training cells of their own
    cells = PerturbationData.from_anndata(doubles, cfg("data.split.by=cells"))
    n_doubles = len(doubles.uns["grnvae_simulation"]["doubles"])
    for split in ("test", "val"):
        assert list(cells.combination_categories(split).values()) == ["seen2"] * n_doubles
    with pytest.raises(DataError, match="unknown split"):
        cells.combination_categories("tset")


def test_combination_split_seen_categories(doubles):
    combos = sorted(doubles.uns["grnvae_simulation"]["doubles"])
    first = combos[0].split("+")
    other = next(g for c in combos[1:] for g in c.split("+") if g not in first)
    unseen = ",".join(first + [other])  # both genes of one combination, one gene of another
    d = PerturbationData.from_anndata(doubles, cfg("data.split.by=combination", "data.split.fractions=[0.6,0.1,0.3]",
                                                   f"data.split.test=[{unseen}]"))
    cats = d.combination_categories()
    assert set(cats.values()) == {"seen0", "seen1", "seen2"}
    assert cats[combos[0]] == "seen0"
    # seen = the gene's single perturbation has training cells
    trained = {d.conditions[c] for c in np.unique(d.cell_condition[d.split == 0])}
    for combo, cat in cats.items():
        c = d.conditions.index(combo)
        assert np.all(d.split[d.cell_condition == c] == 2)  # test combinations are fully held out
        seen = sum(g in trained for g in combo.split("+"))
        assert cat == f"seen{seen}"
    # a double of two genes whose singles have no training cells is seen0, even if no gene was drawn unseen
    a = doubles[~doubles.obs["perturbation"].isin(first)].copy()
    d2 = PerturbationData.from_anndata(a, cfg("data.split.by=combination", "data.split.fractions=[0.6,0.1,0.3]",
                                              f"data.split.test=[{other}]"))
    cats2 = d2.combination_categories()
    if combos[0] in cats2:
        assert cats2[combos[0]] == "seen0"
    assert (d2.split == 1).any() and not set(cats2) & {d2.conditions[c] for c in np.unique(d2.cell_condition[d2.split == 1])}


def test_split_from_column(doubles):
    a = doubles.copy()
    rng = np.random.default_rng(0)
    a.obs["fold"] = rng.choice(["train", "valid", "test"], size=a.n_obs, p=[0.7, 0.1, 0.2])
    d = PerturbationData.from_anndata(a, cfg("data.split.by=column", "data.split.column=fold"))
    assert np.array_equal(d.split, a.obs["fold"].map({"train": 0, "valid": 1, "test": 2}).to_numpy())
    a.obs["fold"] = "oops"
    with pytest.raises(DataError, match="fold"):
        PerturbationData.from_anndata(a, cfg("data.split.by=column", "data.split.column=fold"))


def test_backed_equals_in_memory(doubles, tmp_path):
    path = tmp_path / "d.h5ad"
    doubles.write_h5ad(path)
    mem = PerturbationData.from_anndata(grnvae.data.read_h5ad(path), cfg())
    bk = PerturbationData.from_anndata(grnvae.data.read_h5ad(path, backed=True), cfg())
    assert bk.backed and not mem.backed
    assert np.array_equal(mem.library, bk.library) and np.array_equal(mem.split, bk.split)
    assert np.array_equal(mem.pair, bk.pair)
    m1, s1 = mem.standardisation()
    m2, s2 = bk.standardisation()
    assert np.allclose(m1, m2) and np.allclose(s1, s2)
    cells = np.array([5, 900, 3, 17, 2000])
    b1, b2 = mem.batch(cells), bk.batch(cells)
    for k in b1:
        assert np.allclose(b1[k].numpy(), b2[k].numpy()), k


def test_scmageck_labels(caplog):
    import anndata as ad

    path = shared_file("perturbseq", "scmageck_cropseq_28genes.h5ad")
    adata = ad.read_h5ad(path)
    with caplog.at_level(logging.WARNING):
        d = PerturbationData.from_anndata(adata, cfg(), source=str(path))
    assert d.dropped == {"multiple": 1355, "unassigned": 531}
    assert d.n_cells == 6229 - 1355 - 531 and int((d.pair == -1).sum()) == 409
    assert "1886 cells" in caplog.text


def test_papalexi_registration_with_covariate():
    import anndata as ad

    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    adata = ad.read_h5ad(path)
    d = PerturbationData.from_anndata(adata, cfg("data.covariates=[bio_rep]"), source=str(path))
    assert d.values == "counts" and d.n_cells == 20729 and len(d.conditions) == 26
    assert int((d.pair == -1).sum()) == 2386 and len(d.nodes) == 25
    assert len(set(d.covariates["bio_rep"])) == 3
    measured = {d.nodes[i] for i in np.nonzero(d.node_gene >= 0)[0]}
    assert measured == {"CMTM6", "IFNGR2", "JAK2", "NFKBIA", "STAT1", "STAT2", "STAT3", "TNFRSF14", "UBE2L6"}


@pytest.mark.parametrize("features", ["perturbed", "pca"])
def test_ot_pairing_in_registration(doubles, features):
    c = cfg("data.pairing=ot", f"data.ot.features={features}")
    a = PerturbationData.from_anndata(doubles, c)
    b = PerturbationData.from_anndata(doubles, c)
    assert np.array_equal(a.pair, b.pair)  # deterministic
    perturbed = a.pair != -1
    assert np.all(a.pair[perturbed] >= 0)
    assert np.all((a.pair[a.pair[perturbed]] == -1)) and np.all(a.split[a.pair[perturbed]] == 0)
    # matched controls are closer on the cost features than random controls
    rnd = PerturbationData.from_anndata(doubles, cfg())
    feats = a.ot_features(features, 30, 0)
    feats = feats.toarray() if hasattr(feats, "toarray") else feats
    cells = np.nonzero(perturbed)[0]
    d_ot = np.linalg.norm(feats[cells] - feats[a.pair[cells]], axis=1).mean()
    d_rnd = np.linalg.norm(feats[cells] - feats[rnd.pair[cells]], axis=1).mean()
    assert d_ot < d_rnd


def test_bad_inputs(doubles, caplog):
    neg = doubles.copy()
    neg.X = neg.X.copy()
    neg.X.data[:5] = -3.0
    with pytest.raises(DataError, match="negative"):
        PerturbationData.from_anndata(neg, cfg())
    dup = doubles.copy()
    dup.var_names = ["G0001"] + list(dup.var_names[1:])
    with pytest.raises(DataError, match="duplicated gene names.*var_names_make_unique"):
        PerturbationData.from_anndata(dup, cfg())
    # a perturbation with too few cells is dropped and reported; naming it as held out is an error
    few = doubles.copy()
    labels = few.obs["perturbation"].astype(str).to_numpy()
    idx = np.nonzero(labels == "G0005")[0]
    labels[idx[3:]] = "control"
    few.obs["perturbation"] = pd.Categorical(labels)
    with caplog.at_level(logging.WARNING):
        d = PerturbationData.from_anndata(few, cfg("data.min_cells=5"))
    assert "G0005" not in d.conditions and "G0005 (< 5 cells)" in d.dropped and "data.min_cells" in caplog.text
    with pytest.raises(DataError, match="G0005"):
        PerturbationData.from_anndata(few, cfg("data.min_cells=5", "data.split.by=perturbation", "data.split.test=[G0005]"))
    # unused categories of a categorical column create no empty condition
    cat = doubles.copy()
    cat.obs["perturbation"] = cat.obs["perturbation"].astype("category").cat.add_categories(["GHOST"])
    assert "GHOST" not in PerturbationData.from_anndata(cat, cfg()).conditions


def test_backed_training_equals_in_memory(doubles, tmp_path):
    from .conftest import FAST

    path = tmp_path / "small.h5ad"
    doubles[:900].copy().write_h5ad(path)
    runs = {}
    for backed in ("false", "true"):
        runs[backed] = grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + [
            f"data.path={path}", f"data.backed={backed}"], out=tmp_path / f"b{backed}")
    a = pd.read_csv(runs["false"].path / "grn.tsv", sep="\t")
    b = pd.read_csv(runs["true"].path / "grn.tsv", sep="\t")
    pd.testing.assert_frame_equal(a, b)
    assert runs["false"].metrics["val"] == pytest.approx(runs["true"].metrics["val"])


def test_backed_rows_reader_matches_memory(doubles, tmp_path):
    import anndata as ad

    from grnvae.data.dataset import BackedRows

    path = tmp_path / "rows.h5ad"
    doubles.write_h5ad(path)
    backed = BackedRows(ad.read_h5ad(path, backed="r").X, max_gap=4)
    X = doubles.X.tocsr()
    rng = np.random.default_rng(1)
    for rows in (np.arange(10, 500), np.sort(rng.choice(2400, 300, replace=False)),
                 rng.choice(2400, 700), np.array([7, 7, 3, 2399, 0]), np.array([], dtype=int)):
        got = backed.rows(rows)
        assert got.shape == (len(rows), X.shape[1]) and (got != X[rows]).nnz == 0
    assert (backed[100:140] != X[100:140]).nnz == 0


def test_a_combination_written_in_both_orders_is_one_condition_on_one_side(doubles):
    """'B+A' and 'A+B' (and GEARS' 'A+ctrl' for 'A') name one condition, so a split never puts a
    held-out combination's cells in training under its other spelling."""
    a = doubles.copy()
    combos = sorted(a.uns["grnvae_simulation"]["doubles"])
    labels = a.obs["perturbation"].astype(str).to_numpy().copy()
    for k, combo in enumerate(combos):
        rows = np.nonzero(labels == combo)[0][::2]
        labels[rows] = "+".join(reversed(combo.split("+")))  # half of its cells written B+A
    single = np.nonzero(labels == "G0003")[0][::2]
    labels[single] = "G0003+control"
    a.obs["perturbation"] = labels
    for seed in (0, 1):
        d = PerturbationData.from_anndata(a, cfg("data.split.by=combination", "data.split.fractions=[0.6,0.1,0.3]",
                                                 f"seed={seed}"))
        assert sorted(c for c in d.conditions if "+" in c) == combos and "G0003+control" not in d.conditions
        for combo in combos:
            sides = set(d.split[d.cell_condition == d.conditions.index(combo)])
            assert sides == {2} or 2 not in sides, (combo, sides)
    first, second = combos[0].split("+")
    reversed_name = f"{second}+{first.lower()}"  # the other order, a gene up to case
    d = PerturbationData.from_anndata(a, cfg("data.split.by=perturbation", f"data.split.test=[{reversed_name}]"))
    assert np.all(d.split[d.cell_condition == d.conditions.index(combos[0])] == 2)


def test_min_cells_that_drops_every_perturbation_names_itself(caplog):
    s = pd.Series(["ctrl"] * 40 + ["A"] * 5 + ["B"] * 7)
    with pytest.raises(DataError, match=r"every perturbation in 'perturbation' has fewer than 10 cells.*largest has 7.*"
                                        r"lower data.min_cells"):
        parse_labels(s, ["ctrl"], min_cells=10)
    with caplog.at_level(logging.WARNING):
        parse_labels(s, ["ctrl"], min_cells=6)
    assert "{'A': 5}" in caplog.text  # plain numbers, not np.int64(5)
    with pytest.raises(DataError, match="no cells"):
        parse_labels(pd.Series([], dtype=object), ["ctrl"])
    # cells are counted per condition, after 'B+A' joins 'A+B' and 'ctrl+ctrl' the controls
    merged = parse_labels(pd.Series(["ctrl"] * 3 + ["ctrl+ctrl"] * 2 + ["A+B"] * 3 + ["B+A"] * 3 + ["C"] * 6),
                          ["ctrl"], min_cells=5)
    assert merged.conditions == ["control", "A+B", "C"] and int(merged.is_control.sum()) == 5
