"""Recipes: schema validation, composition, overrides, and one-line errors from the CLI."""

from __future__ import annotations

import textwrap

import pytest

from grnvae import load_recipe
from grnvae.cli import main
from grnvae.errors import RecipeError
from grnvae.recipe import list_recipes

from .conftest import RECIPES


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_recipes_load_with_documented_keys():
    names = {p.stem for p in list_recipes()}
    assert {"quickstart", "gpo_vae"} <= names
    cfg = load_recipe(RECIPES / "quickstart.yaml")
    # keys other tools and docs rely on
    for key in ("seed", "data.path", "data.perturbation_key", "data.control", "model.latent_dim",
                "train.max_epochs", "train.batch_size", "train.particles", "train.lr"):
        assert key.split(".")[-1] in (cfg if "." not in key else cfg[key.split(".")[0]])
    assert cfg.data.perturbation_key == "perturbation" and cfg.data.control == "control"
    # gpo_vae carries the upstream defaults
    up = load_recipe("gpo_vae", ["data.path=x.h5ad"])
    assert (up.model.latent_dim, up.train.batch_size, up.train.particles, up.loss.align.hops) == (100, 512, 5, 5)
    assert up.model.edges.mask_prior == pytest.approx(0.3) and up.train.lr == pytest.approx(3e-4)


def test_typo_names_key_and_suggests_fix(tmp_path):
    f = write(tmp_path / "r.yaml", "model:\n  laten: 100\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(f)
    msg = str(err.value)
    assert "model.laten" in msg and "model.latent_dim" in msg and str(f) in msg


def test_wrong_type_and_bad_choice_name_the_key(tmp_path):
    with pytest.raises(RecipeError, match=r"train\.lr"):
        load_recipe(RECIPES / "quickstart.yaml", ["train.lr=fast"])
    with pytest.raises(RecipeError, match=r"data\.pairing.*random"):
        load_recipe(RECIPES / "quickstart.yaml", ["data.pairing=randm"])
    with pytest.raises(RecipeError, match=r"model\.latent_dim"):
        load_recipe(RECIPES / "quickstart.yaml", ["model.latent_dim=0"])
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(RECIPES / "quickstart.yaml", ["train.lr"])


def test_defaults_compose_in_order_and_overrides_come_last(tmp_path):
    write(tmp_path / "base.yaml", "seed: 3\ndata: {simulate: {n_cells: 500}}\ntrain: {max_epochs: 7, batch_size: 32}\n")
    write(tmp_path / "mid.yaml", "defaults: [base]\ntrain: {batch_size: 64}\n")
    child = write(tmp_path / "child.yaml", "defaults: [mid, quickstart]\nmodel: {latent_dim: 12}\n")
    cfg = load_recipe(child, ["train.lr=0.05"])
    # quickstart (later default) overrides mid/base where it sets a key
    assert cfg.train.max_epochs == load_recipe("quickstart").train.max_epochs
    assert cfg.model.latent_dim == 12 and cfg.train.lr == pytest.approx(0.05)
    only_mid = load_recipe(tmp_path / "mid.yaml")
    assert (only_mid.seed, only_mid.train.max_epochs, only_mid.train.batch_size) == (3, 7, 64)
    assert only_mid.data.simulate.n_cells == 500 and only_mid.data.simulate.n_genes == 200


def test_defaults_cycle_and_missing_reference(tmp_path):
    write(tmp_path / "a.yaml", "defaults: [b]\n")
    write(tmp_path / "b.yaml", "defaults: [a]\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "defaults: [no_such_recipe]\n")
    with pytest.raises(RecipeError, match="no_such_recipe.*not found"):
        load_recipe(tmp_path / "c.yaml")


def test_required_data_path(tmp_path):
    with pytest.raises(RecipeError, match=r"data\.path.*required"):
        load_recipe("gpo_vae")


def _one_line_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err  # one clear line, no traceback
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    typo = write(tmp_path / "typo.yaml", "defaults: [quickstart]\nmodel:\n  laten: 100\n")
    err = _one_line_error(capsys, ["train", str(typo), "--out", str(tmp_path / "r1")])
    assert "model.laten" in err and "model.latent_dim" in err

    missing = tmp_path / "nope.h5ad"
    err = _one_line_error(capsys, ["train", "gpo_vae", f"data.path={missing}", "--out", str(tmp_path / "r2")])
    assert "nope.h5ad" in err and "not found" in err


def test_cli_missing_perturbation_column(tmp_path, capsys):
    import grnvae

    adata = grnvae.simulate(n_genes=30, n_regulators=5, n_cells=200, n_doubles=0)
    adata.obs = adata.obs.rename(columns={"perturbation": "guide"})
    path = tmp_path / "noperturbation.h5ad"
    adata.write_h5ad(path)
    err = _one_line_error(capsys, ["train", "gpo_vae", f"data.path={path}", "--out", str(tmp_path / "r3")])
    assert "'perturbation'" in err and "guide" in err and "data.perturbation_key" in err
