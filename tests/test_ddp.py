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
    assert metrics["world_size"] == 2
    ranks = [torch.load(out / "ranks" / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    # the parameters moved away from their initial values, so the equality is not trivial
    assert not torch.allclose(ranks[0]["logits"], torch.zeros_like(ranks[0]["logits"]))
    # and the saved run is the one the ranks trained
    assert torch.allclose(run.model.edges.logits, ranks[0]["logits"])
