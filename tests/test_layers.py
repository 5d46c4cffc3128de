"""Every registered effect layer runs over the sampled GRN and respects the edge masks."""

from __future__ import annotations

import os

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


def test_standard_layers_refuse_hops_beyond_the_memory_bound(monkeypatch):
    """Past the bound on one hop's messages a standard layer stops with a one-line error naming
    the sizes and the ways out, instead of exhausting memory."""
    import grnvae.nn.effect as effect_mod
    from grnvae.errors import RecipeError
    from grnvae.nn.effect import EffectModule

    module = EffectModule("gcn", hops=2, hidden=8)
    edge_index = torch.tensor([[0, 1, 2], [1, 2, 0]])
    dosage = torch.eye(3)
    weight = torch.randn(4, 3)
    assert module(dosage, edge_index, weight).shape == (4, 3, 3)  # within the bound
    monkeypatch.setattr(effect_mod, "STANDARD_LAYER_BYTES", 1000)
    with pytest.raises(RecipeError, match=r"hop 1 reaches 6 \(condition, node\) pairs with 6 in-edges, over 4 "
                                          r"particles.*gpo_linear"):
        module(dosage, edge_index, weight)


def _copies(module, dosage, edge_index, edge_weight):
    """The reference: the layers over one copy of the GRN per particle and condition, f(d) - f(0)."""
    P, E = edge_weight.shape
    C, V = dosage.shape

    def run(d):
        B = P * C
        ei = edge_index.repeat(1, B) + (torch.arange(B) * V).repeat_interleave(E)
        w = edge_weight.repeat_interleave(C, dim=0).reshape(-1)
        x = d.repeat(P, 1).reshape(B * V, 1)
        for k, layer in enumerate(module.layers):
            x = layer(x, ei, w)
            if k < len(module.layers) - 1:
                x = module.act(x)
        return x.view(P, C, V)

    return run(dosage) - run(torch.zeros_like(dosage))


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != "gpo_linear"])
@pytest.mark.parametrize("hops", [1, 2])
def test_standard_layers_over_the_reached_pairs_equal_one_copy_per_condition(name, hops):
    """Run over the (condition, node) pairs the perturbations reach plus one unperturbed copy per
    particle, a standard layer gives exactly the effects (and gradients) of one GRN copy per
    particle and condition; nodes out of reach get no effect, and nor does a control."""
    from grnvae.nn.effect import SparseEffects

    torch.manual_seed(1)
    V, P = 40, 3
    gen = torch.Generator().manual_seed(0)
    src = torch.arange(V).repeat_interleave(2)
    tgt = torch.randint(0, V, (2 * V,), generator=gen)
    keep = src != tgt
    edge_index = torch.unique(torch.stack([src[keep], tgt[keep]]), dim=1)
    dosage = torch.zeros(5, V)
    dosage[1, 0] = -1.0
    dosage[2, [3, 7]] = -1.0
    dosage[3, 11] = 0.5
    dosage[4, 20] = -1.0
    module = EffectModule(name, hops=hops, hidden=4)
    w = torch.randn(P, edge_index.shape[1], requires_grad=True)
    fast = module._standard(dosage, edge_index, w, max_density=1.0)
    assert isinstance(fast, SparseEffects) and fast.values.shape[1] < 5 * V  # only the reached pairs
    z = fast.dense()
    ref = _copies(module, dosage, edge_index, w)
    assert torch.allclose(z, ref, atol=1e-5), (z - ref).abs().max()
    assert torch.all(z[:, 0] == 0)  # the control: no effect
    assert torch.all(module(torch.zeros(2, V), edge_index, w) == 0)  # a batch of controls only
    g_fast = torch.autograd.grad(z.pow(2).sum(), w)[0]
    g_ref = torch.autograd.grad(ref.pow(2).sum(), w)[0]
    assert torch.allclose(g_fast, g_ref, atol=1e-4)
    params = [p for p in module.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(module(dosage, edge_index, w).pow(2).sum(), params, allow_unused=True),
                    torch.autograd.grad(_copies(module, dosage, edge_index, w).pow(2).sum(), params, allow_unused=True)):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-4)


def test_the_gat_recipe_trains_and_a_control_has_no_effect(tmp_path):
    """The two-hop attention recipe trains end to end on the simulator (effects over the reached
    pairs inside the whole model), and predicts no change for a control."""
    import numpy as np

    import grnvae
    from grnvae.evaluation.evaluate import predict_perturbations

    sim = "data.simulate={n_genes: 40, n_regulators: 8, n_cells: 700, n_doubles: 2, seed: 0}"
    run = grnvae.train("gat", overrides=["data.path=null", sim, "train.max_epochs=2", "train.progress_bar=false",
                                         "model.latent_dim=8", "model.edges.encoder_hidden=32",
                                         "model.encoder.hidden=32", "model.decoder.hidden=32"],
                       out=tmp_path / "gat")
    assert run.metrics["epochs"] >= 1 and np.isfinite(run.metrics["val"]["loss"])
    model = run.model
    dosage = torch.zeros(2, model.num_nodes)
    dosage[1, 0] = -1.0
    with torch.no_grad():
        z = model._effects(dosage, 2)[0]
    z = z.dense() if hasattr(z, "dense") else z
    assert torch.all(z[:, 0] == 0) and z[:, 1].abs().sum() > 0
    pred = predict_perturbations(run.path, [model.spec.nodes[0]])
    assert np.isfinite(pred.layers["delta"]).all()


def test_generated_propagate_modules_are_removed_at_exit(tmp_path):
    # PyG writes each layer class's generated propagate to the temp folder; a run leaves none
    import subprocess
    import sys

    code = ("import glob, tempfile\n"
            "from grnvae.nn.layers import GPOLinear, GCNEffect\n"
            "GPOLinear(); GCNEffect(1, 4)\n"
            "print(len(glob.glob(tempfile.gettempdir() + '/*_propagate_*.py')))\n")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) >= 2  # written while the process ran
    assert not list(tmp_path.glob("*_propagate_*.py"))
