"""Delimited text files, one set of rules for every reader (GRN edge lists, prior networks,
reference networks): compression by suffix, the file's stem and the column separator.

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
from typing import Optional

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


def pandas_separator(sep: str) -> dict:
    """``read_csv`` keywords for a separator from :func:`sniff_separator`."""
    return {"sep": r"\s+"} if sep == WHITESPACE else {"sep": sep}
