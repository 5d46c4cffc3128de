"""The examples run as documented."""

from __future__ import annotations

import importlib.util

from .conftest import ROOT


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_api_example(tmp_path, capsys):
    run = load_example("python_api").main(["--epochs", "2", "--cells", "800", "--out", str(tmp_path / "ex")])
    out = capsys.readouterr().out
    assert "true edges among the top 20" in out and "edge_index" in out
    assert (run.path / "grn.tsv").exists()
