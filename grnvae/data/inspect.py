"""``grnvae inspect``: what grnvae sees in an h5ad file, before any training."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
import pandas as pd

from .dataset import BackedRows, _scan, read_h5ad
from .labels import parse_labels

DEFAULT_UNASSIGNED = ("multiple", "unassigned", "none", "na", "nan")
_CANDIDATE_KEYS = ("perturbation", "gene", "target", "target_gene", "guide_target", "condition", "gene_symbol")
_CANDIDATE_CONTROLS = ("control", "ctrl", "non-targeting", "NT", "non_targeting", "negative_control", "safe-targeting")
# columns that tell apart data sets a file may pool (each wants its own model, or a subset)
_DATASET_KEYS = ("dataset", "cell_line", "cellline", "cell_type", "celltype", "study", "source", "screen", "library")


# technical covariates a model should condition on (batch effects), and columns derived from
# the expression itself (clusterings, cell-cycle phase: conditioning on them absorbs biology)
_TECHNICAL = ("batch", "rep", "replicate", "bio_rep", "lane", "gem", "gem_group", "plate", "donor", "sample",
              "orig.ident", "run", "well", "channel", "library_id")
_DERIVED = ("leiden", "louvain", "cluster", "res.", "snn_res", "phase", "cell_cycle", "cycle")


def _kind_of_column(name: str) -> str:
    """``"technical"``, ``"derived"`` (from the expression) or ``"other"``, by its name."""
    low = str(name).lower()
    if any(d in low for d in _DERIVED):
        return "derived"
    words = set(low.replace(".", "_").replace("-", "_").split("_")) | {low}
    return "technical" if words & set(_TECHNICAL) else "other"


def _follows_label(obs: pd.DataFrame, column: str, labels: pd.Series) -> bool:
    """Whether ``column`` takes one value per perturbation label (a function of the label, so a
    covariate that would leak the perturbation into the model)."""
    return bool((obs[column].astype(str).groupby(labels.to_numpy(), observed=True).nunique() <= 1).all())


def describe(path: str | Path, perturbation_key: str = "perturbation", control: Sequence[str] = ("control",),
             separator: str = "+", backed: bool = True) -> str:
    """A human-readable report of an h5ad screen and suggested recipe keys."""
    adata = read_h5ad(path, key="FILE", backed=backed)
    lines: List[str] = [f"{path}: {adata.n_obs:,} cells x {adata.n_vars:,} genes"]
    X = BackedRows(adata.X) if adata.isbacked else adata.X
    library, scan = _scan(X, None if not adata.isbacked else np.arange(adata.n_obs), str(path))
    kind = scan.kind()
    lines.append(
        f"  X: {'raw counts' if kind == 'counts' else 'log-normalised / non-integer values'} "
        f"({100 * scan.non_integer_fraction:.3g}% non-integer) "
        f"(median total per cell {np.median(library):,.0f}); layers: {list(adata.layers) or 'none'}"
    )
    lines.append(f"  obs columns: {', '.join(map(str, adata.obs.columns))}")
    if perturbation_key not in adata.obs.columns:
        guess = [k for k in adata.obs.columns if str(k).lower() in _CANDIDATE_KEYS]
        lines.append(f"  no obs column '{perturbation_key}'" + (f"; try --perturbation-key {guess[0]}" if guess else ""))
        return "\n".join(lines)
    col = adata.obs[perturbation_key]
    values = col.astype(str)
    controls = list(control)
    if not values.isin(controls).any():
        found = [c for c in values.unique() if c in _CANDIDATE_CONTROLS or c.lower() in {x.lower() for x in _CANDIDATE_CONTROLS}]
        if found:
            controls = [found[0]]
            lines.append(f"  no cell labelled {list(control)}; '{found[0]}' looks like the control label")
    try:
        lab = parse_labels(col, controls, separator, DEFAULT_UNASSIGNED, "drop", perturbation_key, str(path))
    except Exception as exc:  # report, do not crash: this is a diagnostic command
        lines.append(f"  labels: {exc}")
        return "\n".join(lines)
    counts = lab.counts()
    n_ctrl = int(lab.is_control.sum())
    singles = [c for c, ts in zip(lab.conditions, lab.condition_targets) if len(ts) == 1]
    lines.append(f"  perturbation column '{perturbation_key}': {len(lab.conditions) - 1} perturbations "
                 f"({len(singles)} single, {len(lab.combinations)} combinations), {n_ctrl:,} control cells "
                 f"({', '.join(controls)})")
    if lab.dropped:
        lines.append(f"  unassigned labels (dropped by default): " + ", ".join(f"{k} {v:,}" for k, v in lab.dropped.items()))
    per = counts.drop(index="control", errors="ignore").sort_values(ascending=False)
    lines.append("  cells per perturbation: " + ", ".join(f"{k} {v}" for k, v in per.items()))
    genes = set(map(str, adata.var_names))
    targets = lab.targets
    measured = [t for t in targets if t in genes]
    lines.append(f"  targets measured as genes: {len(measured)}/{len(targets)}"
                 + (f" ({', '.join(measured[:20])}{' ...' if len(measured) > 20 else ''})" if measured else ""))
    # var_names that are not what the labels name (e.g. Ensembl ids): a var column that is
    symbols = None
    if targets and len(measured) < len(targets):
        found = {c: len(set(targets) & set(adata.var[c].astype(str))) for c in adata.var.columns
                 if not pd.api.types.is_numeric_dtype(adata.var[c])}
        best = max(found, key=found.get, default=None)
        if best is not None and found[best] > len(measured):
            symbols = best
            lines.append(f"  var column '{best}' names {found[best]}/{len(targets)} targets: genes are named by it "
                         f"with data.gene_symbols={best}")
    if lab.combinations:
        lines.append(f"  combinations: {', '.join(lab.combinations[:10])}{' ...' if len(lab.combinations) > 10 else ''}")
    small = per[per < 10]
    if len(small):
        lines.append(f"  perturbations with < 10 cells: {', '.join(small.index[:10])}")
    obs = adata.obs
    for c in obs.columns:
        if str(c).lower() in _DATASET_KEYS and obs[c].nunique() > 1:
            groups = obs[c].astype(str).value_counts()
            shared = obs.loc[lab.is_control, c].astype(str).nunique() if n_ctrl else 0
            lines.append(f"  WARNING: '{c}' has {len(groups)} values ({', '.join(f'{k} {v:,}' for k, v in groups.head(5).items())}"
                         f"{' ...' if len(groups) > 5 else ''}): the file pools several data sets"
                         + (f" whose control cells share the label '{controls[0]}'" if shared > 1 else "")
                         + f"; train one at a time, e.g. adata[adata.obs['{c}'] == '{groups.index[0]}']")
    candidates = [c for c in obs.columns if c != perturbation_key and 1 < obs[c].nunique() <= 20
                  and not pd.api.types.is_float_dtype(obs[c])]
    leaking = [c for c in candidates if _follows_label(obs, c, values)]
    free = [c for c in candidates if c not in leaking and str(c).lower() not in _DATASET_KEYS]
    covs = [c for c in free if _kind_of_column(c) == "technical"]
    derived = [c for c in free if _kind_of_column(c) == "derived"]
    others = [c for c in free if _kind_of_column(c) == "other" and not pd.api.types.is_numeric_dtype(obs[c])]
    if leaking:
        lines.append(f"  not covariates (one value per perturbation label, they would leak it): {', '.join(map(str, leaking))}")
    if derived:
        lines.append(f"  not covariates (derived from the expression, they would absorb the effects): "
                     f"{', '.join(map(str, derived))}")
    if others:
        lines.append(f"  other categorical columns (a covariate only if technical, e.g. a batch): {', '.join(map(str, others))}")
    lines.append("  suggested recipe keys:")
    lines.append(f"    data.path={path} data.perturbation_key={perturbation_key} data.control={controls[0]}"
                 + (f" data.gene_symbols={symbols}" if symbols else ""))
    if lab.combinations:
        lines.append(f"    data.separator={separator} data.split.by=combination")
    lines.append(f"    data.expression={kind}" + (f" data.covariates=[{covs[0]}]" if covs else ""))
    return "\n".join(lines)
