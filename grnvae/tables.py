"""Delimited text files, one set of rules for every reader (GRN edge lists, prior networks,
reference networks): compression by suffix, the file's stem, the column separator and, for the
readers that parse whole columns (:func:`read_table`), missing values.

The separator follows the extension when it is unambiguous (``.tsv``/``.tab``: tab, ``.csv``:
comma); otherwise (``.txt``, no extension) the first line decides: tab if it has one, else comma
if it has one, else runs of whitespace.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path
from typing import Optional, Sequence

from .errors import GRNError

#: compression suffix -> pandas' compression name
COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
WHITESPACE = "whitespace"  # the separator name for runs of spaces and tabs


def split_suffix(path: Path) -> tuple[str, Optional[str]]:
    """``(extension without a compression suffix, pandas compression name or None)``."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    compression = COMPRESSION.get(suffixes.pop()) if suffixes and suffixes[-1] in COMPRESSION else None
    return (suffixes[-1] if suffixes else ""), compression


def stem(path: Path) -> str:
    """``dorothea`` for ``dorothea.tsv.gz``: a compression suffix, then one extension, dropped."""
    name = Path(path).name
    if Path(name).suffix.lower() in COMPRESSION:
        name = name[: -len(Path(name).suffix)]
    return os.path.splitext(name)[0] or name


def open_text(path: Path) -> io.TextIOBase:
    """A text handle (UTF-8, BOM dropped, undecodable bytes replaced), decompressing by suffix."""
    path = Path(path)
    opener = _OPENERS.get(path.suffix.lower())
    try:
        if opener is not None:
            return opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
        return open(path, encoding="utf-8-sig", errors="replace", newline="")
    except OSError as exc:
        raise GRNError(f"{path}: cannot be opened ({exc.strerror or exc})") from None


def first_line(path: Path) -> str:
    """The first non-empty line of a text file ('' when there is none)."""
    with open_text(path) as fh:
        for line in fh:
            if line.strip():
                return line
    return ""


def sniff_separator(path: Path, line: Optional[str] = None) -> str:
    """``"\\t"``, ``","`` or :data:`WHITESPACE` for a file (see the module docstring); ``line``
    is its first line when the caller has read it already."""
    ext, _ = split_suffix(path)
    if ext in (".tsv", ".tab"):
        return "\t"
    if ext == ".csv":
        return ","
    line = first_line(path) if line is None else line
    if "\t" in line:
        return "\t"
    if "," in line:
        return ","
    return WHITESPACE


def separator(path: Path, sep: Optional[str] = None, line: Optional[str] = None) -> str:
    """The separator of a file: ``sep`` when given (``"tab"`` / ``"\\t"`` and ``"whitespace"`` /
    ``"space"`` / ``"\\s+"`` name the tab and runs of whitespace), else :func:`sniff_separator`."""
    if sep is None:
        return sniff_separator(path, line)
    if sep in ("\\t", "tab"):
        return "\t"
    if sep in (" ", r"\s+", "whitespace", "space"):
        return WHITESPACE
    return sep


def pandas_separator(sep: str) -> dict:
    """``read_csv`` keywords for a separator from :func:`sniff_separator`."""
    return {"sep": r"\s+"} if sep == WHITESPACE else {"sep": sep}


# Strings read as missing outside gene columns (pandas' defaults); gene columns keep them as names.
NA_STRINGS = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
]


def read_header(path: Path, sep: Optional[str] = None, where: Optional[str] = None) -> list:
    """The column names of a delimited file (``sep``: a separator override)."""
    import pandas as pd

    options = pandas_separator(separator(path, sep))
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, **options).columns]
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _unreadable(path, where, exc) from None


def read_table(path: Path, gene_columns: Sequence[str] = (), usecols: Optional[Sequence[str]] = None,
               sep: Optional[str] = None, where: Optional[str] = None):
    """A delimited file as a ``pandas.DataFrame``: ``gene_columns`` are strings in which names
    such as ``NA`` or ``NULL`` stay names and only an empty field is missing; other columns read
    pandas' missing-value strings as missing. ``usecols`` parses only those columns (large
    gzipped tables read in seconds). An unreadable file is a :class:`GRNError` naming ``where``
    (default: the path)."""
    import pandas as pd

    options = pandas_separator(separator(path, sep))
    header = read_header(path, sep, where)
    genes = [c for c in gene_columns if c in header]
    na_values = {c: ([""] if c in genes else NA_STRINGS) for c in (usecols or header)}
    try:
        return pd.read_csv(path, usecols=usecols, dtype={c: str for c in genes}, keep_default_na=False,
                           na_values=na_values, **options)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise _unreadable(path, where, exc) from None


def _unreadable(path: Path, where: Optional[str], exc: Exception) -> GRNError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return GRNError(f"{where or path}: cannot be read as a table ({type(exc).__name__}: {first}); "
                    f"pass sep= or check the file")
