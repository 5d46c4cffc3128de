"""Matching a prior's genes to a data set's (:func:`match_genes`, aliases, :class:`MatchReport`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from grnvae.errors import GRNError
from grnvae.grn import GRN
from grnvae.utils import PathLike
from grnvae.priors.values import _preview
from grnvae.priors.readers import _Edges, _Table

logger = logging.getLogger(__name__)


@dataclass
class MatchReport:
    """How the genes of a prior matched the genes of a data set (:func:`match_genes`).

    ``exact``/``by_case``/``by_alias`` count prior genes matched verbatim, after case /
    whitespace normalisation and through the alias map; ``renamed`` maps prior names to the
    data's spelling (only those that differ); ``collapsed`` lists groups of prior genes that
    became the same data gene (their edges were merged); ``prior_only`` (sorted) and
    ``data_only`` (in data order) are the genes of one side without a partner on the other;
    ``edges_in_data`` counts the edges of the mapped GRN whose regulator and target are both
    data genes.
    """

    prior_name: str | None
    prior_genes: int
    data_genes: int
    exact: int = 0
    by_case: int = 0
    by_alias: int = 0
    renamed: dict[str, str] = field(default_factory=dict)
    collapsed: list[tuple[str, ...]] = field(default_factory=list)
    prior_only: list[str] = field(default_factory=list)
    data_only: list[str] = field(default_factory=list)
    edges_before: int = 0
    edges_after: int = 0
    edges_in_data: int = 0
    kept: str = "all"

    @property
    def matched(self) -> int:
        return self.exact + self.by_case + self.by_alias

    def summary(self, limit: int = 5) -> str:
        label = repr(self.prior_name) if self.prior_name else "the prior"
        lines = [
            f"{label}: {self.matched} of {self.prior_genes} prior genes are data genes "
            f"({self.exact} exact, {self.by_case} after case/whitespace normalisation, "
            f"{self.by_alias} through aliases); {self.data_genes - len(self.data_only)} of "
            f"{self.data_genes} data genes are in the prior",
            f"  prior genes not in the data: {len(self.prior_only)}"
            + (f" ({_preview(self.prior_only, limit)})" if self.prior_only else ""),
            f"  data genes not in the prior: {len(self.data_only)}"
            + (f" ({_preview(self.data_only, limit)})" if self.data_only else ""),
            f"  edges: {self.edges_before} -> {self.edges_after} "
            f"({self.edges_in_data} between data genes; kept={self.kept})",
        ]
        if self.collapsed:
            lines.append(f"  prior genes merged into one data gene: {len(self.collapsed)} "
                         f"groups ({_preview(['/'.join(g) for g in self.collapsed], limit)})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

# --------------------------------------------------------------------------------------------
# Matching genes to a data set
# --------------------------------------------------------------------------------------------


def _read_aliases(aliases: Mapping[str, str] | PathLike) -> dict[str, str]:
    """alias (upper-cased) -> official symbol (as given)."""
    if isinstance(aliases, Mapping):
        pairs = [(str(a), str(s)) for a, s in aliases.items()]
        where = "aliases"
    else:
        table = _Table(aliases, comment="#")
        rows = list(table.rows())
        where = table.where
        if rows and {f.strip().lower() for f in rows[0][1][:2]} & {
                "alias", "aliases", "symbol", "synonym", "synonyms", "approved_symbol",
                "official_symbol", "previous_symbol", "gene"}:
            rows = rows[1:]
        bad = [line for line, fields in rows if len(fields) < 2]
        if bad:
            raise GRNError(f"{where}: lines {_preview(bad)} do not have two columns "
                           "(alias, official symbol)")
        pairs = [(fields[0], fields[1]) for _, fields in rows]
    out: dict[str, str] = {}
    ambiguous = 0
    for alias, symbol in pairs:
        key = alias.strip().upper()
        if not key or not symbol.strip():
            continue
        if key in out and out[key] != symbol.strip():
            ambiguous += 1
            continue
        out[key] = symbol.strip()
    if ambiguous:
        logger.warning("%s: %d alias(es) map to several symbols; the first mapping is used",
                       where, ambiguous)
    return out


def match_genes(
    prior: GRN,
    data_genes: Iterable[str],
    aliases: Mapping[str, str] | PathLike | None = None,
    keep: str = "all",
    name: str | None = None,
) -> tuple[GRN, MatchReport]:
    """Rename the prior's genes to the data set's spelling and report the overlap.

    A prior gene matches a data gene verbatim, else after whitespace/case normalisation, else
    through ``aliases`` (a dict alias -> official symbol, or a two-column TSV/CSV file alias,
    symbol; both sides are mapped to official symbols before comparing, so it works whichever
    side uses the alias). Matched genes take the data's name; prior genes that become the same
    data gene are merged (their edges with the duplicate rules: agreed sign, max confidence,
    mean weight, else the first value). ``keep="all"`` keeps prior genes absent from the data (regulators need not
    be measured); ``keep="data"`` keeps only genes of the data set (in data order).
    """
    if not isinstance(prior, GRN):
        raise GRNError(f"match_genes: expected a GRN, got {type(prior).__name__}")
    if keep not in ("all", "data"):
        raise GRNError(f"match_genes: keep={keep!r} is not 'all' or 'data'")
    if isinstance(data_genes, str):
        raise GRNError("match_genes: data_genes must be a list of gene names, not a string")
    data = list(dict.fromkeys(str(g) for g in data_genes))
    alias = _read_aliases(aliases) if aliases is not None else {}

    def key(gene: str) -> str:
        return gene.strip().upper()

    def canon(gene: str) -> str:
        k = key(gene)
        return key(alias.get(k, k))

    data_set = set(data)
    by_key: dict[str, str] = {}
    by_canon: dict[str, str] = {}
    for g in data:
        by_key.setdefault(key(g), g)
    for g in data:
        by_canon.setdefault(canon(g), g)

    report = MatchReport(prior_name=prior.name, prior_genes=prior.num_nodes,
                         data_genes=len(data), edges_before=prior.num_edges, kept=keep)
    new_name: list[str] = []
    for g in prior.genes:
        if g in data_set:
            report.exact += 1
            new_name.append(g)
        elif key(g) in by_key:
            report.by_case += 1
            new_name.append(by_key[key(g)])
        elif alias and canon(g) in by_canon:
            report.by_alias += 1
            new_name.append(by_canon[canon(g)])
        else:
            new_name.append(g)
    report.renamed = {g: n for g, n in zip(prior.genes, new_name) if g != n}
    groups: dict[str, list[str]] = {}
    for g, n in zip(prior.genes, new_name):
        groups.setdefault(n, []).append(g)
    report.collapsed = [tuple(v) for v in groups.values() if len(v) > 1]
    matched_data = {n for n in new_name if n in data_set}
    report.prior_only = sorted(g for g, n in zip(prior.genes, new_name) if n not in data_set)
    report.data_only = [g for g in data if g not in matched_data]

    genes = list(dict.fromkeys(new_name))
    attrs = prior.edge_attr
    edges = _Edges(list(attrs))
    src, dst = prior.edge_index.tolist() if prior.num_edges else ([], [])
    columns = {k: v.double().tolist() for k, v in attrs.items()}
    for e, (s, t) in enumerate(zip(src, dst)):
        edges.add(new_name[s], new_name[t], {k: columns[k][e] for k in attrs})
    grn, _, _ = edges.build(name if name is not None else prior.name, genes=genes)
    for k, v in attrs.items():  # bool attributes were merged as 0/1 floats
        if v.dtype == torch.bool:
            grn = grn.with_edge_attr(k, grn.edge_attr[k] > 0.5)
    if keep == "data":
        grn = grn.subgraph([g for g in data if g in matched_data])
    report.edges_after = grn.num_edges
    if grn.num_edges:
        in_data = torch.tensor([g in data_set for g in grn.genes])
        report.edges_in_data = int((in_data[grn.edge_index[0]] & in_data[grn.edge_index[1]])
                                   .sum())
    return grn, report
