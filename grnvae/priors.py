"""Prior-knowledge gene regulatory networks: read, check, match to a data set, download.

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

import csv
import functools
import hashlib
import inspect
import logging
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import torch

from grnvae.errors import GRNError, RegistryError
from grnvae.tables import WHITESPACE as _WS
from grnvae.tables import open_text, separator, split_suffix, stem
from grnvae.grn import GRN
from grnvae.utils import PathLike, atomic_write, atomic_write_text

__all__ = [
    "DOROTHEA_CONFIDENCE",
    "FORMATS",
    "CatalogEntry",
    "MatchReport",
    "PriorReport",
    "catalog",
    "catalog_path",
    "default_cache_dir",
    "download",
    "from_networkx",
    "load_prior",
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
    "resolve_prior",
    "sniff_format",
]

logger = logging.getLogger(__name__)


#: DoRothEA confidence level -> ``confidence`` edge attribute.
DOROTHEA_CONFIDENCE: dict[str, float] = {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.4, "E": 0.2}
#: Confidence words (RegNetwork and others) -> ``confidence`` edge attribute.
WORD_CONFIDENCE: dict[str, float] = {"high": 1.0, "medium": 0.6, "low": 0.2}

#: Reader names accepted by ``format=`` (aliases map to these).
FORMATS = ("edgelist", "trrust", "dorothea", "collectri", "regnetwork", "graphml", "dense")
_FORMAT_ALIASES = {
    "tsv": "edgelist", "csv": "edgelist", "generic": "edgelist", "table": "edgelist",
    "npy": "dense", "trrust2": "trrust", "trrust_v2": "trrust", "omnipath": "collectri",
}

_CASES = ("upper", "keep")
_MALFORMED_SHOWN = 5  # line numbers shown in messages

# --------------------------------------------------------------------------------------------
# Symbols and values
# --------------------------------------------------------------------------------------------

_EXCEL_ERRORS = frozenset(
    {"#NAME?", "#N/A", "#N/A N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NUM!", "#NULL!",
     "#GETTING_DATA", "#SPILL!", "#CALC!", "#FIELD!", "#BLOCKED!", "#UNKNOWN!", "#BUSY!"}
)
_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "<na>", "-nan", "nil"})
_GENE_RE = re.compile(r"^[^\W_][\w.\-:/@'()]*$")
# Letters and digits joined by '-' / '.': a symbol unless a missing-value word or a date.
_PLAIN_SYMBOL_RE = re.compile(r"[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*\Z")
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_EXCEL_DATE_RE = re.compile(rf"^(\d{{1,2}}-({_MONTHS})|({_MONTHS})-\d{{1,2}})$", re.IGNORECASE)


class _Bad(ValueError):
    """A malformed value; the message is the reason shown to the user."""


def _check_case(case: str) -> str:
    if case not in _CASES:
        raise GRNError(f"case={case!r} is not one of {', '.join(map(repr, _CASES))}")
    return case


def normalize_symbol(symbol: Any, case: str = "upper") -> str:
    """A cleaned gene symbol: whitespace stripped (and surrounding quotes), upper-cased with
    ``case="upper"``. Raises :class:`GRNError` if it does not look like a gene identifier
    (empty, ``NA``, an Excel error value such as ``#NAME?`` or an Excel date such as
    ``2-Sep``)."""
    _check_case(case)
    try:
        return _symbol(symbol, case)
    except _Bad as exc:
        raise GRNError(f"gene symbol {symbol!r}: {exc}") from None


# Spreadsheet date corruption that has one inverse (Zeeberg et al. 2004, Ziemann et al. 2016):
# SEPT7 -> 'Sep-07' / '7-Sep', MARCH1 -> 'Mar-01', DEC1 -> 'Dec-01', OCT4 -> 'Oct-04'. The
# upstream TRRUST v2 human file has four such rows. Other months are left malformed.
_DATE_PREFIX = {"sep": "SEPT", "mar": "MARCH", "dec": "DEC", "oct": "OCT"}
_DATE_PARTS_RE = re.compile(rf"^(?:(\d{{1,2}})-({_MONTHS})|({_MONTHS})-(\d{{1,2}}))$",
                            re.IGNORECASE)


def _undate(text: str) -> str | None:
    """``SEPT7`` for ``Sep-07`` / ``7-Sep`` (see ``_DATE_PREFIX``), else None."""
    match = _DATE_PARTS_RE.match(text)
    if not match:
        return None
    day = int(match.group(1) or match.group(4))
    prefix = _DATE_PREFIX.get((match.group(2) or match.group(3)).lower())
    return f"{prefix}{day}" if prefix and day > 0 else None


def _symbol(value: Any, case: str, role: str = "gene",
            repaired: list[tuple[str, str]] | None = None) -> str:
    """A cleaned symbol or :class:`_Bad`. With a ``repaired`` list, spreadsheet dates with a
    known inverse are turned back into symbols and ``(old, new)`` is appended to it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise _Bad(f"missing {role}")
    if (isinstance(value, str) and _PLAIN_SYMBOL_RE.match(value)  # fast path: most symbols
            and value.lower() not in _MISSING and not _EXCEL_DATE_RE.match(value)):
        return value.upper() if case == "upper" else value
    text = _unquote(str(value).strip())
    if text.lower() in _MISSING:
        raise _Bad(f"missing {role} ({text!r})" if text else f"missing {role} (empty field)")
    if text.upper() in _EXCEL_ERRORS:
        raise _Bad(f"{role} {text!r} is a spreadsheet error value, not a gene symbol")
    if _EXCEL_DATE_RE.match(text):
        fixed = _undate(text) if repaired is not None else None
        if fixed is not None:
            repaired.append((text, fixed))
            return fixed
        raise _Bad(f"{role} {text!r} looks like a gene symbol turned into a date by a "
                   "spreadsheet (e.g. SEPT2 -> 2-Sep); use the official symbol")
    if not _GENE_RE.match(text):
        raise _Bad(f"{role} {text!r} is not a gene symbol")
    return text.upper() if case == "upper" else text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


