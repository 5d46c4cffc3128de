"""The default model for real data (recipe ``grnvae``): the prediction statistic, the identity
skip from node effects to genes, the edge prior amortised over gene features, and the data
pieces it relies on (measured nodes, regulator edges, dosage sign)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import grnvae
from grnvae.data import PerturbationData
from grnvae.data.features import node_features
from grnvae.nn.edges import FeatureEdgePosterior
from grnvae.nn.effect import SparseEffects, dosage_support
from grnvae.nn.likelihoods import SkipEffects, expected_log1p_nb, nb_log_prob
from grnvae.training import build_spec
from grnvae.model import GRNVAE

from .conftest import RECIPES


def _nb_samples(rng, mu, theta, n):
    return rng.poisson(rng.gamma(theta, mu / theta, size=(n,) + np.shape(mu)))


def test_expected_log1p_nb_matches_monte_carlo():
    rng = np.random.default_rng(0)
    # low means (exact sum) and high means (tail by its conditional moments), three dispersions;
    # the expansion of the tail is least accurate for very overdispersed, highly expressed genes
    mu = np.array([0.02, 0.3, 1.5, 6.0, 40.0, 150.0, 400.0])
    for theta, tol in ((0.5, 0.08), (2.0, 0.025), (8.0, 0.01)):
        scale = 1e4 / 186.0
        got = expected_log1p_nb(torch.tensor(mu, dtype=torch.float64), torch.full((7,), np.log(theta), dtype=torch.float64),
                                torch.tensor(scale, dtype=torch.float64)).numpy()
        mc = np.log1p(scale * _nb_samples(rng, mu, theta, 400_000)).mean(0)
        assert np.allclose(got[:5], mc[:5], atol=0.01), (theta, got, mc)  # the exact sum
        assert np.allclose(got, mc, atol=tol), (theta, got, mc)
        # the log of the mean is not the mean of the log: the gap is large at low counts
        assert np.abs(np.log1p(scale * mu) - mc)[:3].min() > 0.1


@pytest.fixture(scope="module")
def sim():
    return grnvae.simulate(n_genes=40, n_regulators=8, n_cells=900, n_doubles=3, seed=2, basal_grn=0.5)


def _cfg(*overrides):
    return grnvae.load_recipe(RECIPES / "grnvae.yaml", ["data.path=unused.h5ad", "model.latent_dim=4",
                                                        "model.encoder.hidden=16", "model.decoder.hidden=16",
                                                        *overrides])


def _model(sim, *overrides):
    cfg = _cfg(*overrides)
    data = PerturbationData.from_anndata(sim, cfg)
    torch.manual_seed(0)
    return data, GRNVAE(build_spec(data, cfg), cfg)


def test_nb_log_prob_and_its_gradients_equal_the_textbook_negative_binomial():
    # counts in the per-gene tables, beyond them, and fractional ones (which skip the tables)
    g = torch.Generator().manual_seed(0)
    P, N, G = 3, 6, 9
    x = torch.poisson(torch.rand(N, G, generator=g, dtype=torch.float64) * 8)
    x[0, 0], x[1, 2], x[2, 3] = 700.0, 2.5, 65.0
    out = torch.randn(P, N, G, generator=g, dtype=torch.float64, requires_grad=True)
    library = torch.rand(N, generator=g, dtype=torch.float64) * 100 + 5
    log_theta = torch.randn(G, generator=g, dtype=torch.float64, requires_grad=True)

    def textbook(out, log_theta):
        mu = library[:, None] * torch.softmax(out, -1)
        nb = torch.distributions.NegativeBinomial(total_count=log_theta.exp(), logits=mu.log() - log_theta,
                                                validate_args=False)  # 2.5: the formula at a fractional count
        return nb.log_prob(x).sum(-1)

    ours, ref = nb_log_prob(x, out, library.log(), log_theta), textbook(out, log_theta)
    assert ours.shape == (P, N)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-9)
    w = torch.randn(P, N, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((ours * w).sum(), [out, log_theta]),
                    torch.autograd.grad((ref * w).sum(), [out, log_theta])):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert torch.autograd.gradcheck(lambda o, t: nb_log_prob(x, o, library.log(), t), (out, log_theta))


@pytest.mark.parametrize("shape", [(1200, 600), (600, 1200)])
def test_pca_scores_of_a_large_matrix_equal_the_svd_up_to_sign(shape):
    from grnvae.utils import pca_scores

    rng = np.random.default_rng(0)
    Y = rng.standard_normal(shape) * np.linspace(3.0, 0.1, shape[1])  # distinct spectrum
    ours = pca_scores(Y, 10)
    U, S, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    ref = U[:, :10] * S[:10]
    signs = np.sign((ours * ref).sum(0))
    np.testing.assert_allclose(ours, ref * signs, atol=1e-8)
    assert (ours[np.abs(ours).argmax(0), np.arange(10)] > 0).all()  # the sign convention


def test_dosage_support_is_read_once_per_tensor_and_again_after_a_change():
    d = torch.zeros(3, 5)
    d[0, 1], d[2, 4] = 1.0, -1.0
    rows, cols = dosage_support(d)
    assert rows.tolist() == [0, 2] and cols.tolist() == [1, 4]
    assert dosage_support(d)[0] is rows  # cached for the same tensor
    d[1, 0] = 1.0  # an in-place change is seen
    assert dosage_support(d)[0].tolist() == [0, 1, 2]


def test_a_batch_carries_its_dosage_pattern_and_the_model_uses_it(sim):
    data, model = _model(sim)
    cells = np.arange(0, sim.n_obs, 7)
    batch = data.batch(cells)
    rows, cols = torch.nonzero(batch["cond_dosage"], as_tuple=True)
    assert torch.equal(batch["cond_support"], torch.stack([rows, cols]))
    assert any(len(n) == 2 for n in data.condition_nodes)  # doubles: two entries in a row
    losses = []
    for keep in (True, False):  # the same loss whether the pattern comes with the batch or from a scan
        b = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items() if keep or k != "cond_support"}
        torch.manual_seed(3)
        losses.append(float(model(b, particles=2)["loss"].detach()))
        assert dosage_support(b["cond_dosage"])[1].tolist() == cols.tolist()
    assert losses[0] == losses[1]
    # a stated pattern is what the model reads: a wrong one is used as given
    d = batch["cond_dosage"].clone()
    assert dosage_support(d, torch.tensor([[0], [1]]))[1].tolist() == [1]


def test_measured_nodes_and_regulator_edges(sim):
    data, model = _model(sim)
    regs = {n for nodes in data.condition_nodes for n in nodes}
    assert set(data.nodes) == set(data.genes)  # every measured gene is a node (targets are measured here)
    assert data.nodes[:len(regs)] == sorted(data.nodes[n] for n in regs)  # perturbed targets first
    src, dst = model.edge_index
    for r in regs:  # a regulator reaches every node (itself through its self loop)
        assert set(dst[src == r].tolist()) == set(range(len(data.nodes)))
    assert set(src.tolist()) - regs == set(src[src == dst].tolist()) - regs  # others: self loops only
    hvg = PerturbationData.from_anndata(sim, _cfg("grn.nodes=perturbed+hvg", "grn.n_hvg=5"))
    assert len(hvg.nodes) <= len(regs) + 5 and set(data.nodes[:len(regs)]) <= set(hvg.nodes)


def test_node_effects_land_on_their_own_genes(sim):
    data, model = _model(sim)
    dosage = data.dosage(range(len(data.conditions)))
    plan = model.plan_effects(dosage)
    weight, _, _ = model.edges.sample(2)
    sparse = model.effect.compute(dosage, model.edge_index, weight, plan)
    dense = model.effect.forward(dosage, model.edge_index, weight)
    if not isinstance(sparse, SparseEffects):  # dense at this size: the same values on the plan's support
        sparse = SparseEffects(sparse[:, plan.support[0], plan.support[1]], plan.support, *dosage.shape)
    skip = model.gene_effects(sparse)
    assert isinstance(skip, SkipEffects)
    g_sparse = skip.dense()
    g_dense = model.gene_effects(dense)
    assert torch.allclose(g_sparse, g_dense, atol=1e-6)
    v = int(model.measured_nodes[3])
    assert torch.allclose(g_dense[:, :, data.node_gene[v]], dense[:, :, v])
    # the skip is the decoder's log-rate offset: a large effect on one gene moves that gene's mean
    z_b = torch.zeros(1, 2, model.latent_dim)
    z = torch.zeros(1, 2, model.num_nodes)
    z[0, 1, v] = 1.0
    mean = model.decoder.mean(z_b, model.decoder.project_effect(z), torch.tensor([0, 1]), torch.tensor([1e3, 1e3]),
                              gene_effect=model.gene_effects(z))
    ratio = (mean[0, 1] / mean[0, 0]).log()
    g = data.node_gene[v]
    others = torch.ones(len(data.genes), dtype=torch.bool)
    others[g] = False
    assert ratio[g] - ratio[others].mean() > 0.9  # log-fold change of ~1 on its own gene, relative to the rest


@pytest.mark.parametrize("ph,pv", [(2, 2), (1, 3), (3, 1)])
def test_skip_normaliser_is_the_two_logsumexps_with_their_gradients(ph, pv):
    """The fused normaliser of sparse skip entries equals logsumexp(h + skip) and its difference
    to logsumexp(h), values and gradients (float64 gradcheck, particles broadcast either way),
    and gives the composed ops' gradients when only log r is used."""
    from grnvae.nn.likelihoods import _SkipNormaliser

    g = torch.Generator().manual_seed(ph * 10 + pv)
    N, G = 4, 7
    pos = torch.tensor([0, 3, 6, 9, 15, 22, 27])  # cells 0, 0, 0, 1, 2, 3, 3
    h = torch.randn(ph, N, G, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(pv, pos.numel(), dtype=torch.float64, generator=g, requires_grad=True)
    P = max(ph, pv)
    dense = h.expand(P, -1, -1).reshape(P, -1).index_add(1, pos, v.expand(P, -1)).view(P, N, G)
    lse, log_r = _SkipNormaliser.apply(h, pos, v)
    assert torch.allclose(lse, torch.logsumexp(dense, -1))
    assert torch.allclose(log_r, torch.logsumexp(dense, -1) - torch.logsumexp(h, -1))
    assert torch.autograd.gradcheck(lambda a, b: _SkipNormaliser.apply(a, pos, b), (h, v))
    assert torch.autograd.gradcheck(lambda a, b: _SkipNormaliser.apply(a, pos, b)[1], (h, v))
    # a non-contiguous h (a permuted view) gives the same gradient
    hp = h.detach().permute(2, 1, 0).contiguous().permute(2, 1, 0).requires_grad_()
    hc = h.detach().clone().requires_grad_()
    for t in (hp, hc):
        _SkipNormaliser.apply(t, pos, v.detach())[0].sum().backward()
    assert not hp.is_contiguous() and torch.allclose(hp.grad, hc.grad)


def test_sparse_skip_gives_the_dense_skip_likelihood_predictive_and_gradients(sim):
    # the decoder takes a batch's skip effects as their few non-zero entries; the likelihood with the
    # library model (whose normaliser it then computes from those entries) and the predictive must be
    # those of the dense [P, C, G] skip, with the same gradients
    data, model = _model(sim)
    assert model.decoder.models_library
    C, G, P, N = 4, len(data.genes), 2, 12
    torch.manual_seed(1)
    cond = torch.tensor([0, 0, 1, 1, 1, 3])  # condition 2 has no entry (a control)
    gene = torch.tensor([3, 7, 0, 7, 20, 5])
    values = (0.8 * torch.randn(P, cond.numel())).requires_grad_()
    index = torch.randint(0, C, (N,))
    x = torch.as_tensor(np.asarray(sim.X[:N].todense() if hasattr(sim.X, "todense") else sim.X[:N]), dtype=torch.float32)
    library = x.sum(1)
    z_b = torch.randn(P, N, model.latent_dim)
    results = []
    for sparse in (True, False):
        skip = SkipEffects(values, cond, gene, C, G)
        model.zero_grad()
        values.grad = None
        log_p = model.decoder.log_prob(x, z_b, None, index, library, gene_effect=skip if sparse else skip.dense())
        (log_p * torch.linspace(0.5, 1.5, N)).sum().backward()
        mean, lib = model.decoder.predictive(z_b, None, index, library, gene_effect=skip if sparse else skip.dense())
        results.append((log_p.detach(), values.grad.clone(), model.decoder.head.weight.grad.clone(), mean, lib))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4), (a - b).abs().max()
    assert results[0][1].abs().sum() > 0


