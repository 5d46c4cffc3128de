"""Time the scatter / message-passing paths grnvae uses, with whichever PyG backend is active.

PyG (``torch_geometric``) uses the ``torch-scatter`` package when it is installed
(``torch_geometric.typing.WITH_TORCH_SCATTER``) and PyTorch's own kernels otherwise. This script
prints which one is active and times, forward + backward (median of ``--repeats`` after three
warm-ups):

- ``utils.scatter [C, E] dim=1``: ``torch_geometric.utils.scatter(msg, tgt, dim=1, reduce="sum")``
  of a ``[C, E]`` message matrix onto V nodes, the layout of grnvae's sparse K-hop propagation
  (``grnvae.nn.effect.propagate``);
- ``utils.scatter [E, C] dim=0``: the same sum in MessagePassing's layout;
- ``MessagePassing.propagate``: PyG's message passing (gather ``x_j``, ``message``, sum
  aggregation through ``utils.scatter``) of grnvae's ``gpo_linear`` layer on states
  ``[V, P, C]`` with edge weights ``[E, P]``, called directly;
- ``GPOLinear``: the layer's own forward as grnvae runs it (with ``aggr="add"`` grnvae fuses
  message and aggregation into an edge-list sparse product, ``grnvae.nn.spmm``, so this row
  does not depend on the scatter backend; with other aggregations it is ``propagate``);
- ``torch.Tensor.index_add_`` (PyTorch, for reference) and, when ``torch_scatter`` imports,
  ``torch_scatter.scatter`` and ``torch_scatter.segment_csr`` on source-sorted edges (grnvae's
  edges are coalesced by source, so per-regulator sums could use CSR segments), against
  PyTorch's native ``torch.segment_reduce``.

Default sizes: V = 10,000 nodes, E = 300,000 edges (30 random targets per node, coalesced),
C = 64 columns, P = 5 particles. Run it once with the project's venv (no torch-scatter) and once
with a venv that has torch-scatter to compare::

    .venv/bin/python benchmarks/scatter_backend.py
    /tmp/tsvenv/bin/python benchmarks/scatter_backend.py      # torch-scatter built from source

The last line is ``backend=<torch_scatter|native> scatter_dim1_ms=<a> scatter_dim0_ms=<b>
propagate_ms=<c> gpo_linear_ms=<d>``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def timeit(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--edges", type=int, default=300_000)
    p.add_argument("--columns", type=int, default=64, help="C, columns per edge message")
    p.add_argument("--particles", type=int, default=5)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch_geometric
    import torch_geometric.typing as pyg_typing
    from torch_geometric.utils import scatter

    import grnvae  # noqa: F401  (registers the layers)
    from grnvae.nn.layers.gpo_linear import GPOLinear

    backend = "torch_scatter" if pyg_typing.WITH_TORCH_SCATTER else "native"
    ts_version = "-"
    if pyg_typing.WITH_TORCH_SCATTER:
        import torch_scatter

        ts_version = torch_scatter.__version__
    print(f"torch {torch.__version__}, torch_geometric {torch_geometric.__version__}, "
          f"torch_scatter {ts_version}, WITH_TORCH_SCATTER={pyg_typing.WITH_TORCH_SCATTER}, "
          f"threads {torch.get_num_threads()}")

    V, E, C, P = args.nodes, args.edges, args.columns, args.particles
    gen = torch.Generator().manual_seed(args.seed)
    src = torch.randint(0, V, (E,), generator=gen)
    tgt = torch.randint(0, V, (E,), generator=gen)
    key = torch.unique(src * V + tgt)  # coalesced: sorted by (source, target), unique
    src, tgt = key // V, key % V
    E = int(src.numel())
    edge_index = torch.stack([src, tgt])
    print(f"V={V:,} E={E:,} C={C} P={P} repeats={args.repeats}")

    msg_ce = torch.randn(C, E, generator=gen, requires_grad=True)
    msg_ec = torch.randn(E, C, generator=gen, requires_grad=True)
    x = torch.randn(V, P, C, generator=gen, requires_grad=True)
    w = torch.randn(E, P, generator=gen, requires_grad=True)
    layer = GPOLinear()

    def fb(f):
        def run():
            out = f()
            out.backward(torch.ones_like(out))
        return run

    rows = []
    rows.append(("utils.scatter [C, E] dim=1 (grnvae propagate)", backend,
                 timeit(fb(lambda: scatter(msg_ce, tgt, dim=1, dim_size=V, reduce="sum")), args.repeats)))
    rows.append(("utils.scatter [E, C] dim=0 (MessagePassing)", backend,
                 timeit(fb(lambda: scatter(msg_ec, tgt, dim=0, dim_size=V, reduce="sum")), args.repeats)))
    rows.append(("MessagePassing.propagate x[V, P, C] w[E, P]", backend,
                 timeit(fb(lambda: layer.propagate(edge_index, x=x, edge_weight=w)), args.repeats)))
    rows.append(("GPOLinear forward x[V, P, C] w[E, P]", "grnvae",
                 timeit(fb(lambda: layer(x, edge_index, w)), args.repeats)))
    rows.append(("index_add_ [E, C] dim=0", "pytorch",
                 timeit(fb(lambda: torch.zeros(V, C).index_add(0, tgt, msg_ec)), args.repeats)))
    ptr = torch.zeros(V + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(src, minlength=V), 0)
    rows.append(("segment_reduce [E, C] by source (CSR)", "pytorch",
                 timeit(fb(lambda: torch.segment_reduce(msg_ec, "sum", offsets=ptr, axis=0)), args.repeats)))
    if pyg_typing.WITH_TORCH_SCATTER:
        import torch_scatter

        rows.append(("torch_scatter.scatter [E, C] dim=0", "torch_scatter",
                     timeit(fb(lambda: torch_scatter.scatter(msg_ec, tgt, 0, dim_size=V, reduce="sum")),
                            args.repeats)))
        rows.append(("torch_scatter.scatter [C, E] dim=1", "torch_scatter",
                     timeit(fb(lambda: torch_scatter.scatter(msg_ce, tgt, 1, dim_size=V, reduce="sum")),
                            args.repeats)))
        rows.append(("torch_scatter.segment_csr [E, C] by source", "torch_scatter",
                     timeit(fb(lambda: torch_scatter.segment_csr(msg_ec, ptr, reduce="sum")), args.repeats)))

    w0 = max(len(r[0]) for r in rows)
    print()
    print(f"  {'operation (forward + backward)':<{w0}}  {'kernel':<13}  median ms")
    for name, kern, ms in rows:
        print(f"  {name:<{w0}}  {kern:<13}  {ms:9.2f}")
    print()
    print(f"backend={backend} scatter_dim1_ms={rows[0][2]:.2f} scatter_dim0_ms={rows[1][2]:.2f} "
          f"propagate_ms={rows[2][2]:.2f} gpo_linear_ms={rows[3][2]:.2f}")


if __name__ == "__main__":
    main()
