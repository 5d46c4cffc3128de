"""Benchmark OT control pairing (grnvae.data.pairing.pair_controls, method="ot").

Real data (default): the Papalexi 2021 THP-1 subset at
``../shared/data/perturbseq/papalexi2021_thp1_subset.h5ad`` (relative to the project root; the
benchmark says so and exits 0 when it is absent). Counts are log-normalised
(``log1p(x / rowsum * 1e4)``), the condition is ``obs['perturbation']`` (``control`` = controls),
the split is a seeded random 64/16/20 per cell, the features are all genes (CSR) and each
condition's cost uses the columns of all measured perturbed genes, as grnvae's
``data.ot.features=perturbed`` and GPO-VAE (``--features own``: only the condition's own gene;
``--features all``: all genes). Defaults follow the recipe defaults (reg 0.1, Euclidean cost,
chunks of 1,024 cells).

Synthetic scaling: ``--synthetic N_PERT N_CTRL`` pairs one condition of N_PERT random cells with a
pool of N_CTRL random training controls (``--dims`` features, dense), to show that memory stays
at about ``16 * chunk_size * N_CTRL`` bytes rather than ``8 * N_PERT * N_CTRL``. Run it in its own
process so that the process peak RSS reflects the pairing.

Prints a table and, last, ``ot_seconds=<s> peak_rss_mb=<mb>`` (peak_rss_mb is the process's
``ru_maxrss`` after pairing).

    .venv/bin/python benchmarks/pairing_ot.py [--chunk-size 4096] [--reg 1.0]
    .venv/bin/python benchmarks/pairing_ot.py --synthetic 40000 20000 [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import RssSampler, maxrss_mb, rss_mb  # noqa: E402

from grnvae.data.pairing import pair_controls  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "perturbseq" / "papalexi2021_thp1_subset.h5ad"


class StatsHandler(logging.Handler):
    """Collects the per-condition solver statistics that pair_controls logs at DEBUG."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.stats: list[dict] = []

    def emit(self, record):
        if hasattr(record, "ot_stats"):
            self.stats.append(record.ot_stats)


def run_ot(features, cond, is_control, split, condition_features, args):
    handler = StatsHandler()
    logger = logging.getLogger("grnvae.data.pairing")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    before = maxrss_mb()
    with RssSampler() as mem:
        t0 = time.perf_counter()
        pair = pair_controls(features, cond, is_control, split, method="ot", seed=args.seed,
                             condition_features=condition_features, reg=args.reg,
                             chunk_size=args.chunk_size, max_iter=args.max_iter, tol=args.tol,
                             progress=args.progress, metric=args.metric)
        seconds = time.perf_counter() - t0
    logger.removeHandler(handler)
    return pair, seconds, mem, before, maxrss_mb(), handler.stats


def sqdist(features, a: np.ndarray, b: np.ndarray, cols) -> np.ndarray:
    """Squared Euclidean distance between rows a[i] and b[i] on the given columns."""
    A, B = features[a], features[b]
    if cols is not None:
        A, B = A[:, cols], B[:, cols]
    D = A - B
    if sp.issparse(D):
        return np.asarray(D.multiply(D).sum(axis=1)).ravel()
    return (D * D).sum(axis=1)


def nearest(features, idx: np.ndarray, pool: np.ndarray, cols) -> np.ndarray:
    """Nearest pool control (squared Euclidean on cols) of each cell in idx, for comparison."""
    A, B = features[idx], features[pool]
    if cols is not None:
        A, B = A[:, cols], B[:, cols]
    A = A.toarray() if sp.issparse(A) else np.asarray(A)
    B = B.toarray() if sp.issparse(B) else np.asarray(B)
    out = np.empty(len(idx), dtype=np.int64)
    bn = (B * B).sum(1)
    for s0 in range(0, len(idx), 2048):
        a = A[s0:s0 + 2048]
        out[s0:s0 + 2048] = (bn[None, :] - 2 * a @ B.T).argmin(1)
    return pool[out]


def report_memory(seconds, mem, before, after, n_pert_max, n_ctrl, chunk):
    rows = min(chunk, n_pert_max)
    print(f"\nOT pairing wall time      {seconds:10.2f} s")
    print(f"RSS at start of pairing   {mem.start:10.1f} MB")
    print(f"peak RSS during pairing   {mem.peak:10.1f} MB  (+{mem.peak - mem.start:.1f} MB over start;"
          f" sampled every 5 ms)")
    print(f"ru_maxrss before / after  {before:10.1f} / {after:.1f} MB")
    print(f"work buffers (2 x {rows} x {n_ctrl} float64) = {16 * rows * n_ctrl / 2**20:.1f} MB;"
          f" a full {n_pert_max} x {n_ctrl} float64 cost matrix would be"
          f" {8 * n_pert_max * n_ctrl / 2**20:.1f} MB")


