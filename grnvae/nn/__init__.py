"""Neural network building blocks: registries, effect layers, encoders, decoders."""

from . import layers  # noqa: F401  (registers the built-in effect layers)
from .effect import EffectModule, khop_rows, propagate
from .registry import LAYERS, Registry, import_plugins, register_layer

__all__ = ["EffectModule", "khop_rows", "propagate", "LAYERS", "Registry", "import_plugins", "register_layer"]
