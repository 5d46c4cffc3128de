"""Exceptions raised by grnvae.

Every error grnvae raises on bad input is a :class:`GRNVAEError`: its message says what was
wrong, where (file, column, key, value) and how to fix it, in one line where possible.
"""


class GRNVAEError(Exception):
    """Base class of all grnvae errors."""


class RecipeError(GRNVAEError, ValueError):
    """A recipe is malformed: unknown key, wrong type, missing value, bad reference."""


class DataError(GRNVAEError, ValueError):
    """Input data (h5ad, AnnData, counts, labels) cannot be used as given."""


class GRNError(GRNVAEError, ValueError):
    """A gene regulatory network is malformed or does not fit the data."""


class RegistryError(GRNVAEError, KeyError):
    """A component name is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class RunError(GRNVAEError, RuntimeError):
    """A run directory is missing, incomplete or cannot be written."""
