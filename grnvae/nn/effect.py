"""The effect module: perturbation dosages propagated over the sampled GRN by effect layers,
and the sparse K-hop accumulation used by the GRN alignment loss."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .registry import LAYERS


class EffectModule(nn.Module):
    """A stack of registered effect layers run over the GRN, once per unique condition.

    ``h_0 = d``, ``h_{k+1} = layer_k(h_k, edge_index, m * w)``; the output is ``h_hops``
    (``combine="last"``) or ``sum_k h_k`` for k >= 1 (``combine="sum"``, the total effect of a
    linear cascade). GPO-VAE is ``gpo_linear`` with one hop.

    Shapes: dosages ``[C, V]``, ``edge_weight`` ``[P, E]`` -> latent effects ``[P, C, V]``.
    """

    def __init__(self, layer: str = "gpo_linear", hops: int = 1, combine: str = "sum",
                 options: Optional[Dict[str, Any]] = None):
        super().__init__()
        cls = LAYERS.get(layer)
        self.layer_name = layer
        self.combine = combine
        self.layers = nn.ModuleList(cls(**(options or {})) for _ in range(hops))

    def forward(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        x = dosage.t().unsqueeze(1).expand(-1, edge_weight.shape[0], -1)  # [V, P, C]
        w = edge_weight.t()  # [E, P]
        out = None
        for k, layer in enumerate(self.layers):
            ei, wk = edge_index, w
            if getattr(layer, "zero_preserving", False):
                # messages vanish where the source state is zero: skip those edges (exact)
                active = x.abs().flatten(1).sum(1) > 0
                keep = active[edge_index[0]]
                if not bool(keep.all()):
                    ei, wk = edge_index[:, keep], w[keep]
            x = layer(x, ei, wk)
            out = x if (out is None or self.combine == "last") else out + x
        return out.permute(1, 2, 0)  # [P, C, V]


def propagate(h: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int) -> Tensor:
    """One sparse hop ``h A`` with ``A[i, j] = edge_value[e]`` for e = (i -> j). ``h``: ``[C, V]``."""
    src, tgt = edge_index
    msg = h[:, src] * edge_value  # [C, E]
    return scatter(msg, tgt, dim=1, dim_size=num_nodes, reduce="sum")


def khop_rows(dosage: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int, hops: int) -> Tensor:
    """Rows ``D S`` of the GRN alignment matrix without forming S.

    ``S = sum_{k=1..K+1} A^k / V^(k-1)`` (GPO-VAE, with A the edge logits, zero off the edge
    set) is never built: ``D S = sum_k y_k`` with ``y_1 = D A`` and ``y_{k+1} = y_k A / V``,
    i.e. K + 1 sparse propagations of the ``[C, V]`` dosage rows over the E edges.
    """
    y = propagate(dosage, edge_index, edge_value, num_nodes)
    total = y
    for _ in range(hops):
        y = propagate(y, edge_index, edge_value, num_nodes) / num_nodes
        total = total + y
    return total
