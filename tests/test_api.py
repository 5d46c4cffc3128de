"""grnvae.Model: the AnnData front end (registration, training, outputs written back into the
AnnData, save and load against a new AnnData)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import grnvae
from grnvae.errors import DataError, RunError


@pytest.fixture(scope="module")
def adata():
    a = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=600, n_doubles=2, seed=3)
    a.obs = a.obs.rename(columns={"perturbation": "guide"})
    a.obs["guide"] = a.obs["guide"].astype(str).replace("control", "NT")
    a.obs["batch"] = np.where(np.arange(a.n_obs) % 2, "b1", "b2")
    return a


@pytest.fixture(scope="module")
def trained(adata, tmp_path_factory):
    grnvae.Model.setup_anndata(adata, perturbation_key="guide", control="NT", covariates=["batch"])
    model = grnvae.Model(adata, recipe="grnvae", train__max_epochs=25, train__progress_bar=False,
                         overrides={"model.latent_dim": 4})
    with pytest.raises(RunError, match=r"not trained yet"):
        model.grn()
    model.train(out=tmp_path_factory.mktemp("api") / "run")
    return model


def test_setup_anndata_checks_the_keys(adata):
    with pytest.raises(DataError, match=r"no column \['perturbation'\]"):
        grnvae.Model.setup_anndata(adata.copy())
    with pytest.raises(DataError, match=r"control label \['ctrl'\]"):
        grnvae.Model.setup_anndata(adata.copy(), perturbation_key="guide", control="ctrl")


def test_registration_and_settings_reach_the_recipe(trained):
    d = trained.recipe.data
    assert (d.perturbation_key, d.control, list(d.covariates)) == ("guide", "NT", ["batch"])
    assert trained.recipe.model.latent_dim == 4 and trained.recipe.train.max_epochs == 25
    assert trained.run.recipe.data.perturbation_key == "guide"  # stored with the run


def test_outputs_go_back_into_the_anndata(trained, adata, tmp_path):
    pred = trained.predict(["G0000", "G0000+G0001"])
    assert list(pred.obs["guide"]) == ["NT", "G0000", "G0000+G0001"] and (pred.X >= 0).all()
    z = trained.get_latent_representation(write=True)
    assert z.shape == (adata.n_obs, 4) and np.isfinite(z).all() and np.array_equal(adata.obsm["X_grnvae"], z)
    e = trained.get_normalized_expression(write=True)
    assert e.shape == adata.shape and np.array_equal(adata.layers["grnvae_expected"], e)
    # the expected expression of control cells tracks their observed log-normalised means
    ctrl = (adata.obs["guide"] == "NT").to_numpy()
    x = adata.X[ctrl]
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    observed = np.log1p(x / x.sum(1, keepdims=True) * 1e4).mean(0)
    assert np.corrcoef(observed, e[ctrl].mean(0))[0, 1] > 0.9
    grn = trained.grn(write=True)
    assert list(grn.columns[:3]) == ["source", "target", "weight"] and len(grn) == trained.run.model.edges.num_edges
    tsv = trained.run.grn().to_dataframe()
    assert np.allclose(grn["weight"], -tsv["weight"]) and np.allclose(grn["lfc_per_loss"], tsv["weight"])
    adata.write_h5ad(tmp_path / "with_outputs.h5ad")  # everything written is h5ad-storable
    back = ad.read_h5ad(tmp_path / "with_outputs.h5ad")
    assert back.uns["grnvae_grn"].shape == grn.shape and back.obsm["X_grnvae"].shape == z.shape
    assert grnvae.Model(back, recipe="grnvae").recipe.data.covariates == ["batch"]  # registration survives


def test_save_and_load_against_a_new_anndata(trained, adata, tmp_path):
    path = trained.save(tmp_path / "saved")
    with pytest.raises(RunError, match=r"not empty"):
        trained.save(path)
    keep = adata.obs["guide"].isin(["NT", "G0001"]).to_numpy()
    subset = adata[keep][:, list(adata.var_names[::-1])].copy()  # other cells, genes in another order
    loaded = grnvae.Model.load(path, adata=subset)
    z = loaded.get_latent_representation()
    assert np.allclose(z, trained.get_latent_representation()[keep], atol=1e-5)
    assert loaded.grn().equals(trained.grn())
    with pytest.raises(DataError, match=r"lacks 1 of the 30 genes the model was trained on"):
        grnvae.Model.load(path, adata=adata[:, 1:].copy())
    odd = subset.copy()
    odd.obs["batch"] = "b9"
    with pytest.raises(DataError, match=r"covariate 'batch' has levels the model never saw: \['b9'\]"):
        grnvae.Model.load(path, adata=odd)
    alien = subset.copy()
    alien.obs["guide"] = alien.obs["guide"].astype(str).replace("G0001", "NOTAGENE")
    with pytest.raises(DataError, match=r"no GRN node for: \['NOTAGENE'\]"):
        grnvae.Model.load(path, adata=alien)


def test_predictions_and_scores_do_not_depend_on_the_anndatas_gene_order(trained, adata, tmp_path):
    """The model reads genes by name: the same cells with their genes in another order, or with
    genes the model never saw added, give the same predictions, explanations and evaluation."""
    import scipy.sparse as sp

    from grnvae.evaluation.evaluate import evaluate

    path = trained.save(tmp_path / "saved")
    shuffled = adata[:, list(adata.var_names[np.random.default_rng(0).permutation(adata.n_vars)])].copy()
    extra = ad.AnnData(sp.hstack([sp.csr_matrix(adata.X), sp.csr_matrix(np.ones((adata.n_obs, 2)))]).tocsr(),
                       obs=adata.obs.copy())
    extra.var_names = list(adata.var_names) + ["EXTRA1", "EXTRA2"]
    want = trained.predict(["G0001", "G0000+G0001"]).X
    why = trained.explain("G0001", top=3)
    for other in (shuffled, extra):
        loaded = grnvae.Model.load(path, adata=other)
        assert np.array_equal(loaded.predict(["G0001", "G0000+G0001"]).X, want)
        pd.testing.assert_frame_equal(loaded.explain("G0001", top=3), why)
    scores = [evaluate(trained.run.path, plots=False, adata=a)["metrics"]["model"] for a in (adata, shuffled, extra)]
    assert all(pd.Series(s).equals(pd.Series(scores[0])) for s in scores[1:])  # NaN equal to NaN


def test_predict_refuses_labels_it_would_misread(trained):
    """A target named twice is not a double dose and the control is not a perturbation: each is
    one clear error rather than a silent reading."""
    with pytest.raises(RunError, match=r"names \['G0001'\] more than once"):
        trained.predict(["G0001+G0001"])
    with pytest.raises(RunError, match=r"'NT': it is the control"):
        trained.predict(["NT"])


def test_a_cells_outputs_do_not_depend_on_the_other_cells_passed(trained, adata):
    """A cell's basal state and expected expression are the same whatever other cells, and in
    whatever order, come with it (its posterior draws are its own)."""
    z, e = trained.get_latent_representation(adata), trained.get_normalized_expression(adata)
    order = np.random.default_rng(1).permutation(adata.n_obs)
    part = order[: adata.n_obs // 3]
    assert np.allclose(trained.get_latent_representation(adata[order].copy()), z[order], atol=1e-5)
    assert np.allclose(trained.get_normalized_expression(adata[order].copy()), e[order], atol=1e-4)
    assert np.allclose(trained.get_normalized_expression(adata[part].copy()), e[part], atol=1e-4)


def test_any_subset_of_cells_is_read_without_controls_or_training_filters(trained, adata, tmp_path):
    """A model reads whichever cells it is given: one perturbation's cells (no controls), a
    single cell, a perturbation with fewer cells than data.min_cells. Each gets the values it
    gets among all cells (registration used to refuse subsets without controls and drop small
    groups). With GRN nodes chosen from the data (perturbed+hvg), a subset whose most variable
    genes differ is read on the model's own nodes (it used to fail with a KeyError)."""
    z, e = trained.get_latent_representation(adata), trained.get_normalized_expression(adata)
    guide = adata.obs["guide"].astype(str).to_numpy()
    one = np.nonzero(guide == next(g for g in guide if g != "NT" and "+" not in g))[0]
    for rows in (one, one[:1], np.r_[one[:2], np.nonzero(guide == "NT")[0][:3]]):
        sub = adata[rows].copy()
        assert np.allclose(trained.get_latent_representation(sub), z[rows], atol=1e-5)
        assert np.allclose(trained.get_normalized_expression(sub), e[rows], atol=1e-4)
    small = adata.copy()
    small.obs_names = [f"n{i}" for i in range(small.n_obs)]
    grnvae.Model.setup_anndata(small, perturbation_key="guide", control="NT", covariates=["batch"])
    hvg = grnvae.Model(small, recipe="grnvae", overrides={"train.max_epochs": 2, "train.progress_bar": False,
                                                          "grn.nodes": "perturbed+hvg", "grn.n_hvg": 4})
    hvg.train(out=tmp_path / "hvg")
    full = hvg.get_latent_representation(small)
    rows = np.random.default_rng(0).choice(small.n_obs, 40, replace=False)
    assert np.allclose(hvg.get_latent_representation(small[rows].copy()), full[rows], atol=1e-5)


