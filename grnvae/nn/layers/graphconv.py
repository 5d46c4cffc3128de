"""GraphConv effect layer: PyG's GraphConv with the sampled edge weights."""

from __future__ import annotations

from torch_geometric.nn import GraphConv

from ..registry import register_layer


@register_layer("graphconv")
class GraphConvEffect(GraphConv):
    r"""Higher-order graph convolution (Morris et al., AAAI 2019), PyG's ``GraphConv``.

    .. math::
        h'_j = \Theta_1 h_j + \Theta_2 \sum_{i \to j} w_{ij} h_i

    Args:
        in_channels (int), out_channels (int), aggr (str, default ``"add"``) as in PyG.

    Shapes:
        - **input:** ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E]``
        - **output:** ``[N, out_channels]``
    """
