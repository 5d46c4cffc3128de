"""Attention effect layer whose messages are scaled by the sampled edge weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax

from ..registry import register_layer


@register_layer("gat")
class GATEffect(MessagePassing):
    r"""Graph attention (Veličković et al., ICLR 2018) over the sampled GRN edges.

    .. math::
        h'_j = \Theta h_j + \sum_{i \to j} \alpha_{ij} \, w_{ij} \, \Theta h_i, \qquad
        \alpha_{ij} = \operatorname{softmax}_i\big(\mathrm{LeakyReLU}(a^\top [\Theta h_i \,\|\,
        \Theta h_j \,\|\, w_{ij}])\big)

    Attention decides how much each regulator matters to a target; the sampled ``m * w`` scales
    each message, so an edge whose mask is 0 sends nothing while gradients still reach it.

    Args:
        in_channels (int): input features per node.
        out_channels (int): output features per node (per head).
        heads (int): attention heads, averaged.
        negative_slope (float): LeakyReLU slope of the attention logits.

    Shapes:
        - **input:** ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E]``
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1,
                 negative_slope: float = 0.2, **kwargs):
        super().__init__(aggr="add", node_dim=0, **kwargs)
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.negative_slope = negative_slope
        self.lin = Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))
        self.att_edge = Parameter(torch.empty(1, heads))
        self.bias = Parameter(torch.empty(out_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin.reset_parameters()
        for p in (self.att_src, self.att_dst):
            torch.nn.init.xavier_uniform_(p)
        torch.nn.init.normal_(self.att_edge, std=0.1)
        torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        H, Co = self.heads, self.out_channels
        h = self.lin(x).view(-1, H, Co)
        a_src = (h * self.att_src).sum(-1)
        a_dst = (h * self.att_dst).sum(-1)
        out = self.propagate(edge_index, x=h, a_src=a_src, a_dst=a_dst, edge_weight=edge_weight)
        return (out + h).mean(dim=1) + self.bias

    def message(self, x_j: Tensor, a_src_j: Tensor, a_dst_i: Tensor, edge_weight: Tensor,
                index: Tensor, ptr, size_i) -> Tensor:
        logits = a_src_j + a_dst_i + edge_weight.unsqueeze(-1) * self.att_edge
        alpha = softmax(F.leaky_relu(logits, self.negative_slope), index, ptr, size_i)
        return x_j * (alpha * edge_weight.unsqueeze(-1)).unsqueeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
