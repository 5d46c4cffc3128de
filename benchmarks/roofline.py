"""How far one training step is from what this machine allows: the step's work, counted, against
its measured time.

    .venv/bin/python benchmarks/roofline.py --nodes 10000 --edges-per-node 30
    .venv/bin/python benchmarks/roofline.py --nodes 415 --edges-per-node complete --steps 3

The model, batch and step are ``step_time.py``'s (same flags: the ``gpo_vae`` recipe with the
modules upstream GPO-VAE runs, batch 512, 5 particles, K = 5 alignment hops, 2,000 genes, or
``--recipe grnvae``, the default model). One step is run with counters on:

- **dense**: every ``nn.Linear`` call, ``2 * rows * in * out`` FLOPs forward and twice that
  backward (the gradients of the input and of the weight);
- **sparse**: every sparse product of ``grnvae.nn.spmm`` (``sparse_matmul``, ``edge_matmul``,
  ``edge_scores``), ``2 * nnz * columns`` forward and twice that backward;
- **likelihood**: the negative-binomial log-likelihood over the ``[P, B, G]`` log-rates, whose
  work is element-wise (``exp``, ``log``, table look-ups) rather than FLOPs of a product: the
  model's own implementation is timed on its own, forward and backward, on tensors of the
  step's shape.

This machine's sustained rates are measured with the same threads: dense GFLOP/s as the best of
``torch.mm`` on the step's largest shapes, sparse GFLOP/s of a CSR product with the step's edge
count and column count. The bound is ``dense / dense rate + sparse / sparse rate + likelihood``:
what a step would take if every part ran at these rates and nothing else (small kernels,
indexing, allocation, the optimizer) cost anything. The last line is ``step_s=<median>
bound_s=<bound> ratio=<step / bound>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_time as st  # noqa: E402
from measure import maxrss_mb  # noqa: E402


class Counter:
    """FLOPs of the dense and sparse products of the steps run while :meth:`on` is active."""

    def __init__(self):
        self.dense = 0.0
        self.sparse = 0.0
        self.linear_shapes = {}

    @contextmanager
    def on(self, model):
        import torch

        import grnvae.nn.edges as edges_mod
        import grnvae.nn.effect as effect_mod
        import grnvae.nn.layers.gpo_linear as gpo_mod
        import grnvae.nn.mlp as mlp_mod

        hooks = []

        def count_linear(module, inputs, output):
            x = inputs[0]
            rows = x.numel() // x.shape[-1]
            flops = 2.0 * rows * module.in_features * module.out_features
            # backward: grad of the input (when it needs one) and of the weight
            weight = module.weight if isinstance(module, torch.nn.Linear) else module.weight_in
            self.dense += flops * (1 + int(x.requires_grad) + int(weight.requires_grad))
            key = (rows, module.in_features, module.out_features)
            self.linear_shapes[key] = self.linear_shapes.get(key, 0) + 1

        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, mlp_mod.RowLinear)):
                hooks.append(m.register_forward_hook(count_linear))

        def wrap(fn, nnz_cols):
            def counted(*args, **kwargs):
                out = fn(*args, **kwargs)
                nnz, cols, grads = nnz_cols(*args)
                self.sparse += 2.0 * nnz * cols * (1 + grads)
                return out
            return counted

        def grad_count(*tensors):
            return sum(int(t.requires_grad) for t in tensors)

        patches = []
        for mod in (edges_mod, mlp_mod):
            if hasattr(mod, "sparse_matmul"):
                patches.append((mod, "sparse_matmul", wrap(mod.sparse_matmul, lambda r, c, v, x, n: (
                    r.numel(), x.shape[-1] if x.dim() > 1 else 1, grad_count(v, x)))))
        for mod in (effect_mod, gpo_mod):
            if hasattr(mod, "edge_matmul"):
                patches.append((mod, "edge_matmul", wrap(mod.edge_matmul, lambda ei, v, x, n: (
                    ei.shape[1], x.shape[-1] if x.dim() > 1 else 1, grad_count(v, x)))))
        if hasattr(edges_mod, "edge_scores"):
            patches.append((edges_mod, "edge_scores", wrap(edges_mod.edge_scores, lambda r, c, a, b: (
                r.numel(), a.shape[-1], grad_count(a, b)))))
        saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
        for mod, name, fn in patches:
            setattr(mod, name, fn)
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()
            for mod, name, fn in saved:
                setattr(mod, name, fn)


def best_of(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def dense_rate(shapes) -> tuple:
    """Best sustained GFLOP/s of ``torch.mm`` over the (up to 4) largest products of the step."""
    import torch

    best, which = 0.0, None
    for rows, k, n in sorted(shapes, key=lambda s: -s[0] * s[1] * s[2])[:4]:
        a, b = torch.randn(rows, k), torch.randn(k, n)
        t = best_of(lambda: torch.mm(a, b))
        rate = 2.0 * rows * k * n / t / 1e9
        if rate > best:
            best, which = rate, (rows, k, n)
    return best, which


def sparse_rate(num_nodes: int, nnz: int, cols: int, seed: int = 0) -> float:
    """GFLOP/s of a CSR ``[V, V]`` x dense ``[V, cols]`` product with ``nnz`` random non-zeros."""
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, num_nodes, (nnz,), generator=g)
    cols_ = torch.randint(0, num_nodes, (nnz,), generator=g)
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols_]), torch.randn(nnz), (num_nodes, num_nodes),
                                  check_invariants=True).coalesce()
    csr = coo.to_sparse_csr()
    x = torch.randn(num_nodes, cols)
    t = best_of(lambda: csr @ x)
    return 2.0 * coo._nnz() * cols / t / 1e9


def likelihood_seconds(particles: int, batch: int, genes: int) -> float:
    """Forward + backward of the model's NB log-likelihood (``grnvae.nn.likelihoods.nb_log_prob``,
    from log-rates) on ``[P, B, G]`` (best of 5)."""
    import torch

    from grnvae.nn.likelihoods import nb_log_prob

    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((batch, genes), 1.0), generator=g)
    log_library = x.sum(1).clamp(min=1.0).log()
    logits = torch.randn(particles, batch, genes, generator=g, requires_grad=True)
    log_theta = torch.zeros(genes, requires_grad=True)

    def run():
        nb_log_prob(x, logits, log_library, log_theta).sum().backward()
        logits.grad = None
        log_theta.grad = None

    return best_of(run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--edges-per-node", default="complete")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--particles", type=int, default=5)
    p.add_argument("--hops", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--recipe", default="gpo_vae", choices=["gpo_vae", "grnvae"],
                   help="the model: gpo_vae (the modules upstream runs) or grnvae (the default model)")
    args = p.parse_args(argv)
    step_args = st.parse_args(["--nodes", str(args.nodes), "--edges-per-node", str(args.edges_per_node),
                               "--genes", str(args.genes), "--batch", str(args.batch),
                               "--particles", str(args.particles), "--hops", str(args.hops),
                               "--recipe", args.recipe])
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, spec, model, opt = st.build(step_args)  # --recipe grnvae: the recipe's sizes, read back
    P = step_args.particles
    batch = st.make_batch(spec, args.batch, step_args.seed)
    st.step(model, opt, batch, P)  # warm-up
    counter = Counter()
    with counter.on(model):
        st.step(model, opt, batch, P)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        st.step(model, opt, batch, P)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    peak = maxrss_mb()
    E, V, C = spec.edge_index.shape[1], len(spec.nodes), int(batch["cond_dosage"].shape[0])

    d_rate, d_shape = dense_rate(counter.linear_shapes)
    s_rate = sparse_rate(V, E, C)
    lik = likelihood_seconds(P, args.batch, args.genes)
    dense_s, sparse_s = counter.dense / d_rate / 1e9, counter.sparse / s_rate / 1e9
    bound = dense_s + sparse_s + lik
    print(f"config: recipe={args.recipe} V={V} edges_per_node={args.edges_per_node} E={E:,} G={args.genes} B={args.batch} "
          f"P={P} K={step_args.hops} latent={step_args.latent} hidden={step_args.hidden} C={C} "
          f"threads={torch.get_num_threads()} code={st.code_version()}")
    rows = [
        ("dense products", f"{counter.dense / 1e9:.1f} GFLOP at {d_rate:.0f} GFLOP/s (torch.mm {d_shape}) = {dense_s:.3f} s"),
        ("sparse products", f"{counter.sparse / 1e9:.2f} GFLOP at {s_rate:.1f} GFLOP/s (CSR, {E:,} nnz x {C} columns) = {sparse_s:.3f} s"),
        ("NB likelihood", f"[{P}, {args.batch}, {args.genes}] forward + backward = {lik:.3f} s"),
        ("bound", f"{bound:.3f} s"),
        (f"measured step (median of {args.steps})", f"{step_s:.3f} s (min {min(times):.3f}), peak RSS {peak:,.0f} MB"),
        ("step / bound", f"{step_s / bound:.2f}x"),
    ]
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        print(f"  {a:<{w}}  {b}")
    print(f"step_s={step_s:.3f} bound_s={bound:.3f} ratio={step_s / bound:.2f} peak_rss_mb={peak:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
