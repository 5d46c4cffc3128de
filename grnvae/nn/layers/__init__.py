"""Built-in effect layers (one per file, PyG style). Importing this package registers them."""

from .gat import GATEffect
from .gcn import GCNEffect
from .gin import GINEffect
from .gpo_linear import GPOLinear
from .graphconv import GraphConvEffect

__all__ = ["GATEffect", "GCNEffect", "GINEffect", "GPOLinear", "GraphConvEffect"]
