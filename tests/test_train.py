"""End to end: recipe -> simulated data -> trained run directory -> learned GRN."""

from __future__ import annotations

import json
import shutil

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import grnvae
from grnvae.cli import main
from grnvae.errors import DataError, GRNError, RecipeError, RunError
from grnvae.training import TERMS
from grnvae.rundir import read_marker

from .conftest import FAST, RECIPES


def test_run_directory_contents(tiny_run):
    path = tiny_run.path
    for name in ("recipe.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "grn.tsv",
                 "metrics.json", "split.tsv.gz"):
        assert (path / name).exists(), name
    assert list((path / "tensorboard").glob("events.out.tfevents.*"))
    # the stored recipe is the resolved one and reloads to the same config
    stored = grnvae.load_recipe(path / "recipe.yaml")
    assert stored.train.max_epochs == 2 and stored.model.latent_dim == 8
    metrics = json.loads((path / "metrics.json").read_text())
    for split in ("train", "val"):
        assert set(TERMS) <= set(metrics[split])
        assert all(np.isfinite(v) for v in metrics[split].values())
    assert metrics["grn_recovery"]["evaluable_pairs"] == 12 * 11


def test_tensorboard_logs_every_loss_term(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run.path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for stage in ("train", "val"):
        assert {f"{stage}/{t}" for t in TERMS} <= tags


def test_grn_tsv_has_one_row_per_edge_with_gene_names(tiny_run):
    df = pd.read_csv(tiny_run.path / "grn.tsv", sep="\t")
    assert list(df.columns) == ["source", "target", "probability", "log_odds", "weight", "informed", "evidence"]
    # log-odds rank as the probabilities do (the masked edges of this recipe: the posterior logits)
    assert np.allclose(1 / (1 + np.exp(-df["log_odds"])), df["probability"], atol=1e-5)
    assert len(df) == tiny_run.model.edge_index.shape[1] == 12 * 12  # complete graph with self loops
    assert set(df["source"]) == set(tiny_run.model.spec.nodes)
    assert df["probability"].between(0, 1).all() and np.isfinite(df["weight"]).all()
    assert not df.duplicated(["source", "target"]).any()


def test_run_load_round_trip_and_export(tiny_run, tmp_path):
    loaded = grnvae.Run.load(tiny_run.path)
    g1, g2 = tiny_run.grn(), loaded.grn()
    assert g1.genes == g2.genes and torch.equal(g1.edge_index, g2.edge_index)
    assert torch.allclose(g1.edge_attr["probability"], g2.edge_attr["probability"])
    assert main(["export-grn", str(tiny_run.path), "--format", "graphml", "--out", str(tmp_path / "g.graphml")]) == 0
    graph = nx.read_graphml(tmp_path / "g.graphml")
    assert graph.number_of_edges() == g1.num_edges and set(graph.nodes) == set(g1.genes)
    assert main(["export-grn", str(tiny_run.path), "--out", str(tmp_path / "g.tsv")]) == 0
    df = pd.read_csv(tmp_path / "g.tsv", sep="\t")
    ref = pd.read_csv(tiny_run.path / "grn.tsv", sep="\t")
    pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-5)
    # the fast path (the best checkpoint's grn.tsv, copied) writes what loading the model writes
    tiny_run.export_grn(tmp_path / "from_model.tsv")
    assert (tmp_path / "g.tsv").read_bytes() == (tmp_path / "from_model.tsv").read_bytes()
    assert main(["export-grn", str(tiny_run.path), "--checkpoint", "last", "--out", str(tmp_path / "last.tsv")]) == 0
    with pytest.raises(RunError, match="not a grnvae run directory"):
        grnvae.Run.load(tmp_path)


def test_training_is_deterministic_for_a_seed(tiny_run, tmp_path):
    again = grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST, out=tmp_path / "again")
    a = pd.read_csv(tiny_run.path / "grn.tsv", sep="\t")
    b = pd.read_csv(again.path / "grn.tsv", sep="\t")
    pd.testing.assert_frame_equal(a, b)
    other = grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["seed=5"], out=tmp_path / "other")
    c = pd.read_csv(other.path / "grn.tsv", sep="\t")
    assert not np.allclose(a["probability"], c["probability"])


