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


def test_default_model_on_papalexi_marks_what_the_data_cannot_inform_and_explains(tmp_path):
    """The grnvae recipe on the Papalexi subset with six genes unseen: no edge into a node that is
    not a measured gene (nothing in the data can support it) is reported as informed, and the
    explanation of a seen and of an unseen perturbation adds up to the predicted change."""
    import numpy as np

    import grnvae
    from grnvae.explain import explain

    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    unseen = ["IFNGR2", "STAT1", "IRF1", "SMAD4", "CUL3", "MYC"]
    run = grnvae.train("grnvae", overrides=[f"data.path={path}", "data.covariates=[bio_rep]",
                                            "data.split.by=perturbation", f"data.split.test=[{','.join(unseen)}]",
                                            "train.max_epochs=3", "train.progress_bar=false"],
                       out=tmp_path / "papalexi")
    grn = pd.read_csv(run.path / "grn.tsv", sep="\t")
    measured = set(map(str, ad.read_h5ad(path, backed="r").var_names))
    into_unmeasured = ~grn["target"].isin(measured)
    assert into_unmeasured.any() and not grn.loc[into_unmeasured, "informed"].any()
    assert not grn.loc[grn["source"].isin(unseen), "informed"].any()  # never perturbed in training
    assert grn["probability"].between(0, 1).all() and (grn["weight_low"] <= grn["weight_high"]).all()
    # what other edges explain through paths is part of an informed edge's weight, never of an edge
    # whose regulator was not perturbed (its edges stay the prior's)
    assert np.isfinite(grn["explained"]).all() and (grn.loc[grn["source"].isin(unseen), "explained"] == 0).all()
    for perturbation in ("JAK2", "STAT1"):
        table = explain(run, perturbation, top=3, paths=4)
        for gene, part in table.groupby("gene"):
            walks = part[part["kind"].isin(["walk", "rest", "composition"])]
            assert walks["log_rate"].sum() == pytest.approx(part["log_rate_total"].iloc[0], abs=1e-5)
            assert walks["lognorm"].sum() == pytest.approx(part["predicted"].iloc[0], abs=1e-5)
            assert np.isfinite(walks["lognorm"]).all()
