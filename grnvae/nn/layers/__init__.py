"""Built-in effect layers (one per file, PyG style). Importing this package registers them."""

import atexit
import os
import sys
import tempfile

from .gat import GATEffect
from .gcn import GCNEffect
from .gin import GINEffect
from .gpo_linear import GPOLinear
from .graphconv import GraphConvEffect

__all__ = ["GATEffect", "GCNEffect", "GINEffect", "GPOLinear", "GraphConvEffect"]


def _remove_generated_modules() -> None:
    """PyG writes each message-passing class's generated ``propagate`` (and ``edge_updater``) to a
    file of its own in the temp folder and leaves it there; at exit, remove the ones this process
    wrote, so that runs do not pile them up."""
    tmp = os.path.realpath(tempfile.gettempdir())
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if (path and name.endswith(("_propagate", "_edge_updater"))
                and os.path.realpath(os.path.dirname(path)) == tmp
                and os.path.basename(path).startswith(name + "_")):
            try:
                os.unlink(path)
            except OSError:
                pass


atexit.register(_remove_generated_modules)