def test_finished_run_is_protected_and_interrupted_run_resumes(tiny_run, tmp_path):
    with pytest.raises(RunError, match="already holds a finished run"):
        grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST, out=tiny_run.path)
    # simulate an interruption after the first epoch: keep last.ckpt, drop the results
    run_dir = tmp_path / "interrupted"
    grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST[:-2] + ["train.max_epochs=1", "train.progress_bar=false"], out=run_dir)
    (run_dir / "metrics.json").unlink()
    (run_dir / "grn.tsv").unlink()
    marker = run_dir / "grnvae-run.json"
    marker.write_text(marker.read_text().replace('"finished"', '"running"'))
    # the recipe on disk must match to resume; continue to 2 epochs with the same recipe
    text = (run_dir / "recipe.yaml").read_text().replace("max_epochs: 1", "max_epochs: 2")
    (run_dir / "recipe.yaml").write_text(text)
    resumed = grnvae.train(run_dir / "recipe.yaml", out=run_dir)
    assert resumed.metrics["epochs"] == 2 and (run_dir / "grn.tsv").exists()
    with pytest.raises(RunError, match=r"different recipe \(seed: 0 -> 9; "):
        (run_dir / "metrics.json").unlink()
        marker.write_text(marker.read_text().replace('"finished"', '"running"'))
        grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["seed=9"], out=run_dir)


def test_a_finished_run_trains_on_when_asked_for_more_epochs(tmp_path):
    """The same recipe with a larger train.max_epochs trains a finished run on from its last
    checkpoint, to the very model a run of that many epochs gives; its earlier evaluation is
    kept under its epoch. Anything else, or a run that stopped early, is refused with the reason."""
    from grnvae.evaluation.evaluate import evaluate

    quick, longer = RECIPES / "quickstart.yaml", FAST + ["train.max_epochs=4"]
    straight = grnvae.train(quick, overrides=longer, out=tmp_path / "straight")
    run_dir = tmp_path / "extended"
    grnvae.train(quick, overrides=FAST, out=run_dir)
    evaluate(run_dir, plots=False)
    with pytest.raises(RunError, match=r"already holds a finished run; .*to train it longer, give only a larger"):
        grnvae.train(quick, overrides=FAST, out=run_dir)
    with pytest.raises(RunError, match=r"finished run \(seed: 0 -> 9; train.max_epochs: 2 -> 4\)"):
        grnvae.train(quick, overrides=longer + ["seed=9"], out=run_dir)
    # a key added to the schema after a run was written counts as its default (what grnvae did
    # before it existed): a run without model.effect.loops trains on
    stored = (run_dir / "recipe.yaml").read_text()
    assert "    loops: walk\n" in stored
    (run_dir / "recipe.yaml").write_text(stored.replace("    loops: walk\n", ""))
    extended = grnvae.train(quick, overrides=longer, out=run_dir)
    assert extended.metrics["epochs"] == 4 and read_marker(run_dir)["status"] == "finished"
    assert (run_dir / "evaluation_epoch2" / "metrics.json").exists() and not (run_dir / "evaluation").exists()
    assert (run_dir / "grn.tsv").read_text() == (straight.path / "grn.tsv").read_text()
    early = tmp_path / "early"  # a learning rate too large to keep improving: early stopping
    stop = FAST + ["train.max_epochs=30", "train.patience=2", "train.lr=0.2"]
    stopped = grnvae.train(quick, overrides=stop, out=early)
    assert stopped.metrics["epochs"] < 30
    # last.ckpt is the last epoch, best.ckpt the best one, patience epochs before it
    epoch = {n: torch.load(early / "checkpoints" / f"{n}.ckpt", weights_only=True)["epoch"] for n in ("best", "last")}
    assert epoch == {"best": stopped.metrics["epochs"] - 3, "last": stopped.metrics["epochs"] - 1}
    with pytest.raises(RunError, match=r"stopped early, after \d+ of 30 epochs"):
        grnvae.train(quick, overrides=stop + ["train.max_epochs=60"], out=early)