def test_feature_prior_carries_unseen_regulators():
    # regulators 0 and 1 have identical features, so identical prior edges; 1 and 4 have no training
    # cell, so their posterior is their prior (KL exactly 0); 4 is not a measured gene (zero
    # features) and gets each target's mean seen weight, the mean_effect baseline's analogue
    feats = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.0],
                          [0.3, 0.1, 1.0]])
    ei = torch.tensor([[0, 0, 1, 1, 4, 4, 5, 5], [2, 3, 2, 3, 2, 3, 2, 3]])
    seen = torch.tensor([True, False, False, False, False, True])
    post = FeatureEdgePosterior(ei, feats, seen=seen, weight_prior_scale=0.4, mask=False, learn_scale=True)
    for p in list(post.source_net.parameters()) + list(post.target_net.parameters()):
        torch.nn.init.normal_(p)
    with torch.no_grad():
        post.q_loc.copy_(torch.tensor([1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.5]))
        post.q_log_scale.fill_(np.log(0.4 - 1e-4))
    a, b = post.prior()
    assert torch.allclose(b[:2], b[2:4]) and torch.allclose(a[:2], a[2:4])
    assert torch.allclose(b[4:6], torch.tensor([2.0, -0.75]))  # means over regulators 0 and 5 (no self loops here)
    _, kl, _ = post.sample(3)
    assert torch.all(kl[2:6] == 0) and torch.all(kl[[0, 1, 6, 7]] > 0)
    assert torch.allclose(post.mean_weight()[2:6], b[2:6].detach())  # unseen: the prior's mean
    assert torch.allclose(post.mean_weight()[[0, 1, 6, 7]], post.q_loc.detach()[[0, 1, 6, 7]])
    # the KL fits the prior to the seen posteriors: its gradient reaches the feature networks
    kl.sum().backward()
    assert post.source_net[2].weight.grad.abs().sum() > 0 and post.log_prior_scale.grad[2:4].abs().sum() > 0


