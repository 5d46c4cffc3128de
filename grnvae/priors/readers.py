"""Prior-network readers: one table pipeline (:class:`_Table` -> :class:`_Edges` -> GRN) behind
the per-format loaders, the public ``read_*`` functions, format sniffing and the format
registry (:func:`register_prior_format`).
"""

from __future__ import annotations

import csv
import functools
import inspect
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch

from grnvae.errors import GRNError, RegistryError
from grnvae.grn import GRN
from grnvae.tables import WHITESPACE as _WS
from grnvae.tables import open_text, separator, split_suffix, stem
from grnvae.utils import PathLike
from grnvae.utils import counted as _n
from grnvae.priors.values import (DOROTHEA_CONFIDENCE, _Bad, _EXCEL_ERRORS, _TRRUST_SIGN, _check_case,
                                  _dorothea_level, _number, _parse_confidence, _parse_flag,
                                  _parse_regnetwork_sign, _parse_sign, _parse_trrust_sign, _preview,
                                  _sign_of, _symbol, _unquote)

logger = logging.getLogger(__name__)


#: Reader names accepted by ``format=`` (aliases map to these).
FORMATS = ("edgelist", "trrust", "dorothea", "collectri", "regnetwork", "graphml", "dense")
_FORMAT_ALIASES = {
    "tsv": "edgelist", "csv": "edgelist", "generic": "edgelist", "table": "edgelist",
    "npy": "dense", "trrust2": "trrust", "trrust_v2": "trrust", "omnipath": "collectri",
}

@dataclass
class PriorReport:
    """What a reader did with a prior-network file.

    Attributes
    ----------
    path : str or None
        The file read (None for an in-memory DataFrame or graph).
    format : str
        The reader used (one of :data:`FORMATS`).
    name : str or None
        The GRN's name.
    rows : int
        Data rows (edges, matrix rows for ``dense``) in the input, excluding a header, blank
        and comment lines; malformed and filtered rows included.
    edges : int
        Edges in the GRN after merging duplicates.
    duplicates_merged : int
        Valid rows that repeated an earlier regulator -> target pair and were merged into it.
    sign_conflicts : int
        Merged edges whose rows disagreed (+1 and -1); their sign is 0.
    filtered : int
        Valid rows left out on purpose (e.g. DoRothEA levels not in ``levels``).
    malformed : list of (line, reason)
        Rows skipped as malformed, with their 1-based line number in the file.
    repaired : list of (line, change)
        Gene symbols a spreadsheet had turned into dates, restored (``'Sep-07' -> 'SEPT7'``);
        only with ``repair_dates=True``.
    genes : int
        Nodes of the GRN.
    regulators : int
        Nodes with at least one outgoing edge.
    """

    path: str | None
    format: str
    name: str | None = None
    rows: int = 0
    edges: int = 0
    duplicates_merged: int = 0
    sign_conflicts: int = 0
    filtered: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)
    repaired: list[tuple[int, str]] = field(default_factory=list)
    genes: int = 0
    regulators: int = 0

    @property
    def malformed_lines(self) -> list[int]:
        return [line for line, _ in self.malformed]

    def summary(self) -> str:
        label = self.name or (Path(self.path).name if self.path else "prior")
        text = (
            f"prior {label!r} ({self.format}): {_n(self.rows, 'row')} -> "
            f"{_n(self.edges, 'edge')} over {_n(self.genes, 'gene')} "
            f"({_n(self.regulators, 'regulator')}); "
            f"{_n(self.duplicates_merged, 'duplicate row')} merged"
        )
        if self.sign_conflicts:
            text += f" ({self.sign_conflicts} with conflicting signs -> sign 0)"
        if self.filtered:
            text += f"; {_n(self.filtered, 'row')} filtered out"
        if self.repaired:
            text += (f"; {_n(len(self.repaired), 'spreadsheet-date symbol')} restored "
                     f"({_preview(c for _, c in self.repaired)})")
        if self.malformed:
            text += (f"; {_n(len(self.malformed), 'malformed row')} skipped "
                     f"(lines {_preview(self.malformed_lines)})")
        return text

    def __str__(self) -> str:
        return self.summary()



# --------------------------------------------------------------------------------------------
# Tables: opening, splitting, columns
# --------------------------------------------------------------------------------------------

_HEADER_WORDS = frozenset({
    "tf", "source", "target", "regulator", "regulation", "interaction", "mor", "confidence",
    "weight", "sign", "gene", "genes", "symbol", "from", "to", "reference", "references",
    "citation", "pmid", "pmids", "source_genesymbol", "target_genesymbol", "type", "effect",
    "mode", "direction", "tf_id", "target_id", "up_or_down_or_unknown", "target_gene",
    "regulated_gene", "dorothea_level", "level",
})


def _is_comment(line: str, comment: str | None) -> bool:
    if not comment or not line.startswith(comment):
        return False
    first = re.split(r"[\t,; ]", line.strip(), maxsplit=1)[0]
    return first.upper() not in _EXCEL_ERRORS  # '#NAME?<TAB>...' is data, not a comment


