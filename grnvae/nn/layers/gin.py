"""Graph isomorphism effect layer with weighted neighbour sums."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import LeakyReLU, Linear, Parameter, Sequential
from torch_geometric.nn import MessagePassing

from ..registry import register_layer


@register_layer("gin")
class GINEffect(MessagePassing):
    r"""Graph isomorphism network layer (Xu et al., ICLR 2019) with weighted sums.

    .. math::
        h'_j = \mathrm{MLP}\Big((1 + \epsilon) h_j + \sum_{i \to j} w_{ij} h_i\Big)

    Args:
        in_channels (int): input features per node.
        out_channels (int): output features per node.
        hidden (int): width of the two-layer MLP.
        train_eps (bool): learn epsilon (else 0).

    Shapes:
        - **input:** ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E]``
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 16, train_eps: bool = True, **kwargs):
        super().__init__(aggr="add", **kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mlp = Sequential(Linear(in_channels, hidden), LeakyReLU(), Linear(hidden, out_channels))
        self.eps = Parameter(torch.zeros(1), requires_grad=train_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for m in self.mlp:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        torch.nn.init.zeros_(self.eps)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        agg = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        return self.mlp((1 + self.eps) * x + agg)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
