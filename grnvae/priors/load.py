"""One entry point for any prior reference (catalog name, path, DataFrame, networkx graph):
:func:`load_prior`, :func:`read_prior` and the recipe's :func:`load_recipe_prior`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from grnvae.errors import GRNError
from grnvae.grn import GRN
from grnvae.utils import PathLike
from grnvae.priors.values import _check_case
from grnvae.priors.readers import PriorReport, _LOADERS, _format_name, _load_networkx, sniff_format
from grnvae.priors.catalog import catalog, resolve_prior

logger = logging.getLogger(__name__)


def load_recipe_prior(gcfg) -> tuple[GRN, PriorReport]:
    """The prior network a recipe's ``grn`` section names (``prior``, ``prior_format``,
    ``prior_columns``, ``prior_strict``, ``prior_verify``)."""
    columns = {k: v for k, v in dict(gcfg.get("prior_columns") or {}).items() if v is not None}
    fmt = str(gcfg.get("prior_format") or "auto")
    if columns and fmt == "auto":
        fmt = "edgelist"
    return load_prior(gcfg.prior, format=fmt, strict=bool(gcfg.prior_strict),
                      allow_unverified=not bool(gcfg.prior_verify), **columns)


def load_prior(
    ref: PathLike | pd.DataFrame | nx.Graph,
    format: str = "auto",
    *,
    strict: bool = True,
    case: str | None = None,
    name: str | None = None,
    cache_dir: PathLike | None = None,
    allow_unverified: bool = False,
    **options: Any,
) -> tuple[GRN, PriorReport]:
    """Read a prior network and report on it: ``(GRN, PriorReport)``.

    ``ref`` is a catalog name (``trrust_human``, see :func:`catalog`; downloaded into the cache
    on first use, see :func:`download`), a file path, a DataFrame or a networkx graph.
    ``format`` is a reader name (:data:`FORMATS`) or ``"auto"`` (the catalog entry's format,
    else :func:`sniff_format`). ``options`` go to the reader (e.g. ``levels="AB"`` for
    DoRothEA, ``source=``/``target=`` for ``edgelist``, ``genes=`` for ``dense``); a catalog
    entry's ``options`` are defaults for them (and for ``case``, default ``"upper"``).
    """
    if isinstance(ref, nx.Graph):
        return _load_networkx(ref, strict=strict, case=_check_case(case or "upper"), name=name,
                              **options)
    entry = None
    if isinstance(ref, pd.DataFrame):
        target: Any = ref
    else:
        if isinstance(ref, str) and not Path(ref).expanduser().exists():
            try:
                entry = catalog().get(ref)
            except GRNError:  # no catalog: resolve_prior explains what is wrong with ref
                entry = None
        target = resolve_prior(ref, cache_dir=cache_dir, allow_unverified=allow_unverified)
    if entry is not None:
        options = {**entry.options, **options}
        if name is None:
            name = entry.name
    default_case = options.pop("case", "upper")
    case = _check_case(case if case is not None else default_case)
    if format == "auto":
        fmt = entry.format if entry is not None else sniff_format(target)
    else:
        fmt = _format_name(format)
    if fmt in ("graphml", "dense") and isinstance(target, pd.DataFrame):
        raise GRNError(f"format {fmt!r} reads files, not DataFrames")
    loader = _LOADERS[fmt]
    try:
        grn, report = loader(target, strict=strict, case=case, name=name, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise GRNError(f"reader {fmt!r}: {exc}") from None
        raise
    report.format = fmt
    logger.info("%s", report.summary())
    return grn, report


def read_prior(path: PathLike | pd.DataFrame | nx.Graph, format: str = "auto",
               **kwargs: Any) -> GRN:
    """:func:`load_prior` without the report."""
    return load_prior(path, format=format, **kwargs)[0]
