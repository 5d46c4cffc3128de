"""Time one optimizer step of grnvae's GPO-VAE model (``GRNVAE``) for one GRN size.

Builds the model the way ``recipes/gpo_vae.yaml`` does, with the same modules switched on as
upstream GPO-VAE (amortised edge weights with a 4 x ``--hidden`` encoder, correlated basal
encoder 1 x ``--hidden``, decoder 2 x ``--hidden``, latent ``--latent``, negative-binomial
likelihood, GRN alignment over ``--hops`` hops, sparsity penalty) plus the artifact module
(``model.artifact.enabled=true``), but without any data pipeline:

- the recipe is ``grnvae.load_recipe("gpo_vae", overrides=[...])`` with ``data.path=unused.h5ad``
  and ``data.qc.column=qc`` (both required by validation; nothing is read);
- the ``ModelSpec`` is written directly: genes ``G0 .. G{G-1}``; nodes are the first V genes when
  V <= G, else all G genes plus V - G unmeasured nodes ``U0 ..``; the edge set is the complete
  graph with self loops (``--edges-per-node complete``) or, for each node, K distinct random
  targets (seeded, never itself) plus its self loop, so E = V (K + 1), coalesced by
  ``grnvae.GRN``;
- one synthetic batch of B cells with the keys ``PerturbationData.batch`` produces (Poisson
  counts with library ~2,000, one random single perturbation per cell so C ~ min(B, V) unique
  conditions, |N(0, 1)| Delta x on the measured nodes, 20% QC-failing cells, a counterfactual
  partner for every cell) is reused for every step: this times the model, not the loader.

A step is ``model(batch, particles)["loss"]``, ``backward()``, ``clip_grad_norm_(100)`` and
``Adam(lr).step()`` (fused where PyTorch offers it, as in training). ``--warmup`` steps
(default 1) are run first, then ``--steps`` timed steps; the median, min and max are reported
together with the median forward / backward / optimizer split (``--breakdown`` adds the
model's parts run on their own, ``--profile N`` a torch.profiler table of one step). Memory:
the RSS just before the first step (model, optimizer and batch built) and the process peak
(``ru_maxrss``, model build included). Threads: PyTorch's default (all cores) unless
``--threads``. The C allocator is tuned as ``grnvae train`` tunes it
(``grnvae.utils.tune_allocator``); ``GRNVAE_TUNE_MALLOC=0`` measures without. The config line
names the code measured (``code=<commit>[+dirty]``, dirty when grnvae/ differs from the commit).

A configuration that does not fit is not run: before building anything a lower bound of the
peak is estimated (``estimate_gb``) and if above ``--max-gb`` (default 20) the script refuses
(so does a complete graph over more than 5,000 nodes, unless ``--force``); while running, the
address space is capped (``RLIMIT_AS`` = ``--max-gb`` + what the process had mapped after its
imports) so an allocation past it raises instead of waking the kernel's OOM killer. Either way
it prints the reason and ``step_s=nan peak_rss_mb=nan`` and exits with status 3.

The last line is always ``step_s=<median> peak_rss_mb=<peak>``; the line before it,
``result: key=value ...``, holds everything (``benchmarks/run_all.sh`` reads it).

    .venv/bin/python benchmarks/step_time.py --nodes 415 --edges-per-node complete
    .venv/bin/python benchmarks/step_time.py --nodes 1546 --edges-per-node 30
    .venv/bin/python benchmarks/step_time.py --nodes 10000 --edges-per-node 30 --steps 3
    .venv/bin/python benchmarks/step_time.py --nodes 1546 --edges-per-node 30 --breakdown
    .venv/bin/python benchmarks/step_time.py --nodes 1546 --edges-per-node 30 --profile 15
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import maxrss_mb, rss_mb  # noqa: E402

EXIT_DID_NOT_FIT = 3


# ------------------------------------------------------------------------------------ graph
def random_edges(V: int, k: int, seed: int) -> np.ndarray:
    """``[2, V * (k + 1)]``: for each node k distinct random targets other than itself, plus a
    self loop (vectorised; duplicates within a row are redrawn until none is left)."""
    rng = np.random.default_rng(seed)
    k = min(k, V - 1)
    tgt = rng.integers(0, V - 1, size=(V, k))
    while True:
        tgt.sort(axis=1)
        dup = np.zeros_like(tgt, dtype=bool)
        dup[:, 1:] = tgt[:, 1:] == tgt[:, :-1]
        n = int(dup.sum())
        if n == 0:
            break
        tgt[dup] = rng.integers(0, V - 1, size=n)
    src = np.repeat(np.arange(V), k).reshape(V, k)
    tgt = tgt + (tgt >= src)  # skip the node itself: targets are drawn from the other V - 1
    src = np.concatenate([src.ravel(), np.arange(V)])
    tgt = np.concatenate([tgt.ravel(), np.arange(V)])
    return np.stack([src, tgt])


def complete_edges(V: int) -> np.ndarray:
    src = np.repeat(np.arange(V), V)
    tgt = np.tile(np.arange(V), V)
    return np.stack([src, tgt])


def num_edges(V: int, k) -> int:
    return V * V if k == "complete" or int(k) >= V - 1 else V * (int(k) + 1)


def estimate_gb(V: int, E: int, G: int, B: int, P: int, H: int) -> float:
    """A cheap lower estimate of the peak RSS in GB, to refuse runs that cannot fit at all.

    It counts only what any formulation of the model has to hold, so that it stays valid while
    the model code is optimised: per-edge parameters with gradients and Adam state and the
    per-particle edge samples with their gradients (4 B x (8 + 6 P) per edge), the amortised
    edge encoder's node states ``[P, V, H]`` through its layers with gradients (x 12), the
    dense batch and the decoder's ``[P, B, G]`` tensors, and 0.6 GB of interpreter, PyTorch and
    model weights. An implementation that materialises per-edge hidden states (``[P, E, H]``)
    needs far more; the address-space cap catches that at run time.
    """
    per_edge = 4 * (8 + 6 * P)
    nodes = 4 * P * V * H * 12
    dense = 4 * B * G * 4 + 4 * P * B * G * 8
    return (0.6e9 + E * per_edge + nodes + dense) / 1e9


# ------------------------------------------------------------------------------------ model
def graph(args):
    """Genes ``G0 ..``, nodes (the first V genes, then unmeasured ``U0 ..``), each node's gene
    column (-1: unmeasured) and the coalesced edge index of the requested edge set."""
    import torch

    import grnvae

    G, V = args.genes, args.nodes
    genes = [f"G{i}" for i in range(G)]
    nodes = genes[:V] if V <= G else genes + [f"U{i}" for i in range(V - G)]
    node_gene = [i if i < G else -1 for i in range(V)]
    if args.edges_per_node == "complete" or int(args.edges_per_node) >= V - 1:
        ei = complete_edges(V)
    else:
        ei = random_edges(V, int(args.edges_per_node), args.seed)
    return genes, nodes, node_gene, grnvae.GRN(nodes, torch.from_numpy(ei)).edge_index  # coalesced


def build(args):
    import torch

    import grnvae
    from grnvae import GRNVAE, ModelSpec
    from grnvae.lightning import adam
    from grnvae.utils import tune_allocator

    tune_allocator()  # as grnvae.train does
    if getattr(args, "recipe", "gpo_vae") == "grnvae":
        return build_default(args)
    G, V, H = args.genes, args.nodes, args.hidden
    overrides = [
        "data.path=unused.h5ad",  # required key; nothing is read
        "data.qc.column=qc",  # the artifact module needs QC labels; nothing is read
        f"model.artifact.enabled={'false' if args.no_artifact else 'true'}",
        f"model.latent_dim={args.latent}",
        f"model.edges.weight={args.weight}",
        f"model.edges.encoder_hidden={H}",
        f"model.encoder.hidden={H}",
        f"model.decoder.hidden={H}",
        f"model.effect.layer={args.layer}",
        f"loss.align.hops={args.hops}",
        f"train.batch_size={args.batch}",
        f"train.particles={args.particles}",
        f"seed={args.seed}",
    ]
    cfg = grnvae.load_recipe("gpo_vae", overrides=overrides)

    genes, nodes, node_gene, edge_index = graph(args)
    spec = ModelSpec(
        genes=genes, nodes=nodes, edge_index=edge_index, node_gene=node_gene,
        x_mean=torch.zeros(G), x_std=torch.ones(G), node_counts=torch.ones(V) * 100,
        n_train=10000, values="counts", n_qc_fail=1000, extra={"library_median": 2000.0},
    )
    torch.manual_seed(args.seed)
    model = GRNVAE(spec, cfg)
    model.train()
    opt = adam(model.parameters(), lr=float(cfg.train.lr))  # the optimizer training uses
    return cfg, spec, model, opt


def build_default(args):
    """The default model (``recipes/grnvae.yaml``) at the requested size: feature-amortised
    weight-only edges with the data prior (``prior_mean: data``, ``linear_ridge: auto``),
    ``gpo_linear`` over one hop, decoder skip and library model, no alignment loss, with the
    recipe's own sizes (hidden 128, latent 10, 2 particles: ``--hidden``, ``--latent``,
    ``--particles`` and ``--hops`` are set to them). What the data would give the spec is synthetic: node features (20
    expression + 10 response components and the measured flag), the training responses of
    ``min(V, 1,000)`` seen regulators (small random changes) with the identity map from a
    log-rate to a log-normalised change (values as for log-normalised data)."""
    import torch

    import grnvae
    from grnvae import GRNVAE, ModelSpec
    from grnvae.data.features import RESPONSE_FORM, WEIGHT_GRID
    from grnvae.lightning import adam

    G, V = args.genes, args.nodes
    cfg = grnvae.load_recipe("grnvae", overrides=[
        "data.path=unused.h5ad", "model.decoder.likelihood=nb", f"model.effect.layer={args.layer}",
        f"train.batch_size={args.batch}", f"seed={args.seed}"])
    # the recipe's own sizes; the caller reads them back from args
    args.latent, args.hidden = int(cfg.model.latent_dim), int(cfg.model.decoder.hidden)
    args.particles, args.hops = int(cfg.train.particles), 0
    genes, nodes, node_gene, edge_index = graph(args)
    rng = np.random.default_rng(args.seed)
    measured = np.array([g >= 0 for g in node_gene])
    features = np.zeros((V, 31), dtype=np.float32)
    features[measured, :30] = rng.normal(size=(int(measured.sum()), 30)) / np.sqrt(30)
    features[measured, 30] = 1.0
    S = min(V, 1000)
    seen = np.sort(rng.choice(V, size=S, replace=False))
    counts = np.zeros(V, dtype=np.float32)
    counts[seen] = 100.0
    grid = WEIGHT_GRID.copy()
    response = {"nodes": torch.from_numpy(seen), "delta": torch.from_numpy(0.05 * rng.normal(size=(S, G))),
                "grid": torch.from_numpy(grid), "table": torch.from_numpy(np.repeat(grid[:, None], G, axis=1)),
                "form": torch.tensor(RESPONSE_FORM)}
    spec = ModelSpec(
        genes=genes, nodes=nodes, edge_index=edge_index, node_gene=node_gene,
        x_mean=torch.zeros(G), x_std=torch.ones(G), node_counts=torch.from_numpy(counts),
        n_train=10000, values="counts", node_features=torch.from_numpy(features),
        extra={"library_median": 2000.0, "response": response, "dose": 1.0,
               "log_library": [float(np.log(2000.0)), 0.35]})
    torch.manual_seed(args.seed)
    model = GRNVAE(spec, cfg)
    model.train()
    opt = adam(model.parameters(), lr=float(cfg.train.lr))  # the optimizer training uses
    return cfg, spec, model, opt


def make_batch(spec, B: int, seed: int):
    """One batch shaped like ``PerturbationData.batch`` (artifact keys included)."""
    import torch

    rng = np.random.default_rng(seed + 1)
    G, V = len(spec.genes), len(spec.nodes)
    Vm = sum(1 for g in spec.node_gene if g >= 0)
    profile = rng.gamma(0.3, size=G)
    profile /= profile.sum()

    def counts():
        lib = rng.lognormal(np.log(2000.0), 0.35, size=B)
        return rng.poisson(lib[:, None] * profile[None, :]).astype(np.float32)

    x = counts()
    pert = rng.integers(0, V, size=B)  # one random single perturbation per cell
    conds, cond_index = np.unique(pert, return_inverse=True)
    dosage = torch.zeros(len(conds), V)
    dosage[torch.arange(len(conds)), torch.from_numpy(conds)] = 1.0
    return {
        "x": torch.from_numpy(x),
        "library": torch.from_numpy(x.sum(1).astype(np.float32)),
        "cond_index": torch.from_numpy(cond_index.astype(np.int64)),
        "cond_dosage": dosage,
        "cond_support": torch.stack(torch.nonzero(dosage, as_tuple=True)),  # as the data's batches carry it
        "delta": torch.from_numpy(np.abs(rng.standard_normal((B, Vm))).astype(np.float32)),
        "has_delta": torch.ones(B, dtype=torch.bool),
        "cells": torch.arange(B),
        "qc": torch.from_numpy((rng.random(B) < 0.2).astype(np.float32)),
        "x_cf": torch.from_numpy(counts()),
        "has_cf": torch.ones(B, dtype=torch.bool),
    }


def step(model, opt, batch, particles: int, clip: float = 100.0):
    """One optimizer step; returns (forward, backward, optimizer) seconds."""
    import torch

    # a fresh dosage tensor, as a new batch has: what the model derives from it once per batch
    # (its non-zero pattern) is then derived again, as in training; making it is the loader's
    # work, not the step's
    batch = dict(batch, cond_dosage=batch["cond_dosage"].clone())
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = model(batch, particles)["loss"]
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    t3 = time.perf_counter()
    if not math.isfinite(float(loss.detach())):
        raise FloatingPointError(f"loss is {float(loss.detach())}")
    return t1 - t0, t2 - t1, t3 - t2


def cap_address_space(max_gb: float) -> float:
    """Cap the virtual address space at what is mapped now + ``max_gb``; returns the cap in GB."""
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * resource.getpagesize()
    cap = int(mapped + max_gb * 1e9)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap / 1e9


def code_version() -> str:
    """``<short commit>[+dirty]`` of the checkout (``+dirty``: grnvae/ differs from the commit)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "grnvae"], cwd=root,
                               capture_output=True, timeout=10).returncode != 0
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def breakdown(model, batch, particles: int, repeats: int = 2):
    """Median forward / backward seconds of the model's parts, each run on its own.

    Uses ``model.edges.sample`` (edge posterior), ``model.effects`` (edge posterior + effect
    module) and ``model.alignment`` (K-hop alignment loss); a part the model does not have is
    skipped. The rest of a step (encoder, decoder, likelihood, artifact module) is the full step
    minus effects and alignment.
    """
    def rows():  # the regulators a step evaluates the edge posterior for (all, in older versions)
        plan = getattr(model, "plan_effects", None)
        return {} if plan is None else {"rows": plan(batch["cond_dosage"]).rows}

    parts = {
        "edge posterior (edges.sample)": lambda: sum(t.sum() for t in model.edges.sample(particles, **rows())[:2]),
        "edges + effect module (effects)": lambda: sum(t.sum() for t in model.effects(batch["cond_dosage"], particles)),
        "alignment loss (alignment)": lambda: model.alignment(batch),
        "full forward (model)": lambda: model(batch, particles)["loss"],
    }
    out = {}
    for name, fn in parts.items():
        times = []
        try:
            for r in range(repeats + 1):
                model.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                loss = fn()
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                if r:
                    times.append((t1 - t0, t2 - t1))
        except AttributeError as exc:
            print(f"  breakdown: skipping {name}: {exc}")
            continue
        out[name] = tuple(statistics.median(t[i] for t in times) for i in range(2))
    model.zero_grad(set_to_none=True)
    return out


