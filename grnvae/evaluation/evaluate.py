"""``grnvae evaluate``: honest held-out evaluation of a run.

The reference effect of a perturbation is the mean log-normalised expression of its cells in
the evaluated split minus that of the split's control cells: training cells never enter it.
The model and every baseline are scored the same way against it, beside the reliability
ceiling of the reference itself (split-half, Spearman-Brown corrected; see
:func:`grnvae.evaluation.metrics.split_half_ceiling`).

Outputs, in ``RUN/evaluation/``: ``metrics.json`` (``model``, ``baselines``, ``ceiling`` and,
when the split holds combinations, ``by_category``: the same summaries per combination
category, see :func:`category_summaries`), ``per_perturbation.csv`` (one row per perturbation and method),
``grn_metrics.json`` and PNG plots. :func:`summarise_seeds` pools several runs' ``metrics.json``
(e.g. one per seed) into mean, sd and count per metric.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from ..errors import DataError, RunError
from ..utils import atomic_write_text, jsonable

log = logging.getLogger(__name__)


def observed_effects(data, split: str) -> pd.DataFrame:
    """Mean change from control (log-normalised) per perturbation, from one split's cells only:
    genes x perturbations."""
    try:
        effects = data.condition_effects(split)
    except DataError as exc:
        raise RunError(f"{exc}: no reference effects can be computed") from None
    return pd.DataFrame({data.conditions[c]: e for c, e in effects.items()}, index=list(data.genes))


def _cells_by_perturbation(data, split: str, perturbations: Sequence[str]):
    idx = data.split_index(split)
    out = {}
    for name in perturbations:
        c = data.conditions.index(name)
        out[name] = data.lognorm_rows(idx[data.cell_condition[idx] == c], None)
    controls = data.lognorm_rows(idx[data.pair[idx] == -1], None)
    return out, controls


def predict_effects(run, data, perturbations: Sequence[str], split: str, max_controls: int = 500,
                    particles: int = 5, seed: int = 0) -> pd.DataFrame:
    """The model's predicted mean change from control for each perturbation: genes x perts.

    Basal states are those of (up to ``max_controls``) control cells of the split; the
    predicted change is the prediction for the perturbation minus the prediction for control.
    """
    idx = data.split_index(split)
    ctrl = idx[data.pair[idx] == -1]
    rng = np.random.default_rng(seed)
    if len(ctrl) > max_controls:
        ctrl = np.sort(rng.choice(ctrl, size=max_controls, replace=False))
    batch = data.batch(ctrl)
    conditions = [data.conditions.index(p) for p in perturbations]
    dosage = torch.cat([torch.zeros(1, len(data.nodes)), data.dosage(conditions)])
    torch.manual_seed(seed)
    pred = run.model.predict(dosage, batch["x"], batch["library"], batch.get("covariates"), particles=particles,
                             progress=True)
    delta = (pred[1:] - pred[:1]).numpy().T
    return pd.DataFrame(delta, index=list(data.genes), columns=list(perturbations))


def training_effects(data) -> pd.DataFrame:
    """Mean change from control per perturbation over training cells (for the baselines)."""
    return observed_effects(data, "train")


def evaluation_dir(run_path: Union[str, Path], split: str = "test") -> Path:
    """Where ``evaluate`` writes a split's results: ``RUN/evaluation`` for the test split,
    ``RUN/evaluation/<split>`` for another (so scoring the validation cells never overwrites the
    test results)."""
    return Path(run_path) / "evaluation" / ("" if split == "test" else split)


def evaluate(run_path: Union[str, Path, "Run"], split: str = "test", reference: Optional[str] = None,
             plots: bool = True, max_controls: int = 500, genes_to_plot: int = 6,
             trust_plugins: bool = False, adata=None, out: Optional[Union[str, Path]] = None) -> Dict:
    """Evaluate a run (a directory or a loaded :class:`grnvae.Run`) on a held-out split;
    returns the metrics written to disk.
    (``trust_plugins``: see :meth:`grnvae.Run.load`; ``adata``: the AnnData the run was trained
    on, for a run trained with ``train(..., adata=...)``, or whose data file moved; ``out``: the
    folder to write into instead of ``RUN/evaluation`` (e.g. for a run on read-only storage).)

    Methods: the model and the baselines ``no_change``, ``train_mean``, ``mean_effect``,
    ``additive`` and ``linear`` (:mod:`.baselines`, all from training cells), each scored on the
    perturbations it is defined for, beside the split-half ceiling of the reference. The ``ref``
    of ``pearson_systema`` is the mean training delta (the ``mean_effect`` prediction), so that
    baseline's ``pearson_systema`` is NaN by construction (its centred prediction is zero).
    A method defined for fewer perturbations (``additive``: combinations of seen genes) is
    summarised over those (its ``n_perturbations``); the categories of ``by_category``
    (:meth:`grnvae.data.PerturbationData.combination_categories`) compare them on equal sets.
    """
    from ..run import Run
    from . import baselines as B
    from .metrics import score_effects, split_half_ceiling

    run = Run.of(run_path, trust_plugins=trust_plugins)
    cfg = run.recipe
    data = run.read_data(adata, same_split=True)
    out_dir = Path(out) if out is not None else evaluation_dir(run.path, split)
    out_dir.mkdir(parents=True, exist_ok=True)

    obs = observed_effects(data, split)
    perts = list(obs.columns)
    if not perts:
        raise RunError(f"split '{split}' has no perturbed cells to evaluate")
    pred = predict_effects(run, data, perts, split, max_controls=max_controls, seed=int(cfg.seed))
    train = training_effects(data)
    sep = cfg.data.separator
    predictions = {
        "model": pred,
        "no_change": B.no_change(list(data.genes), perts),
        "train_mean": B.train_mean(train, perts),
        "mean_effect": B.mean_effect(train, perts),
        "additive": B.additive(train, perts, separator=sep),
        "linear": B.linear(train, perts, separator=sep),
    }
    # the mean perturbed effect that pearson_systema centres on: from training cells only
    ref = predictions["mean_effect"].iloc[:, 0].reindex(list(data.genes))
    cells, controls = _cells_by_perturbation(data, split, perts)
    ceiling_table, ceiling = split_half_ceiling(cells, controls, seed=int(cfg.seed), ref=ref.to_numpy())

    rows, summary = [], {}
    for method, frame in predictions.items():
        defined = [p for p in perts if not frame[p].isna().any()]
        if not defined:
            summary[method] = {"n_perturbations": 0}
            continue
        table, pooled = score_effects(frame[defined], obs[defined], ref=ref)
        summary[method] = pooled
        t = table.copy()
        t.insert(0, "method", method)
        rows.append(t)
    ct = ceiling_table.copy()
    ct.insert(0, "method", "ceiling")
    rows.append(ct)
    per = pd.concat(rows).rename_axis("perturbation").reset_index()
    categories = data.combination_categories(split)
    if categories:
        per.insert(1, "category", per["perturbation"].map(categories).fillna("single"))
    per.to_csv(out_dir / "per_perturbation.csv", index=False)

    metrics = {
        "split": split,
        "reference": f"held-out '{split}' cells only: mean log-normalised change from the split's controls",
        "n_perturbations": len(perts),
        "model": summary.pop("model"),
        "baselines": summary,
        "ceiling": ceiling,
    }
    if categories:
        metrics["by_category"] = category_summaries(per, methods=list(predictions))
    atomic_write_text(out_dir / "metrics.json", json.dumps(jsonable(metrics), indent=2, allow_nan=False))

    grn_metrics = evaluate_grn(run, data, split, cells, controls, reference)
    atomic_write_text(out_dir / "grn_metrics.json", json.dumps(jsonable(grn_metrics), indent=2, allow_nan=False))

    if plots:
        _plots(out_dir, run, predictions, obs, per, ceiling_table, genes_to_plot)
    return {"metrics": metrics, "grn": grn_metrics}


def category_summaries(per: pd.DataFrame, methods: Optional[Sequence[str]] = None) -> Dict:
    """Pooled summaries per combination category, from the per-perturbation table.

    ``per`` is ``per_perturbation.csv``'s table: columns ``perturbation``, ``method``,
    ``category`` and the metrics (:data:`.metrics.METRICS`). For each category (sorted: e.g.
    ``seen0``, ``seen1``, ``seen2``, ``single``), the result holds ``n_perturbations`` (distinct
    perturbations of the category) and, as the top level of ``metrics.json``, ``model``,
    ``baselines`` ({name: summary}) and ``ceiling``: each the nan-aware mean over that
    category's perturbations of every metric, with its ``n_perturbations`` and ``n_undefined``
    (the per-perturbation values are those of the whole split: ``discrimination`` ranks against
    every scored perturbation, not only the category's). ``methods`` lists the methods in order
    (``model`` first); one with no row in a category gets ``{"n_perturbations": 0}``. Without a
    ``category`` column the result is empty.
    """
    from .metrics import _summary

    if "category" not in per.columns:
        return {}
    names = list(methods) if methods is not None else [m for m in pd.unique(per["method"]) if m != "ceiling"]
    out: Dict = {}
    for cat in sorted(pd.unique(per["category"]), key=str):
        sub = per[per["category"] == cat]
        summ = {}
        for method in names + ["ceiling"]:
            rows = sub[sub["method"] == method].set_index("perturbation")
            summ[method] = _summary(rows) if len(rows) else {"n_perturbations": 0}
        out[str(cat)] = {
            "n_perturbations": int(sub["perturbation"].nunique()),
            "model": summ.pop("model", {"n_perturbations": 0}),
            "ceiling": summ.pop("ceiling"),
            "baselines": summ,
        }
    return out


def method_label(name: str, scored, total) -> str:
    """A table's name for a method: ``name``, or ``name (k of n)`` when it was scored on fewer
    perturbations than the table holds (``scored``/``total``: counts, or seed-pooled
    ``{"mean": ...}`` of them), so its row is not read as a comparison on the same set."""
    k, n = (v.get("mean") if isinstance(v, Mapping) else v for v in (scored, total))
    if isinstance(k, (int, float)) and isinstance(n, (int, float)) and np.isfinite(k) and k < n - 1e-9:
        return f"{name} ({k:.0f} of {n:.0f})"
    return name


def _is_number(v) -> bool:
    # None is how metrics.json stores NaN
    return v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)))


def _pool(values: List) -> object:
    if all(isinstance(v, Mapping) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _pool([v[k] for v in values if k in v]) for k in keys}
    if all(_is_number(v) for v in values):
        x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        x = x[np.isfinite(x)]
        k = int(x.size)
        sd = float(np.std(x, ddof=1)) if k > 1 else (0.0 if k == 1 else float("nan"))
        return {"mean": float(x.mean()) if k else float("nan"), "sd": sd, "n": k}
    if all(v == values[0] for v in values[1:]):
        return values[0]
    return list(values)


def summarise_seeds(metrics_list: Iterable[Union[Mapping, str, Path]]) -> Dict:
    """Pool several runs' ``metrics.json`` (e.g. one per seed) into mean and sd per metric.

    Each item is a ``metrics.json`` dict (or a path to one) of the same structure: ``model``,
    ``baselines`` ({name: summary}), ``ceiling``, optionally ``by_category``. The result has
    that structure, with every numeric value (metrics and counts alike) replaced by
    ``{"mean": m, "sd": s, "n": k}`` over the runs where it is finite: NaN (``null`` in the
    JSON) and missing values are ignored, ``n`` counts the others, ``sd`` is the sample standard
    deviation (ddof 1) when k > 1, 0 when k == 1, and mean and sd are NaN when k == 0. Keys
    present in only some runs are kept (their ``n`` says in how many). A non-numeric value
    (e.g. ``split``) is kept when every run agrees, else the list of the runs' values.
    """
    items = []
    for m in metrics_list:
        if isinstance(m, (str, Path)):
            m = json.loads(Path(m).read_text())
        if not isinstance(m, Mapping):
            raise RunError(f"summarise_seeds: expected metrics.json dicts (or paths), got {type(m).__name__}")
        items.append(m)
    if not items:
        raise RunError("summarise_seeds: no metrics given")
    return _pool(items)


def evaluate_grn(run, data, split: str, cells, controls, reference: Optional[str]) -> Dict:
    """GRN scores: against the simulated truth and a reference file (the model beside the GRN
    baselines: correlation, perturbation differential expression, and the prior network alone
    when the run has one), and on held-out cells."""
    from ..grn import GRN
    from .grn_scoring import (causal_test, correlation_grn, perturbation_de_grn, read_reference,
                              score_reference)

    grn = run.grn()
    train = data.split_index("train")
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(train, size=min(len(train), 5000), replace=False))
    methods = {"model": grn,
               "correlation": correlation_grn(data.lognorm_rows(sample, None), list(data.genes), list(grn.genes))}
    de_cells, de_controls = _training_cells_by_regulator(data, list(grn.genes), rng)
    de = perturbation_de_grn(de_cells, de_controls, list(data.genes), list(grn.genes))
    if data.dose != 1.0:  # its weights are changes per unit of the screen's perturbation: per unit loss
        de = de.with_edge_attr("weight", de.edge_attr["weight"] * data.dose)
    methods["perturbation_de"] = de
    if "in_prior" in grn.edge_attr:
        methods["prior"] = GRN(grn.genes, grn.edge_index, {"probability": grn.edge_attr["in_prior"].float()},
                               name="prior")
    out: Dict = {"edges": grn.num_edges, "nodes": grn.num_nodes}
    if data.true_grn is not None:
        out["truth"] = {k: score_reference(g, data.true_grn, complete=True) for k, g in methods.items()}
    if reference:
        ref = read_reference(reference)
        out["reference"] = {"file": str(reference), **{k: score_reference(g, ref) for k, g in methods.items()}}
    corr = methods["correlation"]
    summary, _ = _causal(causal_test, grn, cells, controls, data)
    corr_summary, _ = _causal(causal_test, corr, cells, controls, data)
    out["causal"] = {"split": split, "model": summary, "correlation": corr_summary}
    return out


def _training_cells_by_regulator(data, nodes: Sequence[str], rng, per_regulator: int = 500,
                                 max_controls: int = 2000):
    """Log-normalised training cells of each single-target perturbation whose target is a GRN
    node (at most ``per_regulator`` each), and of (at most ``max_controls``) controls."""
    train = data.split_index("train")
    node_set = set(nodes)

    def rows(cells, n):
        return data.lognorm_rows(np.sort(rng.choice(cells, size=min(len(cells), n), replace=False)), None)

    out = {}
    for c, targets in enumerate(data.condition_nodes):
        if len(targets) == 1 and data.nodes[targets[0]] in node_set:
            idx = train[data.cell_condition[train] == c]
            if len(idx):
                out[data.nodes[targets[0]]] = rows(idx, per_regulator)
    return out, rows(train[data.pair[train] == -1], max_controls)


def _causal(causal_test, grn, cells, controls, data):
    res = causal_test(grn, cells, controls, list(data.genes))
    if isinstance(res, tuple):
        return res
    edges = res.pop("edges", None)
    return res, edges


def _plots(out_dir: Path, run, predictions, obs, per, ceiling_table, n: int) -> None:
    from .. import plot

    ceiling = ceiling_table["pearson_delta"] if "pearson_delta" in ceiling_table else None
    order = (ceiling.sort_values(ascending=False).index.tolist() if ceiling is not None
             else list(obs.columns))
    show = [p for p in order if p in obs.columns][:n]
    preds = {k: v for k, v in predictions.items() if k in ("model", "train_mean", "linear")}
    plot.save(plot.effects_scatter(preds, obs, show), out_dir / "effects_scatter.png")
    for metric in ("pearson_delta", "pearson_delta_top20"):
        table = per[per["method"] != "ceiling"]
        plot.save(plot.metric_bars(table, metric=metric, ceiling=ceiling_table.get(metric)),
                  out_dir / f"bars_{metric}.png")
    grn = run.grn()
    df = grn.to_dataframe()
    df = df[df.source != df.target]
    if len(df):
        hub = df[df.probability > 0.5].source.value_counts()
        gene = hub.index[0] if len(hub) else df.sort_values("probability").source.iloc[-1]
        plot.save(plot.grn_neighbourhood(grn, gene), out_dir / f"grn_{gene}.png")


def control_cells(run, adata=None, use_data: bool = True, max_controls: int = 500):
    """Up to ``max_controls`` of a trained run's control cells (drawn with the recipe's seed):
    ``(x, library, covariates, source)``, from :meth:`grnvae.Run.read_data` (``adata``, else the recipe's
    data), in the model's gene order. ``(None, None, None, "prior")`` when ``use_data`` is
    false; ``source`` says which, for the record."""
    cfg = run.recipe
    if not use_data:
        return None, None, None, "prior"
    data = run.read_data(adata)
    ctrl = np.nonzero(data.pair == -1)[0]
    rng = np.random.default_rng(int(cfg.seed))
    ctrl = np.sort(rng.choice(ctrl, size=min(len(ctrl), max_controls), replace=False))
    b = data.batch(ctrl)
    return b["x"], b["library"], b.get("covariates"), f"{len(ctrl)} control cells"


def perturbation_targets(run, label: str) -> List[str]:
    """The GRN nodes a perturbation label names, read as registration reads labels (GEARS'
    ``A+ctrl`` is ``A``, a measured gene's name up to case is that gene), or a clear error: no
    target, an empty part, the control, a target that is no node (with a did-you-mean), a target
    named twice."""
    from ..data.labels import canonical, gene_alias
    from ..recipe import control_labels

    cfg = run.recipe
    nodes = list(run.model.spec.nodes)
    sep = cfg.data.separator
    controls = control_labels(cfg)
    raw = [t.strip() for t in str(label).split(sep)] if sep else [str(label).strip()]
    parts = [t for t in raw if t]
    if not parts:
        raise RunError(f"cannot predict {label!r}: it names no target; give labels such as \"A\" or \"A{sep}B\"")
    if len(parts) < len(raw):
        raise RunError(f"cannot predict {label!r}: it has an empty part around the separator {sep!r}; name every "
                       f"target (\"A{sep}B\", or \"A\" for a single)")
    alias = gene_alias(parts, list(run.model.spec.genes))  # a measured gene up to case, as registration reads it
    name = canonical(label, controls, sep, alias)
    targets = name.split(sep) if name and sep else [name] if name else []
    unknown = [t for t in targets if t not in set(nodes)]
    if not targets:
        raise RunError(f"cannot predict {label!r}: it is the control; every prediction's first row "
                       f"(and the reference of its delta layer) is the predicted control")
    if unknown:
        import difflib

        hint = "; ".join(f"{u}: did you mean {difflib.get_close_matches(u, nodes, n=1)[0]}?"
                         for u in unknown if difflib.get_close_matches(u, nodes, n=1))
        raise RunError(f"cannot predict {label!r}: {unknown} not among the run's {len(nodes)} GRN "
                       f"nodes{' (' + hint + ')' if hint else ''}; a GRN node is needed to carry a perturbation")
    named = [alias.get(p, p) for p in parts if p not in controls]
    twice = sorted({t for t in named if named.count(t) > 1})
    if twice:
        raise RunError(f"cannot predict {label!r}: it names {twice} more than once; a combination names each "
                       f"target once (\"A{sep}B\")")
    return targets


def predict_perturbations(run_path: Union[str, Path], perturbations: Sequence[str], use_data: bool = True,
                          particles: int = 5, max_controls: int = 500, trust_plugins: bool = False, adata=None):
    """Predicted mean expression for perturbation labels (``A``, ``A+B``) as an AnnData
    (``run_path``: a run directory or a loaded :class:`grnvae.Run`).

    ``X`` holds the predicted mean log-normalised expression, ``layers['delta']`` the change from
    the predicted control; the first row is the control, and ``obs`` names each row in the
    run's ``data.perturbation_key`` column. Basal states come from the run's control cells when
    its data is available (``use_data``: ``adata``, else the recipe's ``data.path`` or
    simulator), else from the prior. (``trust_plugins``: see :meth:`grnvae.Run.load`.)
    """
    import anndata as ad

    from ..run import Run

    run = Run.of(run_path, trust_plugins=trust_plugins)
    cfg = run.recipe
    nodes = list(run.model.spec.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    labels: List[str] = []
    dose_rows = []
    perturbations = list(perturbations)
    repeated = sorted({p for p in perturbations if perturbations.count(p) > 1})
    if repeated:
        raise RunError(f"cannot predict {repeated[0]!r} twice: each label names one row of the prediction; give it once")
    for label in perturbations:
        targets = perturbation_targets(run, label)
        row = torch.zeros(len(nodes))
        row[[pos[t] for t in targets]] = float(run.model.spec.extra.get("dose", 1.0))
        dose_rows.append(row)
        labels.append(label)
    dosage = torch.stack([torch.zeros(len(nodes))] + dose_rows)
    x, lib, cov, source = control_cells(run, adata, use_data, max_controls)
    torch.manual_seed(int(cfg.seed))
    pred = run.model.predict(dosage, x, lib, cov, particles=particles).numpy()
    key = str(cfg.data.perturbation_key)
    from ..recipe import control_labels

    names = [control_labels(cfg)[0]] + labels
    obs = pd.DataFrame({key: names, "n_targets": [0] + [int((r != 0).sum()) for r in dose_rows]},
                       index=pd.Index(names, dtype=str))
    adata = ad.AnnData(X=pred.astype(np.float32), obs=obs, var=pd.DataFrame(index=list(run.model.spec.genes)))
    adata.layers["delta"] = (pred - pred[:1]).astype(np.float32)
    adata.uns["grnvae_prediction"] = {"run": str(run.path), "basal_states": source, "particles": particles,
                                      "values": "mean log-normalised expression (log1p(x / library * 1e4))"}
    return adata
