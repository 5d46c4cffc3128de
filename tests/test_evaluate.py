"""`grnvae evaluate` and `grnvae predict` on a trained run."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import grnvae
from grnvae.cli import main
from grnvae.errors import RunError
from grnvae.evaluation.evaluate import observed_effects

from .conftest import FAST, RECIPES, shared_file

KEYS = ("pearson_delta", "pearson_delta_top20", "mse", "direction_acc_top20")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    return grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["data.simulate.n_doubles=3"], out=out)


def test_evaluate_writes_full_table(run, capsys):
    assert main(["evaluate", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "ceiling" in out and "train_mean" in out
    ev = run.path / "evaluation"
    m = json.loads((ev / "metrics.json").read_text())
    for section in [m["model"], m["ceiling"], *m["baselines"].values()]:
        if section.get("n_perturbations", 1):
            assert set(KEYS) <= set(section)
    assert set(m["baselines"]) == {"no_change", "train_mean", "additive", "linear"}
    per = pd.read_csv(ev / "per_perturbation.csv")
    assert set(per["method"]) == {"model", "no_change", "train_mean", "additive", "linear", "ceiling"}
    grn = json.loads((ev / "grn_metrics.json").read_text())
    assert grn["truth"]["model"]["auprc"] is not None and "correlation" in grn["truth"]
    assert {"fraction_significant", "false_omission_rate", "mean_wasserstein"} <= set(grn["causal"]["model"])
    pngs = list(ev.glob("*.png"))
    assert len(pngs) >= 3
    import matplotlib.image as mpimg

    for png in pngs:
        img = mpimg.imread(png)
        assert img.shape[0] > 200 and img.shape[1] > 200


def test_reference_uses_held_out_cells_only(run):
    """Changing training cells' expression must not move the reference effects."""
    from grnvae.training import load_data

    data = load_data(run.recipe)
    before = observed_effects(data, "test")
    train = data.split_index("train")
    X = data.X.toarray()
    X[train[:200]] = X[train[:200]] * 5 + 3
    data.X = __import__("scipy.sparse", fromlist=["csr_matrix"]).csr_matrix(X)
    data.library = X.sum(1).astype(np.float64)
    data._cache.clear()
    after = observed_effects(data, "test")
    pd.testing.assert_frame_equal(before, after)
    assert not observed_effects(data, "train").equals(before)


def test_predict_unseen_single_and_combination(run, tmp_path, capsys):
    nodes = list(run.model.spec.nodes)
    labels = [nodes[0], f"{nodes[1]}+{nodes[2]}"]
    out = tmp_path / "pred.h5ad"
    assert main(["predict", str(run.path), "--perturbations", ",".join(labels), "--out", str(out)]) == 0
    pred = ad.read_h5ad(out)
    assert list(pred.obs_names) == ["control", *labels]
    assert list(pred.var_names) == list(run.model.spec.genes)
    assert np.isfinite(pred.X).all() and np.isfinite(pred.layers["delta"]).all()
    assert np.allclose(pred.layers["delta"][0], 0)
    assert main(["predict", str(run.path), "--perturbations", "NOTAGENE", "--out", str(out)]) == 2
    assert "NOTAGENE" in capsys.readouterr().err


def test_evaluate_unseen_perturbations_on_papalexi(tmp_path):
    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    r = grnvae.train(RECIPES / "gpo_vae.yaml", overrides=[
        f"data.path={path}", "data.split.by=perturbation", "data.split.test=[STAT1,IRF1,SMAD4]",
        "train.max_epochs=1", "train.max_steps=6", "train.progress_bar=false", "train.eval_cells=1000",
        "model.latent_dim=16", "model.encoder.hidden=64", "model.decoder.hidden=64", "model.edges.encoder_hidden=64"],
        out=tmp_path / "unseen")
    res = grnvae.evaluation.evaluate.evaluate(r.path, plots=False)
    m = res["metrics"]
    assert m["n_perturbations"] == 3
    assert m["baselines"]["train_mean"]["n_perturbations"] == 0  # unseen: no training mean exists
    assert np.isfinite(m["model"]["pearson_delta"]) and np.isfinite(m["baselines"]["linear"]["pearson_delta"])
    pred = grnvae.evaluation.evaluate.predict_perturbations(r.path, ["STAT1", "IRF1+STAT1"])
    assert np.isfinite(pred.X).all() and "STAT1" in pred.obs_names