def _is_missing(text: str) -> bool:
    return text.strip().lower() in _MISSING


def _describe(text: str) -> str:
    if text.strip().upper() in _EXCEL_ERRORS:
        return f"{text!r} (a spreadsheet error value)"
    return repr(text)


def _number(text: str, what: str) -> float:
    if _is_missing(text):
        raise _Bad(f"missing {what}")
    try:
        value = float(text)
    except ValueError:
        raise _Bad(f"{what} {_describe(text)} is not a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{what} {text!r} is not a finite number")
    return value


_SIGN_WORDS: dict[str, float] = {}
for _words, _value in (
    ("activation activator activating activates activate stimulation stimulates stimulate "
     "induction induces induce positive pos up upregulation up-regulation up_regulation "
     "+ +1 -->", 1.0),
    ("repression repressor repressing represses repress inhibition inhibits inhibit "
     "inhibitor negative neg down downregulation down-regulation down_regulation - -1 --|",
     -1.0),
    ("unknown unk ? 0 dual ambiguous unsigned", 0.0),
):
    for _w in _words.split():
        _SIGN_WORDS[_w] = _value


def _sign_of(value: float) -> float:
    return 1.0 if value > 0 else -1.0 if value < 0 else 0.0


def _parse_sign(text: str, what: str = "sign") -> float:
    """+1 / -1 / 0 from a number (its sign) or a word (activation, repression, unknown...)."""
    key = text.strip().lower()
    if key in _SIGN_WORDS:
        return _SIGN_WORDS[key]
    if key in _MISSING:
        raise _Bad(f"missing {what}")
    try:
        value = float(key)
    except ValueError:
        raise _Bad(
            f"{what} {_describe(text)} is not a number nor one of activation/repression/unknown"
        ) from None
    if not math.isfinite(value):
        raise _Bad(f"{what} {text!r} is not a finite number")
    return _sign_of(value)


_TRRUST_SIGN = {"activation": 1.0, "repression": -1.0, "unknown": 0.0}


def _parse_trrust_sign(text: str) -> float:
    key = text.strip().lower()
    if key in _TRRUST_SIGN:
        return _TRRUST_SIGN[key]
    if key in _MISSING:
        raise _Bad("missing regulation type")
    raise _Bad(f"regulation {_describe(text)} is not Activation, Repression or Unknown")


