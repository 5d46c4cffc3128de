"""Every registered effect layer runs over the sampled GRN and respects the edge masks."""

from __future__ import annotations

import pytest
import torch

from grnvae.grn import GRN
from grnvae.nn import LAYERS, EffectModule

BUILTIN = ["gpo_linear", "gcn", "gat", "graphconv", "gin"]


def test_builtins_are_registered_with_docs():
    described = dict(LAYERS.describe())
    for name in BUILTIN:
        assert name in described and described[name]


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("hops", [1, 2])
def test_layer_shapes_gradients_and_masked_edges(name, hops):
    torch.manual_seed(0)
    V, P = 6, 3
    grn = GRN.complete([f"g{i}" for i in range(V)], self_loops=False)
    D = torch.zeros(4, V)
    D[1, 0] = 1.0
    D[2, [1, 2]] = 1.0
    D[3, 5] = 1.0
    w = torch.randn(P, grn.num_edges, requires_grad=True)
    module = EffectModule(name, hops=hops, hidden=4)
    out = module(D, grn.edge_index, w)
    assert out.shape == (P, 4, V) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # an edge whose sampled mask is 0 carries nothing: its source does not reach its target
    src, tgt = grn.edge_index
    masked = w.detach().clone()
    masked[:, src == 0] = 0.0  # cut every edge out of g0
    base = module(D, grn.edge_index, masked)
    if hops == 1:
        # perturbing g0 (condition 1) then leaves every other node as in a control (condition 0)
        assert torch.allclose(base[:, 1, 1:], base[:, 0, 1:], atol=1e-6)
        full = module(D, grn.edge_index, w.detach())
        assert not torch.allclose(full[:, 1, 1:], full[:, 0, 1:], atol=1e-4)  # unmasked, it does
    # identical particles give identical effects (particles only differ by their edge weights)
    same = masked[:1].expand(P, -1)
    res = module(D, grn.edge_index, same)
    assert torch.allclose(res[0], res[1], atol=1e-6) and torch.allclose(res[0], res[2], atol=1e-6)


def test_standard_layers_refuse_graph_copies_beyond_the_memory_bound(monkeypatch):
    """A standard PyG layer runs over P x C copies of the GRN; past the bound it stops with a
    one-line error naming the sizes and the ways out, instead of exhausting memory."""
    import grnvae.nn.effect as effect_mod
    from grnvae.errors import RecipeError
    from grnvae.nn.effect import EffectModule

    module = EffectModule("gcn", hops=2, hidden=8)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    dosage = torch.eye(3)
    weight = torch.randn(4, 3)
    assert module(dosage, edge_index, weight).shape == (4, 3, 3)  # within the bound
    monkeypatch.setattr(effect_mod, "STANDARD_LAYER_BYTES", 1000)
    with pytest.raises(RecipeError, match=r"4 particles x 3 conditions = 12 copies of the 3-edge GRN.*gpo_linear"):
        module(dosage, edge_index, weight)
