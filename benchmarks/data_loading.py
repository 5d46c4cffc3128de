"""Cells per second of densified training batches: h5ad in memory vs backed (``data.backed``).

1. Simulates a screen with ``grnvae.simulate`` (default 50,000 cells x 2,000 genes, 200
   regulators, ``library_size=300``: about 11% non-zeros, as for 2,000 HVGs) and writes it to an
   h5ad (``--path``, default ``$TMPDIR/grnvae_loading_<cells>x<genes>.h5ad``; ``--reuse`` keeps
   an existing file).
2. For each mode, in a fresh subprocess (so its peak RSS is its own):
   ``cfg = grnvae.load_recipe("gpo_vae", [f"data.path={path}", "data.backed=false|true"])``,
   ``data = grnvae.training.load_data(cfg)`` (timed: reading and registration), then iterates
   ``data.loader("train", --batch-size, shuffle=True)`` for ``--batches`` batches (default: one
   epoch of the training split) and reports cells per second. Each batch is what
   ``PerturbationData.batch`` gives the model: the dense ``x`` ``[512, G]``, the matched
   controls' |Delta x| on the measured GRN nodes, dosages and library sizes.

Peak RSS is sampled every 10 ms from registration to the last batch (``measure.RssSampler``),
not ``ru_maxrss``: a child started with fork + exec inherits its parent's high-water mark on
Linux, and the parent has just simulated the data. The file was just written, so backed reads come from the OS page cache: this measures
grnvae's and anndata's per-batch overhead, not the disk. Prints a table and, last,
``memory_cells_per_s=<x> backed_cells_per_s=<y>``.

    .venv/bin/python benchmarks/data_loading.py                  # 50,000 x 2,000, ~1-2 min
    .venv/bin/python benchmarks/data_loading.py --cells 10000    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import RssSampler, rss_mb  # noqa: E402


def write(path: Path, cells: int, genes: int, regulators: int, seed: int) -> float:
    import grnvae

    t = time.perf_counter()
    adata = grnvae.simulate(n_genes=genes, n_regulators=regulators, n_cells=cells,
                            library_size=300, seed=seed)
    adata.uns.clear()  # the true GRN is not needed here
    adata.write_h5ad(path)
    return time.perf_counter() - t


def child(path: str, backed: bool, batch_size: int, batches: int, seed: int) -> dict:
    import grnvae
    from grnvae.training import load_data

    sampler = RssSampler().__enter__()
    t = time.perf_counter()
    cfg = grnvae.load_recipe("gpo_vae", [f"data.path={path}", f"data.backed={'true' if backed else 'false'}",
                                         f"seed={seed}"])
    data = load_data(cfg)
    register_s = time.perf_counter() - t
    rss_registered = rss_mb()
    loader = data.loader("train", batch_size, shuffle=True, seed=seed)
    n_cells, n_batches, times = 0, 0, []
    t0 = t = time.perf_counter()
    for batch in loader:
        now = time.perf_counter()
        times.append(now - t)
        n_cells += int(batch["x"].shape[0])
        n_batches += 1
        if batches and n_batches >= batches:
            break
        t = time.perf_counter()
    total = time.perf_counter() - t0
    sampler.__exit__(None, None, None)
    times.sort()
    return {
        "mode": "backed" if backed else "memory", "register_s": register_s, "cells": n_cells,
        "batches": n_batches, "seconds": total, "cells_per_s": n_cells / total,
        "batch_ms_median": 1e3 * times[len(times) // 2], "rss_registered_mb": rss_registered,
        "peak_rss_mb": sampler.peak, "n_train": int(len(data.split_index("train"))),
        "genes": len(data.genes), "nodes": len(data.nodes),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--regulators", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--batches", type=int, default=0, help="batches per mode (default: one epoch)")
    p.add_argument("--path", default=None)
    p.add_argument("--reuse", action="store_true", help="reuse --path if it exists")
    p.add_argument("--delete", action="store_true", help="delete the file at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=["memory", "backed"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        res = child(args.path, args.child == "backed", args.batch_size, args.batches, args.seed)
        print("RESULT " + json.dumps(res))
        return

    path = Path(args.path or Path(tempfile.gettempdir()) / f"grnvae_loading_{args.cells}x{args.genes}.h5ad")
    if args.reuse and path.exists():
        print(f"reusing {path}")
        write_s = float("nan")
    else:
        write_s = write(path, args.cells, args.genes, args.regulators, args.seed)
        print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {write_s:.1f} s")

    results = []
    for mode in ("memory", "backed"):
        cmd = [sys.executable, __file__, "--child", mode, "--path", str(path),
               "--batch-size", str(args.batch_size), "--batches", str(args.batches), "--seed", str(args.seed)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            sys.stderr.write(out.stdout + out.stderr)
            raise SystemExit(f"{mode} child failed (exit {out.returncode})")
        results.append(json.loads(line[-1][7:]))

    r0 = results[0]
    print(f"\n{args.cells:,} cells x {r0['genes']:,} genes, {r0['n_train']:,} training cells, "
          f"V={r0['nodes']}, batch {args.batch_size}\n")
    head = ("mode", "registration", "batches", "cells/s", "batch (median)", "RSS registered", "peak RSS")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in results:
        print(f"| {r['mode']} | {r['register_s']:.2f} s | {r['batches']} | {r['cells_per_s']:,.0f} | "
              f"{r['batch_ms_median']:.1f} ms | {r['rss_registered_mb']:,.0f} MB | {r['peak_rss_mb']:,.0f} MB |")
    print()
    if args.delete:
        path.unlink()
    print(f"memory_cells_per_s={results[0]['cells_per_s']:.0f} backed_cells_per_s={results[1]['cells_per_s']:.0f}")


if __name__ == "__main__":
    main()
