"""Time to a result: ``grnvae train`` to early stopping, then ``grnvae evaluate``, with peak memory.

    .venv/bin/python benchmarks/time_to_result.py --case papalexi
    .venv/bin/python benchmarks/time_to_result.py --case simulated --cells 200000 --genes 5000 --regulators 2000
    .venv/bin/python benchmarks/time_to_result.py --case simulated --cells 20000 --genes 1000 --regulators 200 --max-epochs 2

Cases (each in a fresh child process, so its peak RSS is its own: ``ru_maxrss`` of the child):

- ``papalexi``: the ``grnvae`` recipe on the Papalexi subset (``../shared/data``; skipped with a
  reason when absent), split by cell, with its own defaults (early stopping on the validation
  ELBO), then ``evaluate`` on the test cells.
- ``simulated``: a simulated screen of ``--cells`` x ``--genes`` raw counts with ``--regulators``
  perturbed genes, written chunk by chunk to an h5ad (``backed_training.write_h5ad``: each chunk
  of 50,000 cells has its own GRN, so it is a load test) and trained *backed*
  (``data.backed=true``) with the ``grnvae`` recipe restricted to ``grn.nodes=perturbed`` (the
  regulators; the default's every-measured-gene node set would hold regulators x genes edges),
  then evaluated on 2,000 test cells per perturbation at most. ``--max-epochs`` caps training
  (say so when quoting: that is not early stopping).

Prints one table row per case and, last, ``train_s=... evaluate_s=... peak_rss_mb=...`` of the
last case.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PAPALEXI = ROOT.parent / "shared" / "data" / "perturbseq" / "papalexi2021_thp1_subset.h5ad"
TAG = "TIME_TO_RESULT "


def child(args) -> None:
    """Train and evaluate one case in this process; print the result after ``TAG``."""
    import grnvae
    from grnvae.evaluation.evaluate import evaluate

    out = Path(args.out)
    overrides = ["train.progress_bar=false", f"seed={args.seed}"]
    if args.case == "papalexi":
        overrides += [f"data.path={PAPALEXI}", "data.covariates=[bio_rep]", "data.split.by=cells"]
    else:
        overrides += [f"data.path={args.path}", "data.backed=true", "grn.nodes=perturbed"]
    if args.max_epochs:
        overrides.append(f"train.max_epochs={args.max_epochs}")
    t0 = time.perf_counter()
    run = grnvae.train("grnvae", overrides=overrides, out=out / "run", overwrite=True)
    t1 = time.perf_counter()
    res = evaluate(run.path, plots=False, max_controls=args.max_controls)
    t2 = time.perf_counter()
    model = res["metrics"]["model"]
    print(TAG + json.dumps({"train_s": t1 - t0, "evaluate_s": t2 - t1, "epochs": run.metrics.get("epochs"),
                            "pearson_delta": model.get("pearson_delta"),
                            "n_perturbations": model.get("n_perturbations")}), flush=True)


def write_simulated(path: Path, args) -> float:
    from backed_training import write_h5ad

    sim = argparse.Namespace(cells=args.cells, genes=args.genes, regulators=args.regulators, doubles=0,
                             library_size=args.library_size, chunk_cells=50_000, h5_chunk=1 << 16,
                             seed=args.seed, verbose=False)
    t = time.perf_counter()
    write_h5ad(path, sim)
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=["papalexi", "simulated"], default="papalexi")
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=5000)
    p.add_argument("--regulators", type=int, default=2000)
    p.add_argument("--library-size", type=float, default=2000.0)
    p.add_argument("--max-epochs", type=int, default=None, help="cap on epochs (default: to early stopping)")
    p.add_argument("--max-controls", type=int, default=500,
                   help="control cells whose basal states the predictions average over (evaluate's max_controls)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="working folder (default: a temporary one, deleted)")
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.case == "papalexi" and not PAPALEXI.exists():
        print(f"papalexi: skipped, {PAPALEXI} not found")
        print("train_s=nan evaluate_s=nan peak_rss_mb=nan")
        return 0
    with tempfile.TemporaryDirectory(prefix="grnvae_ttr_") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--child", "--case", args.case, "--out", str(work), "--seed", str(args.seed)]
        write_s = 0.0
        if args.case == "simulated":
            path = work / "screen.h5ad"
            write_s = write_simulated(path, args)
            cmd += ["--path", str(path)]
        if args.max_epochs:
            cmd += ["--max-epochs", str(args.max_epochs)]
        cmd += ["--max-controls", str(args.max_controls)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = [l for l in proc.stdout.splitlines() if l.startswith(TAG)]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            print(f"{args.case}: failed (exit {proc.returncode})")
            return 1
        res = json.loads(lines[-1][len(TAG):])
    size = (f"{args.cells:,} cells x {args.genes:,} genes, {args.regulators:,} perturbations, backed"
            if args.case == "simulated" else "Papalexi subset, 20,729 cells, split by cell")
    epochs = f"{res['epochs']} epochs" + (f" (capped at {args.max_epochs})" if args.max_epochs else " (early stopping)")
    print("| case | write (s) | train (s) | evaluate (s) | epochs | peak RSS (MB) | pearson_delta |")
    print("|---|---:|---:|---:|---|---:|---:|")
    print(f"| {size} | {write_s:.0f} | {res['train_s']:.0f} | {res['evaluate_s']:.0f} ({args.max_controls} controls) | {epochs} | {peak:,.0f} | "
          f"{res['pearson_delta']:.3f} |")
    print(f"train_s={res['train_s']:.1f} evaluate_s={res['evaluate_s']:.1f} peak_rss_mb={peak:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
