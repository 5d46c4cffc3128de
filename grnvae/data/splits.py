"""Train/val/test splits of a perturbation screen (all seeded).

- ``cells``: per cell, stratified by condition (upstream GPO-VAE: 64/16/20).
- ``perturbation``: whole perturbations held out (``test`` list, or a fraction of the
  perturbations); every cell of a held-out perturbation is in val/test, so unseen perturbations
  never leak into training. Controls are split per cell.
- ``combination``: single targets are held out as unseen genes; each combination is then
  ``seen0``/``seen1``/``seen2`` by how many of its genes are seen in training. Combinations with
  an unseen gene go to test; a fraction of the ``seen2`` combinations is held out to test too.
- ``column``: an obs column with values train/val/test.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..errors import DataError

SPLITS = ("train", "val", "test")


def by_cells(groups: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Per-cell split stratified by condition: within each condition, cells are shuffled and the
    first ``round(n * f_test)`` go to test, the next ``round(n * f_val)`` to val, the rest to
    train (a condition always keeps at least one training cell)."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(groups), dtype=np.int8)
    _, f_val, f_test = fractions
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_test = min(int(round(n * f_test)), max(n - 1, 0))
        n_val = min(int(round(n * f_val)), max(n - 1 - n_test, 0))
        split[idx[:n_test]] = 2
        split[idx[n_test:n_test + n_val]] = 1
    return split


def _held_out(names: List[str], explicit: Optional[Sequence[str]], fraction: float,
              rng: np.random.Generator, what: str) -> List[str]:
    if explicit:
        unknown = [t for t in explicit if t not in names]
        if unknown:
            raise DataError(
                f"data.split.test names {what} not in the data: {unknown[:5]}; available: {names[:10]}"
                + (" ..." if len(names) > 10 else "")
            )
        return list(explicit)
    k = int(round(len(names) * fraction))
    return sorted(rng.choice(names, size=k, replace=False).tolist()) if k else []


def by_perturbation(conditions: List[str], condition_targets: List[Tuple[str, ...]],
                    cell_condition: np.ndarray, fractions: Sequence[float],
                    test: Optional[Sequence[str]], seed: int) -> np.ndarray:
    """Hold out whole perturbations (conditions) for val and test."""
    rng = np.random.default_rng(seed)
    perts = [c for c, ts in zip(conditions, condition_targets) if ts]
    _, f_val, f_test = fractions
    test_set = set(_held_out(perts, test, f_test, rng, "perturbations"))
    rest = [p for p in perts if p not in test_set]
    n_val = int(round(len(perts) * f_val))
    val_set = set(rng.choice(rest, size=min(n_val, max(len(rest) - 1, 0)), replace=False).tolist()) if rest else set()
    if not [p for p in rest if p not in val_set]:
        raise DataError("data.split: no perturbation left for training; hold out fewer perturbations")
    split = by_cells(cell_condition, fractions, seed)  # controls: per cell
    is_ctrl_cond = np.array([not ts for ts in condition_targets])
    pert_cell = ~is_ctrl_cond[cell_condition]
    cond_split = np.array([2 if c in test_set else 1 if c in val_set else 0 for c in conditions], dtype=np.int8)
    split[pert_cell] = cond_split[cell_condition[pert_cell]]
    return split


def by_combination(conditions: List[str], condition_targets: List[Tuple[str, ...]],
                   cell_condition: np.ndarray, fractions: Sequence[float],
                   test: Optional[Sequence[str]], seed: int) -> Tuple[np.ndarray, Dict[str, str]]:
    """GEARS-style combination split; returns the split and each combination's category."""
    rng = np.random.default_rng(seed)
    genes = sorted({t for ts in condition_targets for t in ts})
    combos = [(c, ts) for c, ts in zip(conditions, condition_targets) if len(ts) > 1]
    if not combos:
        raise DataError("data.split.by=combination needs combinations (labels joined by data.separator); none found")
    _, f_val, f_test = fractions
    unseen = set(_held_out(genes, test, f_test, rng, "genes"))
    categories = {c: f"seen{sum(t not in unseen for t in ts)}" for c, ts in combos}
    seen2 = [c for c, _ in combos if categories[c] == "seen2"]
    k = int(round(len(seen2) * f_test))
    held2 = set(rng.choice(seen2, size=k, replace=False).tolist()) if k else set()
    split = by_cells(cell_condition, fractions, seed)
    cond_split = np.full(len(conditions), -1, dtype=np.int8)
    for i, (c, ts) in enumerate(zip(conditions, condition_targets)):
        if not ts:
            continue
        if any(t in unseen for t in ts) or c in held2:
            cond_split[i] = 2
    moved = cond_split[cell_condition] >= 0
    split[moved] = cond_split[cell_condition[moved]]
    # seen2 combinations that stay in training are not test categories
    categories = {c: cat for c, cat in categories.items() if cat != "seen2" or c in held2}
    return split, categories


def by_column(values: pd.Series, column: str) -> np.ndarray:
    """Split from an obs column holding train/val/test (case-insensitive; 'valid'/'validation' ok)."""
    norm = values.astype(str).str.strip().str.lower().replace({"valid": "val", "validation": "val"})
    bad = sorted(set(norm) - set(SPLITS))
    if bad:
        raise DataError(f"data.split.column '{column}' has values {bad[:5]}; expected train, val or test")
    split = norm.map({s: i for i, s in enumerate(SPLITS)}).to_numpy().astype(np.int8)
    if not (split == 0).any():
        raise DataError(f"data.split.column '{column}' assigns no cell to train")
    return split