def test_linear_prior_term_is_the_linear_baseline_on_edge_weights():
    """When the seen weights are exactly bilinear in the features, the closed-form term (ridge 0)
    recovers the map, so an unseen regulator with features gets f_i^T W f_j and one without
    features the target's mean; the learned part is silenced to isolate the term."""
    rng = np.random.default_rng(0)
    V, K = 12, 3
    feats = torch.tensor(rng.normal(size=(V, K)), dtype=torch.float32)
    feats[:6] -= feats[:6].mean(0)  # the seen regulators' features centred, so the map is exact
    feats[11] = 0.0  # an unmeasured regulator
    regs = [0, 1, 2, 3, 4, 5, 10, 11]  # 0-5 seen, 10 and 11 unseen
    ei = torch.tensor([[i, j] for i in regs for j in range(6, 10)]).t()
    seen = torch.zeros(V, dtype=torch.bool)
    seen[:6] = True
    W0 = torch.tensor(rng.normal(size=(K, K)), dtype=torch.float32)
    post = FeatureEdgePosterior(ei, feats, seen=seen, mask=False, linear_ridge=0.0)
    with torch.no_grad():
        for net in (post.source_net, post.target_net):
            net[2].weight.zero_()
            net[2].bias.zero_() if net[2].bias is not None else None
        target_mean = torch.tensor([0.5, -1.0, 0.0, 2.0])
        src, tgt = ei
        exact = (feats[tgt] @ W0 * feats[src]).sum(-1)
        # seen weights: a per-target mean plus a bilinear part (zero mean over the seen regulators)
        seen_e = seen[src]
        part = exact
        post.q_loc.copy_(target_mean[tgt - 6] + part)
    b = post.prior()[1]
    fit = b - target_mean[tgt - 6]
    assert torch.allclose(fit[seen_e], part[seen_e], atol=1e-4)
    unseen_measured = src == 10
    assert torch.allclose(fit[unseen_measured], exact[unseen_measured], atol=1e-4)
    assert torch.allclose(fit[src == 11], torch.zeros(4), atol=1e-6)


def test_node_features_come_from_training_cells(sim):
    cfg = _cfg()
    data = PerturbationData.from_anndata(sim, cfg)
    F = node_features(data)
    assert F.shape[0] == len(data.nodes) and np.isfinite(F).all()
    assert np.all(F[data.node_gene >= 0, -1] == 1.0)
    # changing test cells leaves the features unchanged
    other = sim.copy()
    test = np.nonzero(data.split == 2)[0]
    X = other.X.tolil()
    X[test] = 0
    other.X = X.tocsr()
    other.X.eliminate_zeros()
    data2 = PerturbationData.from_anndata(other, cfg)
    assert np.array_equal(data2.split, data.split)
    assert np.allclose(node_features(data2), F)


def test_prediction_is_the_expected_log_normalised_value(sim):
    """With a decoder whose means are known (no dependence on the basal state or the effects),
    predict equals a Monte-Carlo average of log1p(x / library * 1e4) over control cells."""
    data, model = _model(sim)
    torch.manual_seed(1)
    logits = torch.randn(len(data.genes)) * 1.5
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.copy_(logits)
        model.decoder.log_theta.fill_(np.log(3.0))
    ctrl = np.nonzero(data.pair == -1)[0][:60]
    batch = data.batch(ctrl)
    pred = model.predict(torch.zeros(1, len(data.nodes)), batch["x"], batch["library"], particles=2)[0].numpy()
    rng = np.random.default_rng(0)
    lib = batch["library"].numpy().astype(np.float64)
    mu = lib[:, None] * torch.softmax(logits.double(), 0).numpy()[None]
    mc = np.log1p(_nb_samples(rng, mu, 3.0, 4000) / lib[None, :, None] * 1e4).mean((0, 1))
    assert (pred >= 0).all()
    assert np.allclose(pred, mc, atol=0.01)
    naive = np.log1p(mu / lib[:, None] * 1e4).mean(0)  # the log of the mean: biased upwards
    assert (naive - mc).max() > 0.1


def test_activation_flips_the_dosage(sim):
    act = grnvae.simulate(n_genes=40, n_regulators=8, n_cells=900, seed=2, activation=True)
    data = PerturbationData.from_anndata(act, _cfg("data.modality=activation"))
    c = next(i for i, n in enumerate(data.condition_nodes) if n)
    assert data.dosage([c])[0, data.condition_nodes[c][0]] == -1.0
    with pytest.raises(grnvae.errors.RecipeError, match="data.modality"):
        _cfg("data.modality=activate")


def test_grnvae_recipe_trains_and_predicts(sim, tmp_path):
    run = grnvae.train(RECIPES / "grnvae.yaml", overrides=["data.path=null", "data.simulate.n_genes=40",
                                                           "data.simulate.n_regulators=8", "data.simulate.n_cells=900",
                                                           "train.max_epochs=3", "train.progress_bar=false",
                                                           "model.latent_dim=4"],
                       out=tmp_path / "run")
    assert run.metrics["epochs"] >= 1
    from grnvae.evaluation.evaluate import predict_perturbations

    pred = predict_perturbations(run.path, ["G0001", "G0001+G0002"])
    assert (pred.X >= 0).all() and np.isfinite(pred.layers["delta"]).all()


def test_skip_only_effects_need_measured_nodes(sim):
    # targets that are not measured genes and a decoder that reads effects only through the skip:
    # the perturbations could reach no gene, which must be an error, not a model predicting nothing
    a = sim[:, 8:].copy()  # drop the regulators' own genes
    cfg = _cfg("grn.nodes=perturbed")
    data = PerturbationData.from_anndata(a, cfg)
    with pytest.raises(grnvae.errors.GRNError, match="mlp_effects"):
        GRNVAE(build_spec(data, cfg), cfg)