# RegNetwork: 1 = activation, 2 = repression, 0 / Unknown = unknown in numeric exports (checked
# against TRRUST: of the pairs of the KEGG subset also in TRRUST, code 2 is never
# 'Activation'). The upstream direction files use KEGG relation symbols: '-->' activation /
# expression, '--|' inhibition / repression; the others ('-p' dephosphorylation, '+p'
# phosphorylation, '---' binding, '-/-' missing interaction, '..>' indirect effect, ...) state
# no direction of effect and read as 0.
_REGNETWORK_SIGN = {
    "1": 1.0, "+1": 1.0, "-->": 1.0, "->": 1.0, "-e->": 1.0, "activation": 1.0, "+": 1.0,
    "2": -1.0, "-1": -1.0, "--|": -1.0, "-|": -1.0, "repression": -1.0, "inhibition": -1.0,
    "0": 0.0, "unknown": 0.0, "-/-": 0.0, "?": 0.0, "---": 0.0, "..>": 0.0, "-p": 0.0,
    "+p": 0.0, "+u": 0.0, "-u": 0.0, "+m": 0.0, "-m": 0.0, "+g": 0.0, "+i": 0.0, "+a": 0.0,
}


def _parse_regnetwork_sign(text: str) -> float:
    key = text.strip().lower()
    if key in _REGNETWORK_SIGN:
        return _REGNETWORK_SIGN[key]
    try:  # 1.0 / 2.0 written by a spreadsheet
        number = float(key)
        if number in (0.0, 1.0, 2.0, -1.0):
            return _REGNETWORK_SIGN[str(int(number))]
    except ValueError:
        pass
    if key in _MISSING:
        raise _Bad("missing interaction type")
    raise _Bad(
        f"interaction {_describe(text)} is not 1 (activation), 2 (repression), "
        "0/Unknown or a KEGG relation symbol ('-->', '--|', '-p', '---', ...)"
    )


def _parse_confidence(text: str, what: str = "confidence") -> float:
    key = text.strip()
    if key.upper() in DOROTHEA_CONFIDENCE:
        return DOROTHEA_CONFIDENCE[key.upper()]
    if key.lower() in WORD_CONFIDENCE:
        return WORD_CONFIDENCE[key.lower()]
    if _is_missing(key):
        raise _Bad(f"missing {what}")
    try:
        value = float(key)
    except ValueError:
        raise _Bad(
            f"{what} {_describe(text)} is not a number in [0, 1], a DoRothEA level A-E "
            "or High/Medium/Low"
        ) from None
    if not (0.0 <= value <= 1.0):
        raise _Bad(f"{what} {text!r} is outside [0, 1]")
    return value


def _dorothea_level(text: str) -> str:
    """The best (most confident) level of ``A`` or ``A;B`` / ``A,B`` (OmniPath)."""
    parts = [p.strip().upper() for p in re.split(r"[;,|]", text) if p.strip()]
    if not parts:
        raise _Bad("missing confidence level")
    bad = [p for p in parts if p not in DOROTHEA_CONFIDENCE]
    if bad:
        raise _Bad(f"confidence level {_describe(text)} is not one of A, B, C, D, E")
    return min(parts)


_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"}


