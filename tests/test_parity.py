"""The sparse graph formulation equals GPO-VAE's dense matrix formulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from grnvae.grn import GRN
from grnvae.nn import EffectModule, khop_rows
from grnvae.nn.edges import EdgePosterior, bernoulli_kl
from grnvae.nn.layers import GPOLinear


def dense_matrix(edge_index, values, V):
    A = torch.zeros(V, V, dtype=values.dtype)
    A[edge_index[0], edge_index[1]] = values
    return A


@pytest.mark.parametrize("V,P,C", [(7, 3, 4), (15, 1, 6)])
def test_gpo_linear_equals_dense_D_E_M_over_complete_graph(V, P, C):
    g = torch.Generator().manual_seed(V)
    grn = GRN.complete([f"g{i}" for i in range(V)], self_loops=True)
    E = torch.randn(P, V, V, generator=g)
    M = (torch.rand(P, V, V, generator=g) > 0.5).float()
    D = (torch.rand(C, V, generator=g) > 0.7).float()  # multi-hot dosages
    D[0] = 0.0  # a control row
    src, tgt = grn.edge_index
    edge_weight = (E * M)[:, src, tgt]  # [P, E]
    x = D.t().unsqueeze(1).expand(-1, P, -1)  # [V, P, C]
    out = GPOLinear()(x, grn.edge_index, edge_weight.t())  # [V, P, C]
    dense = torch.einsum("cv,pvw->pcw", D, E * M)  # D (E ⊙ M) per particle
    assert torch.allclose(out.permute(1, 2, 0), dense, atol=1e-5)
    # the effect module (which skips edges out of zero-dosage nodes) gives the same
    mod = EffectModule("gpo_linear", hops=1)
    assert torch.allclose(mod(D, grn.edge_index, edge_weight), dense, atol=1e-5)


def test_effect_module_multi_hop_sum_is_linear_cascade():
    V, P = 9, 2
    g = torch.Generator().manual_seed(1)
    grn = GRN.complete([f"g{i}" for i in range(V)], self_loops=False)
    W = torch.randn(P, grn.num_edges, generator=g) * 0.5
    D = torch.eye(V)[:3]
    dense = torch.stack([dense_matrix(grn.edge_index, W[p], V) for p in range(P)])
    h1 = torch.einsum("cv,pvw->pcw", D, dense)
    h2 = torch.einsum("pcv,pvw->pcw", h1, dense)
    out = EffectModule("gpo_linear", hops=2, combine="sum")(D, grn.edge_index, W)
    assert torch.allclose(out, h1 + h2, atol=1e-5)
    last = EffectModule("gpo_linear", hops=2, combine="last")(D, grn.edge_index, W)
    assert torch.allclose(last, h2, atol=1e-5)


def upstream_S(A: torch.Tensor, hops: int) -> torch.Tensor:
    """GPO-VAE's dense accumulation: S = A + A^2/V + ... (hops + 1 terms)."""
    S = A.clone()
    term = A.clone()
    for _ in range(hops):
        term = term @ A / A.shape[0]
        S = S + term
    return S


@pytest.mark.parametrize("seed,V,density,hops", [(0, 6, 1.0, 5), (1, 20, 0.2, 5), (2, 35, 0.05, 3), (3, 12, 0.5, 0)])
def test_sparse_khop_rows_equal_dense_formula(seed, V, density, hops):
    g = torch.Generator().manual_seed(seed)
    keep = torch.rand(V, V, generator=g) < density
    src, tgt = torch.nonzero(keep, as_tuple=True)
    grn = GRN([f"g{i}" for i in range(V)], torch.stack([src, tgt]))
    logits = torch.randn(grn.num_edges, generator=g, dtype=torch.float64) * 2
    A = dense_matrix(grn.edge_index, logits, V)  # zero off the edge set
    D = (torch.rand(8, V, generator=g) > 0.6).double()
    expected = D @ upstream_S(A, hops)
    got = khop_rows(D, grn.edge_index, logits, V, hops)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9)
    # hops over sparse rows (none, some, all) give the same values and edge gradients
    probe = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    ref_grad = None
    for budget in (0.0, 1 / 64, 1e9):
        lg = logits.clone().requires_grad_(True)
        out = khop_rows(D, grn.edge_index, lg, V, hops, pair_budget=budget)
        assert torch.allclose(out, expected, rtol=1e-9, atol=1e-9)
        (grad,) = torch.autograd.grad((out * probe).sum(), lg)
        ref_grad = grad if ref_grad is None else ref_grad
        assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)