def test_penetrance_components_mix_every_subset_of_targets():
    from grnvae.nn.penetrance import Penetrance

    seen = torch.tensor([True, True, True, False, True])
    pen = Penetrance(seen, prior=0.8)
    with torch.no_grad():
        pen.logits[0] = 0.0  # rho 0.5
    dosage = torch.tensor([[0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [1, 1, 1, 1, 1.0]])
    comps = pen.components(dosage)
    rho = pen.probability()
    # an unseen node takes the seen nodes' mean logit
    assert torch.isclose(rho[3], torch.sigmoid(pen.logits[seen].mean()))
    for c in range(4):
        rows = comps.slot[c][comps.slot[c] >= 0]
        assert torch.isclose(comps.log_weight[rows].exp().sum(), torch.tensor(1.0))  # a distribution
        # every component is a subset of the condition's targets; the full row is the condition
        assert ((comps.dosage[rows] != 0) <= (dosage[c] != 0)).all()
        assert torch.equal(comps.dosage[comps.full[c]], dosage[c])
    assert len(comps.slot[2][comps.slot[2] >= 0]) == 4  # a double: none, A, B, both
    only_b = next(int(r) for r in comps.slot[2] if r >= 0 and comps.dosage[r, 3] != 0 and comps.dosage[r, 1] == 0)
    assert torch.isclose(comps.log_weight[only_b].exp(), (1 - rho[1]) * rho[3])
    # more targets than are enumerated: one component, every target on
    assert (comps.slot[3] >= 0).sum() == 1
    # population weights: a node that took effect has dosage 1 / rho, so the mixture's mean
    # dosage (what a linear hop sees on average) is the condition's own
    pen.population = True
    comps = pen.components(dosage)
    for c in range(3):
        rows = comps.slot[c][comps.slot[c] >= 0]
        mean_dose = (comps.log_weight[rows].exp()[:, None] * comps.dosage[rows]).sum(0)
        assert torch.allclose(mean_dose, dosage[c], atol=1e-6)
    assert torch.isclose(comps.dosage[comps.full[1], 0], 1 / rho[0])
    assert torch.equal(comps.dosage[comps.slot[3][0]], dosage[3])  # not split: dosage unchanged


def test_penetrance_settings_are_checked():
    with pytest.raises(grnvae.errors.RecipeError, match="model.penetrance.prior"):
        _cfg("model.penetrance.enabled=true", "model.penetrance.prior=1.5")
    with pytest.raises(grnvae.errors.RecipeError, match="spread"):
        _cfg("model.penetrance.enabled=true", "model.penetrance.spread=0")


def test_penetrance_learns_escapers(sim, tmp_path):
    """A perturbation whose guide-carrying cells are half escapers (cells that look like controls)
    gets a penetrance near one half, clearly below the typical one of the others (weak
    perturbations leave theirs poorly determined, so the comparison is with the median)."""
    a = sim.copy()
    obs = a.obs["perturbation"].astype(str).to_numpy()
    target = "G0001"
    ctrl = np.nonzero(obs == "control")[0]
    n_escape = int((obs == target).sum())
    obs[ctrl[:n_escape]] = target  # control cells relabelled: they carry the guide, no effect
    a.obs["perturbation"] = obs
    # on-cell weights: with population weights (the recipe's) the prior holds the average effect,
    # not the effect where it took hold, and every penetrance sits lower and less determined
    cfg = _cfg("model.penetrance.enabled=true", "model.penetrance.population=false", "train.max_epochs=30", "train.lr=1e-2", "train.batch_size=64",
               "train.progress_bar=false", "train.patience=40")
    run = grnvae.train(cfg, adata=a, out=tmp_path / "run")
    rho = run.model.penetrance.probability().detach()
    nodes = run.model.spec.nodes
    others = [rho[nodes.index(g)].item() for g in nodes[:8] if g != target and run.model.node_counts[nodes.index(g)] > 0]
    got = rho[nodes.index(target)].item()
    assert abs(got - 0.5) < 0.15 and got < np.median(others) - 0.15, (got, others)


def test_library_model_pins_the_effect_constant(sim):
    """Under the softmax head a constant added to every skip effect changes nothing unless the
    library is modelled; with the library model it changes the likelihood, and the predicted
    library scales by sum_g softmax(h)_g exp(e_g)."""
    for library in (False, True):
        data, model = _model(sim, f"model.decoder.library={str(library).lower()}")
        batch = data.batch(np.arange(64))
        dec = model.decoder
        z_b = torch.randn(1, 64, 4)
        effect = torch.randn(1, 1, len(data.genes)) * 0.3
        index = torch.zeros(64, dtype=torch.long)
        lp = [dec.log_prob(batch["x"], z_b, None, index, batch["library"], gene_effect=effect + k).sum()
              for k in (0.0, 0.5)]
        assert torch.isclose(lp[0], lp[1]) != library
        mean, lib = dec.predictive(z_b, None, index, batch["library"], gene_effect=effect)
        h = dec.log_rates(z_b, None, index)[0]
        r = (torch.softmax(h, -1) * effect[:, index].exp()).sum(-1)
        assert torch.allclose(lib, batch["library"] * (r if library else 1.0), rtol=1e-5)
        assert torch.allclose(mean.sum(-1), lib, rtol=1e-4)


def test_invariance_penalty_compares_each_condition_to_controls(sim):
    data, model = _model(sim, "loss.invariance=2.0")
    dosage = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    index = torch.tensor([0, 0, 1, 1, 2, 0])
    loc = torch.zeros(1, 6, 3)
    assert model.invariance(loc, dosage, index) == 0
    loc[0, 2:4] = torch.tensor([1.0, 0.0, 0.0])  # condition 1 shifted by 1 in one coordinate
    # 2 * (2 cells / 6) * 1^2
    assert torch.isclose(model.invariance(loc, dosage, index), torch.tensor(2.0 * 2 / 6))
    assert model.invariance(loc, dosage, torch.tensor([1, 1, 2, 2, 2, 1])) == 0  # no control in the batch


def test_weights_undo_the_log_normalised_scale_at_low_depth():
    """At a few counts per cell a log-rate change w moves the mean log-normalised value by much
    less than w (mostly through the share of zeros); the data prior's map, estimated from the
    controls, turns the observed change back into w, for knock-down and activation, Poisson and
    overdispersed genes."""
    import anndata as ad

    from grnvae.data.features import response_weights, to_weights

    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(6)]
    level = np.array([0.02, 0.05, 0.3, 1.0, 3.0, 20.0])  # mean counts per cell at library 200
    shift = {"G0": np.array([0.0, -1.0, 1.0, -1.5, 0.7, -0.5]),
             "G1": np.array([0.0, 0.0, -2.0, 1.2, -0.4, 0.3])}
    labels = ["control"] * 6000 + ["G0"] * 6000 + ["G1"] * 6000
    lib_scale = rng.uniform(0.5, 1.5, len(labels))
    gamma = rng.gamma(2.0, 0.5, (len(labels), 6))  # overdispersion (theta = 2)
    rate = level * lib_scale[:, None] * gamma
    for i, p in enumerate(labels):
        if p != "control":
            rate[i] *= np.exp(shift[p])
    counts = rng.poisson(rate).astype(np.float32)
    counts = np.hstack([counts, rng.poisson(80.0, (len(labels), 1))]).astype(np.float32)  # library ballast
    adata = ad.AnnData(counts, obs={"perturbation": labels}, var={"gene": genes + ["B"]})
    adata.var_names = genes + ["B"]
    cfg = _cfg("model.edges.prior_mean=data", "data.split.fractions=[1.0,0.0,0.0]")
    data = PerturbationData.from_anndata(adata, cfg)
    r = response_weights(data, max_cells=6000)
    cols = np.array([list(data.genes).index(g) for g in genes])
    for node, delta in zip(r["nodes"], r["delta"]):
        name = data.nodes[node]
        w = to_weights(delta[cols], cols, r["table"], r["grid"])
        moved = shift[name] != 0
        # the raw change is far from w (compressed or stretched); the weight is w within sampling error
        assert np.all(np.abs(delta[cols] - shift[name])[moved & (level < 1)] > 0.3), name
        assert np.allclose(w[moved & (level >= 0.05)], shift[name][moved & (level >= 0.05)], atol=0.25), (name, w)


