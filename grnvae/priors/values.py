"""Prior tables' cell values: gene symbols (with spreadsheet-date repair), signs, confidences,
flags, and the short previews that error messages quote.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from grnvae.errors import GRNError


#: DoRothEA confidence level -> ``confidence`` edge attribute.
DOROTHEA_CONFIDENCE: dict[str, float] = {"A": 1.0, "B": 0.8, "C": 0.6, "D": 0.4, "E": 0.2}
#: Confidence words (RegNetwork and others) -> ``confidence`` edge attribute.
WORD_CONFIDENCE: dict[str, float] = {"high": 1.0, "medium": 0.6, "low": 0.2}

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
