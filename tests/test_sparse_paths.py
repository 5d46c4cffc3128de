"""The fast paths are exact: effect plans, restricted edge posteriors, sparse projections.

Each test compares a fast path with the plain dense computation, values and gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grnvae
from grnvae import GRNVAE, ModelSpec
from grnvae.grn import GRN
from grnvae.nn import EffectModule
from grnvae.nn.edges import EdgePosterior
from grnvae.nn.effect import EffectPlan, SparseEffects
from grnvae.nn.mlp import RowLinear, SplitInputMLP
from grnvae.nn.spmm import sparse_matmul, stable_order


def random_graph(V: int, k: int, seed: int) -> GRN:
    g = torch.Generator().manual_seed(seed)
    src = torch.arange(V).repeat_interleave(k)
    tgt = torch.randint(0, V, (V * k,), generator=g)
    return GRN([f"g{i}" for i in range(V)], torch.stack([src, tgt]))  # coalesced (repeats dropped)


def one_hot_dosage(V: int, C: int, seed: int, multi: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    D = torch.zeros(C, V)
    for c in range(1, C):  # row 0 is a control
        D[c, torch.randperm(V, generator=g)[:multi]] = 1.0
    return D


def reachable(D: torch.Tensor, grn: GRN, hops: int, combine: str) -> torch.Tensor:
    """Brute force: bool [C, V] of nodes reachable in 1..hops steps (or exactly hops)."""
    V = D.shape[1]
    A = torch.zeros(V, V)
    A[grn.edge_index[0], grn.edge_index[1]] = 1.0
    cur, union = (D != 0).float(), torch.zeros_like(D, dtype=torch.bool)
    for _ in range(hops):
        cur = ((cur @ A) > 0).float()
        union |= cur.bool()
    return union if combine == "sum" else cur.bool()


@pytest.mark.parametrize("hops,combine,multi", [(1, "sum", 1), (2, "sum", 2), (3, "last", 1)])
def test_plan_support_is_exactly_the_reachable_set(hops, combine, multi):
    V, C = 120, 9
    grn = random_graph(V, 2, seed=hops)
    D = one_hot_dosage(V, C, seed=hops, multi=multi)
    mod = EffectModule("gpo_linear", hops=hops, combine=combine)
    plan = mod.plan(D, grn.edge_index, V, max_density=1.0)
    got = torch.zeros(C, V, dtype=torch.bool)
    got[plan.support[0], plan.support[1]] = True
    assert torch.equal(got, reachable(D, grn, hops, combine))
    keys = plan.support[0] * V + plan.support[1]
    assert bool((keys[1:] > keys[:-1]).all())  # sorted, no duplicates
    # effects vanish off the support for any weights (including masked-out edges)
    w = torch.randn(3, grn.num_edges) * (torch.rand(3, grn.num_edges) > 0.4)
    z = mod(D, grn.edge_index, w, plan)
    assert torch.all(z[:, ~got] == 0)
    # running the layers over (condition, node) pairs gives the same effects and gradients
    wg = w.clone().requires_grad_(True)
    pairs = mod.compute(D, grn.edge_index, wg, plan)
    assert isinstance(pairs, SparseEffects) and torch.allclose(pairs.dense(), z, atol=1e-6)
    probe = torch.randn_like(z)
    g_pairs = torch.autograd.grad((pairs.dense() * probe).sum(), wg)[0]
    wg2 = w.clone().requires_grad_(True)
    g_dense = torch.autograd.grad((mod(D, grn.edge_index, wg2, EffectPlan([None] * hops)) * probe).sum(), wg2)[0]
    assert torch.allclose(g_pairs, g_dense, atol=1e-5)
    assert plan.rows[D.bool().any(0)].all()
    assert plan.sparse
    # a support denser than max_density is run over the pairs but handed on dense
    dense_plan = mod.plan(D, grn.edge_index, V, max_density=got.float().mean().item() / 2)
    assert not dense_plan.sparse and torch.equal(dense_plan.support, plan.support)
    z_dense = mod.compute(D, grn.edge_index, w, dense_plan)
    assert isinstance(z_dense, torch.Tensor) and torch.allclose(z_dense, z, atol=1e-6)


def test_pyg_layers_get_no_plan():
    grn = random_graph(30, 2, seed=0)
    plan = EffectModule("gcn", hops=2, hidden=4).plan(one_hot_dosage(30, 4, 0), grn.edge_index, 30)
    assert plan.rows is None and plan.support is None


def test_pruned_hops_keep_straight_through_gradients_of_masked_edges():
    """Two hops: an edge out of a node reached only through a masked-out edge still gets the
    gradient the dense computation gives it (pruning is by graph structure, not by value)."""
    V, P = 40, 2
    grn = random_graph(V, 3, seed=4)
    D = one_hot_dosage(V, 6, seed=4)
    mod = EffectModule("gpo_linear", hops=2)
    mask = (torch.rand(P, grn.num_edges, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    base = torch.randn(P, grn.num_edges)
    probe = torch.randn(P, 6, V)
    grads = []
    for plan in (mod.plan(D, grn.edge_index, V), EffectPlan(hop_edges=[None, None])):
        m = mask.clone().requires_grad_(True)
        w = base.clone().requires_grad_(True)
        z = mod(D, grn.edge_index, m * w, plan)
        (z * probe).sum().backward()
        grads.append((z.detach(), m.grad, w.grad))
    assert plan is not None and mod.plan(D, grn.edge_index, V).hop_edges[1] is not None  # pruning happened
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)
    assert grads[0][1][mask == 0].abs().sum() > 0  # masked edges do get gradient


def test_restricted_edge_posterior_equals_full_on_its_edges():
    V, P = 50, 3
    grn = random_graph(V, 4, seed=2)
    torch.manual_seed(0)
    post = EdgePosterior(grn.edge_index, V, weight="amortized", encoder_layers=2, encoder_hidden=6)
    rows = torch.zeros(V, dtype=torch.bool)
    rows[torch.tensor([3, 7, 8, 31])] = True
    torch.manual_seed(5)
    w_full, kl_full, m_full = post.sample(P)
    torch.manual_seed(5)
    w_sub, kl_sub, m_sub = post.sample(P, rows=rows)
    keep = rows[grn.edge_index[0]]
    assert torch.equal(m_full, m_sub)  # same masks
    assert torch.allclose(w_sub[:, keep], w_full[:, keep], atol=1e-6)  # same samples where used
    assert torch.all(w_sub[:, ~keep] == 0)
    assert torch.allclose(kl_sub[keep], kl_full[keep], atol=1e-6)
    # the encoder's gradients from the used edges are the same
    probe = torch.randn(P, grn.num_edges) * keep
    g_full = torch.autograd.grad((w_full * probe).sum() + kl_full[keep].sum(), list(post.parameters()),
                                 allow_unused=True)
    g_sub = torch.autograd.grad((w_sub * probe).sum() + kl_sub[keep].sum(), list(post.parameters()),
                                allow_unused=True)
    for a, b in zip(g_full, g_sub):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_restricted_feature_edges_give_the_same_loss_and_gradients(dropout):
    # the default model's edges: a step that reads only some regulators' out-edges may sample
    # just those; what it reads (samples, KL, gradients) is what the full path gives
    from grnvae.nn.edges import FeatureEdgePosterior

    V, P = 40, 3
    grn = random_graph(V, 5, seed=4)
    seen = torch.arange(V) % 4 != 0
    torch.manual_seed(0)
    post = FeatureEdgePosterior(grn.edge_index, torch.randn(V, 6), seen=seen, mask=False, linear_ridge=0.1,
                                learn_scale=True, prior_dropout=dropout)
    with torch.no_grad():
        post.q_loc.normal_()
    post.train()
    rows = torch.zeros(V, dtype=torch.bool)
    rows[torch.tensor([1, 4, 6, 9, 22, 37])] = True
    keep = rows[grn.edge_index[0]]
    probe = torch.randn(P, grn.num_edges)

    def common_draws(n, edges):  # the restricted path draws only its edges' noise: give both the same
        z = torch.randn(n, post.num_edges)
        return z if edges is None else z.index_select(1, edges)
    post._noise = common_draws
    out = []
    for r in (None, rows):
        torch.manual_seed(5)
        w, kl, m = post.sample(P, rows=r)
        loss = (w[:, keep] * probe[:, keep]).sum() + kl[keep].sum()
        grads = torch.autograd.grad(loss, [p for p in post.parameters() if p.requires_grad], allow_unused=True)
        out.append((w, kl, m, loss, grads))
    (w_f, kl_f, _, loss_f, g_f), (w_r, kl_r, m_r, loss_r, g_r) = out
    assert torch.equal(w_r[:, keep], w_f[:, keep]) and torch.all(w_r[:, ~keep] == 0)
    assert torch.equal(kl_r[keep], kl_f[keep]) and torch.all(kl_r[~keep] == 0)
    assert torch.all(m_r == 1) and torch.equal(loss_r, loss_f)
    assert kl_f[keep & post.seen].abs().sum() > 0  # the KL is read, not trivially zero
    for a, b in zip(g_f, g_r):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6)


def test_edge_posterior_rejects_unsorted_edges():
    with pytest.raises(ValueError, match="coalesced"):
        EdgePosterior(torch.tensor([[1, 0], [0, 1]]), 2)


def test_sparse_matmul_gradients_unsorted_and_duplicate_coordinates():
    g = torch.Generator().manual_seed(3)
    rows = torch.tensor([4, 0, 2, 2, 0, 3, 4])
    cols = torch.tensor([1, 5, 0, 0, 2, 5, 3])  # (2, 0) twice
    vals = torch.randn(7, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: sparse_matmul(rows, cols, v, h, 5), (vals, x))
    S = torch.zeros(5, 6, dtype=torch.float64).index_put((rows, cols), vals, accumulate=True)
    assert torch.allclose(sparse_matmul(rows, cols, vals, x, 5), S @ x)


@pytest.mark.parametrize("n_keys", [7, 60_000, 70_000, 3_000_000_000, 1 << 40])
def test_stable_order_is_torchs_stable_argsort(n_keys):
    # one 16-bit pass, two passes (keys above 2**16, up to 2**32), and wider keys (torch's sort)
    g = torch.Generator().manual_seed(n_keys % 1000)
    keys = torch.randint(0, n_keys, (5000,), generator=g)
    keys[:50] = keys[50:100]  # ties keep their order
    assert torch.equal(stable_order(keys, n_keys), torch.argsort(keys, stable=True))


def test_sparse_matmul_transpose_over_wide_columns():
    # the gradient for x goes through the (column, row) order: columns above 2**16 take two passes
    g = torch.Generator().manual_seed(5)
    n_rows, n_cols = 40, 70_000
    rows = torch.randint(0, n_rows, (300,), generator=g)
    cols = torch.randint(0, n_cols, (300,), generator=g)
    vals = torch.randn(300, dtype=torch.float64, generator=g, requires_grad=True)
    x = torch.randn(n_cols, 2, dtype=torch.float64, generator=g, requires_grad=True)
    grad = torch.randn(n_rows, 2, dtype=torch.float64, generator=g)
    sparse_matmul(rows, cols, vals, x, n_rows).backward(grad)
    S = torch.zeros(n_rows, n_cols, dtype=torch.float64).index_put((rows, cols), vals.detach(), accumulate=True)
    assert torch.allclose(x.grad, S.t() @ grad)
    assert torch.allclose(vals.grad, (grad[rows] * x.detach()[cols]).sum(-1))


def test_sparse_projection_equals_dense_linear():
    V, P = 80, 3
    grn = random_graph(V, 2, seed=7)
    D = one_hot_dosage(V, 10, seed=7, multi=2)
    mod = EffectModule("gpo_linear", hops=2)
    plan = mod.plan(D, grn.edge_index, V, max_density=1.0)
    mlp = SplitInputMLP([5, V], hidden=8, layers=1)
    w = torch.randn(P, grn.num_edges, requires_grad=True)
    index = torch.randint(0, 10, (25,))
    x = torch.randn(25, 5)
    outs, grads = [], []
    for sparse in (True, False):
        z = mod.compute(D, grn.edge_index, w, plan) if sparse else mod(D, grn.edge_index, w, plan)
        assert isinstance(z, SparseEffects) == sparse
        h = mlp([x, (mlp.project(1, z), index)])
        outs.append(h)
        grads.append(torch.autograd.grad(h.square().sum(), [w, *mlp.parameters()]))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4)


def small_model(V=60, k=2, G=40, artifact=True, layer_hops=1, aggr="add", seed=0):
    cfg = grnvae.load_recipe("gpo_vae", overrides=[
        "data.path=unused.h5ad", "data.qc.column=qc", f"model.artifact.enabled={str(artifact).lower()}",
        "model.latent_dim=6", "model.edges.encoder_hidden=12", "model.encoder.hidden=12",
        "model.decoder.hidden=12", f"model.effect.hops={layer_hops}", "loss.align.hops=2",
        f"model.effect.options={{aggr: {aggr}}}"])
    grn = random_graph(V, k, seed)
    genes = [f"g{i}" for i in range(G)]
    counts = torch.full((V,), 50.0)
    counts[-5:] = 0  # a few regulators never perturbed in training
    spec = ModelSpec(genes=genes, nodes=list(grn.genes), edge_index=grn.edge_index,
                     node_gene=[i if i < G else -1 for i in range(V)], x_mean=torch.zeros(G),
                     x_std=torch.ones(G), node_counts=counts, n_train=500, values="counts", n_qc_fail=50)
    torch.manual_seed(seed)
    return GRNVAE(spec, cfg)


def small_batch(model, N=48, C=8, seed=0):
    rng = np.random.default_rng(seed)
    G, V = model.n_genes, model.num_nodes
    D = one_hot_dosage(V - 5, C, seed).contiguous()
    D = torch.cat([D, torch.zeros(C, 5)], 1)
    x = torch.from_numpy(rng.poisson(3.0, size=(N, G)).astype(np.float32))
    return {
        "x": x, "library": x.sum(1), "cond_index": torch.from_numpy(rng.integers(0, C, N)),
        "cond_dosage": D, "delta": torch.rand(N, int(model.measured_nodes.numel())),
        "has_delta": torch.ones(N, dtype=torch.bool), "qc": torch.from_numpy((rng.random(N) < 0.3).astype(np.float32)),
        "x_cf": torch.from_numpy(rng.poisson(3.0, size=(N, G)).astype(np.float32)),
        "has_cf": torch.from_numpy(rng.random(N) < 0.8),
    }


@pytest.mark.parametrize("artifact,hops,aggr,k", [(True, 1, "add", 2), (False, 2, "add", 2), (True, 2, "mean", 2),
                                                 (True, 1, "add", 40)])
def test_model_loss_and_gradients_equal_dense_path(monkeypatch, artifact, hops, aggr, k):
    """The whole step (restricted edge posterior, pruned hops, effects over pairs, sparse and
    shared projections) gives the loss and every gradient of the plain dense computation. With
    mean aggregation the layers cannot run over pairs (the degree counts every in-edge): the
    effects are computed densely and read at their support. With 40 edges per node the effects
    are dense: computed over the pairs, then handed on as a dense tensor."""
    model = small_model(artifact=artifact, layer_hops=hops, aggr=aggr, k=k)
    assert model.effect.pair_layers == (aggr == "add")
    batch = small_batch(model)
    plan = model.plan_effects(batch["cond_dosage"])
    assert plan.support is not None and not bool(plan.rows.all())  # the fast paths are taken
    assert plan.sparse == (k == 2)
    results = []
    for dense in (False, True):
        if dense:
            monkeypatch.setattr(model.effect, "plan", lambda *a, **k: EffectPlan(hop_edges=[None] * hops))
        torch.manual_seed(11)
        model.zero_grad(set_to_none=True)
        terms = model(batch, particles=3)
        terms["loss"].backward()
        results.append(({k: float(v.detach()) for k, v in terms.items()},
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (t_fast, g_fast), (t_dense, g_dense) = results
    for k in t_dense:
        assert t_fast[k] == pytest.approx(t_dense[k], rel=1e-5, abs=1e-6), k
    assert g_fast.keys() == g_dense.keys()
    for n in g_dense:
        assert torch.allclose(g_fast[n], g_dense[n], rtol=1e-4, atol=1e-6), n


def test_control_only_batch_has_empty_support_and_trains():
    """A batch of control cells only: no pair carries an effect; the step still runs and the
    never-perturbed regulators' KL is still counted."""
    model = small_model()
    batch = small_batch(model)
    batch["cond_dosage"] = torch.zeros_like(batch["cond_dosage"])
    plan = model.plan_effects(batch["cond_dosage"])
    assert plan.support is not None and plan.support.shape[1] == 0
    assert int(plan.rows.sum()) == 5  # the regulators never perturbed in training
    terms = model(batch, particles=2)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and terms["kl_global"] > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_row_linear_is_the_linear_map_and_loads_the_linear_layout():
    # the effects' projection stores its weight input-major; it is the same map as nn.Linear
    # (same initialisation from the same seed) and a checkpoint in nn.Linear's layout loads into it
    torch.manual_seed(0)
    lin = torch.nn.Linear(7, 3)
    torch.manual_seed(0)
    row = RowLinear(7, 3)
    x = torch.randn(2, 5, 7)
    assert torch.allclose(row(x), lin(x), atol=1e-6)
    other = RowLinear(7, 3)
    other.load_state_dict(lin.state_dict())
    assert torch.equal(other.weight_in, lin.weight.t()) and torch.equal(other.bias, lin.bias)
    # a whole model saved with nn.Linear weights for the effects' projection
    mlp = SplitInputMLP([4, 6], 3, 1, sparse=(1,))
    state = {(k[:-len("weight_in")] + "weight" if k.endswith("weight_in") else k): (v.t() if k.endswith("weight_in") else v)
             for k, v in mlp.state_dict().items()}
    fresh = SplitInputMLP([4, 6], 3, 1, sparse=(1,))
    fresh.load_state_dict(state)
    parts = [torch.randn(5, 4), torch.randn(5, 6)]
    assert torch.allclose(fresh(parts), mlp(parts))