def test_data_prior_is_the_seen_regulators_fold_changes(sim):
    """model.edges.prior_mean=data: the seen regulators' mean log-normalised changes, turned into
    weights through the expected-lognorm map, track the simulator's true log-fold changes; each
    target's prior mean is the weight of their average change (what an unseen regulator without
    features gets: the mean_effect baseline through the likelihood), and the linear term makes
    every edge of a measured regulator, self-loops included, the weight of the linear baseline's
    prediction."""
    from grnvae.data.features import response_weights, to_weights

    data, model = _model(sim, "model.edges.prior_mean=data", "model.penetrance.population=true",
                         "model.edges.linear_ridge=1.0")
    truth = sim.uns["grnvae_simulation"]["true_lfc"]
    values, conds = np.asarray(truth["values"]), list(truth["conditions"])
    r = response_weights(data)
    nodes = r["nodes"]
    assert len(nodes) == 8  # the single-target conditions, not the doubles
    G = len(data.genes)
    lfc = to_weights(r["delta"], np.broadcast_to(np.arange(G), r["delta"].shape), r["table"], r["grid"]) / data.dose
    genes = np.asarray(data.genes)
    for n, row in zip(nodes, lfc):
        name = data.nodes[n]
        other = genes != name
        true = values[other, conds.index(name)]
        assert np.corrcoef(row[other], true)[0, 1] > 0.85, name
    lfc = to_weights(r["delta"].mean(0), np.arange(G), r["table"], r["grid"]) / data.dose
    edges = model.edges
    cols = data.node_gene
    _, d = edges.target_means()
    measured = torch.as_tensor(cols >= 0)
    assert torch.allclose(d[measured], torch.as_tensor(lfc[cols[cols >= 0]], dtype=torch.float32), atol=1e-5)
    src, tgt = edges.edge_index
    lin = edges.linear_term(d)
    assert torch.equal(lin, edges.linear_term(d))  # a constant, computed once
    # the linear baseline on the same changes, with the penalty the relative ridge stands for
    from grnvae.evaluation.baselines import linear
    from grnvae.utils import pca_scores

    train = pd.DataFrame(r["delta"].T, index=list(data.genes), columns=[data.nodes[n] for n in nodes])
    Gm = pca_scores(train.to_numpy(), 10)
    Pm = Gm[[list(data.genes).index(p) for p in train.columns]]
    scale = np.linalg.eigvalsh(Gm.T @ Gm).max() * np.linalg.eigvalsh(Pm.T @ Pm).max()
    regs = [n for n in range(len(data.nodes)) if cols[n] >= 0 and data.nodes[n] not in train.columns][:3]
    assert regs
    expect = linear(train, [data.nodes[n] for n in regs], ridge=1.0 * scale)
    # on a measured regulator's own gene, plus how much more the seen measured regulators' own
    # genes change than the baseline fits them (in sample)
    seen = [p for p in train.columns if p in data.genes]
    fitted = linear(train, seen, ridge=1.0 * scale)
    own = np.mean([train.loc[p, p] - fitted.loc[p, p] for p in seen])
    assert own < -0.1 and edges.own_change == pytest.approx(own, abs=1e-6)  # knock-downs lower their own gene
    for n in regs:
        out = (src == n) & torch.as_tensor(cols >= 0)[tgt]
        genes_out = cols[tgt[out].numpy()]
        change = expect[data.nodes[n]].to_numpy()[genes_out] + own * (tgt[out] == n).numpy()
        want = to_weights(change, genes_out, r["table"], r["grid"]) / data.dose
        got = (d[tgt[out]] + lin[out]).numpy()
        assert np.allclose(got, want, atol=1e-4), data.nodes[n]
        assert (src[out] == tgt[out]).any()  # its self-loop is among them
    # the learned self term stays off the measured self-loops (own_change is theirs)
    with torch.no_grad():
        edges.self_terms.fill_(5.0)
    b = edges.prior()[1]
    measured_self = (src == tgt) & torch.as_tensor(cols >= 0)[tgt]
    assert torch.allclose(b[measured_self], (d[tgt] + lin)[measured_self], atol=1e-5)
    # a run trained before (its stored responses have no form) keeps the prior it was trained with
    cfg = _cfg("model.edges.prior_mean=data", "model.penetrance.population=true", "model.edges.linear_ridge=1.0")
    spec = build_spec(data, cfg)
    for key in ("form", "share"):
        del spec.extra["response"][key]
    old = GRNVAE(spec, cfg).edges
    _, d_old = old.target_means()
    lin_old = old.linear_term(d_old)
    assert old.own_change == 0.0 and old.response_share is None
    with torch.no_grad():
        old.self_terms.fill_(5.0)
    assert torch.allclose(old.prior()[1][measured_self], (d_old[tgt] + lin_old + 5.0)[measured_self], atol=1e-5)


