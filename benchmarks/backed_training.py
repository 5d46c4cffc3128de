"""Benchmark training on a large simulated h5ad in backed mode (``data.backed=true``).

Step 1 writes a simulated screen of ``--cells`` x ``--genes`` raw counts to an h5ad without ever
holding the whole matrix in memory: ``grnvae.simulate`` makes ``--chunk-cells`` cells at a time
(``seed = --seed + k`` for chunk ``k``) and each chunk's CSR is appended to an on-disk sparse
dataset (``anndata.io.write_elem`` for the first chunk, ``anndata.io.sparse_dataset(...).append``
for the rest; resizable, uncompressed HDF5 datasets chunked in ``--h5-chunk`` elements, int64
``indptr``). obs holds ``perturbation`` (categorical: ``control``, the regulators ``G0000``...,
double knockdowns ``Gi+Gj``) and ``n_counts``; var holds ``is_regulator``; uns is empty (no true
GRN). Because every chunk has its own seed, every chunk has its own random GRN, baselines and
double pairs: the file is fine for measuring time and memory but is not one coherent screen.
The default ``--library-size 300`` gives about 10-11% non-zeros over 2,000 genes (typical of
2,000 HVGs in scRNA-seq); the measured density is printed.

Step 2 trains ``recipes/gpo_vae.yaml`` on it through the Python API, in a fresh subprocess so
that its peak RSS is clean::

    grnvae.train("recipes/gpo_vae.yaml", overrides=[f"data.path={path}", "data.backed=true",
                 "train.max_steps=N", "train.max_epochs=1", "train.batch_size=512",
                 "train.particles=5", "train.progress_bar=false", "train.eval_cells=2048"],
                 out=TMPDIR)

The child wraps (monkeypatches, without changing the package) ``grnvae.training.load_data``
(registration: obs parsing, the library-size / counts-detection pass, splits, pairing),
``build_spec`` (the standardisation pass over the training cells and the GRN), ``_finish``
(evaluation on ``train.eval_cells`` cells of train and val, grn.tsv) and
``PerturbationData.batch`` (reading and densifying one batch from the backed file), and adds a
Lightning hook that times each optimizer step from the end of the previous one (so a step's
time includes fetching its batch). Peak RSS is the child's ``ru_maxrss`` (and ``/usr/bin/time
-v``'s "Maximum resident set size" when that exists); the RSS is also sampled every 10 ms per
phase. ``--profile FILE`` runs the child under cProfile and prints the top functions.

Prints a table and, last,
``cells=<n> genes=<g> density=<d> dense_gb=<x> peak_rss_mb=<m> register_s=<s> step_s=<median>``
(``dense_gb`` = cells x genes x 4 bytes / 1e9; ``step_s`` = median wall time per optimizer
step, batch fetch included, over the steps after the first, which also pays the start-up).

    .venv/bin/python benchmarks/backed_training.py --cells 20000            # smoke test, ~1 min
    .venv/bin/python benchmarks/backed_training.py                          # 1,000,000 x 2,000
    .venv/bin/python benchmarks/backed_training.py --reuse --path /tmp/big.h5ad --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import RssSampler, maxrss_mb, rss_mb  # noqa: E402

RESULT_TAG = "BACKED_TRAINING_RESULT "


def chunk_sizes(cells: int, chunk_cells: int) -> list[int]:
    """Split ``cells`` into near-equal chunks of at most ``chunk_cells`` (no tiny last chunk)."""
    n = max(1, math.ceil(cells / chunk_cells))
    return [len(a) for a in np.array_split(np.arange(cells), n)]


def write_h5ad(path: Path, args) -> dict:
    """Write the simulated screen chunk by chunk; returns nnz and the largest chunk's RSS."""
    import anndata as ad
    import h5py
    import pandas as pd

    import grnvae

    try:
        from anndata.io import sparse_dataset, write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import sparse_dataset, write_elem

    tmp = path.with_name(path.name + ".partial")
    sizes = chunk_sizes(args.cells, args.chunk_cells)
    categories: dict[str, int] = {"control": 0}
    codes = np.empty(args.cells, dtype=np.int32)
    n_counts = np.empty(args.cells, dtype=np.int64)
    genes = None
    nnz = 0
    t_sim = t_io = 0.0
    start = 0
    with h5py.File(tmp, "w") as f:
        X = None
        for k, m in enumerate(sizes):
            t0 = time.perf_counter()
            a = grnvae.simulate(n_genes=args.genes, n_regulators=args.regulators, n_cells=m,
                                n_doubles=args.doubles, library_size=args.library_size,
                                seed=args.seed + k)
            x = a.X.tocsr()
            x.indptr = x.indptr.astype(np.int64)  # appends past 2**31 non-zeros stay valid
            t1 = time.perf_counter()
            if X is None:
                write_elem(f, "X", x, dataset_kwargs={"chunks": (args.h5_chunk,)})  # maxshape=(None,) is implied
                X = sparse_dataset(f["X"])
            else:
                X.append(x)
            t_io += time.perf_counter() - t1
            t_sim += t1 - t0
            labels = a.obs["perturbation"].astype(str).to_numpy()
            uniq, inv = np.unique(labels, return_inverse=True)
            lut = np.array([categories.setdefault(u, len(categories)) for u in uniq], dtype=np.int32)
            codes[start:start + m] = lut[inv]
            n_counts[start:start + m] = a.obs["n_counts"].to_numpy()
            nnz += x.nnz
            if genes is None:
                genes = list(a.var_names)
                is_reg = a.var["is_regulator"].to_numpy()
            start += m
            del a, x
            if args.verbose:
                print(f"  chunk {k + 1}/{len(sizes)}: {start} cells, nnz {nnz}, "
                      f"RSS {rss_mb():.0f} MB", flush=True)
        width = len(str(args.cells - 1))
        obs = pd.DataFrame(
            {"perturbation": pd.Categorical.from_codes(codes, categories=list(categories)),
             "n_counts": n_counts},
            index=pd.Index([f"cell{i:0{width}d}" for i in range(args.cells)]),
        )
        var = pd.DataFrame({"is_regulator": is_reg}, index=pd.Index(genes))
        t1 = time.perf_counter()
        write_elem(f, "obs", obs)
        write_elem(f, "var", var)
        write_elem(f, "uns", {})
        for name in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(f, name, {})
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        t_io += time.perf_counter() - t1
    os.replace(tmp, path)
    # validate: anndata opens it backed with the right shape
    b = ad.read_h5ad(path, backed="r")
    assert b.shape == (args.cells, args.genes), b.shape
    assert b.X.shape == (args.cells, args.genes)
    b.file.close()
    return {"nnz": int(nnz), "simulate_s": t_sim, "io_s": t_io,
            "conditions": len(categories) - 1}