def test_cli_train_prints_where_results_are(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", str(RECIPES / "quickstart.yaml"), *FAST, "train.max_epochs=1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert str(out / "grn.tsv") in text and "AUPRC" in text
    assert "align" in text and "invariance" not in text  # GPO-VAE's terms only
    assert f"grnvae evaluate {out}" in text


def test_demo_is_the_default_model_on_the_simulator(tmp_path, capsys):
    """`make demo` trains recipes/demo.yaml: the grnvae recipe's model, loss and training on the
    built-in simulated screen (no file), and reports its GRN recovery and terms."""
    demo = grnvae.load_recipe(RECIPES / "demo.yaml")
    default = grnvae.load_recipe("grnvae", ["data.path=x.h5ad"])
    for section in ("grn", "model", "loss"):
        assert demo[section] == default[section], section
    assert demo.data.path is None and demo.data.simulate.n_regulators == 40
    assert "recipes/demo.yaml" in (RECIPES.parent / "Makefile").read_text()
    small = ["data.simulate.n_genes=60", "data.simulate.n_regulators=12", "data.simulate.n_cells=900",
             "train.max_epochs=2", "train.progress_bar=false"]
    out = tmp_path / "demo"
    assert main(["train", str(RECIPES / "demo.yaml"), *small, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "AUPRC" in text and "invariance" in text and "align" not in text and "2 epochs trained" in text


def test_variants_free_weights_mean_field_and_lognormalised_input(tmp_path):
    """Free per-edge weights, a mean-field encoder and Normal likelihood on log-normalised data."""
    import scipy.sparse as sp

    adata = grnvae.simulate(n_genes=40, n_regulators=8, n_cells=600, n_doubles=1, seed=2)
    X = adata.X.toarray()
    adata.X = sp.csr_matrix(np.log1p(X / X.sum(1, keepdims=True) * 1e4).astype(np.float32))
    run = grnvae.train(
        RECIPES / "quickstart.yaml",
        overrides=FAST + ["model.edges.weight=free", "model.encoder.kind=mean_field", "model.effect.hops=2"],
        out=tmp_path / "variants", adata=adata,
    )
    assert run.model.likelihood == "normal" and run.model.values == "lognorm"
    assert np.isfinite(run.metrics["val"]["loss"])
    assert grnvae.Run.load(run.path).model.edges.weight_mode == "free"


def test_monitor_elbo_picks_the_epoch_with_the_highest_val_elbo(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["train.max_epochs=4", "train.monitor=elbo"],
                       out=tmp_path / "elbo")
    ckpt = torch.load(run.path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    (key,) = [k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint") and "'monitor': None" not in k]
    assert "'monitor': 'val/elbo'" in key and "'mode': 'max'" in key
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    elbos = [e.value for e in acc.Scalars("val/elbo")]
    assert len(elbos) == 4
    assert float(ckpt["callbacks"][key]["best_model_score"]) == pytest.approx(max(elbos), rel=1e-6)
    with pytest.raises(grnvae.errors.RecipeError, match="train.monitor"):
        grnvae.load_recipe(RECIPES / "quickstart.yaml", overrides=["train.monitor=val_loss"])


def test_train_on_an_anndata_without_a_path(tmp_path):
    """train(recipe, adata=...) needs neither data.path nor data.simulate; predictions name their
    rows in the data's own perturbation column; evaluate takes the same AnnData, and without it
    says what to pass."""
    from grnvae.errors import DataError
    from grnvae.evaluation.evaluate import evaluate, predict_perturbations

    a = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=400, n_doubles=0, seed=1)
    a.obs = a.obs.rename(columns={"perturbation": "guide_target"})
    a.obs["guide_target"] = a.obs["guide_target"].astype(str).replace("control", "NT")
    overrides = ["data.perturbation_key=guide_target", "data.control=NT", "train.max_epochs=2",
                 "train.progress_bar=false", "model.latent_dim=4"]
    run = grnvae.train("grnvae", overrides=overrides, adata=a, out=tmp_path / "run")
    assert run.recipe.data.path is None and run.recipe.data.simulate is None
    target = sorted(set(a.obs["guide_target"]) - {"NT"})[0]
    pred = predict_perturbations(run.path, [target], adata=a)
    assert list(pred.obs["guide_target"]) == ["NT", target] and list(pred.obs_names) == ["NT", target]
    assert "perturbation" not in pred.obs
    with pytest.raises(DataError, match=r"in-memory AnnData.*adata="):
        evaluate(run.path, plots=False)
    metrics = evaluate(run.path, plots=False, adata=a)["metrics"]
    assert metrics["n_perturbations"] > 0


def test_edges_say_what_the_data_can_inform(tmp_path):
    """grn.tsv marks an edge informed only when some hop carries a training perturbation along it
    to a measured gene: its regulator has training cells or is reached from one in the earlier
    hops, and its target is a measured gene or reaches one over the remaining hops; evidence
    counts the regulator's training cells."""
    a = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=500, n_doubles=0, seed=4)
    keep = [g for g in a.var_names if g != "G0001"]  # G0001: perturbed, not measured
    a = a[:, keep].copy()
    over = ["train.max_epochs=1", "train.progress_bar=false", "model.latent_dim=4"]
    run = grnvae.train("grnvae", overrides=over, adata=a, out=tmp_path / "one_hop")
    df = pd.read_csv(run.path / "grn.tsv", sep="\t")
    counts = a.obs["perturbation"].astype(str).value_counts()
    train_cells = dict(zip(run.model.spec.nodes, run.model.node_counts.tolist()))
    assert (df["evidence"] == df["source"].map(train_cells)).all()
    assert 0 < train_cells["G0002"] <= counts["G0002"]
    into_unmeasured = df["target"] == "G0001"
    assert into_unmeasured.any() and not df.loc[into_unmeasured, "informed"].any()
    seen = df["evidence"] > 0
    assert df.loc[~into_unmeasured & seen, "informed"].all()  # seen regulators into measured genes
    assert (~seen).any() and not df.loc[~seen, "informed"].any()  # self-loops of never-perturbed genes
    # with two hops, an edge into G0001 is informed when G0001 reaches a measured gene
    run = grnvae.train("grnvae", overrides=over + ["model.effect.hops=2"], adata=a, out=tmp_path / "two_hops")
    df = pd.read_csv(run.path / "grn.tsv", sep="\t")
    assert df.loc[df["target"] == "G0001", "informed"].all()
    # own loops (the grnvae recipe): a never-perturbed gene's self-loop is never walked, even when
    # a seen regulator reaches the gene at the first hop
    loop = df["source"] == df["target"]
    assert (loop & (df["evidence"] == 0)).any() and not df.loc[loop & (df["evidence"] == 0), "informed"].any()
    walked = grnvae.train("grnvae", overrides=over + ["model.effect.hops=2", "model.effect.loops=walk"], adata=a,
                          out=tmp_path / "walked")
    dw = pd.read_csv(walked.path / "grn.tsv", sep="\t")
    assert dw.loc[(dw["source"] == dw["target"]) & (dw["evidence"] == 0), "informed"].any()
    # a regulator with no training cells that a seen one reaches at the first hop: its edges are
    # informed at the second
    held = grnvae.train("grnvae", overrides=over + ["model.effect.hops=2", "data.split.by=perturbation",
                                                    "data.split.test=[G0003]"], adata=a, out=tmp_path / "held")
    dh = pd.read_csv(held.path / "grn.tsv", sep="\t")
    out_of_held = (dh["source"] == "G0003") & (dh["target"] != "G0003")
    measured = dh["target"] != "G0001"  # at the second hop, a target must be measured itself
    assert (dh.loc[out_of_held, "evidence"] == 0).all() and dh.loc[out_of_held & measured, "informed"].all()
    assert not dh.loc[out_of_held & ~measured, "informed"].any()


def test_loggers(tmp_path):
    """train.logger: csv writes every loss term per epoch to RUN/logs/metrics.csv; none writes no
    logs; one whose package is missing fails before any data is read, naming the install."""
    import importlib.util

    base = [*FAST, "train.max_epochs=2"]
    run = grnvae.train("quickstart", overrides=[*base, "train.logger=csv"], out=tmp_path / "csv")
    table = pd.read_csv(run.path / "logs" / "metrics.csv")
    assert {"train/loss", "val/loss", "train/reconstruction", "epoch"} <= set(table.columns)
    assert table["epoch"].max() == 1 and not (run.path / "tensorboard").exists()
    run = grnvae.train("quickstart", overrides=[*base, "train.logger=none"], out=tmp_path / "none")
    assert not (run.path / "logs").exists() and not (run.path / "tensorboard").exists()
    missing = next((k for k in ("wandb", "mlflow") if importlib.util.find_spec(k) is None), None)
    if missing:
        with pytest.raises(grnvae.RecipeError, match=rf"pip install {missing}"):
            grnvae.train("quickstart", overrides=[*base, f"train.logger={missing}"], out=tmp_path / "m")
        assert not (tmp_path / "m").exists()
    with pytest.raises(grnvae.RecipeError, match=r"did you mean 'csv'"):
        grnvae.load_recipe("quickstart", ["train.logger=cvs"])


def test_exporting_a_finished_runs_grn_needs_no_model(tiny_run, tmp_path):
    """export-grn of the best checkpoint's table copies grn.tsv without importing torch."""
    import subprocess
    import sys

    from .conftest import ROOT

    code = ("import sys; from grnvae.cli import main\n"
            f"assert main(['export-grn', {str(tiny_run.path)!r}, '--out', {str(tmp_path / 'g.tsv')!r}]) == 0\n"
            "assert 'torch' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "g.tsv").read_bytes() == (tiny_run.path / "grn.tsv").read_bytes()
    # the last checkpoint's GRN goes to grn.last.tsv, never over the grn.tsv training wrote
    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    written = (run / "grn.tsv").read_bytes()
    assert main(["export-grn", str(run), "--checkpoint", "last"]) == 0
    assert (run / "grn.last.tsv").exists() and (run / "grn.tsv").read_bytes() == written
    assert main(["export-grn", str(run)]) == 0 and (run / "grn.tsv").read_bytes() == written


def test_a_checkpoint_with_linear_effect_projections_resumes(tmp_path):
    # checkpoints written before the effects' first-layer weights were stored input-major hold
    # them as nn.Linear weights [out, in], with Adam moments of that shape: such a run resumes
    run_dir = tmp_path / "old"
    grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST[:-2] + ["train.max_epochs=1", "train.progress_bar=false"],
                 out=run_dir)
    from grnvae.lightning import GRNVAEModule

    run = grnvae.Run.load(run_dir)
    ids = [i for i, (name, _) in enumerate(run.model.named_parameters()) if name.endswith("weight_in")]
    assert ids  # the encoder's (and the decoder's) effect projections
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ck = torch.load(ckpt, weights_only=False)
    saved = {i: {k: v.clone() for k, v in ck["optimizer_states"][0]["state"][i].items()} for i in ids}
    moved = [k for k in ck["state_dict"] if k.endswith("weight_in")]
    for k in moved:
        ck["state_dict"][k[:-len("weight_in")] + "weight"] = ck["state_dict"].pop(k).t().contiguous()
    for i in ids:
        state = ck["optimizer_states"][0]["state"][i]
        for key in ("exp_avg", "exp_avg_sq"):
            state[key] = state[key].t().contiguous()
    torch.save(ck, ckpt)
    # the module puts the moments back in the weights' layout (same numbers, not merely the same size)
    probe = {k: v for k, v in ck.items() if k != "grnvae_rng"}
    GRNVAEModule(run.model, run.recipe).on_load_checkpoint(probe)
    for i in ids:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(probe["optimizer_states"][0]["state"][i][key], saved[i][key])
    for name in ("metrics.json", "grn.tsv"):
        (run_dir / name).unlink()
    marker = run_dir / "grnvae-run.json"
    marker.write_text(marker.read_text().replace('"finished"', '"running"'))
    (run_dir / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text().replace("max_epochs: 1", "max_epochs: 2"))
    resumed = grnvae.train(run_dir / "recipe.yaml", out=run_dir)
    assert resumed.metrics["epochs"] == 2


_FAULT_PROBE = """
import resource, torch
from grnvae.utils import tune_allocator
ok = tune_allocator()
def rounds():
    for _ in range(5):
        ts = [torch.ones(2_000_000) for _ in range(8)]  # 8 x 8 MB alive at once, then freed
        del ts
rounds()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="tune_allocator sets glibc's malloc")
def test_the_allocator_keeps_freed_memory_for_the_next_step():
    # a step allocates and frees tens of MB; by default glibc often hands them back to the system
    # and the next step faults them in again, 4 kB at a time (whether it does depends on the
    # process's address-space layout: about half of the runs here). Tuned, the memory is reused.
    import os
    import subprocess
    import sys

    def probe(**env):
        out = subprocess.run([sys.executable, "-c", _FAULT_PROBE], env={**os.environ, **env}, check=True,
                             capture_output=True, text=True).stdout.split()
        return out[0] == "True", int(out[1])

    pages = 5 * 8 * 2_000_000 * 4 // 4096  # what the second five rounds touch
    for _ in range(3):  # every run, whatever the layout
        tuned, faults = probe()
        assert tuned and faults < 0.02 * pages
    assert probe(GRNVAE_TUNE_MALLOC="0")[0] is False  # switched off
    assert probe(MALLOC_TRIM_THRESHOLD_="131072")[0] is False  # the user's own malloc settings stay in charge


def test_min_delta_stops_when_improvements_are_smaller(tmp_path):
    """Early stopping counts an epoch as an improvement only when the monitored quantity moves by
    more than train.min_delta: with a delta no epoch can reach, training stops after patience + 1
    epochs; without it the same run trains every epoch it is given."""
    common = FAST + ["train.max_epochs=6", "train.patience=2", "train.monitor=elbo"]
    stopped = grnvae.train(RECIPES / "quickstart.yaml", overrides=common + ["train.min_delta=1e9"],
                           out=tmp_path / "stopped")
    assert stopped.metrics["epochs"] == 3
    full = grnvae.train(RECIPES / "quickstart.yaml", overrides=common + ["train.min_delta=0"], out=tmp_path / "full")
    assert full.metrics["epochs"] == 6
    with pytest.raises(RecipeError, match="min_delta"):
        grnvae.load_recipe(RECIPES / "quickstart.yaml", overrides=["train.min_delta=-1"])


def test_a_loaded_run_predicts_with_the_data_prior_it_was_trained_with(tmp_path, monkeypatch):
    """The data prior (linear fit, its auto ridge, the own change, the composition shift) is saved
    with the weights: loading a run gives it back bitwise, without fitting it again, so a run read
    by a later version of the code predicts unseen regulators as it did when trained. A checkpoint
    saved before the prior was kept loads too, and derives the same prior from its responses."""
    import grnvae.data.features as features

    small = ["data.simulate.n_genes=60", "data.simulate.n_regulators=12", "data.simulate.n_cells=900",
             "data.split.by=perturbation", "train.max_epochs=1", "train.progress_bar=false"]
    run = grnvae.train(RECIPES / "demo.yaml", overrides=small, out=tmp_path / "run")
    trained = run.model.edges
    assert trained.data_prior.numel() == trained.num_edges and trained.chosen_ridge is not None
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert "model.edges.data_prior" in torch.load(ckpt, weights_only=True)["state_dict"]

    def refit(*args, **kwargs):
        raise AssertionError("the data prior was fitted again on load")

    with monkeypatch.context() as m:
        m.setattr(features, "choose_ridge", refit)
        m.setattr(features, "linear_response_map", refit)
        loaded = grnvae.Run.load(tmp_path / "run").model.edges
        assert torch.equal(loaded.prior()[1], trained.prior()[1])
    assert loaded.chosen_ridge == trained.chosen_ridge and loaded.own_change == trained.own_change
    # a checkpoint from before: no stored prior, so it is derived again, the same
    state = torch.load(ckpt, weights_only=True)
    for key in ("model.edges.data_prior", "model.edges.data_prior_fit"):
        del state["state_dict"][key]
    torch.save(state, ckpt)
    older = grnvae.Run.load(tmp_path / "run").model.edges
    assert older.data_prior.numel() == 0
    assert torch.equal(older.prior()[1], trained.prior()[1]) and older.chosen_ridge == trained.chosen_ridge
    # a stored prior of the wrong size (not this graph's) is not used: it is derived again
    state["state_dict"]["model.edges.data_prior"] = torch.zeros(3)
    state["state_dict"]["model.edges.data_prior_fit"] = torch.zeros(2, dtype=torch.float64)
    torch.save(state, ckpt)
    odd = grnvae.Run.load(tmp_path / "run").model.edges
    assert odd.data_prior.numel() == 0 and torch.equal(odd.prior()[1], trained.prior()[1])


def test_the_default_recipe_trains_on_log_normalised_values(tmp_path):
    """The default recipe models library sizes of counts; given log-normalised values (no library
    sizes), it trains with a Normal likelihood and without that model instead of refusing, while
    an explicit Normal likelihood with the library model is refused with the fix named."""
    adata = grnvae.simulate(n_genes=40, n_regulators=8, n_cells=600, n_doubles=1, seed=2)
    x = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X, dtype=np.float64)
    adata.X = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    fast = ["train.max_epochs=1", "train.progress_bar=false"]
    run = grnvae.train("grnvae", overrides=fast, adata=adata, out=tmp_path / "lognorm")
    assert run.model.likelihood == "normal" and not run.model.decoder.models_library
    assert np.isfinite(run.metrics["val"]["elbo"])
    with pytest.raises(GRNError, match="set model.decoder.library=false"):
        grnvae.train("grnvae", overrides=fast + ["model.decoder.likelihood=normal"], adata=adata,
                     out=tmp_path / "explicit")


def test_a_run_that_failed_before_its_first_checkpoint_says_so(tmp_path):
    """Data the model refuses write nothing (the checks come before the run directory is
    touched). A run that stopped before saving any checkpoint (here: a learning rate that makes
    the loss NaN at once, a clear error rather than a distribution's traceback) is not opened:
    one message with its error and how to train it again, not a warning that it will use a
    checkpoint followed by an error that there is none."""
    adata = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=300, n_doubles=0, seed=1)
    x = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X, dtype=np.float32)
    x[3, 4] = np.nan
    bad = adata.copy()
    bad.X = x
    out = tmp_path / "failed"
    with pytest.raises(DataError):
        grnvae.train("grnvae", overrides=["train.max_epochs=1", "train.progress_bar=false"], adata=bad, out=out)
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(RunError, match=r"loss term '\w+' is nan; training stopped. Lower train.lr"):
        grnvae.train("grnvae", overrides=["train.max_epochs=1", "train.progress_bar=false", "train.lr=1e30"],
                     adata=adata, out=out)
    assert not (out / "checkpoints" / "last.ckpt").exists()
    with pytest.raises(RunError, match=r"is failed \(RunError: .*\) and saved no checkpoint.*--overwrite"):
        grnvae.Run.load(out)


def test_edges_into_unmeasured_nodes_are_informed_when_the_decoder_reads_every_effect(tmp_path):
    """An edge of a trained regulator into a node that is not a measured gene is informed when
    the decoder's MLP reads every node's effect (GPO-VAE, the quickstart), and not when effects
    reach genes only through the skip (the default model, one hop): grn.tsv's `informed`, which
    plots use to hide edges, says what the likelihood can see."""
    adata = grnvae.simulate(n_genes=40, n_regulators=6, n_cells=600, n_doubles=0, seed=4)
    regs = sorted({p for p in adata.obs["perturbation"].astype(str) if p != "control"})
    adata = adata[:, [g for g in adata.var_names if g != regs[0]]].copy()  # regs[0] is no measured gene
    fast = ["train.max_epochs=1", "train.progress_bar=false"]
    for recipe, expect in (("quickstart", True), ("grnvae", False)):
        run = grnvae.train(recipe, overrides=fast + ["grn.nodes=perturbed+measured"] * (recipe == "grnvae"),
                           adata=adata, out=tmp_path / recipe)
        grn = run.grn().to_dataframe()
        into = grn[(grn["target"] == regs[0]) & (grn["source"] != regs[0]) & (grn["evidence"] > 0)]
        assert len(into) and bool(into["informed"].all()) is expect, recipe
        assert bool(grn[grn["target"] != regs[0]].query("evidence > 0")["informed"].all())