def test_without_the_learned_map_an_unseen_regulator_gets_the_baselines(sim):
    """model.edges.learned_map=false: the prior mean of every edge is the data's (mean change plus
    the linear term, and the self term on self-loops), so an unseen regulator's edges are the
    linear baseline's weights (mean_effect's for one without features) whatever the training does
    to the prior networks; with the map on, training moves them."""
    data, model = _model(sim, "model.edges.prior_mean=data", "model.edges.linear_ridge=0.1",
                         "model.edges.learned_map=false")
    edges = model.edges
    src, tgt = edges.edge_index
    _, d = edges.target_means()
    want = d[tgt] + edges.linear_term(d)
    with torch.no_grad():
        for net in (edges.source_net, edges.target_net):
            for p in net.parameters():
                p.add_(torch.randn_like(p))  # what training might do to the map
        edges.target_free.add_(torch.randn_like(edges.target_free))
    b = edges.prior()[1]
    other = src != tgt
    assert torch.allclose(b[other], want[other], atol=1e-5)
    data, model = _model(sim, "model.edges.prior_mean=data", "model.edges.linear_ridge=0.1",
                         "model.edges.learned_map=true")
    edges = model.edges
    with torch.no_grad():
        edges.target_free.add_(torch.randn_like(edges.target_free))
        edges.source_net[2].weight.add_(torch.randn_like(edges.source_net[2].weight))
    _, d = edges.target_means()
    assert not torch.allclose(edges.prior()[1][other], (d[tgt] + edges.linear_term(d))[other], atol=1e-3)


def test_two_group_probability_is_calibrated_on_its_own_model():
    # 5,000 edges, 5 % with a real effect N(0, 1), each estimated with its own noise; the fitted
    # probabilities match the fraction of real effects among the edges they are given to
    from grnvae.utils import two_group_probability

    rng = np.random.default_rng(0)
    n = 5000
    real = rng.random(n) < 0.05
    sd = rng.uniform(0.05, 0.2, n)
    effect = np.where(real, rng.normal(0, 1.0, n), 0.0)
    p = two_group_probability(effect + sd * rng.normal(size=n), sd)
    assert abs(p.mean() - real.mean()) < 0.01
    for lo, hi in [(0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.0)]:
        sel = (p >= lo) & (p < hi)
        if sel.sum() >= 30:
            assert abs(real[sel].mean() - p[sel].mean()) < 0.1, (lo, hi, real[sel].mean(), p[sel].mean())
    # an estimate far from zero is a real effect whatever the rest; one at zero is not
    assert p[np.abs(effect) > 1].min() > 0.99 and np.median(p[~real]) < 0.01
    # only the flagged entries are fitted: flagging the real effects alone changes the fit
    assert two_group_probability(effect, sd, fit=real).mean() > p.mean()
    # nothing to fit: no information either way
    assert np.all(two_group_probability([0.1, 0.2], [0.1, 0.1]) == 0.5)
    assert np.all(two_group_probability(np.zeros(10), np.ones(10)) == 0.5)


def test_weight_only_edges_report_calibrated_probabilities_and_intervals():
    # without masks, an edge's probability is its two-group posterior (not the sign certainty,
    # which is ~1 for every estimate far from 0 relative to a small posterior sd), fitted on the
    # seen regulators' edges other than self-loops
    rng = np.random.default_rng(1)
    V = 60
    src = np.repeat(np.arange(10), V)
    tgt = np.tile(np.arange(V), 10)
    ei = torch.as_tensor(np.stack([src, tgt]))
    post = FeatureEdgePosterior(ei, torch.randn(V, 3), seen=torch.arange(V) < 8, mask=False)
    real = rng.random(ei.shape[1]) < 0.05
    loc = np.where(real, rng.choice([-1.0, 1.0], ei.shape[1]), 0.0) + 0.05 * rng.normal(size=ei.shape[1])
    with torch.no_grad():
        post.q_loc.copy_(torch.as_tensor(loc, dtype=torch.float32))
        post.q_log_scale.fill_(np.log(0.05))
    p = post.edge_probability()
    seen = src < 8
    assert abs(float(p[torch.as_tensor(seen)].mean()) - real[seen].mean()) < 0.03
    assert float(p[torch.as_tensor(real & seen)].min()) > 0.9
    low, high = post.weight_interval(0.9)
    assert torch.all(low < post.mean_weight()) and torch.all(high > post.mean_weight())
    assert torch.allclose((high - low)[torch.as_tensor(seen)], torch.tensor(2 * 1.6449 * 0.05), atol=1e-3)


def test_edge_probabilities_ignore_shifts_shared_by_a_regulator_or_a_target():
    # every edge of regulator i moves by a_i (e.g. the library's composition) and every edge into
    # target j by b_j (a response to any perturbation): neither is an edge of its own, so the
    # probabilities stay calibrated on the real edges; on the raw weights they would not
    from grnvae.utils import edge_specific, two_group_probability

    rng = np.random.default_rng(2)
    R, T = 40, 200
    src, tgt = np.repeat(np.arange(R), T), np.tile(np.arange(T), R)
    real = rng.random(R * T) < 0.03
    sd = np.full(R * T, 0.08)
    own = np.where(real, rng.choice([-1.0, 1.0], R * T) * rng.uniform(0.5, 1.5, R * T), 0.0)
    a, b = rng.normal(0, 0.3, R), rng.normal(0, 0.3, T)
    shared = a[src] + b[tgt]
    loc = own + shared + sd * rng.normal(size=R * T)
    residual = edge_specific(loc, src, tgt)
    assert np.corrcoef(residual, loc - shared)[0, 1] > 0.99 and abs(np.median(residual[~real])) < 0.01
    p = two_group_probability(residual, sd)
    assert abs(p.mean() - real.mean()) < 0.01 and np.median(p[~real]) < 0.05 and np.median(p[real]) > 0.95
    assert two_group_probability(loc, sd)[~real].mean() > 0.1  # the shifts read as edges
    # shifts are estimated from the flagged entries only; a group without any gets none
    use = src < 30
    kept = edge_specific(loc, src, tgt, use)
    medians = np.array([np.median(kept[src == i]) for i in range(R)])
    assert medians[:30].std() < 0.02 and np.corrcoef(medians[30:], a[30:])[0, 1] > 0.95
    assert np.allclose(edge_specific(loc[:T], src[:T], tgt[:T], np.zeros(T, bool)), loc[:T])
    # the model reports the same for its weight-only edges
    ei = torch.as_tensor(np.stack([src, tgt + R]))
    post = FeatureEdgePosterior(ei, torch.randn(R + T, 3), seen=torch.ones(R + T, dtype=torch.bool), mask=False)
    with torch.no_grad():
        post.q_loc.copy_(torch.as_tensor(loc, dtype=torch.float32))
        post.q_log_scale.fill_(np.log(0.08))
    expected = two_group_probability(edge_specific(loc.astype(np.float32), src, tgt), sd + 1e-4)  # its floor
    assert np.allclose(post.edge_probability().numpy(), expected, atol=1e-3)


