"""The effect module: perturbation dosages propagated over the sampled GRN by effect layers,
and the sparse K-hop accumulation used by the GRN alignment loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .registry import LAYERS
from .spmm import edge_matmul


@dataclass
class EffectPlan:
    """Where a batch's perturbation effects can be non-zero, found from the graph alone.

    For effect layers whose output at a node vanishes when none of its in-neighbours' states is
    non-zero (``local_support = True``, e.g. ``gpo_linear``), a condition's effect can only be
    non-zero on the nodes reachable from its perturbed nodes in 1..hops steps over the edge set,
    whatever the sampled masks and weights: this is *structural* (a masked-out edge still counts,
    as its straight-through gradient flows through its target). Fields (None = everything):

    - ``hop_edges``: per hop, the edges leaving nodes with a possibly non-zero state (the others
      carry nothing and are skipped by zero-preserving layers), or None for all edges;
    - ``rows``: bool ``[V]``, the regulators whose out-edge weights the effect module uses;
    - ``support``: ``[2, nnz]`` (condition, node) coordinates, sorted, outside which the effects
      ``[P, C, V]`` are exactly zero for every parameter value; None when that set is not
      sparse (more than ``max_density`` of ``C x V``), so dense products are the faster choice.
    """

    hop_edges: List[Optional[Tensor]] = field(default_factory=list)
    rows: Optional[Tensor] = None
    support: Optional[Tensor] = None


def _out_edges(edge_index: Tensor, num_nodes: int):
    """Out-edges by source: (ptr ``[V + 1]``, targets sorted by source)."""
    src, tgt = edge_index
    order = torch.argsort(src, stable=True)
    ptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=src.device)
    ptr[1:] = torch.cumsum(torch.bincount(src, minlength=num_nodes), 0)
    return ptr, tgt[order]


def _expand(keys: Tensor, ptr: Tensor, targets: Tensor, num_nodes: int) -> Tensor:
    """One hop of (condition, node) keys ``c * V + v``: the sorted unique keys ``c * V + t`` for
    every edge v -> t."""
    c, v = keys // num_nodes, keys % num_nodes
    deg = ptr[v + 1] - ptr[v]
    total = int(deg.sum())
    if total == 0:
        return keys.new_empty(0)
    first = torch.repeat_interleave(ptr[v] - (torch.cumsum(deg, 0) - deg), deg)
    t = targets[first + torch.arange(total, device=keys.device)]
    return torch.unique(torch.repeat_interleave(c, deg) * num_nodes + t)


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

    @property
    def local_support(self) -> bool:
        """Whether effects are structurally sparse (see :class:`EffectPlan`)."""
        return self.batched and all(getattr(layer, "local_support", False) for layer in self.layers)

    @torch.no_grad()
    def plan(self, dosage: Tensor, edge_index: Tensor, num_nodes: int, max_density: float = 0.1) -> EffectPlan:
        """The :class:`EffectPlan` of dosages ``[C, V]`` over ``edge_index``."""
        if not self.local_support:
            return EffectPlan(hop_edges=[None] * len(self.layers))
        V = num_nodes
        C = dosage.shape[0]
        src = edge_index[0]
        active = (dosage != 0).any(0)  # nodes with a possibly non-zero state, any condition
        rows = torch.zeros_like(active)
        hop_edges: List[Optional[Tensor]] = []
        for layer in self.layers:
            rows |= active
            keep = active[src]
            skip = getattr(layer, "zero_preserving", False) and not bool(keep.all())
            hop_edges.append(torch.nonzero(keep).flatten() if skip else None)
            nxt = torch.zeros_like(active)
            nxt[edge_index[1][keep]] = True
            active = nxt
        return EffectPlan(hop_edges, rows, self._support(dosage, edge_index, V, max_density))

    def _support(self, dosage: Tensor, edge_index: Tensor, V: int, max_density: float) -> Optional[Tensor]:
        """Sorted (condition, node) coordinates ``[2, nnz]`` of the effects' structural support,
        or None once it holds more than ``max_density`` of the ``C x V`` entries."""
        limit = max_density * dosage.shape[0] * V
        cv = torch.nonzero(dosage != 0)
        keys = cv[:, 0] * V + cv[:, 1]  # sorted keys c * V + v
        ptr, targets = _out_edges(edge_index, V)
        support = keys.new_empty(0)
        for k in range(len(self.layers)):
            keys = _expand(keys, ptr, targets, V)
            if keys.numel() > limit:
                return None
            if self.combine == "sum" or k == len(self.layers) - 1:
                support = keys if k == 0 else torch.unique(torch.cat([support, keys]))
        if support.numel() > limit:
            return None
        return torch.stack([support // V, support % V])

    def forward(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor,
                plan: Optional[EffectPlan] = None) -> Tensor:
        """Effects ``[P, C, V]`` of dosages ``[C, V]`` under edge weights ``[P, E]``.

        ``plan`` (from :meth:`plan` for the same dosages and edges) is computed when not given.
        """
        if not self.batched:
            return self._forward_standard(dosage, edge_index, edge_weight)
        if plan is None:
            plan = self.plan(dosage, edge_index, dosage.shape[1])
        x = dosage.t().unsqueeze(1).expand(-1, edge_weight.shape[0], -1)  # [V, P, C]
        w = edge_weight.t()  # [E, P]
        out = None
        for layer, keep in zip(self.layers, plan.hop_edges):
            if keep is None:
                x = layer(x, edge_index, w)
            else:  # edges leaving nodes whose state is structurally zero carry nothing (exact)
                x = layer(x, edge_index[:, keep], w[keep])
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