def test_cells_the_api_cannot_place_are_clear_errors(trained, adata):
    """Duplicate cell names (common after concatenation) cannot be mapped back to rows: one clear
    error naming the fix, not a pandas traceback."""
    dup = adata.copy()
    dup.obs_names = ["c"] * 5 + list(dup.obs_names[5:])
    with pytest.raises(DataError, match=r"duplicate obs_names, e.g. \['c'\]; run adata.obs_names_make_unique"):
        trained.get_latent_representation(dup)
    # a cell without a label is one the registration leaves out: a NaN row, as documented
    nan = adata.copy()
    nan.obs["guide"] = nan.obs["guide"].astype(object)
    nan.obs.iloc[:3, nan.obs.columns.get_loc("guide")] = np.nan
    z = trained.get_latent_representation(nan)
    assert np.isnan(z[:3]).all() and np.isfinite(z[3:]).all()


def test_a_missing_covariate_value_is_refused_before_training(adata, tmp_path):
    """A covariate with missing values is refused when the data are registered, naming the column
    and the fix (it used to train and then leave a run whose checkpoint could not be read)."""
    a = adata.copy()
    a.obs["batch"] = pd.Categorical(np.where(np.arange(a.n_obs) < 7, None, a.obs["batch"].astype(str)))
    with pytest.raises(DataError, match=r"covariate 'batch' \(data.covariates\) is missing for 7 cells"):
        grnvae.train("grnvae", overrides=["data.perturbation_key=guide", "data.control=NT", "data.covariates=[batch]",
                                          "train.max_epochs=1", "train.progress_bar=false"],
                     adata=a, out=tmp_path / "nan_cov")