def test_direct_edge_probability_discounts_shortcuts_through_other_regulators():
    # regulators 0..29 (each knocked down: self effect -2), 200 genes. 0 -> 1 is an edge and 1
    # -> 50 too, so a one-hop fit also sees 0 -> 50 (0 moves 1 by -1, half of 1's own
    # knock-down, and 1 moves 50 by 1.2: 0 -> 50 is about -1 * 1.2 / -2 = 0.6) without an edge
    from grnvae.utils import direct_edge_probability, explained_by_paths

    rng = np.random.default_rng(3)
    R, G = 30, 200
    W = np.zeros((G, G))
    W[np.arange(R), np.arange(R)] = -2.0
    direct = [(r, int(t)) for r in range(R) for t in rng.choice(np.arange(R, G), 3, replace=False)]
    direct += [(2 * i, 2 * i + 1) for i in range(10)]  # regulator -> regulator: cascades
    for s_, t_ in direct:
        W[s_, t_] = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.5)
    total = W.copy()
    for i in range(10):  # the shortcuts: 2i reaches 2i+1's targets
        a, b = 2 * i, 2 * i + 1
        total[a, R:] += W[a, b] / W[b, b] * W[b, R:]
    src, tgt = np.repeat(np.arange(R), G), np.tile(np.arange(G), R)
    sd = np.full(R * G, 0.08)
    effect = total[src, tgt] + sd * rng.normal(size=R * G)
    use = src != tgt
    is_direct = np.zeros(R * G, dtype=bool)
    for s_, t_ in direct:
        is_direct[s_ * G + t_] = True
    shortcut = use & ~is_direct & (np.abs(total[src, tgt]) > 0.3)
    assert shortcut.sum() >= 20
    # the path account finds the shortcuts' size where every edge is confident
    explained = explained_by_paths(effect, src, tgt, G, is_direct)
    assert np.median(np.abs(explained[shortcut] - total[src, tgt][shortcut])) < 0.1
    assert np.corrcoef(explained[shortcut], total[src, tgt][shortcut])[0, 1] > 0.95
    no_path = is_direct & ((src % 2 == 1) | (src >= 20))  # regulators without an edge to another
    assert no_path.sum() >= 40 and np.abs(explained[no_path]).max() < 1e-12
    p, odds, explained = direct_edge_probability(effect, sd, src, tgt, G, use)
    assert np.median(p[shortcut]) < 0.2 and np.median(p[is_direct]) > 0.9
    assert np.isfinite(odds).all() and np.all((p > 0.5) == (odds > 0))
    # without the path account the shortcuts read as edges
    from grnvae.utils import edge_specific, two_group_probability
    plain = two_group_probability(edge_specific(effect, src, tgt, use), sd, use)
    assert np.median(plain[shortcut]) > 0.9


def test_auto_ridge_follows_what_predicts_left_out_regulators():
    # 30 targets, 12 regulators that are targets too. When each regulator's response is a
    # low-rank function of its own target embedding, a weak ridge predicts left-out regulators
    # best; when responses are independent noise around a shared mean, a strong one does
    from grnvae.data.features import RIDGE_GRID, choose_ridge, left_out_scores, left_out_table

    rng = np.random.default_rng(0)
    T, S = 30, 12
    regulators, targets = np.arange(S), np.arange(T)
    shared = rng.normal(size=T)
    A = rng.normal(size=(T, 2))
    M = rng.normal(size=(2, 2))
    structured = (shared[:, None] + A @ M @ A[:S].T).T  # [S, T]: response of target t to regulator s
    ridge, scores, n = choose_ridge(structured + 0.01 * rng.normal(size=(S, T)), regulators, targets, pcs=3)
    assert n == S and ridge <= 0.1 and scores[ridge] > scores[10.0] + 0.1
    noise = shared[None, :] + rng.normal(size=(S, T))
    ridge, scores, _ = choose_ridge(noise, regulators, targets, pcs=3)
    assert ridge >= 1.0 and set(scores) == set(RIDGE_GRID)
    # the per-regulator table behind the means: one score per left-out regulator and ridge
    held, table = left_out_table(noise, regulators, targets, pcs=3)
    assert held == list(range(S)) and all(len(v) == S for v in table.values())
    assert np.isclose(np.mean(table[float(ridge)]), scores[ridge])
    # a regulator that is not a measured target is never left out; too few: the default
    assert left_out_table(structured[:4], np.array([0, 1, 100, 101]), targets)[0] == [0, 1]
    assert left_out_scores(structured[:4], np.array([0, 1, 100, 101]), targets)[1] == 2
    ridge, scores, n = choose_ridge(structured[:4], np.array([0, 1, 100, 101]), targets, default=0.25)
    assert ridge == 0.25 and n == 2 and all(np.isnan(v) for v in scores.values())


def test_linear_ridge_accepts_auto_only_with_the_data_prior():
    assert _cfg("model.edges.linear_ridge=auto").model.edges.linear_ridge == "auto"
    assert _cfg("model.edges.linear_ridge=0.5").model.edges.linear_ridge == 0.5
    for bad, match in [("model.edges.linear_ridge=sometimes", "linear_ridge"),
                       ("model.edges.linear_ridge=-1", "linear_ridge"),
                       ("model.edges.linear_ridge=.nan", "linear_ridge"),
                       ("model.edges.prior_mean=posterior", "auto .with model.edges.prior_mean=data")]:
        with pytest.raises(grnvae.errors.RecipeError, match=match):
            _cfg(bad)


