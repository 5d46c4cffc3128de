"""Train GPO-VAE on a simulated screen from Python and inspect the learned GRN.

    python examples/python_api.py [--epochs 30] [--out runs/example]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grnvae

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> grnvae.Run:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--cells", type=int, default=3000)
    parser.add_argument("--out", default="runs/example")
    args = parser.parse_args(argv)

    # 1. a simulated Perturb-seq screen whose true GRN is known
    adata = grnvae.simulate(n_genes=150, n_regulators=30, n_cells=args.cells, seed=7)
    truth = grnvae.data.true_grn_edges(adata)
    print(f"simulated {adata.n_obs} cells x {adata.n_vars} genes, {len(truth)} true edges")

    # 2. the quickstart recipe, adjusted from Python (any key=value works)
    recipe = grnvae.load_recipe(
        ROOT / "recipes" / "quickstart.yaml",
        overrides=[f"train.max_epochs={args.epochs}", "train.progress_bar=false"],
    )
    run = grnvae.train(recipe, out=args.out, overwrite=True, adata=adata)

    # 3. the learned GRN is a grnvae.GRN (a PyG graph) with probability and weight per edge
    grn = run.grn()
    edges = grn.to_dataframe()
    edges = edges[edges.source != edges.target].sort_values("log_odds", ascending=False)
    true = set(zip(truth.source, truth.target))
    edges["true_edge"] = [(s, t) in true for s, t in zip(edges.source, edges.target)]
    print(edges.head(10).to_string(index=False))
    print(f"true edges among the top 20: {int(edges.head(20).true_edge.sum())}")
    print("PyG data:", grn.data)
    return run


if __name__ == "__main__":
    main()
