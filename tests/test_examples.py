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


def test_custom_layer_example_trains_from_a_recipe(tmp_path, capsys):
    run = load_example("custom_layer").main(["--epochs", "1", "--out", str(tmp_path / "custom")])
    assert type(run.model.effect.layers[0]).__name__ == "GatedEffect"
    assert len(run.model.effect.layers) == 2 and (run.path / "grn.tsv").exists()
    # the run reloads on its own: the recipe's plugin is imported again
    import grnvae

    assert type(grnvae.Run.load(run.path).model.effect.layers[0]).__name__ == "GatedEffect"


def test_unregistered_layer_lists_registered_ones(tmp_path):
    import pytest

    import grnvae
    from grnvae.errors import RegistryError

    from .conftest import FAST, RECIPES

    with pytest.raises(RegistryError) as err:
        grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ["model.effect.layer=gatt"], out=tmp_path / "x")
    msg = str(err.value)
    assert "'gatt'" in msg and "did you mean 'gat'" in msg and "register_layer" in msg
    assert all(name in msg for name in ("gat", "gcn", "gin", "gpo_linear", "graphconv"))
    assert not (tmp_path / "x" / "recipe.yaml").exists()  # refused before any data is read


def test_scverse_example(tmp_path, capsys):
    """The scverse workflow runs end to end on the simulator: outputs in the AnnData (written to
    h5ad), an embedding of the basal states, and regulator activities from the learned GRN that
    drop in each regulator's own knock-down."""
    adata, table = load_example("scverse").main(["--epochs", "40", "--cells", "1500", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "X_grnvae" in adata.obsm and "grnvae_expected" in adata.layers and "grnvae_grn" in adata.uns
    assert (tmp_path / "adata_with_grnvae.h5ad").exists()
    assert (tmp_path / "umap_basal.png").exists() or (tmp_path / "pca_basal.png").exists()
    assert "regulator activity" in out and len(table) >= 2
    assert (table["activity_in_its_knockdown"] < table["activity_in_controls"]).mean() >= 0.5


def test_simulator_example_checks_the_learned_grn_against_the_truth(tmp_path):
    """The simulator page: edges labelled against the truth, the reliability table and
    explanations of a seen single, an unseen single and a held-out double (with its interaction)."""
    path = load_example("simulator").main(["--epochs", "3", "--cells", "2000", "--out", str(tmp_path / "run"),
                                           "--figures", str(tmp_path / "simulator")])
    text = path.read_text()
    assert "| source | target | probability | log_odds |" in text and "| truth |" in text
    assert "fraction direct" in text and "perturbation_de" in text
    assert text.count("grnvae explain RUN --perturbation") == 3 and "interaction" in text
    assert len(list((tmp_path / "simulator").glob("explain_*.png"))) == 3