def test_a_step_reads_only_the_edges_of_the_batch_regulators(sim, monkeypatch):
    """The default model samples only the out-edges of the regulators a batch perturbs: an unseen
    regulator's edges have KL 0 (posterior = prior) and one absent from the batch carries no
    share of it. The loss and every gradient equal those of a step that samples every edge."""
    data, model = _model(sim, "data.split.by=perturbation", "data.split.test=[G0003]")
    train = data.split_index("train")
    conds = np.asarray(data.conditions)[data.cell_condition[train]]
    cells = train[np.isin(conds, ["control", "G0001", "G0002+G0006"])][:96]
    batch = data.batch(cells)
    plan = model.plan_effects(batch["cond_dosage"])
    rows = torch.nonzero(plan.rows).flatten().tolist()
    assert sorted(data.nodes[i] for i in rows) == ["G0001", "G0002", "G0006"]  # not G0003 (unseen)
    model.train()

    def common_draws(n, edges):  # the restricted step draws only its edges' noise: give both the same
        z = torch.randn(n, model.edges.num_edges)
        return z if edges is None else z.index_select(1, edges)
    monkeypatch.setattr(model.edges, "_noise", common_draws)
    results = []
    for full in (False, True):
        if full:
            real = model.plan_effects

            def widened(dosage):
                p = real(dosage)
                p.rows = torch.ones_like(p.rows)
                return p
            monkeypatch.setattr(model, "plan_effects", widened)
        torch.manual_seed(3)
        model.zero_grad(set_to_none=True)
        terms = model(batch, particles=2)
        terms["loss"].backward()
        results.append((float(terms["loss"].detach()), {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    (loss_r, g_r), (loss_f, g_f) = results
    assert loss_r == loss_f
    assert g_r.keys() == g_f.keys()
    for n in g_f:
        assert torch.allclose(g_r[n], g_f[n], atol=1e-6), n


def test_calibrated_changes_keep_the_library_composition(sim, caplog):
    """calibrate_changes shifts each source's changes by one constant so that its log-rate changes
    keep the library's composition; with an identity map (log-normalised values) the constant is
    -log sum share exp(change). In the model, only regulators that reach every measured gene are
    shifted (with fewer targets the shift would decide nothing), and an unseen featureless
    regulator's weights are the calibrated average change."""
    from grnvae.data.features import WEIGHT_GRID, calibrate_changes, response_weights, to_weights

    rng = np.random.default_rng(0)
    G = 30
    share = rng.dirichlet(np.ones(G))
    identity = np.repeat(WEIGHT_GRID[:, None], G, axis=1)
    change = np.concatenate([rng.normal(-0.3, 0.5, G), rng.normal(0.2, 0.3, G)])
    cols, srcs = np.tile(np.arange(G), 2), np.repeat([4, 9], G)
    out = calibrate_changes(change, cols, srcs, share, identity)
    for s in (4, 9):
        at = srcs == s
        assert np.allclose(out[at] - change[at], -np.log(share @ np.exp(change[at])), atol=1e-9)
    # no share to keep: no shift; a shift beyond the range: the range, with a warning
    assert np.array_equal(calibrate_changes(change, cols, srcs, np.zeros(G), identity), change)
    with caplog.at_level("WARNING", logger="grnvae.data.features"):
        far = calibrate_changes(np.full(G, -5.0), np.arange(G), np.zeros(G, dtype=int), share, identity)
    assert np.allclose(far, -2.0) and "beyond" in caplog.text
    # a real (compressive) map: the composition holds and the shift is one constant per source
    data, model = _model(sim, "model.edges.prior_mean=data", "model.edges.linear_ridge=1.0")
    r = response_weights(data)
    table = r["table"]
    out = calibrate_changes(change, cols, srcs, r["share"][:G] / r["share"][:G].sum(), table[:, :G])
    for s in (4, 9):
        at = srcs == s
        w = to_weights(out[at], cols[at], table[:, :G])
        assert abs((r["share"][:G] / r["share"][:G].sum()) @ np.expm1(w)) < 1e-6
        assert np.ptp(out[at] - change[at]) < 1e-12
    edges = model.edges
    assert edges.response_share is not None
    _, d = edges.target_means()
    src, tgt = edges.edge_index
    lin = edges.linear_term(d)
    known = edges.response_known
    dense = [n for n in range(len(data.nodes)) if int((known[tgt] & (src == n)).sum()) == int(known.sum())]
    sparse = [n for n in range(len(data.nodes)) if 0 < int((known[tgt] & (src == n)).sum()) < int(known.sum())]
    assert dense and sparse
    for n in dense[:3]:
        out_n = (src == n) & known[tgt]
        w = (d[tgt] + lin)[out_n].double().numpy() * data.dose
        assert abs(edges.response_share[tgt[out_n]].numpy() @ np.expm1(w)) < 1e-3, data.nodes[n]
    share = edges.response_share
    edges.response_share, edges.data_prior = None, edges.data_prior.new_zeros(0)  # the per-gene inversion alone
    plain = edges.linear_term(d)
    edges.response_share = share
    for n in sparse:  # left as the per-gene inversion of its changes
        out_n = (src == n) & known[tgt]
        assert torch.allclose(lin[out_n], plain[out_n]), data.nodes[n]
    for n in dense[:3]:
        out_n = (src == n) & known[tgt]
        assert not torch.allclose(lin[out_n], plain[out_n], atol=1e-3), data.nodes[n]


def test_to_weights_interpolates_each_genes_map_like_np_interp():
    """The vectorised inversion equals per-gene np.interp on increasing maps (flat stretches,
    values beyond either end, and genes the map cannot move included)."""
    from grnvae.data.features import WEIGHT_GRID, to_weights

    rng = np.random.default_rng(1)
    G = 50
    inc = np.abs(rng.normal(size=(len(WEIGHT_GRID), G))) * (rng.random((len(WEIGHT_GRID), G)) > 0.3)
    inc[0] = 1.0  # strictly increasing at the start, so np.interp is defined below the map
    inc[:, 7] = 0.0  # a gene the map cannot move
    table = np.cumsum(inc, axis=0)
    cols = rng.integers(0, G, 4000)
    delta = rng.normal(scale=8.0, size=4000)
    want = np.array([0.0 if g == 7 else np.interp(x, table[:, g], WEIGHT_GRID) for x, g in zip(delta, cols)])
    assert np.allclose(to_weights(delta, cols, table), want, atol=1e-12)
    assert to_weights(delta.reshape(40, 100), cols.reshape(40, 100), table).shape == (40, 100)


def test_the_inversions_slope_is_its_derivative():
    """to_weights(..., slope=True): the exact slope of the piecewise-linear inversion (what the
    composition's Newton steps use), 0 where the weight is clipped or the gene cannot move."""
    from grnvae.data.features import WEIGHT_GRID, to_weights

    rng = np.random.default_rng(1)
    level = rng.uniform(0.05, 1.0, 6)
    table = np.log1p(np.exp(WEIGHT_GRID)[:, None] * level[None] * 5) - np.log1p(level * 5)[None]
    table[:, 5] = 0.0  # a gene the map cannot move
    cols = rng.integers(0, 6, 400)
    x = rng.normal(0, 1.0, 400)
    x[:10] = 40.0  # beyond the grid
    w, d = to_weights(x, cols, table, slope=True)
    assert np.array_equal(w, to_weights(x, cols, table))
    h = 1e-7
    numeric = (to_weights(x + h, cols, table) - to_weights(x - h, cols, table)) / (2 * h)
    smooth = np.abs(numeric - (to_weights(x + 2 * h, cols, table) - to_weights(x, cols, table)) / (2 * h)) < 1e-6
    assert smooth.sum() > 250 and np.allclose(d[smooth], numeric[smooth], rtol=1e-5, atol=1e-8)
    inside = (cols != 5) & (w > WEIGHT_GRID[0]) & (w < WEIGHT_GRID[-1])
    assert np.all(d[:10] == 0) and np.all(d[cols == 5] == 0) and np.all(d[~inside] == 0)
    assert inside.sum() > 250 and np.all(d[inside] > 0)
