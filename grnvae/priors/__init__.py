"""Prior-knowledge gene regulatory networks: read, check, match to a data set, download.

The package's modules: :mod:`~grnvae.priors.values` (cell values: symbols, signs, confidences),
:mod:`~grnvae.priors.readers` (the table pipeline and one loader per format),
:mod:`~grnvae.priors.load` (any reference -> GRN), :mod:`~grnvae.priors.matching` (genes -> a
data set) and :mod:`~grnvae.priors.catalog` (public networks, cache, download). Everything
public is importable from ``grnvae.priors``.

A *prior* is a curated regulator -> target network (TRRUST, DoRothEA, CollecTRI, RegNetwork, a
GraphML file, GPO-VAE's dense adjacency, any TSV/CSV edge list). Every reader returns a
:class:`grnvae.GRN` over normalised gene symbols whose edge attributes are, where the format has
them:

``sign``
    +1 activation, -1 repression, 0 unknown (float).
``confidence``
    a float in [0, 1]. DoRothEA levels map to A = 1.0, B = 0.8, C = 0.6, D = 0.4, E = 0.2
    (:data:`DOROTHEA_CONFIDENCE`); RegNetwork-style words to High = 1.0, Medium = 0.6,
    Low = 0.2; numbers must already lie in [0, 1].
``weight``
    the file's numeric weight (CollecTRI's mode of regulation, a dense matrix entry, ...).

Gene symbols are stripped of whitespace and, with ``case="upper"`` (the default), upper-cased:
HGNC (human) symbols are upper case, so this only canonicalises stray spellings
(``C1orf112`` becomes ``C1ORF112``). Mouse symbols are capitalised (``Trp53``); read a mouse
prior with ``case="keep"`` to keep them, or rely on :func:`match_genes`, which matches case
insensitively and renames prior genes to the data set's spelling either way.

The same regulator -> target pair listed on several rows (TRRUST has one row per regulation
type, many files one row per reference) becomes one edge: ``sign`` is the sign the rows agree
on (rows with sign 0 carry no information), 0 if some rows say +1 and others -1;
``confidence`` is the maximum, ``weight`` the mean. The merged row count is reported.

Malformed rows -- a missing field, a value that is not a gene symbol (``#NAME?``, ``#N/A``,
empty, an Excel date such as ``2-Sep``), an unparseable sign, confidence or weight -- are
reported with the file name and the 1-based line number. ``strict=True`` (the default) raises
:class:`grnvae.errors.GRNError` naming the first of them; ``strict=False`` skips them and logs a
warning with the first few line numbers. A line whose first character is the comment
character is skipped, except Excel error values such as ``#NAME?`` or ``#N/A`` in the first
column, which are data (and malformed).

The ``read_*`` functions return only the :class:`~grnvae.GRN`; :func:`load_prior` returns
``(grn, PriorReport)`` for any reference (catalog name, path, DataFrame, networkx graph).

Public networks are listed in ``priors/catalog.yaml`` (:func:`catalog`); :func:`download`
fetches one into a cache directory and verifies its SHA-256 checksum; :func:`resolve_prior`
turns a catalog name or a path into a local file.
"""

from __future__ import annotations

from typing import Any

from grnvae.priors import readers as _readers
from grnvae.priors.catalog import (CatalogEntry, catalog, catalog_path, default_cache_dir, download,
                                   resolve_prior)
from grnvae.priors.load import load_prior, load_recipe_prior, read_prior
from grnvae.priors.matching import MatchReport, match_genes
from grnvae.priors.readers import (PriorReport, from_networkx, read_collectri, read_dense, read_dorothea,
                                   read_edgelist, read_graphml, read_regnetwork, read_trrust,
                                   register_prior_format, sniff_format)
from grnvae.priors.values import DOROTHEA_CONFIDENCE, WORD_CONFIDENCE, normalize_symbol

__all__ = [
    "DOROTHEA_CONFIDENCE",
    "FORMATS",
    "WORD_CONFIDENCE",
    "CatalogEntry",
    "MatchReport",
    "PriorReport",
    "catalog",
    "catalog_path",
    "default_cache_dir",
    "download",
    "from_networkx",
    "load_prior",
    "load_recipe_prior",
    "match_genes",
    "normalize_symbol",
    "read_collectri",
    "read_dense",
    "read_dorothea",
    "read_edgelist",
    "read_graphml",
    "read_prior",
    "read_regnetwork",
    "read_trrust",
    "register_prior_format",
    "resolve_prior",
    "sniff_format",
]


def __getattr__(name: str) -> Any:
    # FORMATS grows when a plug-in registers a reader: always read the registry's current tuple
    if name == "FORMATS":
        return _readers.FORMATS
    raise AttributeError(f"module 'grnvae.priors' has no attribute {name!r}")
