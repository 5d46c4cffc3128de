"""Covariates and the CRADLE-style artifact module (QC labels, counterfactual partners, KL)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grnvae
from grnvae.data import PerturbationData
from grnvae.model import GRNVAE
from grnvae.nn.effect import SparseEffects
from grnvae.training import build_spec

from .conftest import FAST, RECIPES, shared_file

ART = ["data.qc.column=low_quality", "model.artifact.enabled=true", "data.covariates=[batch]"]


@pytest.fixture(scope="module")
def adata():
    a = grnvae.simulate(n_genes=50, n_regulators=8, n_cells=1500, n_doubles=1, seed=5)
    rng = np.random.default_rng(0)
    a.obs["low_quality"] = rng.random(a.n_obs) < 0.2
    a.obs["batch"] = rng.choice(["b1", "b2", "b3"], size=a.n_obs)
    return a


def cfg(*overrides):
    return grnvae.load_recipe(RECIPES / "quickstart.yaml", FAST + list(overrides))


def test_artifact_needs_qc_labels():
    with pytest.raises(grnvae.RecipeError, match="data.qc.column"):
        cfg("model.artifact.enabled=true")


def test_counterfactual_partners_same_condition_split_opposite_status(adata):
    d = PerturbationData.from_anndata(adata, cfg(*ART))
    has = d.cf_pair >= 0
    assert has.mean() > 0.9
    i, j = np.nonzero(has)[0], d.cf_pair[has]
    assert np.all(d.cell_condition[i] == d.cell_condition[j])
    assert np.all(d.split[i] == d.split[j])
    assert np.all(d.qc[i] != d.qc[j])
    b = d.batch(np.arange(64))
    assert b["covariates"].shape == (64, 3) and torch.all(b["covariates"].sum(1) == 1)
    assert torch.equal(b["qc"].bool(), torch.from_numpy(d.qc[:64]))


def test_qc_balance_and_counterfactual_kl_maths(adata):
    c = cfg(*ART)
    d = PerturbationData.from_anndata(adata, c)
    model = GRNVAE(build_spec(d, c), c)
    q = torch.from_numpy(d.qc[d.split == 0].astype(np.float32))
    w = model._qc_balance(q)
    assert w.mean().item() == pytest.approx(1.0, rel=1e-5)
    assert w[q > 0].sum().item() == pytest.approx(w[q == 0].sum().item(), rel=1e-5)
    # the counterfactual term is the exact Normal KL between the two encoder posteriors
    b = d.batch(np.arange(200))
    torch.manual_seed(0)
    z_p, _, _ = model._effects(b["cond_dosage"], 2)
    e_qc, _ = model._artifact_embedding(2)
    x_std = model.standardise(b["x"])
    # the model shares projections (sparse over z_p's support) between encoder calls
    got = model._counterfactual_kl(b, model.encoder.project_input(x_std), model.encoder.project_effect(z_p),
                                   b["cond_index"], e_qc, 2)
    z_p = z_p.dense() if isinstance(z_p, SparseEffects) else z_p
    has = b["has_cf"]
    flipped = (1 - b["qc"][has])[None, :, None] * e_qc[:, None, :]
    idx = b["cond_index"][has]
    ln, sn = model.encoder(x_std[has], z_p, idx, 2, flipped, b["covariates"][has])
    lm, sm = model.encoder(model.standardise(b["x_cf"][has]), z_p, idx, 2, flipped, b["covariates_cf"][has])
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(lm, sm), torch.distributions.Normal(ln, sn))
    assert got.item() == pytest.approx(ref.sum(-1).mean().item(), rel=1e-5)


def test_training_with_artifact_module_and_covariates(adata, tmp_path):
    run = grnvae.train(RECIPES / "quickstart.yaml", overrides=FAST + ART, out=tmp_path / "art", adata=adata)
    m = run.metrics["val"]
    assert "counterfactual" in m and np.isfinite(m["counterfactual"]) and m["counterfactual"] >= 0
    loaded = grnvae.Run.load(run.path)
    assert loaded.model.artifact and loaded.model.spec.covariates == {"batch": ["b1", "b2", "b3"]}


def test_papalexi_artifact_run_with_computed_qc(tmp_path):
    path = shared_file("perturbseq", "papalexi2021_thp1_subset.h5ad")
    run = grnvae.train(
        RECIPES / "gpo_vae.yaml",
        overrides=[f"data.path={path}", "data.qc.compute=true", "data.qc.groups=bio_rep",
                   "data.covariates=[bio_rep]", "model.artifact.enabled=true", "train.max_steps=6",
                   "train.max_epochs=1", "train.progress_bar=false", "train.eval_cells=2000",
                   "model.latent_dim=16", "model.encoder.hidden=64", "model.decoder.hidden=64",
                   "model.edges.encoder_hidden=64"],
        out=tmp_path / "pap_art",
    )
    assert run.model.n_qc_fail > 0 and np.isfinite(run.metrics["train"]["counterfactual"])
