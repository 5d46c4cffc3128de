"""Two CPU processes (Lightning DDP, gloo) train one model; the GRN stays identical across ranks."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

import grnvae

from .conftest import FAST, RECIPES


def test_two_process_ddp_keeps_grn_parameters_identical(tmp_path):
    out = tmp_path / "ddp"
    # a separate process, as a user would run it (process spawning and pytest's captured
    # file descriptors do not mix)
    cmd = [sys.executable, "-m", "grnvae.cli", "train", str(RECIPES / "quickstart.yaml"), *FAST,
           "train.devices=2", "train.accelerator=cpu", "train.max_epochs=2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = grnvae.Run.load(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"] == 2  # counted by the spawned processes
    ranks = [torch.load(out / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    # the parameters moved away from their initial values, so the equality is not trivial
    assert not torch.allclose(ranks[0]["logits"], torch.zeros_like(ranks[0]["logits"]))
    # and the saved run is the one the ranks trained
    assert torch.allclose(run.model.edges.logits, ranks[0]["logits"])


def test_two_process_ddp_trains_the_default_model_on_fewer_batches_than_ranks(tmp_path):
    """The default model (grnvae recipe: parameters a step leaves without gradient, such as its
    feature networks) trains on two processes, here with one training batch for two ranks (the
    second repeats it rather than waiting in the first one's collectives), and both ranks end
    with the same edge posterior, its data prior included."""
    out = tmp_path / "ddp_default"
    small = ["data.simulate.n_genes=60", "data.simulate.n_regulators=12", "data.simulate.n_cells=900",
             "data.split.by=perturbation", "train.batch_size=1024", "train.progress_bar=false"]
    cmd = [sys.executable, "-m", "grnvae.cli", "train", str(RECIPES / "demo.yaml"), *small,
           "train.devices=2", "train.accelerator=cpu", "train.max_epochs=2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["cells"]["train"] <= 1024  # one batch
    ranks = [torch.load(out / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["data_prior"].numel() == ranks[0]["q_loc"].numel()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert torch.equal(grnvae.Run.load(out).model.edges.q_loc, ranks[0]["q_loc"])