class _Table:
    """Rows of a delimited text file (or DataFrame) as ``(line number, stripped fields)``.

    Line by line on purpose, unlike :func:`grnvae.tables.read_table`: prior networks from the
    wild carry comment lines and malformed rows, and each skipped row is reported with its line
    number; the separator follows the same rules (:func:`grnvae.tables.separator`)."""

    def __init__(self, source: pd.DataFrame | PathLike, sep: str | None = None,
                 comment: str | None = "#") -> None:
        self.comment = comment
        if isinstance(source, pd.DataFrame):
            self.frame: pd.DataFrame | None = source
            self.path: Path | None = None
            self.where = "DataFrame"
            self.sep = None
            return
        if not isinstance(source, (str, os.PathLike)):
            raise GRNError(
                f"expected a file path or a pandas DataFrame, got {type(source).__name__}"
            )
        path = Path(source).expanduser()
        if not path.is_file():
            raise GRNError(f"{path}: no such file; check the path")
        self.frame = None
        self.path = path
        self.where = str(path)
        self.sep = separator(path, sep, self._first_line() or "")

    def _first_line(self) -> str | None:
        assert self.path is not None
        with open_text(self.path) as fh:
            for line in fh:
                if line.strip() and not _is_comment(line, self.comment):
                    return line
        return None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        if self.frame is not None:
            yield from self._frame_rows()
            return
        assert self.path is not None
        with open_text(self.path) as fh:
            if self.sep == _WS:
                for number, line in enumerate(fh, 1):
                    if not line.strip() or _is_comment(line, self.comment):
                        continue
                    yield number, [_unquote(f) for f in line.split()]
                return

            def lines() -> Iterator[str]:
                for line in fh:
                    yield "\n" if _is_comment(line, self.comment) else line

            if self.sep == "\t":
                reader = csv.reader(lines(), delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.reader(lines(), delimiter=self.sep)
            previous = 0
            try:
                for fields in reader:
                    start, previous = previous + 1, reader.line_num
                    fields = [_unquote(f.strip()) for f in fields]
                    if not any(fields):
                        continue
                    yield start, fields
            except csv.Error as exc:
                raise GRNError(
                    f"{self.where}, line {reader.line_num}: cannot be split into fields "
                    f"({exc}); check the separator (sep=) and quoting"
                ) from None

    def _frame_rows(self) -> Iterator[tuple[int, list[str]]]:
        frame = self.frame
        assert frame is not None
        offset = 1
        if not isinstance(frame.columns, pd.RangeIndex):
            yield 1, [str(c).strip() for c in frame.columns]
            offset = 2
        values = frame.astype(object).where(frame.notna(), "").to_numpy()
        for i, row in enumerate(values):
            yield i + offset, [_cell(v) for v in row]


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    return str(value).strip()


def _find_column(header: Sequence[str], spec: str | int | None, where: str, role: str,
                 required: bool = True) -> int | None:
    """Index of column ``spec`` (a name, or a 0-based position)."""
    if spec is None:
        return None
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if header and not (0 <= spec < len(header)):
            raise GRNError(
                f"{where}: {role} column position {spec} is out of range for "
                f"{len(header)} columns (positions are 0-based)"
            )
        return int(spec)
    if not isinstance(spec, str):
        raise GRNError(f"{where}: {role}= must be a column name or a 0-based position, "
                       f"got {spec!r}")
    if spec in header:
        return list(header).index(spec)
    folded = [i for i, h in enumerate(header) if h.lower() == spec.lower()]
    if len(folded) == 1:
        return folded[0]
    if not required:
        return None
    raise GRNError(
        f"{where}: no {role} column {spec!r}; columns are {_preview(header, 20)} "
        f"(pass {role}= with a column name or a 0-based position)"
    )


def _first_of(header: Sequence[str], candidates: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in candidates:
        if name in lowered:
            return lowered.index(name)
    return None


# --------------------------------------------------------------------------------------------
# The row -> edge pipeline
# --------------------------------------------------------------------------------------------

Parser = Callable[[Sequence[str]], float]


def _col(index: int, parse: Callable[[str], float]) -> Parser:
    def run(fields: Sequence[str]) -> float:
        return parse(fields[index])
    run.columns = (index,)  # type: ignore[attr-defined]
    return run


class _Edges:
    """Collects valid rows and merges duplicate regulator -> target pairs.

    Rows are stored column-wise (one float per row and attribute) and aggregated with numpy
    in :meth:`build`, so that a million rows create few Python containers.
    """

    def __init__(self, attrs: Sequence[str]) -> None:
        self.attrs = list(attrs)
        self.slot: dict[str, int] = {}
        self.sources: list[str] = []
        self.targets: list[str] = []
        self.row_slot: list[int] = []
        self.columns: dict[str, list[float]] = {k: [] for k in self.attrs}

    def add(self, source: str, target: str, values: Mapping[str, float]) -> None:
        key = source + "\x00" + target
        slot = self.slot.get(key)
        if slot is None:
            slot = self.slot[key] = len(self.sources)
            self.sources.append(source)
            self.targets.append(target)
        self.row_slot.append(slot)
        for k in self.attrs:
            self.columns[k].append(values.get(k, math.nan))

    def __len__(self) -> int:
        return len(self.sources)

    def build(self, name: str | None, genes: Sequence[str] | None = None
              ) -> tuple[GRN, int, int]:
        """(GRN, merged rows, sign conflicts). Per edge: ``sign`` the agreed sign (0 when
        rows say +1 and -1), ``confidence`` the max, ``weight`` the mean, any other attribute
        its first value; NaN values are ignored (NaN if all are)."""
        num = len(self.sources)
        if genes is None:
            genes = sorted(set(self.sources) | set(self.targets))
        index = {g: i for i, g in enumerate(genes)}
        slots = np.asarray(self.row_slot, dtype=np.int64)
        conflicts = 0
        attrs: dict[str, np.ndarray] = {}
        for k in self.attrs:
            vals = np.asarray(self.columns[k], dtype=np.float64)
            known = ~np.isnan(vals)
            present = np.bincount(slots, weights=known, minlength=num) > 0
            if k == "sign":
                pos = np.bincount(slots, weights=known & (vals > 0), minlength=num) > 0
                neg = np.bincount(slots, weights=known & (vals < 0), minlength=num) > 0
                conflicts = int((pos & neg).sum())
                value = np.where(pos & ~neg, 1.0, np.where(neg & ~pos, -1.0, 0.0))
            elif k == "confidence":
                value = np.full(num, -np.inf)
                np.fmax.at(value, slots, vals)
            elif k == "weight":
                total = np.bincount(slots, weights=np.where(known, vals, 0.0), minlength=num)
                count = np.bincount(slots, weights=known, minlength=num)
                value = total / np.maximum(count, 1)
            else:
                value = np.full(num, np.nan)
                rows = np.flatnonzero(known)[::-1]  # earliest row written last, so it wins
                value[slots[rows]] = vals[rows]
            attrs[k] = np.where(present, value, np.nan)
        edge_index = torch.tensor(
            np.array([[index[g] for g in self.sources], [index[g] for g in self.targets]],
                     dtype=np.int64).reshape(2, num))
        grn = GRN(list(genes), edge_index, {k: torch.from_numpy(v) for k, v in attrs.items()},
                  name=name)
        return grn, len(self.row_slot) - num, conflicts


def _finish(report: PriorReport, malformed: list[tuple[int, str]], strict: bool,
            where: str, unit: str = "line") -> None:
    report.malformed = malformed
    if not malformed:
        return
    lines = _preview([line for line, _ in malformed])
    if strict:
        line, reason = malformed[0]
        more = (f"; {len(malformed)} malformed rows in all ({unit}s {lines})"
                if len(malformed) > 1 else "")
        at = f", {unit} {line}" if line else ""  # line 0: not a row (a graph node)
        raise GRNError(
            f"{where}{at}: {reason}{more}. Fix the file, or pass strict=False "
            "(recipe: grn.prior_strict: false) to skip malformed rows"
        )
    logger.warning(
        "%s: skipped %d malformed row(s) (%ss %s); first: %s %d: %s",
        where, len(malformed), unit, lines, unit, malformed[0][0], malformed[0][1],
    )


def _run_pipeline(
    table: _Table,
    rows: Iterable[tuple[int, list[str]]],
    *,
    fmt: str,
    source: int,
    target: int,
    parsers: Mapping[str, Parser],
    keep: Callable[[Sequence[str]], bool] | None,
    case: str,
    strict: bool,
    name: str | None,
    required: int | None = None,
    repair_dates: bool = True,
) -> tuple[GRN, PriorReport]:
    _check_case(case)
    if name is None and table.path is not None:
        name = stem(table.path)
    report = PriorReport(path=None if table.path is None else str(table.path), format=fmt,
                         name=name)
    need = max([source, target] + [c for p in parsers.values()
                                    for c in getattr(p, "columns", ())]) + 1
    if required is not None:
        need = max(need, required)
    edges = _Edges(list(parsers))
    malformed: list[tuple[int, str]] = []
    for line, fields in rows:
        report.rows += 1
        if len(fields) < need:
            malformed.append((line, f"expected at least {need} fields, found {len(fields)} "
                                    "(a missing field or a wrong separator)"))
            continue
        try:
            fixes: list[tuple[str, str]] | None = [] if repair_dates else None
            src = _symbol(fields[source], case, "regulator", fixes)
            dst = _symbol(fields[target], case, "target", fixes)
            values = {k: p(fields) for k, p in parsers.items()}
            if keep is not None and not keep(fields):
                report.filtered += 1
                continue
        except _Bad as exc:
            malformed.append((line, str(exc)))
            continue
        edges.add(src, dst, values)
        if fixes:
            report.repaired.extend((line, f"{old!r} -> {new!r}") for old, new in fixes)
    if report.repaired:
        logger.warning("%s: restored %d gene symbol(s) a spreadsheet had turned into dates "
                       "(%s); pass repair_dates=False to treat them as malformed", table.where,
                       len(report.repaired),
                       _preview(f"line {n}: {c}" for n, c in report.repaired))
    _finish(report, malformed, strict, table.where)
    if not len(edges):
        raise GRNError(
            f"{table.where}: no edges read ({report.rows} rows, {len(malformed)} malformed, "
            f"{report.filtered} filtered out); check the format (format=) and the columns"
        )
    grn, merged, conflicts = edges.build(name)
    report.duplicates_merged = merged
    report.sign_conflicts = conflicts
    _fill_counts(report, grn)
    return grn, report


def _fill_counts(report: PriorReport, grn: GRN) -> None:
    report.edges = grn.num_edges
    report.genes = grn.num_nodes
    report.regulators = int(torch.unique(grn.edge_index[0]).numel()) if grn.num_edges else 0


def _header_and_rows(table: _Table, header: bool | None,
                     looks_like_header: Callable[[list[str]], bool] | None = None
                     ) -> tuple[list[str], int | None, Iterator[tuple[int, list[str]]]]:
    """Split off the header row: ``header`` True/False, or None to ask ``looks_like_header``.
    Returns (header fields or [], line of the header or None, remaining rows)."""
    rows = table.rows()
    first = next(rows, None)
    if first is None:
        raise GRNError(f"{table.where}: the file has no rows")
    line, fields = first
    if header is None:
        assert looks_like_header is not None
        header = looks_like_header(fields)

    def chained() -> Iterator[tuple[int, list[str]]]:
        if not header:
            yield first
        yield from rows

    return (fields if header else []), (line if header else None), chained()


# --------------------------------------------------------------------------------------------
# Readers (internal ones return (GRN, PriorReport))
# --------------------------------------------------------------------------------------------


def _load_edgelist(
    path_or_df: pd.DataFrame | PathLike,
    source: str | int = "source",
    target: str | int = "target",
    sign: str | int | None = None,
    weight: str | int | None = None,
    confidence: str | int | None = None,
    sep: str | None = None,
    header: bool = True,
    comment: str | None = "#",
    strict: bool = True,
    case: str = "upper",
    name: str | None = None,
    repair_dates: bool = True,
) -> tuple[GRN, PriorReport]:
    table = _Table(path_or_df, sep=sep, comment=comment)
    if table.frame is not None:
        header = not isinstance(table.frame.columns, pd.RangeIndex)
    if not header:
        named = [(r, c) for r, c in (("source", source), ("target", target), ("sign", sign),
                                     ("weight", weight), ("confidence", confidence))
                 if isinstance(c, str)]
        if named:
            role, col = named[0]
            raise GRNError(
                f"{table.where}: {role}={col!r} names a column but header=False; "
                "pass 0-based positions (source=0, target=1, ...) or header=True"
            )
    names, _, rows = _header_and_rows(table, bool(header))
    where = table.where
    src = _find_column(names, source, where, "source")
    dst = _find_column(names, target, where, "target")
    parsers: dict[str, Parser] = {}
    parse_by_attr: dict[str, Callable[[str, str], float]] = {
        "sign": _parse_sign, "confidence": _parse_confidence, "weight": _number}
    for attr, spec in (("sign", sign), ("confidence", confidence), ("weight", weight)):
        index = _find_column(names, spec, where, attr)
        if index is not None:
            what = f"{attr} ({names[index] if names else f'column {index}'})"
            parse = parse_by_attr[attr]
            parsers[attr] = _col(index, lambda t, p=parse, w=what: p(t, w))
    assert src is not None and dst is not None
    return _run_pipeline(table, rows, fmt="edgelist", source=src, target=dst, parsers=parsers,
                         keep=None, case=case, strict=strict, name=name, repair_dates=repair_dates)


def _load_trrust(path: pd.DataFrame | PathLike, strict: bool = True, case: str = "upper",
                 name: str | None = None, repair_dates: bool = True, sep: str | None = "\t",
                 comment: str | None = "#") -> tuple[GRN, PriorReport]:
    table = _Table(path, sep=sep, comment=comment)

    def is_header(fields: list[str]) -> bool:
        if len(fields) >= 3 and fields[2].strip().lower() in _TRRUST_SIGN:
            return False
        return any(f.strip().lower() in _HEADER_WORDS for f in fields[:3])

    _, _, rows = _header_and_rows(table, None, is_header)
    return _run_pipeline(table, rows, fmt="trrust", source=0, target=1,
                         parsers={"sign": _col(2, _parse_trrust_sign)}, keep=None, case=case,
                         strict=strict, name=name, repair_dates=repair_dates)


def _levels(levels: str | Iterable[str]) -> set[str]:
    chosen = {str(x).strip().upper() for x in (levels if not isinstance(levels, str)
                                               else list(levels.replace(",", "")))}
    chosen.discard("")
    bad = sorted(chosen - set(DOROTHEA_CONFIDENCE))
    if bad or not chosen:
        raise GRNError(
            f"levels={levels!r}: DoRothEA levels are A, B, C, D, E (e.g. levels='ABC')"
        )
    return chosen


def _load_dorothea(path: pd.DataFrame | PathLike, levels: str | Iterable[str] = "ABC",
                   strict: bool = True, case: str = "upper", name: str | None = None,
                   repair_dates: bool = True, sep: str | None = None,
                   comment: str | None = "#") -> tuple[GRN, PriorReport]:
    chosen = _levels(levels)
    table = _Table(path, sep=sep, comment=comment)
    names, _, rows = _header_and_rows(table, True)
    where = table.where
    src = _first_of(names, ["source_genesymbol", "tf", "source", "regulator"])
    dst = _first_of(names, ["target_genesymbol", "target"])
    lvl = _first_of(names, ["confidence", "dorothea_level", "level"])
    if src is None or dst is None or lvl is None:
        raise GRNError(
            f"{where}: not a DoRothEA table: expected columns tf, confidence, target, mor "
            f"(or OmniPath's source_genesymbol, target_genesymbol, dorothea_level, "
            f"is_stimulation, is_inhibition); found {_preview(names, 20)}"
        )
    parsers: dict[str, Parser] = {}
    mor = _first_of(names, ["mor", "weight", "sign"])
    if mor is not None:
        parsers["sign"] = _col(mor, lambda t: _parse_sign(t, "mode of regulation (mor)"))
    else:
        flags = _flag_sign_parser(names)
        if flags is not None:
            parsers["sign"] = flags
    parsers["confidence"] = _col(lvl, lambda t: DOROTHEA_CONFIDENCE[_dorothea_level(t)])
    keep = lambda fields: _dorothea_level(fields[lvl]) in chosen  # noqa: E731
    grn, report = _run_pipeline(table, rows, fmt="dorothea", source=src, target=dst,
                                parsers=parsers, keep=keep, case=case, strict=strict,
                                name=name, repair_dates=repair_dates)
    return grn, report


def _flag_sign_parser(names: Sequence[str]) -> Parser | None:
    """OmniPath: sign = stimulation - inhibition (consensus_* preferred)."""
    for prefix in ("consensus_", "is_"):
        stim = _first_of(names, [prefix + "stimulation"])
        inh = _first_of(names, [prefix + "inhibition"])
        if stim is not None and inh is not None:
            def run(fields: Sequence[str], s: int = stim, i: int = inh, p: str = prefix
                    ) -> float:
                up = _parse_flag(fields[s], p + "stimulation")
                down = _parse_flag(fields[i], p + "inhibition")
                return float(up) - float(down)
            run.columns = (stim, inh)  # type: ignore[attr-defined]
            return run
    return None


def _load_collectri(path: pd.DataFrame | PathLike, strict: bool = True, case: str = "upper",
                    name: str | None = None, repair_dates: bool = True,
                    sep: str | None = None, comment: str | None = "#"
                    ) -> tuple[GRN, PriorReport]:
    table = _Table(path, sep=sep, comment=comment)
    names, _, rows = _header_and_rows(table, True)
    where = table.where
    src = _first_of(names, ["source_genesymbol", "source", "tf", "regulator"])
    dst = _first_of(names, ["target_genesymbol", "target"])
    if src is None or dst is None:
        raise GRNError(
            f"{where}: not a CollecTRI table: expected columns source, target and weight "
            f"(or mor / sign, or OmniPath's source_genesymbol, target_genesymbol, "
            f"consensus_stimulation, consensus_inhibition); found {_preview(names, 20)}"
        )
    parsers: dict[str, Parser] = {}
    wcol = _first_of(names, ["weight", "mor"])
    scol = _first_of(names, ["sign"])
    if wcol is not None:
        label = names[wcol]
        parsers["sign"] = _col(wcol, lambda t: _sign_of(_number(t, label)))
        parsers["weight"] = _col(wcol, lambda t: _number(t, label))
    elif scol is not None:
        parsers["sign"] = _col(scol, _parse_sign)
    else:
        flags = _flag_sign_parser(names)
        if flags is not None:
            parsers["sign"] = flags
    ccol = _first_of(names, ["confidence"])
    if ccol is not None:
        parsers["confidence"] = _col(ccol, _parse_confidence)
    return _run_pipeline(table, rows, fmt="collectri", source=src, target=dst,
                         parsers=parsers, keep=None, case=case, strict=strict, name=name,
                         repair_dates=repair_dates)


def _load_regnetwork(path: pd.DataFrame | PathLike, strict: bool = True, case: str = "upper",
                     name: str | None = None, repair_dates: bool = True,
                     sep: str | None = None, comment: str | None = "#"
                     ) -> tuple[GRN, PriorReport]:
    table = _Table(path, sep=sep, comment=comment)

    def is_header(fields: list[str]) -> bool:
        return any(f.strip().lower() in _HEADER_WORDS for f in fields)

    names, _, rows = _header_and_rows(table, None, is_header)
    where = table.where
    parsers: dict[str, Parser] = {}
    if names:
        src = _first_of(names, ["source", "tf", "regulator", "regulator_symbol", "from"])
        dst = _first_of(names, ["target", "target_symbol", "to"])
        icol = _first_of(names, ["interaction", "up_or_down_or_unknown", "direction", "type",
                                 "regulation", "mode", "effect"])
        ccol = _first_of(names, ["confidence", "evidence_confidence"])
        if src is None or dst is None:
            raise GRNError(
                f"{where}: not a RegNetwork table: expected columns Source, Target, "
                f"Interaction (1 activation, 2 repression, 0 unknown), found "
                f"{_preview(names, 20)}"
            )
        if icol is not None:
            parsers["sign"] = _col(icol, _parse_regnetwork_sign)
        if ccol is not None:
            parsers["confidence"] = _col(ccol, _parse_confidence)
    else:
        # Header-less upstream files: 'human.source' (symbol, id, symbol, id) and the
        # direction files (symbol, id, symbol, id, direction); 3 columns: symbol, symbol, type.
        peek = list(_take(rows, 1))
        width = len(peek[0][1]) if peek else 0
        rows = _chain(peek, rows)
        if width >= 4:
            src, dst = 0, 2
            if width >= 5:
                parsers["sign"] = _col(4, _parse_regnetwork_sign)
        else:
            src, dst = 0, 1
            if width == 3:
                parsers["sign"] = _col(2, _parse_regnetwork_sign)
    assert src is not None and dst is not None
    return _run_pipeline(table, rows, fmt="regnetwork", source=src, target=dst,
                         parsers=parsers, keep=None, case=case, strict=strict, name=name,
                         repair_dates=repair_dates)


def _take(it: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        item = next(it, None)
        if item is None:
            return
        yield item


def _chain(head: list[Any], tail: Iterator[Any]) -> Iterator[Any]:
    yield from head
    yield from tail


def _graph_nodes(graph: nx.Graph, node_attr: str | None) -> dict[Any, Any]:
    """node -> its gene name: the node id, or the node attribute ``node_attr``; when None and
    every node id looks like yEd/Cytoscape's ``n0, n1, ...`` with a ``name``/``label``
    attribute, that attribute."""
    if node_attr is None:
        ids = list(graph.nodes)
        if ids and all(re.fullmatch(r"n\d+", str(n)) for n in ids):
            for key in ("name", "label", "gene", "symbol"):
                if all(key in graph.nodes[n] for n in ids):
                    node_attr = key
                    break
    if node_attr is None:
        return {n: n for n in graph.nodes}
    missing = [n for n in graph.nodes if node_attr not in graph.nodes[n]]
    if missing:
        raise GRNError(f"graph: {len(missing)} node(s) lack attribute {node_attr!r} "
                       f"(e.g. {_preview(missing)}); pass node_attr=None to use node ids")
    return {n: graph.nodes[n][node_attr] for n in graph.nodes}


_GRAPH_SIGN_KEYS = ("sign", "mor", "effect", "regulation", "interaction", "mode")
_GRAPH_CONFIDENCE_KEYS = ("confidence",)
_GRAPH_WEIGHT_KEYS = ("weight",)


def _load_networkx(
    graph: nx.Graph,
    sign: str | None = None,
    confidence: str | None = None,
    weight: str | None = None,
    node_attr: str | None = None,
    strict: bool = True,
    case: str = "upper",
    name: str | None = None,
    path: str | None = None,
    fmt: str = "networkx",
) -> tuple[GRN, PriorReport]:
    _check_case(case)
    if not isinstance(graph, nx.Graph):
        raise GRNError(f"from_networkx: expected a networkx graph, got {type(graph).__name__}")
    where = path or "networkx graph"
    if name is None and graph.graph.get("name"):
        name = str(graph.graph["name"])
    report = PriorReport(path=path, format=fmt, name=name)
    label = _graph_nodes(graph, node_attr)
    edge_data = list(graph.edges(data=True))
    if not graph.is_directed():
        edge_data += [(v, u, d) for u, v, d in edge_data if u != v]
    keys = list(dict.fromkeys(k for _, _, d in edge_data for k in d))

    def pick(given: str | None, defaults: Sequence[str], role: str) -> str | None:
        if given is not None:
            if given not in keys:
                raise GRNError(f"{where}: no edge carries attribute {given!r} ({role}=); "
                               f"edge attributes: {_preview(keys, 20)}")
            return given
        return next((k for k in defaults if k in keys), None)

    mapping = {"sign": pick(sign, _GRAPH_SIGN_KEYS, "sign"),
               "confidence": pick(confidence, _GRAPH_CONFIDENCE_KEYS, "confidence"),
               "weight": pick(weight, _GRAPH_WEIGHT_KEYS, "weight")}
    mapping = {k: v for k, v in mapping.items() if v is not None}
    used = set(mapping.values())
    extra = [k for k in keys if k not in used
             and all(isinstance(d[k], (int, float, np.integer, np.floating)) and
                     not isinstance(d[k], bool) for _, _, d in edge_data if k in d)]
    parse = {"sign": _parse_sign, "confidence": _parse_confidence,
             "weight": lambda t, w: _number(t, w)}

    malformed: list[tuple[int, str]] = []
    nodes: dict[str, None] = {}
    good_node: dict[Any, str] = {}
    for n in graph.nodes:
        try:
            fixes: list[tuple[str, str]] = []
            gene = _symbol(label[n], case, "node", fixes)
            report.repaired.extend((0, f"{o!r} -> {f!r}") for o, f in fixes)
        except _Bad as exc:
            malformed.append((0, f"node {label[n]!r}: {exc}"))
            continue
        good_node[n] = gene
        nodes.setdefault(gene, None)
    edges = _Edges(list(mapping) + extra)
    for number, (u, v, d) in enumerate(edge_data, 1):
        report.rows += 1
        if u not in good_node or v not in good_node:
            malformed.append((number, f"edge {label[u]!r} -> {label[v]!r} touches a node "
                                      "that is not a gene symbol"))
            continue
        try:
            values: dict[str, float] = {}
            for attr, key in mapping.items():
                if key in d:
                    values[attr] = parse[attr](str(d[key]), f"{attr} ({key})")
            for key in extra:
                if key in d:
                    values[key] = float(d[key])
        except _Bad as exc:
            malformed.append((number, f"edge {label[u]!r} -> {label[v]!r}: {exc}"))
            continue
        edges.add(good_node[u], good_node[v], values)
    _finish(report, malformed, strict, where, unit="edge")
    if not nodes:
        raise GRNError(f"{where}: the graph has no (valid) nodes")
    grn, merged, conflicts = edges.build(name, genes=list(nodes))
    report.duplicates_merged = merged
    report.sign_conflicts = conflicts
    _fill_counts(report, grn)
    return grn, report


def _load_graphml(path: PathLike, sign: str | None = None, confidence: str | None = None,
                  weight: str | None = None, node_attr: str | None = None,
                  strict: bool = True, case: str = "upper", name: str | None = None
                  ) -> tuple[GRN, PriorReport]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise GRNError(f"{path}: no such file; check the path")
    try:
        graph = nx.read_graphml(path)
    except Exception as exc:  # networkx raises many kinds (ParseError, NetworkXError, ...)
        raise GRNError(f"{path}: cannot be read as GraphML ({type(exc).__name__}: {exc})"
                       ) from None
    if name is None:
        name = stem(path)
    return _load_networkx(graph, sign=sign, confidence=confidence, weight=weight,
                          node_attr=node_attr, strict=strict, case=case, name=name,
                          path=str(path), fmt="graphml")


_GENE_LIST_HEADERS = frozenset({"gene", "genes", "symbol", "symbols", "gene_name", "gene_names",
                                "gene_symbol", "genesymbol", "name", "names", "gene_id", "id",
                                "feature", "features", "var_names", "index"})


def _read_gene_list(genes: PathLike | Sequence[str], column: int | str = 0,
                    expected: int | None = None) -> tuple[list[tuple[int, str]], str]:
    """[(line, raw name)], where. Lines with several fields (TSV/CSV): ``column`` of each."""
    if not isinstance(genes, (str, os.PathLike)):
        return [(i + 1, str(g)) for i, g in enumerate(genes)], "gene list"
    table = _Table(genes, comment="#")
    rows = list(table.rows())
    if not rows:
        raise GRNError(f"{table.where}: the gene list is empty")
    first = rows[0][1]
    index: int
    header = False
    if isinstance(column, str):
        idx = _find_column(first, column, table.where, "gene")
        assert idx is not None
        index, header = idx, True
    else:
        index = column
        head = first[index].strip().lower() if index < len(first) else ""
        header = head in _GENE_LIST_HEADERS or (
            expected is not None and len(rows) == expected + 1)
    if header:
        rows = rows[1:]
    out = []
    for line, fields in rows:
        out.append((line, fields[index] if index < len(fields) else ""))
    return out, table.where


def _load_dense(npy_path: PathLike, genes: PathLike | Sequence[str] | None = None,
                threshold: float = 0.0, transpose: bool = False, gene_column: int | str = 0,
                strict: bool = True, case: str = "upper", name: str | None = None
                ) -> tuple[GRN, PriorReport]:
    _check_case(case)
    path = Path(npy_path).expanduser()
    if not path.is_file():
        raise GRNError(f"{path}: no such file; check the path")
    if genes is None:
        genes = _sibling_gene_list(path)
    try:
        matrix = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise GRNError(f"{path}: cannot be read as a .npy array ({exc})") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise GRNError(f"{path}: expected a square [V, V] adjacency matrix (rows = regulators, "
                       f"columns = targets), got shape {matrix.shape}")
    if matrix.dtype == bool or np.issubdtype(matrix.dtype, np.integer):
        matrix = matrix.astype(np.float64)
    if not np.issubdtype(matrix.dtype, np.floating):
        raise GRNError(f"{path}: matrix dtype {matrix.dtype} is not numeric")
    if transpose:
        matrix = matrix.T
    entries, where = _read_gene_list(genes, gene_column, expected=matrix.shape[0])
    if len(entries) != matrix.shape[0]:
        raise GRNError(
            f"{where}: {len(entries)} genes for a {matrix.shape[0]} x {matrix.shape[1]} "
            f"matrix ({path.name}); the gene list must name each row/column once, in order"
        )
    malformed: list[tuple[int, str]] = []
    repaired: list[tuple[int, str]] = []
    keep: list[int] = []
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, (line, raw) in enumerate(entries):
        try:
            fixes = []
            gene = _symbol(raw, case, "gene", fixes)
            repaired.extend((line, f"{o!r} -> {f!r}") for o, f in fixes)
        except _Bad as exc:
            malformed.append((line, str(exc)))
            continue
        if gene in seen:
            malformed.append((line, f"gene {gene!r} repeats line {seen[gene]}"))
            continue
        seen[gene] = line
        keep.append(i)
        names.append(gene)
    if name is None:
        name = stem(path)
    report = PriorReport(path=str(path), format="dense", name=name, rows=matrix.shape[0],
                         repaired=repaired)
    _finish(report, malformed, strict, where)
    sub = matrix[np.ix_(keep, keep)]
    grn = GRN.from_dense(sub, names, threshold=threshold, attr="weight", name=name)
    _fill_counts(report, grn)
    return grn, report


def _sibling_gene_list(path: Path) -> Path:
    base = stem(path)
    candidates = [path.with_name(f"{base}{suffix}") for suffix in
                  ("_genes.txt", ".genes.txt", "_genes.tsv", ".genes.tsv", ".txt", ".tsv")]
    candidates.append(path.with_name("genes.txt"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GRNError(
        f"{path}: a dense adjacency needs its gene list; pass genes= (a list, or a file with "
        f"one gene per line) or put it beside the matrix as {candidates[0].name}"
    )


_LOADERS: dict[str, Callable[..., tuple[GRN, PriorReport]]] = {
    "edgelist": _load_edgelist,
    "trrust": _load_trrust,
    "dorothea": _load_dorothea,
    "collectri": _load_collectri,
    "regnetwork": _load_regnetwork,
    "graphml": _load_graphml,
    "dense": _load_dense,
}


# --------------------------------------------------------------------------------------------
# Public readers (GRN only)
# --------------------------------------------------------------------------------------------


def _grn_only(loader: Callable[..., tuple[GRN, PriorReport]], name: str, doc: str) -> Callable[..., GRN]:
    """A public reader: ``loader`` (same arguments) returning the GRN without its report."""

    @functools.wraps(loader)
    def reader(*args: Any, **kwargs: Any) -> GRN:
        return loader(*args, **kwargs)[0]

    reader.__name__ = reader.__qualname__ = name
    reader.__doc__ = doc
    reader.__signature__ = inspect.signature(loader).replace(return_annotation="GRN")  # type: ignore[attr-defined]
    return reader


read_edgelist = _grn_only(_load_edgelist, "read_edgelist", """\
A GRN from a delimited edge list (TSV/CSV/whitespace, optionally .gz/.bz2/.xz) or a
DataFrame.

``source``/``target``/``sign``/``weight``/``confidence`` name columns (matched exactly,
else case-insensitively) or give 0-based positions; with ``header=False`` only positions
work. ``sign`` accepts numbers (their sign) and words (activation/repression/unknown,
+/-, up/down...); ``confidence`` numbers in [0, 1], DoRothEA levels A-E or
High/Medium/Low; ``weight`` any finite number. ``sep``: default by extension (.tsv/.tab
tab, .csv comma), else sniffed from the first line (tab, comma, else whitespace).
Lines starting with ``comment`` are skipped. See the module docstring for ``strict`` and
``case``; :func:`load_prior` returns the :class:`PriorReport` too.
""")

read_trrust = _grn_only(_load_trrust, "read_trrust", """\
TRRUST v2 (``TF, Target, Regulation, PMIDs``, tab-separated). The upstream file has no
header; a first row that is not data (``TF Target Regulation Reference``) is taken as one.
Regulation Activation / Repression / Unknown -> sign +1 / -1 / 0; TRRUST lists a pair once
per regulation type, so a pair with Activation and Repression rows gets sign 0.
""")

read_dorothea = _grn_only(_load_dorothea, "read_dorothea", """\
DoRothEA (``tf, confidence, target, mor``; also OmniPath's ``source_genesymbol,
target_genesymbol, dorothea_level, is_stimulation, is_inhibition``). Keeps rows whose
level is in ``levels`` (e.g. ``"ABC"``); ``confidence`` A=1.0, B=0.8, C=0.6, D=0.4,
E=0.2; ``sign`` = sign(mor).
""")

read_collectri = _grn_only(_load_collectri, "read_collectri", """\
CollecTRI (``source, target, weight`` as written by decoupler; ``mor`` or ``sign``
instead of ``weight``; or OmniPath's ``source_genesymbol, target_genesymbol,
consensus_stimulation, consensus_inhibition``). ``weight`` is kept, ``sign`` = its
sign.
""")

read_regnetwork = _grn_only(_load_regnetwork, "read_regnetwork", """\
RegNetwork (``Source, Target, Interaction, Citation``). Interaction 1 -> sign +1
(activation), 2 -> -1 (repression), 0 / Unknown -> 0; the upstream direction files'
``-->`` / ``--|`` / ``-/-`` are read the same way. Header-less upstream files work too:
``human.source`` (symbol, id, symbol, id; no sign) and the direction files
(symbol, id, symbol, id, direction).
""")

read_graphml = _grn_only(_load_graphml, "read_graphml", """\
A GraphML file (e.g. :meth:`GRN.to_graphml`); see :func:`from_networkx`.
""")


def from_networkx(graph: nx.Graph, sign: str | None = None, confidence: str | None = None,
                  weight: str | None = None, node_attr: str | None = None, strict: bool = True,
                  case: str = "upper", name: str | None = None) -> GRN:
    """A GRN from a networkx graph with normalised gene names and parsed edge attributes.

    ``sign``/``confidence``/``weight`` name the edge-data keys to read them from (default:
    ``sign`` or the first of mor/effect/regulation/interaction/mode; ``confidence``;
    ``weight``); values are parsed like table fields, so ``effect="activation"`` works. Other
    numeric edge keys are carried as they are (first value for merged edges). Nodes are the
    node ids, or the node attribute ``node_attr`` (auto: ``name``/``label`` when all ids look
    like ``n0, n1, ...``), in graph order, isolated ones included. Undirected edges go both
    ways. Edges between two nodes that normalise to the same names are merged.
    """
    return _load_networkx(graph, sign=sign, confidence=confidence, weight=weight,
                          node_attr=node_attr, strict=strict, case=case, name=name)[0]


def read_dense(npy_path: PathLike, genes_path_or_list: PathLike | Sequence[str] | None = None,
               threshold: float = 0.0, transpose: bool = False, strict: bool = True,
               case: str = "upper", name: str | None = None) -> GRN:
    """GPO-VAE's dense adjacency (``.npy``, ``[V, V]``, entry (i, j) = edge gene i -> gene j;
    ``transpose=True`` for target-major matrices) with its gene list (a list, or a file with
    one gene per line, or a TSV/CSV whose first column names the genes; a header line is
    skipped). Entries with ``abs(value) > threshold`` become edges carrying ``weight``.
    Without a gene list, ``<stem>_genes.txt``, ``<stem>.genes.txt``, ``<stem>.txt`` or
    ``genes.txt`` beside the matrix is used."""
    return _load_dense(npy_path, genes_path_or_list, threshold=threshold, transpose=transpose,
                       strict=strict, case=case, name=name)[0]


# --------------------------------------------------------------------------------------------
# Sniffing and dispatch
# --------------------------------------------------------------------------------------------


def _format_name(fmt: str) -> str:
    key = str(fmt).strip().lower()
    key = _FORMAT_ALIASES.get(key, key)
    if key not in FORMATS:
        raise GRNError(f"format={fmt!r} is not one of {', '.join(FORMATS)} (or 'auto')")
    return key


def _sniff_fields(fields: Sequence[str]) -> str | None:
    lowered = [f.strip().lower() for f in fields]
    names = set(lowered)
    if "dorothea_level" in names or {"tf", "confidence", "target", "mor"} <= names:
        return "dorothea"
    if ({"tf", "target", "regulation"} <= names
            or (len(lowered) >= 3 and lowered[2] in _TRRUST_SIGN)):
        return "trrust"
    if "interaction" in names and "target" in names and (names & {"source", "tf", "regulator"}):
        return "regnetwork"
    if "up_or_down_or_unknown" in names:
        return "regnetwork"
    if names & {"source", "source_genesymbol"} and names & {"target", "target_genesymbol"}:
        if names & {"weight", "mor", "sign", "consensus_stimulation", "is_stimulation"}:
            return "collectri"
        return "edgelist"
    if (len(lowered) in (4, 5) and lowered[1].isdigit() and lowered[3].isdigit()):
        return "regnetwork"  # RegNetwork's header-less 'human.source' (symbol, id, symbol, id)
    return None


def sniff_format(path_or_df: pd.DataFrame | PathLike) -> str:
    """The reader name for a file or DataFrame: by extension (.graphml/.xml, .npy), else by
    the first row (header names or TRRUST's Activation/Repression/Unknown values)."""
    if isinstance(path_or_df, pd.DataFrame):
        first = ([str(c) for c in path_or_df.columns]
                 if not isinstance(path_or_df.columns, pd.RangeIndex)
                 else [_cell(v) for v in path_or_df.iloc[0]] if len(path_or_df) else [])
        where = "DataFrame"
    else:
        path = Path(path_or_df).expanduser()
        ext = split_suffix(path)[0]
        if ext in (".graphml", ".xml"):
            return "graphml"
        if ext == ".npy":
            return "dense"
        table = _Table(path)
        first = next((fields for _, fields in table.rows()), [])
        where = str(path)
    fmt = next((key for key, test in _SNIFFERS.items() if test(list(first))), None) or _sniff_fields(first)
    if fmt is None:
        raise GRNError(
            f"{where}: cannot tell the format of a table whose first row is "
            f"{_preview(first, 8)}; pass format= (one of {', '.join(FORMATS)}) and, for "
            "'edgelist', source=/target= columns (in a recipe: grn.prior_columns={source: COL, target: COL})"
        )
    return fmt


def register_prior_format(name: str, reader: Callable[..., pd.DataFrame],
                          sniff: Callable[[list[str]], bool] | None = None) -> None:
    """Add a prior-network reader under ``name`` (for ``load_prior(format=name)`` and the recipe
    key ``grn.prior_format``), e.g. from a recipe plug-in.

    ``reader(path_or_dataframe, **options)`` returns a DataFrame with columns ``source`` and
    ``target`` (gene symbols) and optionally ``sign`` (+1/-1/0), ``weight`` and ``confidence``
    (in [0, 1]); grnvae then checks and cleans it as any edge list (symbols, missing values,
    duplicates) and reports on it. ``sniff(first_row_fields)`` lets ``format="auto"`` recognise
    the format from a file's first row.
    """
    key = str(name).strip().lower()
    if not key or key == "auto":
        raise RegistryError(f"a prior format needs a name other than {name!r}")
    if key in _LOADERS or key in _FORMAT_ALIASES:
        raise RegistryError(f"prior format {key!r} is already registered; choose another name")

    def load(path_or_df, strict: bool = True, case: str = "upper", name: str | None = None,
             repair_dates: bool = True, **options: Any) -> tuple[GRN, PriorReport]:
        frame = reader(path_or_df, **options)
        where = f"prior format {key!r}"
        if not isinstance(frame, pd.DataFrame) or not {"source", "target"} <= set(map(str, frame.columns)):
            raise GRNError(f"{where}: the reader must return a DataFrame with columns source and target, got "
                           f"{type(frame).__name__}{'' if not isinstance(frame, pd.DataFrame) else list(frame.columns)[:8]}")
        cols = {c: (c if c in frame.columns else None) for c in ("sign", "weight", "confidence")}
        grn, report = _load_edgelist(frame, source="source", target="target", strict=strict, case=case,
                                     name=name, repair_dates=repair_dates, **cols)
        return grn, report

    global FORMATS
    _LOADERS[key] = load
    FORMATS = FORMATS + (key,)
    if sniff is not None:
        _SNIFFERS[key] = sniff


_SNIFFERS: dict[str, Callable[[list[str]], bool]] = {}  # registered formats' first-row tests
