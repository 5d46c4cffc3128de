"""GCN-style effect layer with signed, learned edge weights."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Linear, Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from ..registry import register_layer


@register_layer("gcn")
class GCNEffect(MessagePassing):
    r"""Graph convolution (Kipf & Welling, ICLR 2017) over the sampled GRN edges.

    .. math::
        h'_j = \Theta \Big( \frac{h_j}{d_j} + \sum_{i \to j} \frac{w_{ij}}{\sqrt{d_i d_j}} h_i \Big) + b,
        \qquad d_j = 1 + \sum_{i \to j} |w_{ij}|

    The symmetric normalisation uses absolute weights, so negative (repressive) edges are safe.

    Args:
        in_channels (int): input features per node.
        out_channels (int): output features per node.
        bias (bool): learn an additive bias.

    Shapes:
        - **input:** ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E]``
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, **kwargs):
        super().__init__(aggr="add", **kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin = Linear(in_channels, out_channels, bias=False)
        self.bias = Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin.reset_parameters()
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        deg = 1.0 + scatter(edge_weight.abs(), edge_index[1], dim=0, dim_size=x.size(0), reduce="sum")
        inv_sqrt = deg.rsqrt()
        norm = inv_sqrt[edge_index[0]] * edge_weight * inv_sqrt[edge_index[1]]
        h = self.lin(x)
        out = self.propagate(edge_index, x=h, norm=norm) + h / deg.unsqueeze(-1)
        return out if self.bias is None else out + self.bias

    def message(self, x_j: Tensor, norm: Tensor) -> Tensor:
        return norm.unsqueeze(-1) * x_j

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels})"
