"""The gene regulatory network (GRN) as a first-class PyTorch Geometric graph.

A :class:`GRN` is an immutable, directed graph over an ordered list of genes. Node ``i`` is
gene ``genes[i]``; an edge ``(s, t)`` says "regulator ``genes[s]`` may act on target
``genes[t]``". Edges are kept *coalesced*: sorted by ``(source, target)`` with no duplicates,
so edge ``k`` means the same thing every time the same network is loaded. Per-edge data that
comes with the network (prior weights, signs, confidences, ...) travels as named 1-D edge
attributes.

The GRN holds no learnable state. A model that learns, say, a probability or a weight per
edge owns those parameters itself (one entry per edge, in GRN edge order) and hands them back
through the ``extra=`` argument of the exporters (:meth:`GRN.to_dataframe`,
:meth:`GRN.to_tsv`, :meth:`GRN.to_networkx`, :meth:`GRN.to_graphml`) to write them next to
the gene names.

:attr:`GRN.data` is a :class:`torch_geometric.data.Data` that can be handed straight to PyG
layers; constructors read edge lists (pandas frames, TSV/CSV files, optionally gzipped),
networkx graphs and dense matrices. Everything that can go wrong with the input raises
:class:`grnvae.errors.GRNError` with a one-line message saying what is wrong and how to fix it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from grnvae.errors import GRNError
from grnvae.tables import read_table, split_suffix, stem
from grnvae.utils import PathLike, atomic_write

__all__ = ["GRN"]

logger = logging.getLogger(__name__)

ArrayLike = Any  # numpy array, torch tensor, pandas Series, list, ...

# Names a torch_geometric ``Data`` uses for its own methods/properties cannot be edge
# attribute names (``data.size`` would stay the method); these two are plain stored keys.
_DATA_SAFE_NAMES = frozenset({"edge_weight", "edge_attr"})
_RESERVED_NAMES = frozenset({"source", "target", "gene_names", "num_nodes", "edge_index"})
def _preview(items: Iterable[Any], limit: int = 5) -> str:
    """``'a', 'b', 'c' (+4 more)`` for error messages."""
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _check_attr_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise GRNError(f"{where}: edge attribute names must be non-empty strings, got {name!r}")
    if name in _RESERVED_NAMES:
        raise GRNError(
            f"{where}: edge attribute name {name!r} is reserved "
            f"({', '.join(sorted(_RESERVED_NAMES))}); rename it"
        )
    if hasattr(Data, name) and name not in _DATA_SAFE_NAMES:
        raise GRNError(
            f"{where}: edge attribute name {name!r} clashes with "
            f"torch_geometric.data.Data.{name}; rename it (e.g. {name + '_'!r})"
        )
    if "index" in name:
        raise GRNError(
            f"{where}: edge attribute name {name!r} contains 'index', which PyG offsets by the "
            f"node count when batching graphs; rename it (e.g. {name.replace('index', 'idx')!r})"
        )
    return name


def _as_edge_attr(name: str, values: ArrayLike, num_edges: int, where: str) -> torch.Tensor:
    """Validate one edge attribute: 1-D, length E, bool or float (default dtype), on CPU."""
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    try:
        tensor = torch.as_tensor(values).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise GRNError(
            f"{where}: edge attribute {name!r} cannot be made a tensor ({exc}); "
            "pass a 1-D float or bool array"
        ) from None
    if tensor.dim() != 1 or tensor.shape[0] != num_edges:
        raise GRNError(
            f"{where}: edge attribute {name!r} has shape {tuple(tensor.shape)}, expected "
            f"({num_edges},) (one value per edge); pass a 1-D array of length {num_edges}"
        )
    if tensor.dtype == torch.bool:
        return tensor
    if tensor.is_complex():
        raise GRNError(f"{where}: edge attribute {name!r} is complex; pass real (float) values")
    return tensor.to(torch.get_default_dtype())


def _fill(dtype: torch.dtype, n: int) -> torch.Tensor:
    """Missing values: NaN for float attributes, False for bool ones."""
    if dtype == torch.bool:
        return torch.zeros(n, dtype=torch.bool)
    return torch.full((n,), math.nan, dtype=dtype)


class GRN:
    """An immutable, directed gene regulatory network over an ordered list of genes.

    Edges are coalesced on construction: sorted by ``(source, target)`` (source-major) and
    de-duplicated, keeping the attributes of the *first* occurrence of each edge. The result is
    deterministic. All tensors are stored on the CPU; move ``grn.data`` to a device if needed.

    Parameters
    ----------
    genes : sequence of str, length V
        Unique gene names; node ``i`` is ``genes[i]``.
    edge_index : LongTensor, shape [2, E]
        Row 0 holds the regulator (source) index, row 1 the target index, both in ``[0, V)``.
        Any integer tensor or array-like is accepted and converted to ``torch.long``.
    edge_attr : dict of str -> Tensor of shape [E], optional
        Named per-edge attributes, aligned with the columns of ``edge_index``. Bool tensors stay
        bool; everything else is stored as ``torch.get_default_dtype()`` floats (NaN = missing).
        Names may not clash with ``torch_geometric.data.Data`` members (``size``, ``x``, ...),
        ``source``/``target``/``gene_names``, nor contain ``'index'``.
    name : str, optional
        A label used in messages, ``repr`` and exports.

    Attributes
    ----------
    genes : tuple of str, length V
    name : str or None
    num_nodes : int (V)
    num_edges : int (E)
    edge_index : LongTensor, shape [2, E], coalesced
    edge_attr : dict of str -> Tensor of shape [E] (a fresh dict; tensors are shared)
    data : torch_geometric.data.Data
        ``edge_index``, ``num_nodes``, each edge attribute under its own name and
        ``gene_names`` (list of str).

    Raises
    ------
    GRNError
        On duplicate or non-string gene names, a malformed or out-of-range ``edge_index`` or an
        edge attribute of the wrong shape, type or name.

    Notes
    -----
    Do not modify the returned tensors in place: they are shared with the GRN.
    """

    def __init__(
        self,
        genes: Sequence[str],
        edge_index: torch.Tensor | ArrayLike,
        edge_attr: Mapping[str, torch.Tensor | ArrayLike] | None = None,
        name: str | None = None,
    ) -> None:
        self._name = None if name is None else str(name)
        where = f"GRN {self._name!r}" if self._name else "GRN"
        self._genes = self._check_genes(genes, where)
        self._index = {g: i for i, g in enumerate(self._genes)}
        num_nodes = len(self._genes)

        edge_index = self._check_edge_index(edge_index, num_nodes, where)
        num_edges = edge_index.shape[1]

        if edge_attr is None:
            edge_attr = {}
        if not isinstance(edge_attr, Mapping):
            raise GRNError(
                f"{where}: edge_attr must be a dict name -> 1-D tensor, got "
                f"{type(edge_attr).__name__}"
            )
        attrs = {
            _check_attr_name(key, where): _as_edge_attr(key, value, num_edges, where)
            for key, value in edge_attr.items()
        }

        # Coalesce: stable sort by source-major key, keep the first of each run of equal keys.
        if num_edges:
            key = edge_index[0] * max(num_nodes, 1) + edge_index[1]
            key, order = torch.sort(key, stable=True)
            keep = torch.ones(num_edges, dtype=torch.bool)
            keep[1:] = key[1:] != key[:-1]
            order = order[keep]
            dropped = num_edges - int(order.numel())
            if dropped:
                dup = int(key[~keep][0])
                src, dst = divmod(dup, max(num_nodes, 1))
                logger.warning(
                    "%s: dropped %d duplicate edge(s), keeping the first occurrence's "
                    "attributes (e.g. %s -> %s; %d edges remain)",
                    where, dropped, self._genes[src], self._genes[dst], order.numel(),
                )
            if dropped or not bool(torch.equal(order, torch.arange(num_edges))):
                edge_index = edge_index[:, order]
                attrs = {k: v[order] for k, v in attrs.items()}
        self._edge_index = edge_index.contiguous()
        self._edge_attr = {k: v.contiguous() for k, v in attrs.items()}

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _check_genes(genes: Sequence[str], where: str) -> tuple[str, ...]:
        if isinstance(genes, (str, bytes)) or not isinstance(genes, Iterable):
            raise GRNError(
                f"{where}: genes must be a sequence of gene names, got {type(genes).__name__}; "
                "wrap a single name in a list"
            )
        genes = tuple(genes)
        bad = [g for g in genes if not isinstance(g, str) or not g]
        if bad:
            raise GRNError(
                f"{where}: gene names must be non-empty strings, got {_preview(bad)}; "
                "convert them with str() first"
            )
        genes = tuple(str(g) for g in genes)  # np.str_ -> str
        if len(set(genes)) != len(genes):
            seen: set[str] = set()
            dups = []
            for g in genes:
                if g in seen and g not in dups:
                    dups.append(g)
                seen.add(g)
            raise GRNError(
                f"{where}: duplicate gene names {_preview(dups)}; each gene must appear once "
                "(de-duplicate the list, e.g. with dict.fromkeys)"
            )
        return genes

    @staticmethod
    def _check_edge_index(edge_index: Any, num_nodes: int, where: str) -> torch.Tensor:
        try:
            tensor = torch.as_tensor(edge_index).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise GRNError(
                f"{where}: edge_index cannot be made a tensor ({exc}); pass a LongTensor [2, E]"
            ) from None
        if tensor.numel() == 0 and tensor.dim() <= 2:
            tensor = tensor.reshape(2, 0)
        if tensor.dim() != 2 or tensor.shape[0] != 2:
            raise GRNError(
                f"{where}: edge_index has shape {tuple(tensor.shape)}, expected [2, E] "
                "(row 0 = source, row 1 = target); transpose an [E, 2] array with .T"
            )
        if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
            raise GRNError(
                f"{where}: edge_index has dtype {tensor.dtype}, expected an integer type; "
                "convert it with .long()"
            )
        tensor = tensor.long()
        if tensor.numel():
            lo, hi = int(tensor.min()), int(tensor.max())
            if lo < 0 or hi >= num_nodes:
                bad = tensor[(tensor < 0) | (tensor >= num_nodes)].unique().tolist()
                raise GRNError(
                    f"{where}: edge_index has node indices {_preview(bad)} outside [0, "
                    f"{num_nodes}) for {num_nodes} genes; every index must point into `genes`"
                )
        return tensor

    # ------------------------------------------------------------------ basic properties
    @property
    def genes(self) -> tuple[str, ...]:
        """Gene names in node order (length V)."""
        return self._genes

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def num_nodes(self) -> int:
        return len(self._genes)

    @property
    def num_edges(self) -> int:
        return int(self._edge_index.shape[1])

    @property
    def edge_index(self) -> torch.Tensor:
        """LongTensor [2, E]: sources in row 0, targets in row 1, sorted by (source, target)."""
        return self._edge_index

    @property
    def edge_attr(self) -> dict[str, torch.Tensor]:
        """Edge attributes, name -> Tensor [E] (a new dict each call; tensors are shared)."""
        return dict(self._edge_attr)

    @property
    def data(self) -> Data:
        """A :class:`torch_geometric.data.Data` view of the network.

        Holds ``edge_index`` [2, E], ``num_nodes`` V, each edge attribute as a tensor [E] under
        its own name and ``gene_names`` (list of str). A new ``Data`` is built on each access
        (cheap; the tensors are shared), so adding fields to it does not change the GRN.
        """
        data = Data(edge_index=self._edge_index, num_nodes=self.num_nodes)
        for key, value in self._edge_attr.items():
            data[key] = value
        data.gene_names = list(self._genes)
        return data

    @property
    def density(self) -> float:
        """E / V**2 (self loops count as possible edges); 0.0 for an empty GRN."""
        return self.num_edges / (self.num_nodes**2) if self.num_nodes else 0.0

    def has_self_loops(self) -> bool:
        return bool((self._edge_index[0] == self._edge_index[1]).any())

    def __len__(self) -> int:
        return self.num_nodes

    def __contains__(self, gene: object) -> bool:
        return gene in self._index

    def __repr__(self) -> str:
        return (
            f"GRN(name={self._name!r}, nodes={self.num_nodes}, edges={self.num_edges}, "
            f"attrs={list(self._edge_attr)})"
        )

    # ------------------------------------------------------------------ gene lookup
    def _unknown(self, unknown: Sequence[Any]) -> GRNError:
        label = f"GRN {self._name!r}" if self._name else "the GRN"
        return GRNError(
            f"{len(unknown)} gene(s) not in {label} ({self.num_nodes} genes): "
            f"{_preview(unknown)}; check spelling/case or take a subgraph of known genes"
        )

    def index_of(self, gene: str) -> int:
        """Node index of ``gene``; raises :class:`GRNError` if it is not in the network."""
        try:
            return self._index[gene]
        except (KeyError, TypeError):
            raise self._unknown([gene]) from None

    def indices(self, genes: Iterable[str]) -> torch.Tensor:
        """LongTensor [len(genes)] of node indices; :class:`GRNError` names unknown genes."""
        if isinstance(genes, str):
            raise GRNError(f"indices() takes a list of genes, got the string {genes!r}; "
                           "use index_of() for a single gene")
        genes = list(genes)
        unknown = [g for g in genes if not isinstance(g, str) or g not in self._index]
        if unknown:
            raise self._unknown(unknown)
        return torch.tensor([self._index[g] for g in genes], dtype=torch.long)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def _from_names(
        cls,
        genes: Sequence[str] | None,
        sources: Sequence[str],
        targets: Sequence[str],
        attrs: dict[str, torch.Tensor],
        name: str | None,
        where: str,
    ) -> GRN:
        """Build from per-edge gene names, dropping (with a warning) edges off ``genes``."""
        sources = list(sources)
        targets = list(targets)
        if genes is None:
            node_list = sorted(set(sources) | set(targets))
        else:
            if isinstance(genes, str):
                raise GRNError(f"{where}: genes must be a list of gene names, got a string")
            node_list = [g.strip() if isinstance(g, str) else g for g in genes]
            node_list = list(cls._check_genes(node_list, where))
        index = {g: i for i, g in enumerate(node_list)}
        src = np.fromiter((index.get(s, -1) for s in sources), dtype=np.int64, count=len(sources))
        dst = np.fromiter((index.get(t, -1) for t in targets), dtype=np.int64, count=len(targets))
        keep = (src >= 0) & (dst >= 0)
        dropped = int((~keep).sum())
        if dropped:
            off = sorted({g for g in sources + targets if g not in index})
            logger.warning(
                "%s: dropped %d of %d edges whose source or target is not in `genes` "
                "(%d unknown genes, e.g. %s)",
                where, dropped, len(sources), len(off), _preview(off),
            )
            mask = torch.from_numpy(keep)
            attrs = {k: v[mask] for k, v in attrs.items()}
        edge_index = torch.from_numpy(np.stack([src[keep], dst[keep]]))
        return cls(node_list, edge_index, attrs, name=name)

    @classmethod
    def from_edgelist(
        cls,
        edges: pd.DataFrame | PathLike,
        source: str = "source",
        target: str = "target",
        genes: Sequence[str] | None = None,
        attrs: Sequence[str] | None = None,
        name: str | None = None,
        sep: str | None = None,
    ) -> GRN:
        """Read a GRN from an edge list: a DataFrame or a TSV/CSV file (optionally compressed).

        Parameters
        ----------
        edges : DataFrame or path
            One row per edge. For a path, the separator is taken from the extension
            (``.tsv``/``.txt``/``.tab`` -> tab, ``.csv`` -> comma, else sniffed) after removing a
            compression suffix (``.gz``, ``.bz2``, ``.xz``).
        source, target : str
            Columns holding regulator and target gene names (whitespace is stripped).
        genes : sequence of str, optional
            Node order. Edges touching other genes are dropped, with a logged warning. Default:
            the sorted union of sources and targets.
        attrs : sequence of str, optional
            Columns to carry as edge attributes. Default: every numeric or bool column other
            than ``source``/``target`` (and pandas' ``Unnamed: N`` index columns). Bool
            columns stay bool, others become floats (empty / ``NA`` cells -> NaN).
        name : str, optional
            Default: the file name without extensions (None for a DataFrame).
        sep : str, optional
            Separator override for files.
        """
        if isinstance(edges, pd.DataFrame):
            where = "edge list DataFrame"
            frame = edges
        elif isinstance(edges, (str, os.PathLike)):
            path = Path(edges)
            where = f"edge list {str(path)!r}"
            if not path.is_file():
                raise GRNError(f"{where}: no such file; check the path")
            frame = read_table(path, gene_columns=(source, target), sep=sep, where=where)
            if name is None:
                name = stem(path)
        else:
            raise GRNError(
                f"from_edgelist: edges must be a pandas DataFrame or a file path, got "
                f"{type(edges).__name__}"
            )

        columns = [str(c) for c in frame.columns]
        wanted = [source, target] + ([] if attrs is None else list(attrs))
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise GRNError(
                f"{where}: missing column(s) {_preview(missing)}; available columns: "
                f"{_preview(columns, limit=20)} (pass source=/target=/attrs= to pick columns)"
            )
        if attrs is None:
            attrs = [
                c for c in frame.columns
                if c not in (source, target)
                and not str(c).startswith("Unnamed:")  # a saved pandas index
                and (pd.api.types.is_numeric_dtype(frame[c])
                     or pd.api.types.is_bool_dtype(frame[c]))
            ]
        if isinstance(attrs, str):
            attrs = [attrs]

        names = {}
        for role, col in (("source", source), ("target", target)):
            values = frame[col]
            missing_rows = np.flatnonzero(values.isna().to_numpy())
            stripped = values.astype(str).str.strip()
            empty_rows = np.flatnonzero((stripped == "").to_numpy())
            bad_rows = np.union1d(missing_rows, empty_rows)
            if bad_rows.size:
                raise GRNError(
                    f"{where}: {bad_rows.size} row(s) have no {role} gene in column {col!r} "
                    f"(rows {_preview(bad_rows.tolist())}, 0-based data rows); fill or drop them"
                )
            names[role] = stripped.tolist()

        num_edges = len(frame)
        tensors: dict[str, torch.Tensor] = {}
        for col in attrs:
            key = _check_attr_name(str(col), where)
            series = frame[col]
            if pd.api.types.is_bool_dtype(series) and not series.isna().any():
                values = series.to_numpy(dtype=bool)
            else:
                try:
                    values = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64)
                except (ValueError, TypeError):
                    bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
                    raise GRNError(
                        f"{where}: column {col!r} is not numeric (e.g. {_preview(bad.unique())}); "
                        "leave it out of attrs= or clean the values"
                    ) from None
            tensors[key] = _as_edge_attr(key, values, num_edges, where)

        return cls._from_names(genes, names["source"], names["target"], tensors, name, where)

    @classmethod
    def from_networkx(
        cls,
        graph: nx.Graph,
        genes: Sequence[str] | None = None,
        attrs: Sequence[str] | None = None,
        name: str | None = None,
    ) -> GRN:
        """Build a GRN from a networkx graph.

        Directed graphs keep edge directions; an undirected edge ``{u, v}`` becomes both
        ``u -> v`` and ``v -> u``. Node names are converted with ``str()`` and stripped.

        Parameters
        ----------
        graph : networkx.Graph / DiGraph (Multi* graphs: parallel edges are coalesced)
        genes : sequence of str, optional
            Node order; edges touching other nodes are dropped with a logged warning.
            Default: the graph's nodes in its iteration order (isolated nodes included).
        attrs : sequence of str, optional
            Edge data keys to carry. Default: every key whose values are all numbers
            (bool keys whose values are all bool stay bool). Edges lacking a key get NaN
            (False for bool).
        name : str, optional
            Default: ``graph.graph["name"]`` when set.
        """
        if not isinstance(graph, nx.Graph):
            raise GRNError(f"from_networkx: expected a networkx graph, got {type(graph).__name__}")
        where = "networkx graph"
        if name is None and graph.graph.get("name"):
            name = str(graph.graph["name"])
        if genes is None:
            genes = [str(n).strip() for n in graph.nodes]

        edge_data = list(graph.edges(data=True))
        if not graph.is_directed():
            edge_data = edge_data + [(v, u, d) for u, v, d in edge_data if u != v]
        sources = [str(u).strip() for u, _, _ in edge_data]
        targets = [str(v).strip() for _, v, _ in edge_data]

        def is_number(x: Any) -> bool:
            return isinstance(x, (int, float, np.integer, np.floating, np.bool_))

        keys: list[str] = list(dict.fromkeys(k for _, _, d in edge_data for k in d))
        if attrs is None:
            attrs = [k for k in keys
                     if all(is_number(d[k]) for _, _, d in edge_data if k in d)]
        else:
            unknown = [k for k in attrs if k not in keys]
            if unknown:
                raise GRNError(
                    f"{where}: no edge carries attribute(s) {_preview(unknown)}; "
                    f"edge attributes present: {_preview(keys, limit=20)}"
                )
        tensors: dict[str, torch.Tensor] = {}
        for key in attrs:
            _check_attr_name(key, where)
            present = [d[key] for _, _, d in edge_data if key in d]
            if present and all(isinstance(x, (bool, np.bool_)) for x in present):
                values: Any = [bool(d.get(key, False)) for _, _, d in edge_data]
                tensors[key] = torch.tensor(values, dtype=torch.bool)
                continue
            try:
                values = np.array([float(d.get(key, math.nan)) for _, _, d in edge_data],
                                  dtype=np.float64)
            except (TypeError, ValueError):
                raise GRNError(
                    f"{where}: edge attribute {key!r} has non-numeric values; leave it out of "
                    "attrs= or convert it"
                ) from None
            tensors[key] = _as_edge_attr(key, values, len(edge_data), where)
        return cls._from_names(genes, sources, targets, tensors, name, where)

    @classmethod
    def from_dense(
        cls,
        matrix: np.ndarray | torch.Tensor | ArrayLike,
        genes: Sequence[str],
        threshold: float = 0.0,
        attr: str | None = "weight",
        name: str | None = None,
    ) -> GRN:
        """Build a GRN from a dense [V, V] matrix whose entry (i, j) is the edge i -> j.

        Entries with ``abs(value) > threshold`` become edges (NaN entries never do) and their
        value is carried as edge attribute ``attr`` (float; skipped when ``attr`` is None).
        A scipy sparse matrix is densified first.
        """
        where = f"GRN {name!r}" if name else "from_dense"
        if sp.issparse(matrix):
            matrix = matrix.toarray()
        try:
            dense = torch.as_tensor(np.asarray(matrix) if not torch.is_tensor(matrix) else matrix)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise GRNError(f"{where}: matrix cannot be made a tensor ({exc})") from None
        dense = dense.detach().cpu()
        if dense.dtype == torch.bool or not (dense.is_floating_point() or dense.is_complex()):
            dense = dense.to(torch.float64)
        if dense.is_complex():
            raise GRNError(f"{where}: matrix is complex; pass real values")
        num_genes = len(genes) if not isinstance(genes, str) else -1
        if dense.dim() != 2 or dense.shape[0] != dense.shape[1] or dense.shape[0] != num_genes:
            raise GRNError(
                f"{where}: matrix has shape {tuple(dense.shape)} but there are "
                f"{num_genes} genes; expected a square [{num_genes}, {num_genes}] matrix "
                "with rows = regulators and columns = targets"
            )
        edge_index = (dense.abs() > threshold).nonzero().t()  # row-major: already sorted
        edge_attr = {}
        if attr is not None:
            edge_attr[attr] = dense[edge_index[0], edge_index[1]]
        return cls(genes, edge_index, edge_attr, name=name)

    @classmethod
    def complete(cls, genes: Sequence[str], self_loops: bool = True,
                 name: str | None = None) -> GRN:
        """All V*V ordered gene pairs (V*(V-1) without self loops), no attributes."""
        num_genes = len(cls._check_genes(genes, f"GRN {name!r}" if name else "complete"))
        nodes = torch.arange(num_genes)
        src, dst = torch.meshgrid(nodes, nodes, indexing="ij")
        edge_index = torch.stack([src.reshape(-1), dst.reshape(-1)])
        if not self_loops:
            edge_index = edge_index[:, edge_index[0] != edge_index[1]]
        return cls(genes, edge_index, name=name)

    # ------------------------------------------------------------------ operations
    def subgraph(self, genes: Sequence[str], name: str | None = None) -> GRN:
        """The GRN induced on ``genes`` (in that order): edges with both ends in ``genes``,
        with their attributes. ``name`` defaults to this GRN's name."""
        new_nodes = self._check_genes(genes, "subgraph")
        old = self.indices(new_nodes)
        mapping = torch.full((self.num_nodes,), -1, dtype=torch.long)
        mapping[old] = torch.arange(len(new_nodes))
        src, dst = mapping[self._edge_index[0]], mapping[self._edge_index[1]]
        keep = (src >= 0) & (dst >= 0)
        return GRN(
            new_nodes,
            torch.stack([src[keep], dst[keep]]),
            {k: v[keep] for k, v in self._edge_attr.items()},
            name=self._name if name is None else name,
        )

    def union(self, other: GRN, name: str | None = None) -> GRN:
        """Union of nodes and edges.

        Genes: this GRN's genes in order, then ``other``'s new genes in their order. For an edge
        in both, this GRN's attribute values win. An attribute only one side has is NaN (False
        for bool) on the other side's edges; a name that is bool on one side and float on the
        other becomes float. ``name`` defaults to this GRN's name.
        """
        if not isinstance(other, GRN):
            raise GRNError(f"union() takes a GRN, got {type(other).__name__}")
        genes = list(self._genes) + [g for g in other.genes if g not in self._index]
        index = {g: i for i, g in enumerate(genes)}
        remap = torch.tensor([index[g] for g in other.genes], dtype=torch.long)
        other_ei = remap[other.edge_index] if other.num_edges else other.edge_index
        num_nodes = len(genes)
        key_self = self._edge_index[0] * num_nodes + self._edge_index[1]
        key_other = other_ei[0] * num_nodes + other_ei[1]
        new = ~torch.isin(key_other, key_self)
        edge_index = torch.cat([self._edge_index, other_ei[:, new]], dim=1)

        other_attr = other.edge_attr
        names = list(self._edge_attr) + [k for k in other_attr if k not in self._edge_attr]
        n_self, n_new = self.num_edges, int(new.sum())
        attrs: dict[str, torch.Tensor] = {}
        for key in names:
            a, b = self._edge_attr.get(key), other_attr.get(key)
            b = None if b is None else b[new]
            dtypes = {t.dtype for t in (a, b) if t is not None}
            dtype = dtypes.pop() if len(dtypes) == 1 else torch.get_default_dtype()
            a = _fill(dtype, n_self) if a is None else a.to(dtype)
            b = _fill(dtype, n_new) if b is None else b.to(dtype)
            attrs[key] = torch.cat([a, b])
        return GRN(genes, edge_index, attrs, name=self._name if name is None else name)

    def add_self_loops(self) -> GRN:
        """A GRN with a self loop on every node; existing loops (and their attributes) are
        kept, new loops get NaN (False for bool) attributes."""
        nodes = torch.arange(self.num_nodes)
        has_loop = torch.zeros(self.num_nodes, dtype=torch.bool)
        loops = self._edge_index[0] == self._edge_index[1]
        has_loop[self._edge_index[0, loops]] = True
        missing = nodes[~has_loop]
        edge_index = torch.cat([self._edge_index, missing.repeat(2, 1)], dim=1)
        attrs = {k: torch.cat([v, _fill(v.dtype, missing.numel())])
                 for k, v in self._edge_attr.items()}
        return GRN(self._genes, edge_index, attrs, name=self._name)

    def with_edge_attr(self, name: str, values: torch.Tensor | ArrayLike) -> GRN:
        """A new GRN with edge attribute ``name`` added or replaced; ``values`` has one entry
        per edge, in this GRN's edge order."""
        attrs = dict(self._edge_attr)
        attrs[name] = values
        return GRN(self._genes, self._edge_index, attrs, name=self._name)

    def adjacency(self, attr: str | None = None, dense: bool = False
                  ) -> sp.csr_matrix | np.ndarray:
        """Adjacency matrix [V, V], entry (i, j) for edge i -> j: 1.0, or the value of edge
        attribute ``attr`` (bool -> 0/1). A ``scipy.sparse.csr_matrix`` (float64), or a dense
        numpy array when ``dense=True``."""
        if attr is None:
            values = np.ones(self.num_edges, dtype=np.float64)
        else:
            if attr not in self._edge_attr:
                raise GRNError(
                    f"adjacency(): no edge attribute {attr!r}; available: "
                    f"{list(self._edge_attr)}"
                )
            values = self._edge_attr[attr].numpy().astype(np.float64)
        row, col = self._edge_index.numpy()
        matrix = sp.csr_matrix((values, (row, col)), shape=(self.num_nodes, self.num_nodes))
        return matrix.toarray() if dense else matrix

    # ------------------------------------------------------------------ export
    def _extra_columns(self, extra: Mapping[str, ArrayLike] | None) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {}
        for key, values in (extra or {}).items():
            if not isinstance(key, str) or not key:
                raise GRNError(f"extra: column names must be non-empty strings, got {key!r}")
            if key in ("source", "target") or key in self._edge_attr:
                raise GRNError(
                    f"extra: column {key!r} clashes with the source/target columns or an edge "
                    "attribute of the GRN; rename it"
                )
            if torch.is_tensor(values):
                values = values.detach().cpu().numpy()
            array = np.asarray(values)
            if array.ndim != 1 or array.shape[0] != self.num_edges:
                raise GRNError(
                    f"extra: column {key!r} has shape {array.shape}, expected ({self.num_edges},)"
                    " (one value per edge, in GRN edge order)"
                )
            columns[key] = array
        return columns

    def to_dataframe(self, extra: Mapping[str, ArrayLike] | None = None) -> pd.DataFrame:
        """One row per edge: ``source``, ``target`` (gene names), each edge attribute, then the
        ``extra`` columns (name -> array of length E in edge order, e.g. learned values)."""
        genes = np.asarray(self._genes, dtype=object)
        row, col = self._edge_index.numpy()
        columns: dict[str, Any] = {"source": genes[row], "target": genes[col]}
        for key, value in self._edge_attr.items():
            columns[key] = value.numpy()
        columns.update(self._extra_columns(extra))
        return pd.DataFrame(columns)

    def to_tsv(self, path: PathLike, extra: Mapping[str, ArrayLike] | None = None) -> Path:
        """Write :meth:`to_dataframe` tab-separated without index, atomically. A ``.gz``,
        ``.bz2`` or ``.xz`` suffix compresses. Returns the path."""
        frame = self.to_dataframe(extra)
        _, compression = split_suffix(Path(path))
        return atomic_write(
            path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, compression=compression)
        )

    def to_networkx(self, extra: Mapping[str, ArrayLike] | None = None) -> nx.DiGraph:
        """A ``networkx.DiGraph`` with every gene as a node (isolated ones too, in gene order)
        and edge attributes (and ``extra`` columns) as Python floats, boolean ones (``informed``,
        ``in_prior``) as Python bools (GraphML ``boolean``)."""
        graph = nx.DiGraph()
        if self._name is not None:
            graph.graph["name"] = self._name
        graph.add_nodes_from(self._genes)

        columns = {k: v.numpy() if v.dtype == torch.bool else v.numpy().astype(np.float64)
                   for k, v in self._edge_attr.items()}
        for key, array in self._extra_columns(extra).items():
            try:
                columns[key] = array.astype(np.float64)
            except (TypeError, ValueError):
                raise GRNError(f"extra: column {key!r} is not numeric") from None
        keys = list(columns)
        table = [columns[k].tolist() for k in keys]
        row, col = self._edge_index.tolist()
        graph.add_edges_from(
            (self._genes[s], self._genes[t], {k: table[j][e] for j, k in enumerate(keys)})
            for e, (s, t) in enumerate(zip(row, col))
        )
        return graph

    def to_graphml(self, path: PathLike, extra: Mapping[str, ArrayLike] | None = None) -> Path:
        """Write :meth:`to_networkx` as GraphML, atomically. Returns the path."""
        graph = self.to_networkx(extra)
        return atomic_write(path, lambda tmp: nx.write_graphml(graph, tmp))
