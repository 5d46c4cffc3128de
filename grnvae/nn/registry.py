"""Registries: recipes name components, the registries map names to classes.

Only registered names can be built from a recipe; there is no way to import an arbitrary path
from YAML. Plug-in modules listed under ``plugins:`` in a recipe are imported (by module name or
``.py`` file path) before the model is built, so their ``@register_layer`` lines take effect.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Dict, Generic, Iterable, List, Tuple, Type, TypeVar

from ..errors import RecipeError, RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> class table for one kind of component (effect layers, likelihoods, ...)."""

    def __init__(self, kind: str, recipe_key: str):
        self.kind = kind
        self.recipe_key = recipe_key
        self._items: Dict[str, Type[T]] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[Type[T]], Type[T]]:
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"a {self.kind} must be registered under a non-empty name, got {name!r}")

        def decorator(cls: Type[T]) -> Type[T]:
            if name in self._items and self._items[name] is not cls and not overwrite:
                raise RegistryError(
                    f"{self.kind} name {name!r} is already registered to "
                    f"{self._items[name].__module__}.{self._items[name].__qualname__}; "
                    f"choose another name or pass overwrite=True"
                )
            self._items[name] = cls
            cls.registered_name = name  # type: ignore[attr-defined]
            return cls

        return decorator

    def get(self, name: str) -> Type[T]:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._items), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r} in '{self.recipe_key}'{hint}; registered: "
                f"{', '.join(sorted(self._items))}. A new one is added with "
                f"@register_layer('{name}') in a module listed under 'plugins:' in the recipe"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> List[str]:
        return sorted(self._items)

    def describe(self) -> List[Tuple[str, str]]:
        """(name, first line of the class docstring) for each registered entry."""
        out = []
        for name in self.names():
            doc = (self._items[name].__doc__ or "").strip().splitlines()
            out.append((name, doc[0].strip() if doc else ""))
        return out


#: effect layers (torch_geometric MessagePassing subclasses) usable as ``model.effect.layer``
LAYERS: Registry = Registry("effect layer", "model.effect.layer")


def register_layer(name: str, *, overwrite: bool = False):
    """Class decorator: make a ``MessagePassing`` layer usable from recipes as ``name``.

    Two calling conventions (see :class:`grnvae.nn.EffectModule`):

    - a standard PyG layer is built as ``cls(in_channels, out_channels, **options)`` and called
      as ``layer(x [B*V, F], edge_index [2, B*E], edge_weight [B*E])`` over one copy of the GRN
      per particle and condition;
    - a layer with the class attribute ``batched = True`` is built as ``cls(**options)`` and
      called as ``layer(x, edge_index, edge_weight)`` with ``x`` of shape ``[V, P, C]`` (nodes,
      particles, conditions; scalar states, conditions independent of each other) and
      ``edge_weight`` of shape ``[E, P]`` (the sampled mask times weight of each edge in each
      particle); it returns node states of shape ``[V, P, C]``.

    A batched layer may also declare, as attributes, promises that enable exact fast paths:

    - ``local_support = True``: its output at a node is zero whenever the states of all of the
      node's in-neighbours are zero (no bias, no self term beyond explicit self-loop edges),
      and it reads no weight of an edge whose source state is zero (such weights may be left
      at 0 in a training step); effects are then tracked only where they can be non-zero;
    - ``zero_preserving = True`` (with ``local_support``): the output is a sum of per-edge
      messages that vanish with their source's state, so edges out of zero states are skipped
      and the layer may be run over (condition, node) pairs instead of the whole graph.

    Declaring either wrongly gives wrong effects; leave them out when unsure (the dense path is
    always correct).
    """
    return LAYERS.register(name, overwrite=overwrite)


def import_plugins(plugins: Iterable[str], base: Path | None = None) -> None:
    """Import plug-in modules named in a recipe (module names or paths to ``.py`` files). Two
    files of one name are refused (a run keeps its plug-ins by file name in ``RUN/plugins``); a
    file whose name an earlier, different file took in this process is imported under a name of
    its own."""
    plugins = [str(p) for p in plugins]
    names = [Path(p).name for p in plugins if p.endswith(".py")]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise RecipeError(f"plugins: two files named {twice[0]!r} ({', '.join(p for p in plugins if Path(p).name == twice[0])}); "
                          f"a run keeps its plug-in files by name, so rename one")
    for ref in plugins:
        if ref.endswith(".py"):
            path = Path(ref)
            if not path.is_absolute() and base is not None:
                path = base / path
            if not path.is_file():
                raise RecipeError(f"plugins: file {ref!r} not found; give a path to a .py file or a module name")
            mod_name = f"grnvae_plugin_{path.stem}"
            loaded = sys.modules.get(mod_name)
            if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != path.resolve():
                import hashlib

                mod_name += "_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            except Exception as exc:
                del sys.modules[mod_name]
                raise RecipeError(f"plugins: importing {path} failed: {exc}") from exc
        else:
            try:
                importlib.import_module(ref)
            except ImportError as exc:
                raise RecipeError(f"plugins: cannot import module {ref!r}: {exc}") from exc