def test_amortised_weight_encoder_equals_dense_upstream_mlp():
    """Over a complete graph the O(E) amortised encoder is the upstream MLP on [mask row; one-hot]."""
    V, P, H = 6, 3, 5
    torch.manual_seed(0)
    grn = GRN.complete([f"g{i}" for i in range(V)], self_loops=True)
    post = EdgePosterior(grn.edge_index, V, weight="amortized", encoder_layers=2, encoder_hidden=H)
    with torch.no_grad():
        for p in post.parameters():
            p.normal_()
    mask = (torch.rand(P, grn.num_edges) > 0.5).float()
    loc, scale = post.weight_posterior(mask)
    # dense upstream: input [M_i ; e_i] (2V) -> Linear -> LeakyReLU -> residual blocks -> heads (V)
    M = mask.view(P, V, V)
    inp = torch.cat([M, torch.eye(V).expand(P, V, V)], dim=-1)
    W1 = torch.cat([post.in_mask.t(), post.in_node.weight.t()], dim=1)  # [H, 2V]
    h = torch.nn.functional.leaky_relu(inp @ W1.t())
    h = post.body(h)
    loc_dense = h @ post.out_loc.weight[:, :-1].t() + post.out_loc.weight[:, -1]  # [P, V, V]
    logvar_dense = h @ post.out_logvar.weight[:, :-1].t() + post.out_logvar.weight[:, -1]
    src, tgt = grn.edge_index
    assert torch.allclose(loc, loc_dense[:, src, tgt], atol=1e-5)
    assert torch.allclose(scale, torch.exp(0.5 * logvar_dense.clamp(-15, 15))[:, src, tgt] + 1e-2, atol=1e-5)


def test_amortised_encoder_gradients_flow_to_mask_logits():
    grn = GRN.complete(["a", "b", "c", "d"])
    post = EdgePosterior(grn.edge_index, 4, weight="amortized", encoder_layers=1, encoder_hidden=8)
    w, kl, mask = post.sample(3)
    (w.sum() + kl.sum()).backward()
    assert post.logits.grad is not None and torch.isfinite(post.logits.grad).all()
    assert post.logits.grad.abs().sum() > 0
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}  # hard samples forward


def test_bernoulli_kl_matches_torch():
    q = torch.randn(50)
    p = torch.full((50,), math.log(0.3 / 0.7))
    ref = torch.distributions.kl_divergence(
        torch.distributions.Bernoulli(logits=q), torch.distributions.Bernoulli(logits=p)
    )
    assert torch.allclose(bernoulli_kl(q, p), ref, atol=1e-6)


def test_edge_scores_sparse_and_dense_paths_equal_gather():
    torch.manual_seed(3)
    V, P, H = 30, 3, 7
    for density in (0.1, 0.9):  # sampled sparse product, dense matrix product
        keep = torch.rand(V, V) < density
        src, tgt = torch.nonzero(keep, as_tuple=True)
        grn = GRN([f"g{i}" for i in range(V)], torch.stack([src, tgt]))
        post = EdgePosterior(grn.edge_index, V, weight="amortized", encoder_layers=1, encoder_hidden=H)
        h = torch.randn(P, V, H, requires_grad=True)
        W = torch.randn(V, H + 1, requires_grad=True)
        s, t = grn.edge_index
        got = post._edge_scores(h, s, t, W)
        ref = (h[:, s] * W[t, :H]).sum(-1) + W[t, H]
        assert torch.allclose(got, ref, atol=1e-5)
        g = torch.randn_like(got)
        ga = torch.autograd.grad((got * g).sum(), (h, W))
        gb = torch.autograd.grad((ref * g).sum(), (h, W))
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ga, gb))


def test_edge_matmul_gradients_match_dense():
    from grnvae.nn.spmm import edge_matmul

    torch.manual_seed(5)
    V, F = 12, 4
    keep = torch.rand(V, V) < 0.3
    src, tgt = torch.nonzero(keep, as_tuple=True)
    ei = torch.stack([src, tgt])
    vals = torch.randn(src.numel(), dtype=torch.float64, requires_grad=True)
    x = torch.randn(V, F, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: edge_matmul(ei, v, h, V), (vals, x))
    A = torch.zeros(V, V, dtype=torch.float64).index_put((src, tgt), vals)
    assert torch.allclose(edge_matmul(ei, vals, x, V), A.t() @ x)


def test_edge_scores_gradients():
    from grnvae.nn.spmm import edge_scores

    torch.manual_seed(6)
    keep = torch.rand(9, 7) < 0.4
    rows, cols = torch.nonzero(keep, as_tuple=True)
    a = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: edge_scores(rows, cols, x, y), (a, b))
    assert torch.allclose(edge_scores(rows, cols, a, b), (a[rows] * b[cols]).sum(-1))
