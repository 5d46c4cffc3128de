"""The learned GRN against a known truth: the built-in simulator, where every direct edge is known.

    python examples/simulator.py [--out runs/simulator] [--figures examples/simulator]

One run of the ``grnvae`` recipe (about a minute on 2 cores) on the benchmark simulator (200
genes, 40 regulators that are measured genes, cascades between regulators, 60 double
perturbations) with the combination split: a fifth of the genes are never perturbed in training
and a fifth of the other doubles are held out. It writes ``simulator.md`` beside the figures:

- the strongest learned edges with what the marks mean (``probability`` of a direct edge and its
  ``log_odds``, ``weight`` and its interval, ``explained``, ``informed``) and whether each is a
  true direct edge, an indirect effect (the truth's total effect is large) or neither;
- the reliability table of the edge probabilities against the true direct edges, beside the
  perturbation differential-expression and correlation GRNs scored the same way;
- ``grnvae explain`` for a seen single, an unseen single and a held-out double.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

import grnvae
from grnvae import plot
from grnvae.evaluation.evaluate import evaluate
from grnvae.explain import explain, format_explanation

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = ("data.simulate={{n_genes: 200, n_regulators: 40, n_cells: {cells}, n_doubles: 60, "
             "double_targets: shared, saturation: 1.0, basal_grn: 0.5, seed: 0}}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/simulator")
    p.add_argument("--figures", default=str(ROOT / "examples" / "simulator"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cells", type=int, default=6000, help="simulated cells (default 6000, the benchmark's)")
    p.add_argument("--epochs", type=int, default=None, help="cap on training epochs (default: the recipe's)")
    args = p.parse_args(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    overrides = [SIMULATOR.format(cells=args.cells), "data.split.by=combination", f"seed={args.seed}",
                 "train.progress_bar=false"] + ([f"train.max_epochs={args.epochs}"] if args.epochs else [])
    run = grnvae.train("grnvae", overrides=overrides, out=args.out, overwrite=True)
    res = evaluate(run.path)
    for png in (run.path / "evaluation").glob("grn_*.png"):
        shutil.copy(png, figures / png.name)

    # the truth: direct edges, and total effects (what a perturbation of each regulator changes)
    from omegaconf import OmegaConf

    from grnvae.data.simulate import simulate

    sim = simulate(**OmegaConf.to_container(run.recipe.data.simulate)).uns["grnvae_simulation"]
    direct = set(zip(map(str, sim["true_grn"]["source"]), map(str, sim["true_grn"]["target"])))
    lfc = sim["true_lfc"]
    total = {(str(c), str(g)): float(v) for j, c in enumerate(lfc["conditions"])
             for g, v in zip(lfc["genes"], np.asarray(lfc["values"])[:, j])}

    def truth(s, t):
        if (s, t) in direct:
            return "direct"
        return "indirect" if abs(total.get((s, t), 0.0)) > 0.2 else "none"

    edges = run.grn().to_dataframe()
    edges = edges[(edges.source != edges.target) & edges.informed].sort_values("log_odds", ascending=False)
    edges["truth"] = [truth(s, t) for s, t in zip(edges.source, edges.target)]
    top = edges.head(12)
    # the shortcuts the path account caught: indirect effects with a large weight, low probability
    caught = edges[(edges.truth == "indirect") & (edges.weight.abs() > 0.5)].sort_values("explained", key=abs,
                                                                                       ascending=False).head(5)

    grn = res["grn"]["truth"]
    categories = {}
    per = pd.read_csv(run.path / "evaluation" / "per_perturbation.csv")
    for cat in ("single", "seen2"):
        names = per.loc[(per.category == cat) & (per.method == "model"), "perturbation"].tolist()
        if names:
            categories[cat] = names[0]
    trained = sorted(set(edges.source))
    what = {"single": "an unseen single (no training cells)", "seen2": "a held-out double whose singles were seen"}
    asked = [("a seen single", trained[0])] + [(what[c], n) for c, n in categories.items()]
    explained_text = []
    for why, name in asked:
        walks = explain(run, name, top=3, paths=3)
        safe = name.replace("+", "_")
        plot.explanation(walks, name, save=figures / f"explain_{safe}.png")
        explained_text.append((why, name, format_explanation(walks, name), f"explain_{safe}.png"))

    rel = Path(args.figures).resolve().relative_to(ROOT / "examples") if Path(args.figures).resolve().is_relative_to(
        ROOT / "examples") else Path(args.figures)
    md = ["# The learned GRN on the simulator", "",
          "Produced by `python examples/simulator.py` (the `grnvae` recipe on the benchmark simulator, "
          f"combination split, seed {args.seed}; {json.loads((run.path / 'metrics.json').read_text()).get('epochs')} "
          "epochs). The simulator knows every direct edge, so each mark of the learned GRN can be checked.", "",
          "## What the columns of `grn.tsv` mean", "",
          "- `weight`: the edge's total effect, the log-fold change of the target per unit perturbation of the "
          "regulator (what predictions use), with `weight_low` / `weight_high` its 90 % posterior interval;",
          "- `explained`: the part of the weight that other confident edges pass on through paths (a regulator "
          "that moves another regulator passes that one's effects on);",
          "- `probability`: that the edge is direct, an effect of its own (a two-group empirical-Bayes posterior "
          "of the weight less `explained` and less shifts shared by a regulator's or a target's edges); "
          "`log_odds` ranks the edges whose probabilities round to 1;",
          "- `informed`: whether the data can inform the edge (its regulator has training cells and its target "
          "is, or reaches, a measured gene); `evidence`: its regulator's training cells.", "",
          "## Strongest learned edges", "",
          "| source | target | probability | log_odds | weight | 90 % interval | explained | truth |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r.source} | {r.target} | {r.probability:.3f} | {r.log_odds:.1f} | {r.weight:.2f} | "
           f"[{r.weight_low:.2f}, {r.weight_high:.2f}] | {r.explained:.2f} | {r.truth} |" for r in top.itertuples()]
    md += ["", "Indirect effects with a large weight (a one-hop fit of total effects sees them as edges), and "
           "what the path account made of them:", "",
           "| source | target | weight | explained | probability | truth |", "|---|---|---|---|---|---|"]
    md += [f"| {r.source} | {r.target} | {r.weight:.2f} | {r.explained:.2f} | {r.probability:.3f} | {r.truth} |"
           for r in caught.itertuples()]
    md += ["", "## Against the truth", "",
           "| GRN | AUPRC | AUROC | early precision | ECE |", "|---|---|---|---|---|"]
    md += [f"| {m} | {s['auprc']:.3f} | {s['auroc']:.3f} | {s['early_precision']:.3f} | {s.get('ece', float('nan')):.3f} |"
           for m, s in grn.items()]
    md += ["", f"Random AUPRC {grn['model']['auprc_random']:.3f}. Reliability of the model's probabilities "
           "(bin, edges, mean probability, fraction that are true direct edges):", "",
           "| bin | edges | mean probability | fraction direct |", "|---|---|---|---|"]
    md += [f"| {lo:.1f}-{hi:.1f} | {n} | {conf:.3f} | {frac:.3f} |" for lo, hi, n, conf, frac in grn["model"]["reliability"]]
    md += ["", "## Why the model predicts what it does", ""]
    for why, name, text, png in explained_text:
        md += [f"{why}: `grnvae explain RUN --perturbation {name} --top 3 --paths 3`", "", "```", text, "```", "",
               f"![{name}]({rel / png})", ""]
    path = figures.parent / "simulator.md" if figures.name == "simulator" else figures / "simulator.md"
    path.write_text("\n".join(md))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
