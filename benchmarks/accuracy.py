"""Held-out accuracy of grnvae's default model beside every baseline and the ceiling.

    python benchmarks/accuracy.py [--seeds 0 1 2] [--suite sim_cells sim_unseen sim_combination
                                   papalexi_cells papalexi_unseen] [--out runs/accuracy]
                                  [--write BENCHMARKS.md]

Each suite entry trains the ``grnvae`` recipe once per seed (the seed also draws the split),
evaluates it on its test split with ``grnvae evaluate`` (reference effects from held-out cells
only) and pools the seeds into mean +- sd per metric (``summarise_seeds``). Nothing here is used
to choose a design or a hyperparameter: those were chosen on validation cells.

Suite:

- ``sim_*``: the built-in simulator with regulators that are measured genes, cascades through
  the GRN, basal variation flowing through the GRN (co-expression carries edges), saturating
  propagation (non-additive doubles) and 60 double perturbations among regulators that share
  targets; split by cell, by perturbation (20 % of perturbations unseen) and by combination
  (20 % of genes unseen, 20 % of the other doubles held out; one table per category).
- ``papalexi_*``: the Papalexi et al. 2021 subset (``../shared/data``; skipped when absent) by
  cell and with IFNGR2, STAT1, IRF1, SMAD4, CUL3 and MYC unseen.

``--rescore`` evaluates the runs already in ``--out`` again without training them (for a change
that touches only what is scored or reported, such as the learned GRN's probabilities; the
training rows keep what the training run recorded).

``--write`` replaces the section between ``<!-- accuracy:start -->`` and ``<!-- accuracy:end -->``
of that file (appending it when absent) with the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grnvae  # noqa: E402
from grnvae.evaluation.evaluate import evaluate, method_label, summarise_seeds  # noqa: E402

PAPALEXI = ROOT.parent / "shared" / "data" / "perturbseq" / "papalexi2021_thp1_subset.h5ad"
UNSEEN = ["IFNGR2", "STAT1", "IRF1", "SMAD4", "CUL3", "MYC"]
SIMULATOR = ("data.simulate={n_genes: 200, n_regulators: 40, n_cells: 6000, n_doubles: 60, "
             "double_targets: shared, saturation: 1.0, basal_grn: 0.5, seed: 0}")
SUITE = {
    "sim_cells": [SIMULATOR, "data.split.by=cells"],
    "sim_unseen": [SIMULATOR, "data.split.by=perturbation"],
    "sim_combination": [SIMULATOR, "data.split.by=combination"],
    "papalexi_cells": [f"data.path={PAPALEXI}", "data.covariates=[bio_rep]", "data.split.by=cells"],
    "papalexi_unseen": [f"data.path={PAPALEXI}", "data.covariates=[bio_rep]", "data.split.by=perturbation",
                        f"data.split.test=[{','.join(UNSEEN)}]"],
}
METHODS = ("model", "no_change", "train_mean", "mean_effect", "additive", "linear", "ceiling")
COLUMNS = ("pearson_delta", "pearson_delta_top20", "pearson_systema", "discrimination", "mse")
GRN_COLUMNS = ("auprc", "auroc", "early_precision", "ece")


def run_one(name: str, seed: int, out: Path, recipe: str, rescore: bool = False) -> dict:
    path = out / name / f"seed{seed}"
    if rescore:  # the trained run as it is; only the evaluation is redone
        if not (path / "accuracy.json").exists():
            raise SystemExit(f"--rescore: {path / 'accuracy.json'} not found; train it first (without --rescore)")
        train = json.loads((path / "accuracy.json").read_text())["train"]
    else:
        overrides = SUITE[name] + [f"seed={seed}", "train.progress_bar=false"]
        start = time.time()
        run = grnvae.train(recipe, overrides=overrides, out=path, overwrite=True)
        train = {"epochs": run.metrics.get("epochs"), "wall_s": time.time() - start}
    res = evaluate(path, plots=False)
    metrics = res["metrics"]
    metrics["train"] = train
    truth = res["grn"].get("truth", {})
    if truth.get("model"):
        metrics["grn"] = {method: {k: scores.get(k) for k in GRN_COLUMNS} for method, scores in truth.items()}
        metrics["grn"]["random"] = {"auprc": truth["model"]["auprc_random"]}
    return metrics


def _cell(v) -> str:
    if not isinstance(v, dict) or v.get("n", 0) == 0:
        return "-"
    return f"{v['mean']:.3f} ± {v['sd']:.3f}"


def table(pooled: dict) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method in METHODS:
        vals = pooled.get(method) if method in ("model", "ceiling") else pooled.get("baselines", {}).get(method)
        if not vals or not isinstance(vals.get("n_perturbations"), dict) or vals["n_perturbations"]["mean"] == 0:
            continue
        name = method_label(method, vals["n_perturbations"], pooled["n_perturbations"])
        lines.append(f"| {name} | " + " | ".join(_cell(vals.get(k)) for k in COLUMNS) + " |")
    return "\n".join(lines)


def section(name: str, pooled: dict, seeds) -> str:
    tr = pooled.get("train", {})
    head = (f"### {name} ({len(seeds)} seeds; {pooled['n_perturbations']['mean']:.0f} test perturbations; "
            f"training {tr.get('epochs', {}).get('mean', float('nan')):.0f} epochs, "
            f"{tr.get('wall_s', {}).get('mean', float('nan')) / 60:.1f} min to early stopping)")
    parts = [head, "", table(pooled)]
    if "grn" in pooled:
        g = pooled["grn"]
        parts += ["", f"GRN recovery against the simulated truth (direct edges; random AUPRC "
                      f"{g['random']['auprc']['mean']:.3f}; `ece`: calibration of the edge probabilities):", "",
                  "| GRN | " + " | ".join(GRN_COLUMNS) + " |", "|---" * (len(GRN_COLUMNS) + 1) + "|"]
        parts += [f"| {m} | " + " | ".join(_cell(g[m].get(k)) for k in GRN_COLUMNS) + " |"
                  for m in ("model", "perturbation_de", "correlation", "prior") if m in g]
    for cat, sub in sorted(pooled.get("by_category", {}).items()):
        parts += ["", f"Category `{cat}` ({sub['n_perturbations']['mean']:.0f} perturbations):", "", table(sub)]
    return "\n".join(parts)


def write_markdown(path: Path, text: str) -> None:
    start, end = "<!-- accuracy:start -->", "<!-- accuracy:end -->"
    old = path.read_text() if path.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--suite", nargs="+", default=list(SUITE), choices=list(SUITE))
    p.add_argument("--recipe", default="grnvae")
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--write", default=None, help="markdown file to write the tables into")
    p.add_argument("--rescore", action="store_true",
                   help="evaluate the runs already in --out again without training (when only scoring changed)")
    args = p.parse_args(argv)
    out = Path(args.out)
    texts = []
    for name in args.suite:
        if name.startswith("papalexi") and not PAPALEXI.exists():
            print(f"{name}: skipped, {PAPALEXI} not found")
            continue
        per_seed = []
        for seed in args.seeds:
            per_seed.append(run_one(name, seed, out, args.recipe, args.rescore))
            (out / name / f"seed{seed}" / "accuracy.json").write_text(json.dumps(per_seed[-1], indent=2))
        pooled = summarise_seeds(per_seed)
        (out / name / "pooled.json").write_text(json.dumps(pooled, indent=2))
        text = section(name, pooled, args.seeds)
        print(text + "\n", flush=True)
        texts.append(text)
    if args.write and texts:
        cmd = "python benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:])
        intro = (f"## Accuracy on held-out cells\n\nRecipe `{args.recipe}`, mean ± sd over seeds "
                 f"{', '.join(map(str, args.seeds))} (each seed draws its own split). Produced by `{cmd}`. "
                 "Reference effects come from held-out test cells only; every method is scored identically.")
        write_markdown(Path(args.write), intro + "\n\n" + "\n\n".join(texts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
