"""grnvae: explainable perturbation-response VAEs over a learnable gene regulatory network.

Public API::

    import grnvae
    recipe = grnvae.load_recipe("recipes/quickstart.yaml", overrides=["train.max_epochs=5"])
    run = grnvae.train(recipe)
    run.grn().to_dataframe()          # learned edges with probability and weight
    grnvae.Run.load(run.path)         # reload a run directory
"""

__version__ = "0.1.0"

from . import evaluation, nn, plot, priors  # noqa: F401  (nn registers the built-in layers)
from .data.simulate import simulate
from .errors import DataError, GRNError, GRNVAEError, RecipeError, RegistryError, RunError
from .grn import GRN
from .model import GRNVAE, ModelSpec
from .nn.registry import register_layer
from .recipe import load_recipe
from .training import Run, train

__all__ = [
    "GRN", "GRNVAE", "ModelSpec", "Run", "evaluation", "plot", "priors", "load_recipe", "register_layer", "simulate", "train",
    "GRNVAEError", "RecipeError", "DataError", "GRNError", "RegistryError", "RunError",
]