def file_nnz(path: Path) -> tuple[int, int, int]:
    import h5py

    with h5py.File(path, "r") as f:
        shape = tuple(int(s) for s in f["X"].attrs["shape"])
        return int(f["X/data"].shape[0]), shape[0], shape[1]


# ---------------------------------------------------------------------------------- child
def child(args) -> None:
    """Train in this (fresh) process and print one JSON result line."""
    import logging

    import grnvae
    import grnvae.training as T
    from grnvae.data.dataset import PerturbationData

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    res: dict = {"rss_import_mb": rss_mb()}
    phases: dict = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            with RssSampler() as mem:
                t0 = time.perf_counter()
                out = fn(*a, **kw)
                dt = time.perf_counter() - t0
            phases[name] = {"s": dt, "rss_start_mb": mem.start, "rss_peak_mb": mem.peak,
                            "rss_end_mb": mem.end, "maxrss_mb": maxrss_mb()}
            if args.verbose:
                print(f"[child] {name}: {dt:.2f} s, RSS {mem.end:.0f} MB (peak {mem.peak:.0f})",
                      flush=True)
            return out
        return wrapper

    T.load_data = timed("register", T.load_data)
    T.build_spec = timed("build_spec", T.build_spec)
    T._finish = timed("finish", T._finish)

    batch_times: list[float] = []
    orig_batch = PerturbationData.batch

    def batch(self, cells):
        t0 = time.perf_counter()
        out = orig_batch(self, cells)
        batch_times.append(time.perf_counter() - t0)
        return out

    PerturbationData.batch = batch

    step_ends: list[float] = []
    step_batches: list[int] = []
    fit = {}
    import grnvae.lightning as L

    base = L.GRNVAEModule

    # a timed subclass of the Lightning module train() builds
    class Timed(base):
        def on_train_start(self):
            fit["train_start"] = time.perf_counter()
            fit["rss_train_start_mb"] = rss_mb()
            step_ends.append(fit["train_start"])

        def on_train_batch_end(self, outputs, batch, batch_idx):
            step_ends.append(time.perf_counter())
            step_batches.append(len(batch_times))
            if args.verbose:
                print(f"[child] step {batch_idx + 1}: {step_ends[-1] - step_ends[-2]:.2f} s, "
                      f"RSS {rss_mb():.0f} MB", flush=True)

        def on_train_end(self):
            fit["train_end"] = time.perf_counter()

    L.GRNVAEModule = Timed  # train() imports it from grnvae.lightning when it runs

    overrides = [f"data.path={args.path}", "data.backed=true", f"train.max_steps={args.steps}",
                 "train.max_epochs=1", f"train.batch_size={args.batch_size}",
                 f"train.particles={args.particles}", "train.progress_bar=false",
                 f"train.eval_cells={args.eval_cells}", f"grn.nodes={args.nodes}",
                 *args.override]
    res["overrides"] = overrides
    out = Path(args.out)
    t0 = time.perf_counter()
    with RssSampler() as mem:
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            run = prof.runcall(grnvae.train, args.recipe, overrides=overrides, out=out,
                               overwrite=True)
            prof.dump_stats(args.profile)
            print("\n[child] cProfile, top 30 by cumulative time:")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
            print("[child] cProfile, top 25 by own time:")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        else:
            run = grnvae.train(args.recipe, overrides=overrides, out=out, overwrite=True)
    res["train_total_s"] = time.perf_counter() - t0
    res["rss_sampled_peak_mb"] = mem.peak
    res["phases"] = phases
    res["step_s"] = [b - a for a, b in zip(step_ends[:-1], step_ends[1:])]
    res["steps"] = len(res["step_s"])
    # batch() calls made for the training steps (validation / evaluation come after)
    n_train_batches = step_batches[-1] if step_batches else 0
    res["batch_s_train"] = batch_times[:n_train_batches]
    res["batch_calls_total"] = len(batch_times)
    res["batch_s_total"] = sum(batch_times)
    if "train_start" in fit:
        res["fit_tail_s"] = fit.get("train_end", fit["train_start"]) - step_ends[-1]
        res["rss_train_start_mb"] = fit["rss_train_start_mb"]
    res["model_nodes"] = run.model.num_nodes
    res["model_edges"] = int(run.model.edge_index.shape[1])
    res["model_params"] = int(sum(p.numel() for p in run.model.parameters()))
    res["cells_split"] = run.data.split_sizes()
    res["values"] = run.data.values
    res["backed"] = bool(run.data.backed)
    res["maxrss_mb"] = maxrss_mb()
    print(RESULT_TAG + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------- parent
def run_child(args, path: Path, out: Path) -> tuple[dict, float | None, str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--path", str(path),
           "--out", str(out), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--particles", str(args.particles), "--eval-cells", str(args.eval_cells),
           "--recipe", args.recipe, "--nodes", args.nodes]
    for o in args.override:
        cmd += ["--override", o]
    if args.profile:
        cmd += ["--profile", args.profile]
    if args.verbose:
        cmd.append("--verbose")
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    if gnu_time:
        cmd = [gnu_time, "-v"] + cmd
    print("child:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err_lines: list[str] = []

    def pump_err():
        for line in proc.stderr:  # type: ignore[union-attr]
            err_lines.append(line)
            if args.verbose and "\t" not in line[:1]:
                sys.stderr.write(line)

    th = threading.Thread(target=pump_err, daemon=True)
    th.start()
    result = None
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith(RESULT_TAG):
            result = json.loads(line[len(RESULT_TAG):])
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
    proc.wait()
    th.join()
    err = "".join(err_lines)
    if proc.returncode != 0 or result is None:
        sys.stderr.write(err[-8000:])
        raise SystemExit(f"training child failed (exit {proc.returncode})")
    time_v = None
    for line in err_lines:
        if "Maximum resident set size" in line:
            time_v = int(line.rsplit(":", 1)[1]) / 1024.0
    return result, time_v, err


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=1_000_000)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--regulators", type=int, default=200,
                   help="simulated regulators = GRN nodes V with grn.nodes=perturbed")
    p.add_argument("--doubles", type=int, default=6, help="double knockdowns per chunk")
    p.add_argument("--library-size", type=float, default=300.0,
                   help="median counts per cell (300 over 2000 genes: ~10%% non-zeros)")
    p.add_argument("--chunk-cells", type=int, default=50_000, help="cells simulated at a time")
    p.add_argument("--h5-chunk", type=int, default=1 << 16,
                   help="HDF5 chunk (elements) of X/data and X/indices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--path", default=None,
                   help="h5ad to write/read (default: $TMPDIR/grnvae_backed_<cells>x<genes>.h5ad)")
    p.add_argument("--reuse", action="store_true", help="do not rewrite --path if it exists")
    p.add_argument("--delete", action="store_true", help="delete the h5ad at the end")
    p.add_argument("--steps", type=int, default=5, help="train.max_steps")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--particles", type=int, default=5)
    p.add_argument("--eval-cells", type=int, default=2048)
    p.add_argument("--nodes", default="perturbed", help="grn.nodes")
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "gpo_vae.yaml"))
    p.add_argument("--override", action="append", default=[], help="extra key=value (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    p.add_argument("--profile", default=None, help="cProfile the training child into this file")
    p.add_argument("--skip-train", action="store_true", help="only write the h5ad")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        child(args)
        return

    path = Path(args.path) if args.path else (
        Path(tempfile.gettempdir()) / f"grnvae_backed_{args.cells}x{args.genes}.h5ad")
    write = None
    if args.reuse and path.exists():
        print(f"reusing {path}")
    else:
        print(f"writing {args.cells} x {args.genes} simulated counts to {path} "
              f"({len(chunk_sizes(args.cells, args.chunk_cells))} chunks of <= {args.chunk_cells} "
              f"cells, library size {args.library_size:g}, {args.regulators} regulators)", flush=True)
        t0 = time.perf_counter()
        write = write_h5ad(path, args)
        write["s"] = time.perf_counter() - t0
        write["maxrss_mb"] = maxrss_mb()
    nnz, n_cells, n_genes = file_nnz(path)
    density = nnz / (n_cells * n_genes)
    dense_gb = n_cells * n_genes * 4 / 1e9
    size_gb = path.stat().st_size / 1e9
    print(f"file: {path} {size_gb:.2f} GB, {n_cells} x {n_genes}, nnz {nnz}, density {density:.4f},"
          f" dense float32 {dense_gb:.2f} GB")
    if write:
        print(f"write: {write['s']:.1f} s (simulate {write['simulate_s']:.1f} s, h5 io "
              f"{write['io_s']:.2f} s), writer peak RSS {write['maxrss_mb']:.0f} MB, "
              f"{write['conditions']} perturbation labels")
    if args.skip_train:
        return

    tmp_out = None
    if args.out:
        out = Path(args.out)
    else:
        tmp_out = Path(tempfile.mkdtemp(prefix="grnvae_backed_run_"))
        out = tmp_out / "run"
    try:
        res, time_v, _ = run_child(args, path, out)
    finally:
        if tmp_out is not None:
            shutil.rmtree(tmp_out, ignore_errors=True)
        if args.delete:
            path.unlink(missing_ok=True)

    ph = res["phases"]
    steps = res["step_s"]
    # the first step also pays Lightning's and the loader's start-up: leave it out when possible
    steady = steps[1:] if len(steps) > 1 else steps
    step_med = statistics.median(steady) if steady else float("nan")
    batch_tr = res["batch_s_train"]
    print(f"\ncells split {res['cells_split']}, values={res['values']}, backed={res['backed']}, "
          f"GRN {res['model_nodes']} nodes / {res['model_edges']} edges, "
          f"{res['model_params']:,} parameters")
    print(f"overrides: {' '.join(res['overrides'])}")
    print(f"\n{'phase':<34} {'seconds':>9} {'RSS end MB':>11} {'RSS peak MB':>12}")
    rows = [("registration (load_data)", ph.get("register")),
            ("build_spec (standardisation+GRN)", ph.get("build_spec"))]
    for name, d in rows:
        if d:
            print(f"{name:<34} {d['s']:>9.2f} {d['rss_end_mb']:>11.0f} {d['rss_peak_mb']:>12.0f}")
    if steps:
        print(f"{'first step (incl. setup)':<34} {steps[0]:>9.2f}")
        print(f"{'later steps, median':<34} {step_med:>9.2f}   (n={len(steady)}, min {min(steady):.2f},"
              f" max {max(steady):.2f})")
        if batch_tr:
            print(f"{'  of which batch read, median':<34} {statistics.median(batch_tr):>9.3f}"
                  f"   (PerturbationData.batch: backed rows + paired controls, densified)")
    if "fit_tail_s" in res:
        print(f"{'after last step (val, ckpt)':<34} {res['fit_tail_s']:>9.2f}")
    if ph.get("finish"):
        d = ph["finish"]
        print(f"{'finish (eval + grn.tsv)':<34} {d['s']:>9.2f} {d['rss_end_mb']:>11.0f} "
              f"{d['rss_peak_mb']:>12.0f}")
    print(f"{'train() total':<34} {res['train_total_s']:>9.2f}")
    print(f"\nbatch() calls: {res['batch_calls_total']} ({res['batch_s_total']:.1f} s in all)")
    print(f"peak RSS: ru_maxrss {res['maxrss_mb']:.0f} MB"
          + (f", /usr/bin/time -v {time_v:.0f} MB" if time_v else "")
          + f", sampled {res['rss_sampled_peak_mb']:.0f} MB; after imports {res['rss_import_mb']:.0f} MB;"
          f" dense X would be {dense_gb * 1e3:.0f} MB ({res['maxrss_mb'] / (dense_gb * 1e3):.1%})")
    peak = max(res["maxrss_mb"], time_v or 0.0)
    reg = ph.get("register", {}).get("s", float("nan"))
    print(f"cells={n_cells} genes={n_genes} density={density:.4f} dense_gb={dense_gb:.2f} "
          f"peak_rss_mb={peak:.0f} register_s={reg:.2f} step_s={step_med:.3f}")


if __name__ == "__main__":
    main()