def papalexi(args) -> tuple[float, float] | None:
    path = Path(args.data)
    if not path.exists():
        print(f"Papalexi subset not found at {path} (../shared/data is not beside this clone); "
              f"nothing to benchmark.")
        return None
    import anndata as ad

    adata = ad.read_h5ad(path)
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(X.sum(axis=1)).ravel()
    X = sp.csr_matrix(sp.diags(np.divide(1e4, lib, out=np.zeros_like(lib), where=lib > 0)) @ X)
    X.data = np.log1p(X.data)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    names = np.unique(labels)
    cond = np.searchsorted(names, labels)
    is_control = labels == "control"
    rng = np.random.default_rng(args.seed)
    split = rng.choice(np.array([0, 1, 2], dtype=np.int8), size=len(labels), p=[0.64, 0.16, 0.20])
    genes = {g: i for i, g in enumerate(adata.var_names)}
    if args.features == "perturbed":  # grnvae's data.ot.features=perturbed: all measured targets
        targets = sorted(genes[n] for n in names if n in genes)
        condition_features = [targets if n != "control" else [] for n in names]
    elif args.features == "own":  # each condition's own perturbed gene only
        condition_features = [[genes[n]] if n in genes else [] for n in names]
    else:
        condition_features = None
    n_pool = int((is_control & (split == 0)).sum())
    print(f"Papalexi subset: {X.shape[0]} cells x {X.shape[1]} genes, {len(names) - 1} perturbations,"
          f" {int((~is_control).sum())} perturbed cells, pool = {n_pool} training controls;"
          f" reg={args.reg} chunk_size={args.chunk_size} metric={args.metric}"
          f" features={args.features}")

    pair, seconds, mem, before, after, stats = run_ot(X, cond, is_control, split,
                                                      condition_features, args)
    rand = pair_controls(None, cond, is_control, split, "random", seed=args.seed)

    pool = np.nonzero(is_control & (split == 0))[0]
    print(f"\n{'condition':<10} {'cells':>6} {'cols':>5} {'iters':>5} {'marg.err':>9} "
          f"{'distinct':>8} {'d2 OT':>8} {'d2 rand':>8} {'d2 NN':>8} {'d2 all OT':>9} "
          f"{'d2 all rnd':>10}")
    for st in sorted(stats, key=lambda s: -s["n_cells"]):
        c = st["condition"]
        idx = np.nonzero(cond == c)[0]
        cols = None if condition_features is None or not condition_features[c] else condition_features[c]
        d_ot = sqdist(X, idx, pair[idx], cols).mean()
        d_rd = sqdist(X, idx, rand[idx], cols).mean()
        a_ot = sqdist(X, idx, pair[idx], None).mean()
        a_rd = sqdist(X, idx, rand[idx], None).mean()
        d_nn = sqdist(X, idx, nearest(X, idx, pool, cols), cols).mean()
        print(f"{names[c]:<10} {st['n_cells']:>6} {st['n_features']:>5} {st['n_iter']:>5} "
              f"{st['err']:>9.2e} {len(np.unique(pair[idx])):>8} {d_ot:>8.3f} {d_rd:>8.3f} "
              f"{d_nn:>8.3f} "
              f"{a_ot:>9.2f} {a_rd:>10.2f}")
    pert = ~is_control
    print(f"(d2 = mean squared distance to the matched control on the condition's cost columns"
          f" (OT, random pairing, nearest pool control); 'all' = on all {X.shape[1]} genes;"
          f" distinct = distinct controls matched by OT.)")
    print(f"all conditions: {len(np.unique(pair[pert]))} distinct controls used of {n_pool}"
          f" (random: {len(np.unique(rand[pert]))}); max iterations "
          f"{max(s['n_iter'] for s in stats)}, all converged: {all(s['converged'] for s in stats)}")
    report_memory(seconds, mem, before, after, max(s["n_cells"] for s in stats), n_pool,
                  args.chunk_size)
    return seconds, after


def synthetic(args) -> tuple[float, float]:
    n_pert, n_ctrl = args.synthetic
    rng = np.random.default_rng(args.seed)
    X = rng.normal(size=(n_pert + n_ctrl, args.dims))
    X[n_ctrl:] += 0.5
    is_control = np.r_[np.ones(n_ctrl, bool), np.zeros(n_pert, bool)]
    cond = (~is_control).astype(np.int64)
    split = np.zeros(len(X), dtype=np.int8)
    print(f"synthetic: {n_pert} perturbed cells x {n_ctrl} controls, {args.dims} dense features;"
          f" reg={args.reg} chunk_size={args.chunk_size} metric={args.metric}")
    pair, seconds, mem, before, after, stats = run_ot(X, cond, is_control, split, None, args)
    st = stats[0]
    print(f"iterations {st['n_iter']}, marginal error {st['err']:.2e}, converged {st['converged']},"
          f" distinct controls {len(np.unique(pair[~is_control]))} of {n_ctrl}")
    report_memory(seconds, mem, before, after, n_pert, n_ctrl, args.chunk_size)
    return seconds, after


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATA), help="Papalexi subset h5ad")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--reg", type=float, default=0.1)
    p.add_argument("--max-iter", type=int, default=200)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--metric", default="euclidean", choices=["sqeuclidean", "euclidean"])
    p.add_argument("--features", default="perturbed", choices=["perturbed", "own", "all"],
                   help="cost columns per condition: all measured perturbed genes, the"
                        " condition's own gene, or all genes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic", type=int, nargs=2, metavar=("N_PERT", "N_CTRL"))
    p.add_argument("--dims", type=int, default=50, help="features of the synthetic case")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    out = synthetic(args) if args.synthetic else papalexi(args)
    if out is None:
        return 0
    seconds, peak = out
    print(f"ot_seconds={seconds:.2f} peak_rss_mb={peak:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