def test_registration_from_a_file_is_checked(adata):
    """adata.uns['grnvae_setup'] comes from a file: unknown keys are refused, and a value the
    override syntax would read differently is refused rather than silently changed."""
    a = adata.copy()
    a.uns["grnvae_setup"] = {"perturbation_key": "guide", "control": "NT", "path": "/etc/passwd"}
    with pytest.raises(DataError, match=r"has keys \['path'\]"):
        grnvae.Model(a, recipe="grnvae")
    a.uns["grnvae_setup"] = {"perturbation_key": "guide", "control": "[NT,ctrl]"}  # would become a list
    with pytest.raises(DataError, match=r"reads back as \['NT', 'ctrl'\]"):
        grnvae.Model(a, recipe="grnvae")
    a.uns["grnvae_setup"] = {"perturbation_key": "guide", "control": "[NT"}
    with pytest.raises(grnvae.RecipeError, match=r"quote the value or close its brackets"):
        grnvae.Model(a, recipe="grnvae")


def test_the_model_explains_its_predictions(trained):
    """Model.explain: the walks behind a predicted change add up to it (the AnnData's controls
    give the basal states, as in predict)."""
    regulator = str(trained.grn()["source"].iloc[0])
    table = trained.explain(regulator, top=2)
    pred = trained.predict([regulator])
    for gene, part in table.groupby("gene"):
        rows = part[part["kind"].isin(["walk", "rest", "composition"])]
        assert rows["lognorm"].sum() == pytest.approx(float(pred[:, gene].layers["delta"][1, 0]), abs=1e-4)


def test_cells_of_one_covariate_level_are_read_with_the_models_columns(trained, adata):
    """Controls from one batch only (another file, a subset): their covariates are the model's
    one-hot columns, not columns made from the levels the cells hold (which crashed, or silently
    read another level's column)."""
    from grnvae.evaluation.evaluate import predict_perturbations

    run = trained.run
    assert run.model.spec.covariates == {"batch": ["b1", "b2"]}
    one = adata[(adata.obs["batch"] == "b2").to_numpy()].copy()
    data = run.read_data(one)
    cov = data.batch(np.arange(5))["covariates"]
    assert cov.shape == (5, 2) and cov[:, 1].eq(1).all() and cov[:, 0].eq(0).all()
    pred = predict_perturbations(run, ["G0000"], adata=one)
    assert np.isfinite(pred.X).all()
    odd = one.copy()
    odd.obs["batch"] = "b9"
    with pytest.raises(DataError, match=r"covariate 'batch' has levels the model never saw: \['b9'\]"):
        run.read_data(odd)


