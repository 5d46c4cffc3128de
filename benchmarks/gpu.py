"""The training step on a CUDA device: throughput in cells per second, float32 and mixed precision.

    .venv/bin/python benchmarks/gpu.py                       # every row below, both models
    .venv/bin/python benchmarks/gpu.py --rows 10000x30 --recipe grnvae

The rows are ``step_time.py``'s (batch 512, 5 particles, 2,000 genes; ``gpo_vae``: the modules
upstream GPO-VAE runs, K = 5 alignment hops; ``grnvae``: the default model): V = 415 complete,
1,546 x 30, 10,000 x 30 and 20,000 x 30 edges per node. For each row and model it builds the
model and batch on the device, times ``--steps`` optimizer steps in float32 and under
``torch.autocast`` (bfloat16; the loss, the optimizer and every sparse product stay in float32)
after a warm-up, with ``torch.cuda.synchronize`` around each, and checks that mixed precision is
exact enough: the loss of the same parameters and batch in both precisions (relative
difference) and the cosine similarity of their gradients. Throughput is cells per second
(batch / median step). Peak device memory is ``torch.cuda.max_memory_allocated``.

Without a CUDA device it prints why and exits 0 (``skipped: ...``), so it can stand in
``benchmarks/all.sh``. The last line is ``gpu_rows=<n> skipped=<0|1>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time as st  # noqa: E402

ROWS = ("415xcomplete", "1546x30", "10000x30", "20000x30")


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def timed_steps(model, opt, batch, particles: int, steps: int, amp: bool) -> list:
    import torch

    times = []
    for i in range(steps + 1):
        torch.cuda.synchronize()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = model(batch, particles)["loss"]
        loss.float().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
        torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - t)
    return times


def agreement(model, batch, particles: int) -> tuple:
    """Loss relative difference and gradient cosine between float32 and bfloat16 autocast, on
    the same parameters and batch (same seed for the model's samples)."""
    import torch

    out = []
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = model(batch, particles)["loss"].float()
        loss.backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        out.append((float(loss), grad))
    (l32, g32), (l16, g16) = out
    model.zero_grad(set_to_none=True)
    cos = float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))
    return abs(l16 - l32) / max(abs(l32), 1e-12), cos


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), help="VxK rows (K: edges per node or 'complete')")
    p.add_argument("--recipe", nargs="+", default=["gpo_vae", "grnvae"], choices=["gpo_vae", "grnvae"])
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        print(f"skipped: torch cannot be imported ({exc})")
        print("gpu_rows=0 skipped=1")
        return 0
    if not torch.cuda.is_available():
        print(f"skipped: no CUDA device (torch {torch.__version__}, built with CUDA {torch.version.cuda})")
        print("gpu_rows=0 skipped=1")
        return 0
    from grnvae.lightning import adam

    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("| model | V x edges/node | float32 step (s) | cells/s | bf16 autocast step (s) | cells/s | "
          "loss rel. diff | grad cosine | peak GPU memory (GB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    n = 0
    for recipe in args.recipe:
        for row in args.rows:
            V, k = row.split("x")
            step_args = st.parse_args(["--nodes", V, "--edges-per-node", k, "--recipe", recipe])
            torch.cuda.reset_peak_memory_stats(device)
            cfg, spec, model, _ = st.build(step_args)
            model = model.to(device)
            opt = adam(model.parameters(), lr=float(cfg.train.lr))
            batch = to_device(st.make_batch(spec, step_args.batch, step_args.seed), device)
            rel, cos = agreement(model, batch, step_args.particles)
            t32 = statistics.median(timed_steps(model, opt, batch, step_args.particles, args.steps, amp=False))
            t16 = statistics.median(timed_steps(model, opt, batch, step_args.particles, args.steps, amp=True))
            peak = torch.cuda.max_memory_allocated(device) / 1e9
            B = step_args.batch
            print(f"| {recipe} | {row} | {t32:.4f} | {B / t32:,.0f} | {t16:.4f} | {B / t16:,.0f} | "
                  f"{rel:.1e} | {cos:.5f} | {peak:.2f} |", flush=True)
            n += 1
            del model, opt, batch
            torch.cuda.empty_cache()
    print(f"gpu_rows={n} skipped=0")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