def did_not_fit(reason: str) -> None:
    print(f"did not fit: {reason}")
    print("result: status=did_not_fit")
    print("step_s=nan peak_rss_mb=nan")
    sys.stdout.flush()
    sys.exit(EXIT_DID_NOT_FIT)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True, help="V, GRN nodes")
    p.add_argument("--edges-per-node", default="complete",
                   help="random out-edges per node besides the self loop, or 'complete' (default)")
    p.add_argument("--genes", type=int, default=2000, help="G (default 2000)")
    p.add_argument("--batch", type=int, default=512, help="cells per batch (default 512)")
    p.add_argument("--particles", type=int, default=5, help="particles (default 5)")
    p.add_argument("--hops", type=int, default=5, help="K of the GRN alignment loss (default 5)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--latent", type=int, default=100, help="latent dim (default 100)")
    p.add_argument("--hidden", type=int, default=400,
                   help="hidden width of the edge encoder, basal encoder and decoder (default 400)")
    p.add_argument("--layer", default="gpo_linear", help="effect layer (default gpo_linear)")
    p.add_argument("--recipe", default="gpo_vae", choices=["gpo_vae", "grnvae"],
                   help="gpo_vae (default: the modules upstream runs) or grnvae (the default model; "
                        "--weight, --hops and the artifact flag do not apply)")
    p.add_argument("--weight", default="amortized", choices=["amortized", "free"],
                   help="edge weight posterior (default amortized)")
    p.add_argument("--no-artifact", action="store_true", help="switch the artifact module off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    p.add_argument("--max-gb", type=float, default=20.0,
                   help="refuse / abort above this many GB (default 20)")
    p.add_argument("--force", action="store_true", help="run even if the estimate exceeds --max-gb")
    p.add_argument("--breakdown", action="store_true",
                   help="after timing, time forward/backward of the edge posterior, effect module and "
                        "alignment loss on their own")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile one step with torch.profiler and print the top N ops")
    args = p.parse_args(argv)
    if args.edges_per_node != "complete":
        try:
            if int(args.edges_per_node) < 0:
                raise ValueError
        except ValueError:
            p.error("--edges-per-node must be a non-negative integer or 'complete'")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    V, k = args.nodes, args.edges_per_node
    E = num_edges(V, k)
    est = estimate_gb(V, E, args.genes, args.batch, args.particles, args.hidden)
    print(f"config: recipe={args.recipe} V={V} edges_per_node={k} E={E:,} G={args.genes} B={args.batch} "
          f"P={args.particles} K={args.hops} latent={args.latent} hidden={args.hidden} "
          f"weight={args.weight} layer={args.layer} artifact={not args.no_artifact} "
          f"estimate={est:.1f} GB code={code_version()}")
    if k == "complete" and V > 5000 and not args.force:
        did_not_fit(f"a complete graph over V={V} nodes has {E:,} edges; refusing complete for "
                    f"V > 5000 (--force to try)")
    if est > args.max_gb and not args.force:
        did_not_fit(f"estimated peak {est:.1f} GB > --max-gb {args.max_gb:g} (--force to try)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from grnvae.errors import RecipeError

    cap = cap_address_space(args.max_gb)
    try:
        t = time.perf_counter()
        cfg, spec, model, opt = build(args)
        batch = make_batch(spec, args.batch, args.seed)
        build_s = time.perf_counter() - t
        if args.recipe == "grnvae":
            print(f"model: the grnvae recipe's sizes: P={args.particles} latent={args.latent} hidden={args.hidden}, "
                  "no alignment loss")
        n_params = sum(p.numel() for p in model.parameters())
        rss_before = rss_mb()
        peak_build = maxrss_mb()
        warm = []
        for _ in range(args.warmup):
            t = time.perf_counter()
            step(model, opt, batch, args.particles)
            warm.append(time.perf_counter() - t)
        times, parts = [], []
        for _ in range(args.steps):
            t = time.perf_counter()
            parts.append(step(model, opt, batch, args.particles))
            times.append(time.perf_counter() - t)
    except RecipeError as exc:  # a layer's own memory bound (standard PyG layers over graph copies)
        did_not_fit(str(exc))
    except (MemoryError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RuntimeError) and "alloc" not in msg.lower() and "memory" not in msg.lower():
            raise
        did_not_fit(f"{type(exc).__name__} under the {cap:.1f} GB address-space cap: {msg}")
    peak = maxrss_mb()
    med = statistics.median(times)
    fwd, bwd, optim = (statistics.median(p[i] for p in parts) for i in range(3))
    C = int(batch["cond_dosage"].shape[0])

    rows = [
        ("nodes V", f"{V:,}"), ("edges per node", str(k)), ("edges E", f"{spec.edge_index.shape[1]:,}"),
        ("genes G", f"{args.genes:,}"), ("batch / conditions C", f"{args.batch} / {C}"),
        ("particles, align hops", f"{args.particles}, {args.hops}"), ("parameters", f"{n_params:,}"),
        ("threads", str(torch.get_num_threads())), ("build (model + batch)", f"{build_s:.2f} s"),
        ("warm-up steps", ", ".join(f"{w:.3f} s" for w in warm) or "-"),
        (f"step, median of {args.steps}", f"{med:.3f} s (min {min(times):.3f}, max {max(times):.3f})"),
        ("  forward / backward / clip+Adam", f"{fwd:.3f} / {bwd:.3f} / {optim:.3f} s"),
        ("RSS before first step", f"{rss_before:,.0f} MB (peak while building {peak_build:,.0f} MB)"),
        ("peak RSS (process)", f"{peak:,.0f} MB"),
    ]
    w = max(len(a) for a, _ in rows)
    print()
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")
    print()

    if args.breakdown:
        parts = breakdown(model, batch, args.particles)
        w = max(len(a) for a in parts)
        print(f"  {'part (run on its own)':<{w}}  forward   backward")
        for name, (f, b) in parts.items():
            print(f"  {name:<{w}}  {f:7.3f}   {b:7.3f}")
        print()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(model, opt, batch, args.particles)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))
        print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=args.profile))

    print(f"result: status=ok V={V} edges_per_node={k} E={spec.edge_index.shape[1]} G={args.genes} "
          f"B={args.batch} C={C} P={args.particles} K={args.hops} step_s={med:.4f} "
          f"min_s={min(times):.4f} max_s={max(times):.4f} forward_s={fwd:.4f} backward_s={bwd:.4f} "
          f"optim_s={optim:.4f} rss_before_mb={rss_before:.0f} peak_rss_mb={peak:.0f} "
          f"threads={torch.get_num_threads()}")
    print(f"step_s={med:.4f} peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