def test_labels_as_screens_write_them_work_after_training(tmp_path):
    """Labels naming a gene up to case, GEARS' 'A+ctrl' singles and doubles written in either order
    register as they did for training when the trained model reads the same AnnData again; an
    empty AnnData is a clear error; the additive baseline finds the singles of such doubles."""
    from grnvae.evaluation.evaluate import evaluate

    a = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=900, n_doubles=2, seed=4)
    labels = a.obs["perturbation"].astype(str).replace("control", "ctrl").to_numpy().copy()
    labels[labels == "G0000"] = "g0000"  # the gene up to case
    rows = np.nonzero(labels == "G0001")[0]
    labels[rows[::2]] = "G0001+ctrl"  # GEARS' single
    double = sorted(a.uns["grnvae_simulation"]["doubles"])[0]
    rows = np.nonzero(labels == double)[0]
    labels[rows[::2]] = "+".join(reversed(double.split("+")))
    a.obs["perturbation"] = labels
    grnvae.Model.setup_anndata(a, perturbation_key="perturbation", control="ctrl")
    model = grnvae.Model(a, recipe="grnvae", train__max_epochs=2, train__progress_bar=False)
    model.train(out=tmp_path / "run")
    z = model.get_latent_representation()
    assert z.shape[0] == a.n_obs and np.isfinite(z).all()
    model.save(tmp_path / "saved")
    again = grnvae.Model.load(tmp_path / "saved", adata=a)
    assert np.allclose(again.get_latent_representation(), z, atol=1e-5)
    with pytest.raises(DataError, match=r"no cells"):
        model.get_latent_representation(a[a.obs["perturbation"] == "TYPO"])
    m = evaluate(model.run, adata=a, plots=False)["metrics"]
    assert m["by_category"]["seen2"]["baselines"]["additive"]["n_perturbations"] == 2


def test_a_counts_model_refuses_log_normalised_cells(trained, adata, tmp_path):
    import scipy.sparse as sp

    x = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    lognorm = adata.copy()
    lognorm.X = np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32)
    assert trained.run.model.spec.values == "counts"
    with pytest.raises(DataError, match=r"trained on raw counts, but this matrix holds log-normalised values"):
        trained.get_latent_representation(lognorm)
    with pytest.raises(DataError, match=r"trained on raw counts"):
        trained.run.read_data(lognorm)


def test_genes_named_by_a_var_column_of_symbols(tmp_path):
    """var_names that are Ensembl ids and labels that name symbols (the scverse layout):
    data.gene_symbols names the genes by a var column, for training, the trained model's outputs
    and inspect's suggestion; a missing column or duplicated symbols are clear errors."""
    from grnvae.data.inspect import describe
    from grnvae.evaluation.evaluate import predict_perturbations

    a = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=600, seed=5)
    symbols = list(map(str, a.var_names))
    a.var["symbol"] = symbols
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]
    a.write_h5ad(tmp_path / "ens.h5ad")
    report = describe(tmp_path / "ens.h5ad")
    assert "targets measured as genes: 0/5" in report and "data.gene_symbols=symbol" in report
    grnvae.Model.setup_anndata(a, perturbation_key="perturbation", gene_symbols="symbol")
    model = grnvae.Model(a, recipe="grnvae", train__max_epochs=2, train__progress_bar=False)
    model.train(out=tmp_path / "run")
    spec = model.run.model.spec
    assert list(spec.genes) == symbols and "G0000" in spec.nodes  # regulators are measured genes again
    shuffled = a[:, list(a.var_names[::-1])].copy()  # read by symbol, whatever the order
    assert np.allclose(model.get_latent_representation(shuffled), model.get_latent_representation(), atol=1e-5)
    pred = predict_perturbations(model.run, ["G0000"], adata=shuffled)
    assert list(pred.var_names) == symbols
    dup = a.copy()
    dup.var["symbol"] = ["G0000"] * 2 + symbols[2:]
    with pytest.raises(DataError, match=r"duplicated gene names in var\['symbol'\] \(data.gene_symbols\)"):
        model.get_latent_representation(dup)
    with pytest.raises(DataError, match=r"var has no column 'gene_name'"):
        grnvae.Model.setup_anndata(a, perturbation_key="perturbation", gene_symbols="gene_name")
