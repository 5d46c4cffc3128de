"""Perturbation labels -> conditions and their targets.

A label is a control (one of ``data.control``), an unassigned label (``data.unassigned``, e.g.
``multiple``/``unassigned``/empty, handled by ``data.on_unassigned``: drop with a count, or
error), or one or more targeted genes joined by ``data.separator`` (``A+B``; GEARS' ``A+ctrl``
is the single ``A`` because ``ctrl`` is a control label). A condition is a set of targets, named
canonically (:func:`canonical`): ``B+A`` and ``A+B`` are one condition, ``A+ctrl`` and ``A``
another, so no split can put one condition on both of its sides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger(__name__)

CONTROL = "control"


@dataclass
class Labels:
    """The parsed perturbation column.

    ``keep`` ``[N_all]`` marks cells kept; the other arrays cover kept cells only.
    ``conditions[0]`` is always the control condition (no targets).
    """

    keep: np.ndarray
    labels: np.ndarray
    is_control: np.ndarray
    conditions: List[str]
    cell_condition: np.ndarray
    condition_targets: List[Tuple[str, ...]]
    dropped: Dict[str, int] = field(default_factory=dict)

    @property
    def targets(self) -> List[str]:
        """All targeted genes, sorted."""
        return sorted({t for ts in self.condition_targets for t in ts})

    @property
    def combinations(self) -> List[str]:
        return [c for c, ts in zip(self.conditions, self.condition_targets) if len(ts) > 1]

    def counts(self) -> pd.Series:
        """Cells per condition."""
        return pd.Series(np.bincount(self.cell_condition, minlength=len(self.conditions)), index=self.conditions)


def _parts(label: str, separator: str) -> List[str]:
    return [p.strip() for p in str(label).split(separator)] if separator else [str(label).strip()]


def gene_alias(targets: Sequence[str], genes: Sequence[str]) -> Dict[str, str]:
    """Targets that name a gene only up to case (``stat1`` for ``STAT1``): ``{target: gene}``
    where the case-insensitive match is unique and no gene has the exact name."""
    exact = set(genes)
    upper: Dict[str, List[str]] = {}
    for g in genes:
        upper.setdefault(g.upper(), []).append(g)
    return {t: upper[t.upper()][0] for t in targets if t not in exact and len(upper.get(t.upper(), [])) == 1}


def canonical(label: str, controls: Sequence[str], separator: str = "+", alias: Dict[str, str] = None) -> str:
    """A perturbation label's canonical name: its targets (through ``alias``, :func:`gene_alias`),
    sorted and joined by ``separator``, controls left out (``B+A`` -> ``A+B``, ``A+ctrl`` -> ``A``);
    ``""`` for a control."""
    alias, controls = alias or {}, {str(c) for c in controls}
    return separator.join(sorted({alias.get(p, p) for p in _parts(label, separator) if p and p not in controls}))


def parse_labels(
    values: pd.Series,
    controls: Sequence[str],
    separator: str = "+",
    unassigned: Sequence[str] = (),
    on_unassigned: str = "drop",
    key: str = "perturbation",
    source: str = "<AnnData>",
    min_cells: int = 1,
    training: bool = True,
    genes: Sequence[str] = (),
) -> Labels:
    """Parse an obs column of perturbation labels (see module docstring).

    Perturbations with fewer than ``min_cells`` cells are dropped (reported in ``dropped``).
    ``training`` false: the labels of cells a trained model reads, which need neither control
    cells nor a second label. ``genes``: the measured genes, so that a target naming one only up
    to case is that gene (:func:`gene_alias`). Conditions are named canonically (:func:`canonical`).
    """
    if len(values) == 0:
        raise DataError(f"{source}: no cells (the AnnData is empty); give cells to read")
    raw = values.astype(object).where(values.notna(), "")
    labels = np.array([str(v).strip() for v in raw], dtype=object)
    controls = [str(c) for c in controls]
    unassigned_lc = {str(u).strip().lower() for u in unassigned} | {""}
    is_unassigned = np.array([lab.lower() in unassigned_lc or lab.lower() == "nan" for lab in labels], dtype=bool)
    dropped = {str(k): int(v) for k, v in pd.Series(labels[is_unassigned]).replace("", "<empty>").value_counts().items()}
    if is_unassigned.any():
        if on_unassigned == "error":
            raise DataError(
                f"{source}: column '{key}' has unassigned labels {dropped}; set "
                f"data.on_unassigned=drop to drop those cells, or relabel them"
            )
        log.warning("%s: dropping %d cells with unassigned labels %s (data.on_unassigned=drop)",
                    source, int(is_unassigned.sum()), dropped)
    keep = ~is_unassigned
    # one condition per set of targets, named canonically: 'B+A' is 'A+B', GEARS' 'A+ctrl' is 'A'
    # and 'ctrl+ctrl' a control ('' here), so that no split can put one condition on both sides
    distinct_labels, inverse = np.unique(labels.astype(str), return_inverse=True)
    alias = gene_alias(sorted({p for lab in distinct_labels for p in _parts(lab, separator) if p}), [str(g) for g in genes])
    names = np.array([canonical(lab, controls, separator, alias) for lab in distinct_labels], dtype=object)[inverse]
    if min_cells > 1:
        counts = pd.Series(names[keep]).value_counts()
        perts = counts[counts.index != ""]
        small = perts[perts < min_cells]
        if len(small):
            log.warning("%s: dropping %d perturbations with fewer than %d cells (data.min_cells): %s",
                        source, len(small), min_cells, {str(k): int(v) for k, v in small.head(10).items()})
            if training and len(small) == len(perts):
                raise DataError(f"{source}: every perturbation in '{key}' has fewer than {min_cells} cells "
                                f"(data.min_cells; the largest has {int(perts.max())}); lower data.min_cells")
            keep &= ~np.isin(names, small.index.to_numpy())
            dropped.update({f"{k} (< {min_cells} cells)": int(v) for k, v in small.items()})
    labels, names = labels[keep], names[keep]
    if len(labels) == 0:
        raise DataError(f"{source}: no cells left in '{key}' after dropping unassigned labels {dropped}")
    is_control = names == ""
    if training and not is_control.any():
        top = pd.Series(labels).value_counts().index[:8].tolist()
        raise DataError(
            f"{source}: no control cells: no '{key}' label equals {controls} (data.control); "
            f"most common labels: {top}. Set data.control=<label>"
        )
    if training and len(pd.unique(names)) < 2:
        raise DataError(
            f"{source}: column '{key}' has a single value {labels[0]!r}: no perturbations to learn from"
        )

    if separator:
        broken = sorted({lab for lab in pd.unique(labels[~is_control])
                         if separator in lab and any(not p.strip() for p in lab.split(separator))})
        if broken:
            raise DataError(
                f"{source}: column '{key}' has labels with an empty part around the separator {separator!r} "
                f"(data.separator): {[b[:40] for b in broken[:5]]}; name every target (e.g. 'A+B', or 'A' for a "
                f"single), or set data.separator if {separator!r} is part of the gene names")

    uniq, cell_condition = np.unique(names.astype(str), return_inverse=True)
    conditions, condition_targets = [], []
    for u in uniq:
        conditions.append(u or CONTROL)
        condition_targets.append(tuple(u.split(separator)) if u and separator else (u,) if u else ())
    seen_labels = pd.unique(labels).astype(str)
    if separator and not any(separator in u for u in seen_labels):
        others = [c for c in "+,;|_" if c != separator and any(c in u for u in seen_labels)]
        if others:
            example = next(u for u in seen_labels if others[0] in u)
            log.warning(
                "%s: the label separator %r (data.separator) never occurs in '%s', but %r does "
                "(e.g. %r); set data.separator=%r if those labels are combinations",
                source, separator, key, others[0], example, others[0],
            )
    return Labels(keep=keep, labels=labels, is_control=is_control, conditions=conditions,
                  cell_condition=cell_condition.astype(np.int64),
                  condition_targets=condition_targets, dropped=dropped)
