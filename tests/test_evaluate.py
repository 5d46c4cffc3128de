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
from grnvae.evaluation.evaluate import category_summaries, observed_effects, summarise_seeds
from grnvae.evaluation.metrics import METRICS

from .conftest import FAST, RECIPES, shared_file

KEYS = ("pearson_delta", "pearson_delta_top20", "pearson_systema", "discrimination", "mse", "direction_acc_top20")
METHODS = ("model", "no_change", "train_mean", "mean_effect", "additive", "linear")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    return grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["data.simulate.n_doubles=3"], out=out)


def test_evaluate_max_controls_reaches_the_prediction(run, monkeypatch):
    # --max-controls sets how many control cells the model's predictions average over
    import grnvae.evaluation.evaluate as ev_mod

    seen = []
    real = ev_mod.predict_effects

    def spy(run_, data, perts, split, max_controls=500, **kw):
        seen.append(max_controls)
        return real(run_, data, perts, split, max_controls=max_controls, **kw)

    monkeypatch.setattr(ev_mod, "predict_effects", spy)
    assert main(["evaluate", str(run.path), "--no-plots", "--max-controls", "7"]) == 0
    assert seen == [7]


def test_evaluate_writes_full_table(run, capsys):
    assert main(["evaluate", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "ceiling" in out and "train_mean" in out and "mean_effect" in out
    assert "pearson_systema" in out and "discrimination" in out
    ev = run.path / "evaluation"
    m = json.loads((ev / "metrics.json").read_text())
    for section in [m["model"], m["ceiling"], *m["baselines"].values()]:
        if section.get("n_perturbations", 1):
            assert set(KEYS) <= set(section)
    assert list(m["baselines"]) == list(METHODS[1:])
    # a cell split holds cells of each double too: all seen2 (both genes perturbed alone in training)
    assert set(m["by_category"]) == {"seen2", "single"}
    assert m["by_category"]["seen2"]["n_perturbations"] == 3
    assert m["by_category"]["seen2"]["baselines"]["additive"]["n_perturbations"] == 3
    # pearson_systema centres on the mean training delta, i.e. the mean_effect prediction itself
    assert m["baselines"]["mean_effect"]["pearson_systema"] is None  # NaN: constant once centred
    assert m["baselines"]["mean_effect"]["pearson_delta"] is not None
    for section in (m["model"], m["baselines"]["train_mean"], m["ceiling"]):
        assert np.isfinite(section["pearson_systema"]) and 0 <= section["discrimination"] <= 1
    assert m["baselines"]["no_change"]["discrimination"] == pytest.approx(0.5)  # same for all: chance
    per = pd.read_csv(ev / "per_perturbation.csv")
    assert set(per["method"]) == {*METHODS, "ceiling"}
    assert set(METRICS) <= set(per.columns)
    assert per.loc[per["method"] == "mean_effect", "pearson_systema"].isna().all()
    grn = json.loads((ev / "grn_metrics.json").read_text())
    assert grn["truth"]["model"]["auprc"] is not None and {"correlation", "perturbation_de"} <= set(grn["truth"])
    # every GRN scored the same way, probabilities with their calibration
    assert grn["truth"]["perturbation_de"]["evaluable_pairs"] > 0
    assert 0 <= grn["truth"]["model"]["ece"] <= 1 and grn["truth"]["model"]["reliability"]
    assert {"fraction_significant", "false_omission_rate", "mean_wasserstein"} <= set(grn["causal"]["model"])
    pngs = list(ev.glob("*.png"))
    assert len(pngs) >= 3
    import matplotlib.image as mpimg

    for png in pngs:
        img = mpimg.imread(png)
        assert img.shape[0] > 200 and img.shape[1] > 200


def _per_table():
    """A per_perturbation table: perturbations a, b (seen1), c (seen2), d (single)."""
    cats = {"a": "seen1", "b": "seen1", "c": "seen2", "d": "single"}
    rows = []
    for i, (p, cat) in enumerate(cats.items()):
        for j, method in enumerate(("model", "no_change", "additive", "ceiling")):
            if method == "additive" and p == "d":
                continue  # not defined for d
            row = {"perturbation": p, "category": cat, "method": method}
            row.update({k: float(10 * i + j) for k in METRICS})
            row["pearson_systema"] = np.nan if method == "no_change" else row["pearson_systema"]
            rows.append(row)
    return pd.DataFrame(rows)


def test_category_summaries():
    per = _per_table()
    out = category_summaries(per, methods=["model", "no_change", "additive", "linear"])
    assert list(out) == ["seen1", "seen2", "single"]
    s1 = out["seen1"]
    assert s1["n_perturbations"] == 2
    assert list(s1["baselines"]) == ["no_change", "additive", "linear"]
    # model rows of a (0) and b (10): mean 5, every metric
    assert all(s1["model"][k] == pytest.approx(5.0) for k in METRICS)
    assert s1["model"]["n_perturbations"] == 2 and s1["model"]["n_undefined"] == 0
    assert s1["ceiling"]["mse"] == pytest.approx((3 + 13) / 2)
    assert s1["baselines"]["no_change"]["mse"] == pytest.approx((1 + 11) / 2)
    assert np.isnan(s1["baselines"]["no_change"]["pearson_systema"])  # NaN in every row
    assert s1["baselines"]["linear"] == {"n_perturbations": 0}  # no row at all
    assert out["single"]["baselines"]["additive"] == {"n_perturbations": 0}
    assert out["seen2"]["model"]["pearson_delta"] == pytest.approx(20.0)
    assert category_summaries(per.drop(columns="category")) == {}


def test_cli_prints_a_block_per_category(monkeypatch, capsys, tmp_path):
    per = _per_table()
    cats = category_summaries(per, methods=["model", "no_change", "additive"])
    summary = {"pearson_delta": 0.5, "pearson_delta_top20": 0.25, "pearson_systema": None,
               "discrimination": 0.75, "mse": 0.125, "n_perturbations": 4}
    metrics = {"split": "test", "n_perturbations": 4, "model": summary, "ceiling": summary,
               "baselines": {"no_change": summary, "additive": {**summary, "n_perturbations": 3}}, "by_category": cats}
    monkeypatch.setattr("grnvae.evaluation.evaluate.evaluate", lambda *a, **k: {"metrics": metrics})
    assert main(["evaluate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for cat in ("seen1", "seen2", "single"):
        n = cats[cat]["n_perturbations"]
        assert f"category {cat}: {n} perturbation{'' if n == 1 else 's'}" in out
    header = [ln for ln in out.splitlines() if "pearson_delta_top20" in ln]
    assert len(header) == 4  # the main table and three categories
    assert header[0].split() == ["pearson_delta", "pearson_delta_top20", "pearson_systema", "discrimination", "mse"]
    model = [ln.split() for ln in out.splitlines() if ln.startswith("model")]
    assert model[0] == ["model", "0.500", "0.250", "-", "0.750", "0.125"]
    assert model[1] == ["model"] + ["5.000"] * 5  # seen1: mean of 0 and 10
    # a method scored on fewer perturbations than the table says so; within its category it is whole
    additive = [ln for ln in out.splitlines() if ln.startswith("additive")]
    assert additive[0].startswith("additive (3 of 4) ") and additive[1].split()[0:2] == ["additive", "7.000"]  # seen1: (2 + 12) / 2


def test_summarise_seeds():
    a = {"split": "test", "model": {"pearson_delta": 0.5, "mse": 1.0, "pearson_systema": None, "n_perturbations": 4},
         "baselines": {"linear": {"pearson_delta": 0.25, "n_perturbations": 4}, "train_mean": {"n_perturbations": 0}},
         "ceiling": {"pearson_delta": 0.9},
         "by_category": {"seen1": {"n_perturbations": 2, "model": {"pearson_delta": 0.0}}}}
    b = {"split": "test", "model": {"pearson_delta": 0.75, "mse": 2.0, "pearson_systema": 0.5, "n_perturbations": 4},
         "baselines": {"linear": {"pearson_delta": float("nan"), "n_perturbations": 4},
                       "train_mean": {"n_perturbations": 0}},
         "ceiling": {"pearson_delta": 0.8},
         "by_category": {"seen1": {"n_perturbations": 2, "model": {"pearson_delta": 1.0}}}}
    out = summarise_seeds([a, b])
    assert out["split"] == "test"
    assert out["model"]["pearson_delta"]["mean"] == pytest.approx(0.625)
    assert out["model"]["pearson_delta"]["sd"] == pytest.approx(np.std([0.5, 0.75], ddof=1))
    assert out["model"]["pearson_delta"]["n"] == 2
    assert out["model"]["mse"] == {"mean": pytest.approx(1.5), "sd": pytest.approx(np.sqrt(0.5)), "n": 2}
    # None (NaN in metrics.json) and NaN are ignored
    assert out["model"]["pearson_systema"] == {"mean": 0.5, "sd": 0.0, "n": 1}
    assert out["baselines"]["linear"]["pearson_delta"] == {"mean": 0.25, "sd": 0.0, "n": 1}
    assert out["model"]["n_perturbations"] == {"mean": 4.0, "sd": 0.0, "n": 2}
    assert out["ceiling"]["pearson_delta"]["mean"] == pytest.approx(0.85)
    assert out["by_category"]["seen1"]["model"]["pearson_delta"]["sd"] == pytest.approx(np.sqrt(0.5))
    assert out["baselines"]["train_mean"] == {"n_perturbations": {"mean": 0.0, "sd": 0.0, "n": 2}}
    # a metric missing in one seed counts the others; one seed alone has sd 0
    one = summarise_seeds([a])
    assert one["model"]["mse"] == {"mean": 1.0, "sd": 0.0, "n": 1}
    assert np.isnan(one["model"]["pearson_systema"]["mean"]) and one["model"]["pearson_systema"]["n"] == 0
    with pytest.raises(RunError):
        summarise_seeds([])


def test_summarise_seeds_reads_metrics_files(run, tmp_path):
    ev = run.path / "evaluation" / "metrics.json"
    if not ev.exists():
        grnvae.evaluation.evaluate.evaluate(run.path, plots=False)
    m = json.loads(ev.read_text())
    out = summarise_seeds([ev, m])
    assert out["model"]["pearson_delta"]["mean"] == pytest.approx(m["model"]["pearson_delta"])
    assert out["model"]["pearson_delta"]["sd"] == 0.0 and out["model"]["pearson_delta"]["n"] == 2
    assert set(out["baselines"]) == set(METHODS[1:])


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
    # --perturbation takes one label whole (a label may hold a comma), once per label
    again = tmp_path / "again.h5ad"
    assert main(["predict", str(run.path), "--perturbation", labels[0], "--perturbation", labels[1],
                 "--out", str(again)]) == 0
    assert np.array_equal(ad.read_h5ad(again).X, pred.X)
    assert main(["predict", str(run.path), "--perturbation", f"{nodes[0]},x", "--out", str(again)]) == 2
    assert f"cannot predict '{nodes[0]},x'" in capsys.readouterr().err


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
    assert m["baselines"]["mean_effect"]["n_perturbations"] == 3  # defined for unseen ones too
    assert np.isfinite(m["model"]["pearson_systema"]) and np.isfinite(m["ceiling"]["pearson_systema"])
    assert np.isfinite(m["model"]["pearson_delta"]) and np.isfinite(m["baselines"]["linear"]["pearson_delta"])
    pred = grnvae.evaluation.evaluate.predict_perturbations(r.path, ["STAT1", "IRF1+STAT1"])
    assert np.isfinite(pred.X).all() and "STAT1" in pred.obs_names


def test_validation_scores_do_not_overwrite_the_test_scores(run, capsys):
    """`grnvae evaluate --split val` writes RUN/evaluation/val/, beside the test split's
    RUN/evaluation/, so the two never overwrite each other."""
    from grnvae.cli import main

    assert main(["evaluate", str(run.path), "--no-plots"]) == 0
    assert main(["evaluate", str(run.path), "--split", "val", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert str(run.path / "evaluation" / "val") in out
    test = json.loads((run.path / "evaluation" / "metrics.json").read_text())
    val = json.loads((run.path / "evaluation" / "val" / "metrics.json").read_text())
    assert test["split"] == "test" and val["split"] == "val"
    assert (run.path / "evaluation" / "val" / "per_perturbation.csv").exists()
    # the Python function takes the Run that grnvae.train returns as well as its directory
    again = grnvae.evaluation.evaluate.evaluate(run, split="val", plots=False)["metrics"]
    assert again["model"]["pearson_delta"] == pytest.approx(val["model"]["pearson_delta"], abs=1e-9)
