"""Training on the real Papalexi 2021 Perturb-seq subset (skipped when ../shared is absent)."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest

from grnvae.cli import main

from .conftest import RECIPES, shared_file

pytestmark = pytest.mark.shared_data


def test_gpo_vae_recipe_trains_on_papalexi(tmp_path, capsys):
    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    out = tmp_path / "papalexi"
    code = main([
        "train", str(RECIPES / "gpo_vae.yaml"), f"data.path={path}",
        "train.max_epochs=2", "train.progress_bar=false", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    adata = ad.read_h5ad(path, backed="r")
    labels = adata.obs["perturbation"].astype(str)
    targets = sorted(set(labels) - {"control"})
    grn = pd.read_csv(out / "grn.tsv", sep="\t")
    # nodes are the real targeted genes, complete graph over them
    assert sorted(set(grn["source"])) == targets and sorted(set(grn["target"])) == targets
    assert len(grn) == len(targets) ** 2
    assert {"IFNGR2", "JAK2", "STAT1"} <= set(grn["source"])
    assert grn["probability"].between(0, 1).all()