def _parse_flag(text: str, what: str) -> bool:
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise _Bad(f"{what} {_describe(text)} is not True/False")


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def _preview(items: Iterable[Any], limit: int = _MALFORMED_SHOWN) -> str:
    """The first ``limit`` items for a message: printable characters only, each at most 40."""
    items = list(items)
    shown = ", ".join(repr(str(i)[:40])[1:-1] for i in items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


# --------------------------------------------------------------------------------------------
# Catalog, cache, download
# --------------------------------------------------------------------------------------------

_REQUIRED_FIELDS = ("url", "license", "format", "sha256", "citation", "species", "description")


@dataclass(frozen=True)
class CatalogEntry:
    """One public prior network of ``priors/catalog.yaml``.

    ``sha256`` may be None (not yet recorded by a maintainer): :func:`download` then refuses
    the file unless ``allow_unverified=True``. ``filename`` is the name in the cache;
    ``member`` the file to read inside a downloaded .zip archive; ``options`` are reader
    keyword defaults (e.g. ``levels`` for DoRothEA, ``case`` for mouse symbols).
    """

    name: str
    url: str
    license: str
    format: str
    sha256: str | None
    citation: str
    species: str
    description: str
    filename: str
    member: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def catalog_path() -> Path:
    """``$GRNVAE_PRIOR_CATALOG``, else the built-in ``priors/catalog.yaml``
    (:func:`grnvae.utils.builtin_dir`)."""
    from .utils import builtin_dir

    env = os.environ.get("GRNVAE_PRIOR_CATALOG")
    if env:
        return Path(env).expanduser()
    return builtin_dir("priors") / "catalog.yaml"


def _check_sha256(value: Any, where: str) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise GRNError(f"{where}: sha256 {value!r} is not 64 hexadecimal digits")
    return text


def _url_filename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    return urllib.parse.unquote(name)


def catalog(path: PathLike | None = None) -> dict[str, CatalogEntry]:
    """The public prior networks, name -> :class:`CatalogEntry` (``priors/catalog.yaml``)."""
    import yaml

    path = Path(path).expanduser() if path is not None else catalog_path()
    if not path.is_file():
        raise GRNError(f"prior catalog {path} not found; set $GRNVAE_PRIOR_CATALOG to a "
                       "catalog file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise GRNError(f"prior catalog {path}: invalid YAML ({exc})") from None
    entries = raw.get("priors") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise GRNError(f"prior catalog {path}: expected a top-level 'priors:' mapping of "
                       "name -> entry")
    out: dict[str, CatalogEntry] = {}
    files: dict[str, str] = {}
    for name, entry in entries.items():
        where = f"prior catalog {path}, entry {name!r}"
        if not isinstance(entry, dict):
            raise GRNError(f"{where}: expected a mapping of fields")
        missing = [f for f in _REQUIRED_FIELDS if f not in entry]
        if missing:
            raise GRNError(f"{where}: missing field(s) {', '.join(missing)} (required: "
                           f"{', '.join(_REQUIRED_FIELDS)}; sha256 may be null)")
        fmt = _format_name(entry["format"])
        _check_scheme(str(entry["url"]), where)
        filename = str(entry.get("filename") or _url_filename(str(entry["url"])) or name)
        if filename in files:
            raise GRNError(f"{where}: filename {filename!r} is also used by {files[filename]!r}")
        files[filename] = name
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise GRNError(f"{where}: options must be a mapping")
        out[str(name)] = CatalogEntry(
            name=str(name), url=str(entry["url"]), license=str(entry["license"]), format=fmt,
            sha256=_check_sha256(entry["sha256"], where), citation=str(entry["citation"]),
            species=str(entry["species"]), description=str(entry["description"]).strip(),
            filename=filename, options=dict(options),
            member=None if entry.get("member") is None else str(entry["member"]),
        )
    return out


def default_cache_dir(path: PathLike | None = None) -> Path:
    """Where downloaded priors go: ``path``, else ``$GRNVAE_CACHE/priors``, else
    ``~/.cache/grnvae/priors``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("GRNVAE_CACHE")
    if env:
        return Path(env).expanduser() / "priors"
    return Path.home() / ".cache" / "grnvae" / "priors"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str,
    cache_dir: PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    *,
    allow_unverified: bool = False,
    filename: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download prior ``name`` into the cache and return the local path.

    ``name`` is a catalog entry (``url``/``sha256`` override its fields) or any name when
    ``url`` is given. The file is streamed into a temporary file in the cache directory,
    its SHA-256 is checked, and only then is it renamed into place; a wrong checksum raises
    :class:`GRNError` and leaves nothing behind. A cached file with the expected checksum is
    returned without downloading. Without a known checksum the download is refused unless
    ``allow_unverified=True`` (then the computed checksum is logged, to be recorded in the
    catalog).
    """
    try:
        entries = catalog()
    except GRNError:
        if url is None:
            raise
        entries = {}
    entry = entries.get(name)
    if entry is None and url is None:
        known = ", ".join(sorted(entries)) or "none"
        raise GRNError(f"download: {name!r} is not a catalog prior (known: {known}); "
                       "pass url= to download another file")
    url = url if url is not None else entry.url  # type: ignore[union-attr]
    expected = _check_sha256(sha256, f"download {name!r}") if sha256 is not None else (
        entry.sha256 if entry is not None else None)
    filename = filename or (entry.filename if entry is not None else _url_filename(url) or name)
    if not filename or filename in (".", "..") or "/" in filename or os.sep in filename:
        raise GRNError(f"download {name!r}: invalid file name {filename!r}; pass filename=")
    folder = default_cache_dir(cache_dir)
    final = folder / filename

    _check_scheme(url, f"download {name!r}")
    pinned = final.with_name(final.name + ".sha256")  # the checksum of an unverified download
    if final.is_file():
        if expected is None:
            if allow_unverified:
                recorded = pinned.read_text().strip() if pinned.is_file() else None
                if recorded is not None and _sha256_file(final) == recorded:
                    logger.warning("%s: using the cached %s (no catalog checksum; it matches the one "
                                   "recorded when it was downloaded)", name, final)
                    return final
                logger.warning("%s: cached %s has no checksum to check it against (or no longer matches "
                               "the one recorded); downloading again", name, final)
        elif _sha256_file(final) == expected:
            logger.info("%s: using cached %s", name, final)
            return final
        else:
            logger.warning("%s: cached %s does not match its checksum; downloading again",
                           name, final)
    if expected is None and not allow_unverified:
        raise GRNError(
            f"download {name!r}: no sha256 checksum is recorded for {url}, so the file cannot "
            "be verified; fill in the entry's sha256 in priors/catalog.yaml, pass sha256=, or "
            "pass allow_unverified=True (or download the file yourself and give its path)"
        )

    digest_holder: dict[str, str] = {}

    def fetch(tmp: str) -> None:
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, \
                    open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise GRNError(
                f"download {name!r}: cannot fetch {url} ({reason}); check the network or "
                "download the file yourself and pass its path"
            ) from None
        got = digest.hexdigest()
        if expected is not None and got != expected:
            raise GRNError(
                f"download {name!r}: checksum mismatch for {url}: expected sha256 {expected}, "
                f"got {got}; the file changed upstream or is corrupt, so it was not cached"
            )
        digest_holder["sha256"] = got

    logger.info("%s: downloading %s -> %s", name, url, final)
    atomic_write(final, fetch)
    if expected is None:
        atomic_write_text(pinned, digest_holder["sha256"] + "\n")  # later uses re-verify against it
        logger.warning("%s: downloaded %s without verification; its sha256 is %s (record it "
                       "in the catalog)", name, final, digest_holder.get("sha256"))
    return final


#: URL schemes a prior may be fetched with: https, or file:// for a local mirror
SCHEMES = ("https", "file")


def _check_scheme(url: str, where: str) -> None:
    scheme = urllib.parse.urlsplit(str(url)).scheme.lower()
    if scheme not in SCHEMES:
        raise GRNError(f"{where}: {str(url)[:80]!r} uses the scheme {scheme or '(none)'!r}; priors are fetched "
                       f"only over https (or file:// for a local mirror): use an https URL, or download the "
                       f"file yourself and give its path")


def resolve_prior(ref: PathLike, cache_dir: PathLike | None = None,
                  allow_unverified: bool = False) -> Path:
    """A local file for ``ref``: an existing path as it is, a catalog name downloaded into
    (or found in) the cache. Anything else raises :class:`GRNError` listing the catalog."""
    if not isinstance(ref, (str, os.PathLike)):
        raise GRNError(f"a prior is a catalog name or a file path, got {type(ref).__name__}")
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise GRNError(f"prior {str(ref)!r} is a directory; give the network file inside it")
    try:
        entries, problem = catalog(), ""
    except GRNError as exc:  # an unreadable catalog is reported, not mistaken for a missing one
        entries, problem = {}, f" (the catalog cannot be used: {exc})"
    if isinstance(ref, str) and ref in entries:
        local = download(ref, cache_dir=cache_dir, allow_unverified=allow_unverified)
        member = entries[ref].member
        return _extract_member(local, member) if member else local
    known = ", ".join(sorted(entries)) or f"none{problem}"
    raise GRNError(
        f"prior {str(ref)!r} is neither an existing file nor a catalog name; catalog names: "
        f"{known}; or give the path of a network file ({', '.join(FORMATS)})"
    )


def _extract_member(archive: Path, member: str) -> Path:
    """``member`` of a (verified) zip archive, extracted once next to it."""
    import zipfile

    dest = archive.with_name(f"{stem(archive)}.{Path(member).name}")
    if dest.is_file() and dest.stat().st_mtime >= archive.stat().st_mtime:
        return dest
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise GRNError(f"{archive}: no member {member!r} in the archive; it holds "
                               f"{_preview(names, 10)}")

            def write(tmp: str) -> None:
                with zf.open(member) as src, open(tmp, "wb") as out:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)

            atomic_write(dest, write)
    except zipfile.BadZipFile as exc:
        raise GRNError(f"{archive}: not a zip archive ({exc})") from None
    return dest
