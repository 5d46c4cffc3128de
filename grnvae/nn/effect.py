"""The effect module: perturbation dosages propagated over the sampled GRN by effect layers,
and the sparse K-hop accumulation used by the GRN alignment loss."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .registry import LAYERS
from .spmm import edge_matmul


class EffectModule(nn.Module):
    """A stack of registered effect layers run over the GRN, once per unique condition.

    ``h_0 = d``, ``h_{k+1} = layer_k(h_k, edge_index, m * w)``. Two kinds of layers:

    - *particle-batched scalar layers* (class attribute ``batched = True``, e.g. ``gpo_linear``):
      built as ``cls(**options)``, called with ``x`` ``[V, P, C]`` and ``edge_weight`` ``[E, P]``;
      the output is ``sum_k h_k`` (``combine="sum"``: the total effect of a linear cascade) or
      ``h_hops`` (``combine="last"``). GPO-VAE is ``gpo_linear`` with one hop.
    - *standard PyG layers* (anything else): built as ``cls(in_channels, out_channels,
      **options)`` with channels ``1 -> hidden -> ... -> 1`` and LeakyReLU between layers, and
      called exactly like a PyG layer, ``layer(x [B*V, F], edge_index [2, B*E], edge_weight
      [B*E])``, over B = P * C disjoint copies of the GRN (one per particle and condition, since
      the sampled edge weights differ per particle). The output is the last layer's.

    Shapes: dosages ``[C, V]``, ``edge_weight`` ``[P, E]`` -> latent effects ``[P, C, V]``.
    """

    def __init__(self, layer: str = "gpo_linear", hops: int = 1, combine: str = "sum",
                 hidden: int = 16, options: Optional[Dict[str, Any]] = None):
        super().__init__()
        cls = LAYERS.get(layer)
        self.layer_name = layer
        self.combine = combine
        self.batched = bool(getattr(cls, "batched", False))
        options = dict(options or {})
        if self.batched:
            self.layers = nn.ModuleList(cls(**options) for _ in range(hops))
        else:
            dims = [1] + [hidden] * (hops - 1) + [1]
            self.layers = nn.ModuleList(cls(dims[k], dims[k + 1], **options) for k in range(hops))
            self.act = nn.LeakyReLU()

    def forward(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        if not self.batched:
            return self._forward_standard(dosage, edge_index, edge_weight)
        x = dosage.t().unsqueeze(1).expand(-1, edge_weight.shape[0], -1)  # [V, P, C]
        w = edge_weight.t()  # [E, P]
        out = None
        for layer in self.layers:
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

    def _forward_standard(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        P, E = edge_weight.shape
        C, V = dosage.shape
        B = P * C
        # copy b = p * C + c holds condition c under particle p
        offsets = (torch.arange(B, device=dosage.device) * V).repeat_interleave(E)
        ei = edge_index.repeat(1, B) + offsets
        w = edge_weight.repeat_interleave(C, dim=0).reshape(-1)  # [B * E]
        x = dosage.repeat(P, 1).reshape(B * V, 1)
        for k, layer in enumerate(self.layers):
            x = layer(x, ei, w)
            if k < len(self.layers) - 1:
                x = self.act(x)
        return x.view(P, C, V)


def propagate(h: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int) -> Tensor:
    """One sparse hop ``h A`` with ``A[i, j] = edge_value[e]`` for e = (i -> j). ``h``: ``[C, V]``."""
    src, tgt = edge_index
    msg = h[:, src] * edge_value  # [C, E]
    return scatter(msg, tgt, dim=1, dim_size=num_nodes, reduce="sum")


def khop_rows(dosage: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int, hops: int) -> Tensor:
    """Rows ``D S`` of the GRN alignment matrix without forming S.

    ``S = sum_{k=1..K+1} A^k / V^(k-1)`` (GPO-VAE, with A the edge logits, zero off the edge
    set) is never built: ``D S = sum_k y_k`` with ``y_1 = D A`` and ``y_{k+1} = y_k A / V``,
    i.e. K + 1 propagations of the ``[C, V]`` dosage rows over the E edges. For dense edge sets
    (E >= V^2 / 4) A itself is no larger than the edge list, and the propagations are matrix
    products; otherwise they are sparse-dense products with A stored as its E edges.
    """
    V = num_nodes
    if 4 * edge_value.numel() >= V * V:
        A = dosage.new_zeros(V, V).index_put((edge_index[0], edge_index[1]), edge_value, accumulate=True)
        step = lambda h: h @ A  # noqa: E731
    else:
        # h A = (A^T h^T)^T: one sparse-dense product per hop over the edge list, no [C, E]
        # message tensor, O(E) gradients for the edge values
        step = lambda h: edge_matmul(edge_index, edge_value, h.t(), V).t()  # noqa: E731
    y = step(dosage)
    total = y
    for _ in range(hops):
        y = step(y) / V
        total = total + y
    return total
