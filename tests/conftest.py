"""Shared fixtures. Real data lives in ../shared/data (beside the project); tests that need it
skip with a clear reason when it is absent (a user's clone has no ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GRNVAE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RECIPES = ROOT / "recipes"


def shared_file(*parts: str) -> Path:
    """Path to a file under ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (../shared/data is not beside this clone)")
    return path


#: a small, fast configuration of the quickstart recipe for tests
FAST = [
    "data.simulate.n_genes=60", "data.simulate.n_regulators=12", "data.simulate.n_cells=900",
    "data.simulate.n_doubles=2", "model.latent_dim=8", "model.edges.encoder_hidden=32",
    "model.edges.encoder_layers=2", "model.encoder.hidden=32", "model.decoder.hidden=32",
    "train.max_epochs=2", "train.batch_size=128", "train.particles=2", "train.progress_bar=false",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One short training run on the simulator, shared by the tests that inspect a run."""
    import grnvae

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST, out=out)
