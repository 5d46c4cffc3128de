"""Train/val/test splits of a perturbation screen (all seeded).

- ``cells``: per cell, stratified by condition (upstream GPO-VAE: 64/16/20).
- ``perturbation``: whole perturbations held out for test (``test`` list, or a fraction of the
  perturbations), so unseen perturbations never leak into training; validation is made of
  held-out cells of the seen perturbations (or of further whole perturbations with
  ``data.split.val=perturbations``). Controls are split per cell.
- ``combination``: targeted genes are held out as unseen (every condition containing one goes
  to test) and a fraction of the other combinations is held out too; each test combination is
  ``seen0``/``seen1``/``seen2`` by how many of its genes have single-perturbation training cells.
  Validation is made of held-out cells of the training conditions.
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
                    test: Optional[Sequence[str]], seed: int, val: str = "cells") -> np.ndarray:
    """Hold out whole perturbations (conditions) for test.

    The held-out perturbations (``test``, or a fraction ``f_test`` of them) put every cell in
    test. Validation, by default (``val="cells"``), is a per-cell fraction of the perturbations
    seen in training, so early stopping watches cells a model can predict;
    ``val="perturbations"`` holds out a further ``f_val`` of the perturbations whole for val.
    Controls are split per cell.
    """
    rng = np.random.default_rng(seed)
    perts = [c for c, ts in zip(conditions, condition_targets) if ts]
    _, f_val, f_test = fractions
    test_set = set(_held_out(perts, test, f_test, rng, "perturbations"))
    rest = [p for p in perts if p not in test_set]
    val_set: set = set()
    if val == "perturbations":
        n_val = int(round(len(perts) * f_val))
        val_set = set(rng.choice(rest, size=min(n_val, max(len(rest) - 1, 0)), replace=False).tolist()) if rest else set()
    if not [p for p in rest if p not in val_set]:
        raise DataError("data.split: no perturbation left for training; hold out fewer perturbations")
    split = by_cells(cell_condition, fractions, seed)  # controls: per cell
    if val == "cells":  # seen perturbations: train/val per cell
        seen = by_cells(cell_condition, _train_val(fractions), seed + 1)
    else:
        seen = np.zeros_like(split)
    is_ctrl_cond = np.array([not ts for ts in condition_targets])
    pert_cell = ~is_ctrl_cond[cell_condition]
    split[pert_cell] = seen[pert_cell]
    cond_split = np.array([2 if c in test_set else 1 if c in val_set else -1 for c in conditions], dtype=np.int8)
    held = pert_cell & (cond_split[cell_condition] >= 0)
    split[held] = cond_split[cell_condition[held]]
    return split


def _train_val(fractions: Sequence[float]) -> List[float]:
    """The train/val fractions renormalised with no test share (cells of seen perturbations when
    test is made of whole held-out perturbations)."""
    f_train, f_val, _ = fractions
    return [f_train / (f_train + f_val), f_val / (f_train + f_val), 0.0]


def by_combination(conditions: List[str], condition_targets: List[Tuple[str, ...]],
                   cell_condition: np.ndarray, fractions: Sequence[float],
                   test: Optional[Sequence[str]], seed: int) -> np.ndarray:
    """GEARS-style combination split (the test combinations' categories:
    :func:`combination_categories`).

    Genes drawn as unseen (``test``, or a fraction ``f_test`` of the targeted genes) have every
    condition that contains them held out for test, and a fraction ``f_test`` of the remaining
    combinations is held out too. Every other condition is split per cell into train and val.
    """
    rng = np.random.default_rng(seed)
    genes = sorted({t for ts in condition_targets for t in ts})
    combos = [(c, ts) for c, ts in zip(conditions, condition_targets) if len(ts) > 1]
    if not combos:
        raise DataError("data.split.by=combination needs combinations (labels joined by data.separator); none found")
    _, f_val, f_test = fractions
    unseen = set(_held_out(genes, test, f_test, rng, "genes"))
    rest = [c for c, ts in combos if not any(t in unseen for t in ts)]
    k = int(round(len(rest) * f_test))
    held_combos = set(rng.choice(rest, size=k, replace=False).tolist()) if k else set()
    split = by_cells(cell_condition, _train_val(fractions), seed)
    controls = by_cells(cell_condition, fractions, seed)
    test_cond = np.zeros(len(conditions), dtype=bool)
    for i, (c, ts) in enumerate(zip(conditions, condition_targets)):
        if not ts:
            split[cell_condition == i] = controls[cell_condition == i]
        elif any(t in unseen for t in ts) or c in held_combos:
            test_cond[i] = True
    split[test_cond[cell_condition]] = 2
    return split


def combination_categories(conditions: Sequence[str], condition_targets: Sequence[Tuple], cell_condition: np.ndarray,
                           split: np.ndarray, held: int = 2) -> Dict[str, str]:
    """Each combination with cells in split ``held`` (2: test): ``seen0``/``seen1``/``seen2``/...
    by how many of its targets are *seen*, i.e. perturbed alone in training cells (what an
    additive prediction needs), whatever split made them held out. Empty without combinations."""
    trained = np.bincount(cell_condition[split == 0], minlength=len(conditions)) > 0
    present = np.bincount(cell_condition[split == held], minlength=len(conditions)) > 0
    seen = {ts[0] for i, ts in enumerate(condition_targets) if len(ts) == 1 and trained[i]}
    return {c: f"seen{sum(t in seen for t in ts)}" for i, (c, ts) in enumerate(zip(conditions, condition_targets))
            if len(ts) > 1 and present[i]}




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
