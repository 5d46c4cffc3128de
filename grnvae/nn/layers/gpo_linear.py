"""The GPO-VAE effect layer: one linear hop of the dosages over the masked, weighted GRN."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn import MessagePassing

from ..registry import register_layer
from ..spmm import edge_matmul


@register_layer("gpo_linear")
class GPOLinear(MessagePassing):
    r"""Linear GRN propagation of GPO-VAE (Baek et al., Bioinformatics 2025).

    .. math::
        h'_j = \sum_{i \to j} m_{ij} w_{ij} \, h_i

    Over the complete graph with one-hot dosages ``h = d`` this is exactly ``D (E ⊙ M)``.
    The layer has no parameters of its own: edge masks and weights are sampled by the model
    and passed in as ``edge_weight``.

    Args:
        aggr (str): neighbourhood aggregation, ``"add"`` (GPO-VAE) or ``"mean"``.

    Shapes:
        - **input:** node states ``x`` ``[V, P, C]`` (nodes, particles, conditions),
          ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E, P]``
        - **output:** node states ``[V, P, C]``
    """

    #: called with particle-batched scalar states (see EffectModule)
    batched = True
    #: the output at a node is zero unless one of its in-neighbours' states is non-zero, with
    #: either aggregation (see EffectPlan)
    local_support = True

    def __init__(self, aggr: str = "add", **kwargs):
        super().__init__(aggr=aggr, node_dim=0, **kwargs)
        # with sum aggregation an edge whose source state is zero contributes nothing, so the
        # effect module may skip such edges (exact); not so for mean aggregation
        self.zero_preserving = aggr == "add"

    def reset_parameters(self) -> None:
        super().reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        if self.aggr == "add":
            # fused message + sum aggregation: one sparse-dense product per particle with the
            # transposed, weighted adjacency (same result as propagate, no [E, P, C] messages)
            V = x.size(0)
            out = [edge_matmul(edge_index, edge_weight[:, p], x[:, p], V) for p in range(x.size(1))]
            return torch.stack(out, dim=1)
        return self.propagate(edge_index, x=x, edge_weight=edge_weight)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return x_j * edge_weight.unsqueeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(aggr={self.aggr})"
