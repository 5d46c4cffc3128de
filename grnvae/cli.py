"""Command line: ``grnvae train | export-grn | simulate | recipes``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import List, Optional

from .errors import GRNVAEError, RunError
from .utils import counted


def _cmd_train(args) -> int:
    from .training import train

    run = train(args.recipe, overrides=args.overrides, out=args.out, overwrite=args.overwrite,
                resolvers=args.allow_resolvers)
    m = run.metrics
    print(f"\nrun written to {run.path}")
    logs = {"tensorboard": "tensorboard", "csv": "logs/metrics.csv", "mlflow": "mlruns"}.get(str(run.recipe.train.logger))
    for name in ("recipe.yaml", "checkpoints/best.ckpt", "grn.tsv", "metrics.json", logs):
        if name:
            print(f"  {run.path / name}")
    if "val" in m:
        v = m["val"]
        terms = [f"reconstruction {v['reconstruction']:.3f}"]
        if "kl_local" in v:
            terms.append(f"KL {v['kl_local'] + v.get('kl_global', 0.0):.3f}")
        terms += [f"{k} {v[k]:.3f}" for k in ("align", "sparsity", "invariance") if v.get(k)]
        epochs = f"; {m['epochs']} epochs trained" if "epochs" in m else ""
        print(f"val loss {v['loss']:.3f} ({', '.join(terms)}){epochs}")
    rec = m.get("grn_recovery")
    if rec:
        print(
            f"GRN recovery vs the simulated truth: AUPRC {rec['auprc']:.3f} "
            f"(random {rec['auprc_random']:.3f}), AUROC {rec['auroc']:.3f}, "
            f"early precision {rec['early_precision']:.3f} over {rec['evaluable_pairs']} pairs"
        )
    if logs == "tensorboard":
        print(f"TensorBoard: tensorboard --logdir {run.path / 'tensorboard'}")
    print(f"held-out accuracy beside the baselines: grnvae evaluate {run.path}")
    return 0


def _data(args):
    """The AnnData of ``--data FILE.h5ad`` (the run's data, when its own path does not reach it), or None."""
    if not getattr(args, "data", None):
        return None
    from .data.dataset import read_h5ad

    return read_h5ad(args.data, key="--data")


def _cmd_evaluate(args) -> int:
    from .evaluation.evaluate import evaluate, evaluation_dir, method_label

    if args.max_controls < 1:
        raise RunError(f"--max-controls must be at least 1, got {args.max_controls}")
    res = evaluate(args.run, split=args.split, reference=args.reference, plots=not args.no_plots,
                   max_controls=args.max_controls, trust_plugins=args.trust_plugins, adata=_data(args),
                   out=args.out)
    m = res["metrics"]
    out = Path(args.out) if args.out else evaluation_dir(args.run, args.split)
    keys = ("pearson_delta", "pearson_delta_top20", "pearson_systema", "discrimination", "mse")

    def table(section) -> None:
        rows = [("model", section["model"]), *section["baselines"].items(), ("ceiling", section["ceiling"])]
        rows = [(method_label(name, vals["n_perturbations"], section["n_perturbations"])
                 if vals.get("n_perturbations") else name, vals) for name, vals in rows]
        width = max(12, *(len(name) + 2 for name, _ in rows))
        print(f"{'':<{width}}" + "".join(f"{k:>22}" for k in keys))
        for name, vals in rows:
            cells = [vals.get(k) for k in keys]
            print(f"{name:<{width}}" + "".join(f"{v:>22.3f}" if isinstance(v, (int, float)) and v == v else f"{'-':>22}"
                                          for v in cells))

    print(f"{counted(m['n_perturbations'], 'perturbation')} in the '{args.split}' split (reference: held-out cells only)")
    table(m)
    for cat, section in (m.get("by_category") or {}).items():
        print(f"\ncategory {cat}: {counted(section['n_perturbations'], 'perturbation')}")
        table(section)
    grn_keys = ("auprc", "auroc", "early_precision", "ece")
    for where, label in (("truth", "the simulated truth"), ("reference", "the reference network")):
        scores = {k: v for k, v in ((res.get("grn") or {}).get(where) or {}).items() if isinstance(v, dict)}
        if scores:
            first = next(iter(scores.values()))
            print(f"\nGRN against {label} ({first['evaluable_pairs']} evaluable pairs, "
                  f"random AUPRC {first['auprc_random']:.3f})")
            print(f"{'':<16}" + "".join(f"{k:>18}" for k in grn_keys))
            for name, vals in scores.items():
                print(f"{name:<16}" + "".join(
                    f"{vals[k]:>18.3f}" if isinstance(vals.get(k), (int, float)) and vals[k] == vals[k] else f"{'-':>18}"
                    for k in grn_keys))
    plots = "" if args.no_plots else " and plots"
    print(f"written to {out}: metrics.json, per_perturbation.csv, grn_metrics.json{plots}")
    return 0


def _cmd_explain(args) -> int:
    from .explain import explain, format_explanation
    from .utils import atomic_write_text

    if args.top < 1 or args.paths < 1:
        raise RunError(f"--top and --paths must be at least 1, got {args.top} and {args.paths}")
    table = explain(args.run, args.perturbation, gene=args.gene, top=args.top, paths=args.paths,
                    use_data=not args.prior, trust_plugins=args.trust_plugins, adata=_data(args))
    print(format_explanation(table, args.perturbation))
    if args.out:
        atomic_write_text(args.out, table.to_csv(sep="\t", index=False))
        print(f"written to {args.out}")
    if args.plot:
        from .plot import explanation

        explanation(table, args.perturbation, save=args.plot)
        print(f"figure written to {args.plot}")
    return 0


def _cmd_predict(args) -> int:
    from .evaluation.evaluate import predict_perturbations

    labels = [p.strip() for p in (args.perturbations or "").split(",") if p.strip()]
    labels += [p for p in (args.perturbation or []) if p.strip()]  # taken whole: a label may hold a comma
    if not labels:
        raise RunError(f"no perturbation to predict; give labels such as --perturbations \"A,B+C\" "
                       f"(or --perturbation LABEL, once per label)")
    if args.particles < 1:
        raise RunError(f"--particles must be at least 1, got {args.particles}")
    adata = predict_perturbations(args.run, labels, use_data=not args.prior, particles=args.particles,
                                  trust_plugins=args.trust_plugins, adata=_data(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    print(f"predicted {counted(len(labels), 'perturbation')} x {adata.n_vars} genes "
          f"(basal states: {adata.uns['grnvae_prediction']['basal_states']}) -> {out}")
    return 0


def _cmd_export(args) -> int:
    fmt = args.format
    # the last checkpoint's GRN never takes the name of the one training wrote (the best's)
    out = Path(args.out) if args.out else Path(args.run) / f"grn{'.last' if args.checkpoint == 'last' else ''}.{fmt}"
    if fmt == "tsv" and args.checkpoint == "best" and _export_written_tsv(Path(args.run), out):
        return 0
    from .run import Run

    run = Run.load(args.run, checkpoint=args.checkpoint, trust_plugins=args.trust_plugins)
    run.export_grn(out, fmt)
    print(f"wrote {run.model.edge_index.shape[1]} edges over {run.model.num_nodes} genes to {out}")
    return 0


def _export_written_tsv(run: Path, out: Path) -> bool:
    """A finished run's ``grn.tsv`` is the best checkpoint's GRN as export writes it (training
    writes it last; nothing else writes that name): copy it (no model to load, no torch), or
    leave it be when it is the output. False when the run has no such file."""
    from .rundir import read_marker
    from .utils import atomic_write

    tsv, best = run / "grn.tsv", run / "checkpoints" / "best.ckpt"
    marker = read_marker(run)
    if marker is None or marker.get("status") != "finished" or not tsv.is_file() or not best.is_file():
        return False
    if out.is_dir():
        raise RunError(f"export: '{out}' is a directory; give a file path, e.g. {out / 'grn.tsv'}")
    if out.resolve() != tsv.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        data = tsv.read_bytes()
        atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    edges = max(sum(1 for _ in tsv.open()) - 1, 0)
    print(f"wrote {edges} edges (the best checkpoint's GRN, as training wrote it) to {out}")
    return True


def _cmd_simulate(args) -> int:
    from .data.simulate import simulate

    adata = simulate(n_genes=args.genes, n_regulators=args.regulators, n_cells=args.cells,
                     n_doubles=args.doubles, seed=args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(out)
    print(f"wrote {adata.n_obs} cells x {adata.n_vars} genes to {out}")
    return 0


def _cmd_inspect(args) -> int:
    from .data.inspect import describe

    controls = [c for c in args.control.split(",") if c]
    print(describe(args.file, args.perturbation_key, controls, args.separator))
    return 0


def _cmd_layers(args) -> int:
    from .nn.registry import LAYERS, import_plugins

    import_plugins(args.plugin)
    for name, doc in LAYERS.describe():
        print(f"{name:<14} {doc}")
    return 0


def _cmd_priors(args) -> int:
    from .priors import catalog

    for name, entry in sorted(catalog().items()):
        first = entry.description.split(". ")[0].split(", as ")[0]
        species = entry.species.split(" ")[0]
        verified = "sha256" if entry.sha256 else "unverified"
        print(f"{name:<17} {species:<6} {entry.format:<11} {verified:<11} {_shorten(first, 90)}")
    return 0


def _shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word (not inside a number) when longer than ``width``."""
    import textwrap

    return textwrap.shorten(text, width, placeholder=" ...")


def _cmd_recipes(args) -> int:
    from .recipe import list_recipes

    for path in list_recipes():
        comment = []  # the recipe's opening comment, up to its first sentence
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            comment.append(line.lstrip("# ").strip())
        first = re.split(r"\.\s+(?=[A-Z])", " ".join(comment))[0].rstrip(".")
        print(f"{path.stem:<20} {_shorten(first, 100)}")
    return 0


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-plugins", action="store_true",
                        help="import the plug-in code stored in the run (RUN/plugins); off by default")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grnvae", description="Explainable perturbation-response VAEs over a learnable GRN.")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    from . import __version__

    p.add_argument("--version", action="version", version=f"grnvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe")
    t.add_argument("recipe", help="recipe file or built-in recipe name (see `grnvae recipes`)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_epochs=5")
    t.add_argument("--out", help="run directory (default runs/<recipe name>)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory (only a grnvae run directory is ever deleted)")
    t.add_argument("--allow-resolvers", action="store_true",
                   help="allow resolver calls such as ${oc.env:VAR} in the recipe (off by default)")
    t.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="score a run on held-out cells against baselines and the ceiling")
    ev.add_argument("run", help="run directory")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--reference", help="reference network file to score the learned GRN against")
    ev.add_argument("--no-plots", action="store_true")
    ev.add_argument("--out", help="folder to write into (default RUN/evaluation, with --split val RUN/evaluation/val)")
    ev.add_argument("--data", metavar="FILE.h5ad", help="the run's data as an .h5ad file, when its recipe's data.path does not reach it (moved, shared) or it was an in-memory AnnData")
    ev.add_argument("--max-controls", type=int, default=500,
                    help="control cells whose basal states the model's predictions average over (default 500; "
                         "the prediction's cost grows with controls x perturbations x genes: lower it for large screens)")
    _trust_flag(ev)
    ev.set_defaults(func=_cmd_evaluate)

    pd_ = sub.add_parser("predict", help="predict mean expression for perturbations (seen, unseen, combined)")
    pd_.add_argument("run", help="run directory")
    pd_.add_argument("--perturbations", help='comma-separated labels, e.g. "A,B+C"')
    pd_.add_argument("--perturbation", action="append", metavar="LABEL",
                     help="one label, taken whole (for a label that holds a comma); may be repeated")
    pd_.add_argument("--out", required=True, help="output .h5ad")
    pd_.add_argument("--particles", type=int, default=5)
    pd_.add_argument("--prior", action="store_true", help="draw basal states from the prior, not from control cells")
    pd_.add_argument("--data", metavar="FILE.h5ad", help="the run's data as an .h5ad file, when its recipe's data.path does not reach it (moved, shared) or it was an in-memory AnnData")
    _trust_flag(pd_)
    pd_.set_defaults(func=_cmd_predict)

    x = sub.add_parser("explain", help="decompose a predicted effect over the GRN paths that carry it")
    x.add_argument("run", help="run directory")
    x.add_argument("--perturbation", required=True, help='one label, e.g. "STAT1" or "A+B" (seen or not)')
    x.add_argument("--gene", help="the gene to explain (default: the perturbation's top responding genes)")
    x.add_argument("--top", type=int, default=5, help="genes to explain without --gene (default 5)")
    x.add_argument("--paths", type=int, default=10, help="walks shown per gene; the rest are summed (default 10)")
    x.add_argument("--out", help="also write the table as TSV")
    x.add_argument("--plot", help="also draw the walks (edge width ~ contribution) into this image file (.png, .pdf, .svg)")
    x.add_argument("--prior", action="store_true", help="draw basal states from the prior, not from control cells")
    x.add_argument("--data", metavar="FILE.h5ad", help="the run's data as an .h5ad file, when its recipe's data.path does not reach it (moved, shared) or it was an in-memory AnnData")
    _trust_flag(x)
    x.set_defaults(func=_cmd_explain)

    e = sub.add_parser("export-grn", help="export a run's learned GRN")
    e.add_argument("run", help="run directory")
    e.add_argument("--format", choices=("tsv", "graphml"), default="tsv")
    e.add_argument("--out", help="output file (default RUN/grn.<format>; with --checkpoint last, RUN/grn.last.<format>)")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best")
    _trust_flag(e)
    e.set_defaults(func=_cmd_export)

    s = sub.add_parser("simulate", help="write a simulated Perturb-seq screen with a known GRN")
    s.add_argument("out", help="output .h5ad")
    s.add_argument("--cells", type=int, default=4000)
    s.add_argument("--genes", type=int, default=200)
    s.add_argument("--regulators", type=int, default=40)
    s.add_argument("--doubles", type=int, default=6)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_simulate)

    i = sub.add_parser("inspect", help="show what grnvae sees in an h5ad file")
    i.add_argument("file", help=".h5ad file")
    i.add_argument("--perturbation-key", default="perturbation")
    i.add_argument("--control", default="control", help="control label(s), comma-separated")
    i.add_argument("--separator", default="+")
    i.set_defaults(func=_cmd_inspect)

    ly = sub.add_parser("layers", help="list the registered effect layers")
    ly.add_argument("--plugin", action="append", default=[], help="plug-in module or .py file to import first")
    ly.set_defaults(func=_cmd_layers)

    pr = sub.add_parser("priors", help="list the catalog of public prior networks")
    pr.set_defaults(func=_cmd_priors)

    r = sub.add_parser("recipes", help="list the built-in recipes")
    r.set_defaults(func=_cmd_recipes)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (grnvae train R --out D a.b=1)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "train":  # what was read and built (data, GRN, prior) is shown before training
        logging.getLogger("grnvae").setLevel(logging.INFO)
    try:
        return args.func(args)
    except GRNVAEError as exc:
        print(f"grnvae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped (`grnvae recipes | head`): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so exit's flush is quiet too
        return 0
    except OSError as exc:  # disk full, permissions, read-only folders: one line, no traceback
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"grnvae {args.command}: error: {exc.strerror or exc}{where}; check the path, its permissions "
              f"and the free disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"grnvae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
