"""grnvae: explainable perturbation-response VAEs over a learnable gene regulatory network.

Public API::

    import grnvae
    recipe = grnvae.load_recipe("recipes/quickstart.yaml", overrides=["train.max_epochs=5"])
    run = grnvae.train(recipe)
    run.grn().to_dataframe()          # learned edges with probability and weight
    grnvae.Run.load(run.path)         # reload a run directory
"""

__version__ = "0.1.0"

from importlib import import_module as _import_module

from .errors import DataError, GRNError, GRNVAEError, RecipeError, RegistryError, RunError

# the public names load on first use, so that the command line (and `import grnvae` itself)
# does not import torch, PyG and Lightning before a command needs them
_ATTRIBUTES = {
    "simulate": ".data.simulate", "GRN": ".grn", "GRNVAE": ".model", "ModelSpec": ".model",
    "register_layer": ".nn.registry", "load_recipe": ".recipe", "Run": ".run", "train": ".training",
    "Model": ".api",
}
_SUBMODULES = ("data", "evaluation", "explain", "nn", "plot", "priors")

__all__ = [
    "GRN", "GRNVAE", "Model", "ModelSpec", "Run", "evaluation", "explain", "plot", "priors", "load_recipe", "register_layer", "simulate", "train",
    "GRNVAEError", "RecipeError", "DataError", "GRNError", "RegistryError", "RunError",
]


def __getattr__(name: str):
    if name in _ATTRIBUTES:
        value = getattr(_import_module(_ATTRIBUTES[name], __name__), name)
    elif name in _SUBMODULES:
        value = _import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'grnvae' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_ATTRIBUTES) | set(_SUBMODULES))
