"""Built-in effect layers. Importing this package registers them."""

from .gpo_linear import GPOLinear

__all__ = ["GPOLinear"]