def test_kept_edges_are_the_out_edges_of_the_rows_in_any_edge_order():
    from grnvae.nn.edges import kept_edges

    grn = random_graph(30, 4, seed=2)
    g = torch.Generator().manual_seed(0)
    for ei in (grn.edge_index, grn.edge_index[:, torch.randperm(grn.num_edges, generator=g)]):
        for rows in (torch.rand(30, generator=g) < 0.3, torch.zeros(30, dtype=torch.bool)):
            assert torch.equal(kept_edges(rows, ei), torch.nonzero(rows[ei[0]]).flatten())
        assert kept_edges(torch.ones(30, dtype=torch.bool), ei) is None  # every edge: nothing to restrict


@pytest.mark.parametrize("multi", [1, 2])
def test_own_loops_are_added_once_and_never_walked(multi):
    """model.effect.loops=own: a self-loop is the perturbed node's own change, w_rr d_r, added
    once; the hops walk the other edges only. The pairs path, the dense path and the formula
    agree (values and gradients), an unperturbed node's self-loop changes nothing, and with one
    hop the result is the walked one."""
    V, C, hops = 80, 7, 2
    base = random_graph(V, 2, seed=5)
    loops = torch.arange(V).repeat(2, 1)
    grn = GRN(base.genes, torch.cat([base.edge_index, loops], dim=1))
    D = one_hot_dosage(V, C, seed=2, multi=multi)
    w = (torch.randn(3, grn.num_edges) * (torch.rand(3, grn.num_edges) > 0.3)).requires_grad_(True)
    mod = EffectModule("gpo_linear", hops=hops, loops="own")
    plan = mod.plan(D, grn.edge_index, V, max_density=1.0)
    pairs = mod.compute(D, grn.edge_index, w, plan).dense()
    dense = mod(D, grn.edge_index, w, EffectPlan([None] * hops))
    src, tgt = grn.edge_index
    is_loop = src == tgt
    expected = []
    for p in range(3):
        A = torch.zeros(V, V).index_put((src[~is_loop], tgt[~is_loop]), w[p, ~is_loop], accumulate=True)
        own = torch.zeros(V).index_put((src[is_loop],), w[p, is_loop])
        expected.append(D @ A + D @ A @ A + D * own)
    expected = torch.stack(expected)
    assert torch.allclose(pairs, expected, atol=1e-5) and torch.allclose(dense, expected, atol=1e-5)
    probe = torch.randn_like(expected)
    g_pairs = torch.autograd.grad((pairs * probe).sum(), w)[0]
    g_dense = torch.autograd.grad((dense * probe).sum(), w)[0]
    assert torch.allclose(g_pairs, g_dense, atol=1e-5)
    unperturbed = ~D.bool().any(0)
    assert unperturbed.any() and torch.all(g_pairs[:, is_loop & unperturbed[src]] == 0)
    walked = EffectModule("gpo_linear", hops=2, loops="walk")
    assert not torch.allclose(walked(D, grn.edge_index, w.detach()), expected.detach(), atol=1e-3)
    one = EffectModule("gpo_linear", hops=1, loops="own")
    assert torch.equal(one(D, grn.edge_index, w.detach()),
                       EffectModule("gpo_linear", hops=1)(D, grn.edge_index, w.detach()))
    with pytest.raises(grnvae.errors.RecipeError, match="loops=own needs linear sum layers"):
        EffectModule("gpo_linear", hops=2, combine="last", loops="own")
