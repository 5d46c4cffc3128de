"""Training with a prior GRN: prior edges are used, marked, and start likely."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import grnvae

from .conftest import RECIPES, shared_file

SHORT = ["train.max_epochs=1", "train.max_steps=8", "train.progress_bar=false", "train.eval_cells=2000",
         "model.latent_dim=16", "model.encoder.hidden=64", "model.decoder.hidden=64", "model.edges.encoder_hidden=64"]


@pytest.mark.parametrize("edges", ["prior", "prior+knn"])
def test_papalexi_with_trrust_prior(tmp_path, edges):
    data = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    trrust = shared_file("priors", "trrust_v2_human.tsv")
    run = grnvae.train(RECIPES / "gpo_vae_prior.yaml",
                       overrides=[f"data.path={data}", f"grn.prior={trrust}", f"grn.edges={edges}", *SHORT],
                       out=tmp_path / edges.replace("+", "_"))
    grn = pd.read_csv(run.path / "grn.tsv", sep="\t")
    assert list(grn.columns) == ["source", "target", "probability", "weight", "in_prior"]
    prior = pd.read_csv(trrust, sep="\t")
    nodes = set(run.model.spec.nodes)
    expected = {(s, t) for s, t in zip(prior["TF"], prior["Target"]) if s in nodes and t in nodes and s != t}
    marked = {(s, t) for s, t, p in zip(grn.source, grn.target, grn.in_prior) if p}
    assert marked == expected and len(expected) > 0
    print(f"{edges}: {len(grn)} edges, {len(marked)} from TRRUST among {len(nodes)} nodes")
    if edges == "prior":  # prior edges (plus the self loops) only
        assert set(zip(grn.source, grn.target)) == expected | {(n, n) for n in nodes}
    else:
        assert len(grn) > len(expected) + len(nodes)
    # prior edges start with a higher logit and keep a higher prior probability
    pri = run.model.edges.prior_logits.sigmoid().numpy()
    in_prior = run.model.spec.in_prior.numpy()
    assert np.all(pri[in_prior] > pri[~in_prior].max() - 1e-6)
