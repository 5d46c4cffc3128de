"""grnvae in a scverse workflow: preprocess with scanpy, train a grnvae.Model on the AnnData,
put predictions, basal states and the GRN back into it, embed the basal states, and score
regulator activity per cell with the learned network, decoupler style.

    python examples/scverse.py [--epochs 200] [--out runs/scverse]

Runs on the built-in simulator (no download). scanpy and decoupler are used when installed
(``pip install scanpy decoupler``); without them the same steps run with numpy (a PCA of the
basal states instead of a UMAP, a weighted-sum activity score instead of decoupler's ULM).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def activity(expr: pd.DataFrame, net: pd.DataFrame) -> pd.DataFrame:
    """Per-cell activity of each regulator: the weighted sum of its targets' standardised
    expression over its edges, divided by the norm of the weights (cells x regulators)."""
    z = (expr - expr.mean()) / expr.std(ddof=0).replace(0, 1)
    out = {}
    for source, edges in net.groupby("source"):
        edges = edges[edges["target"].isin(z.columns)]
        w = edges["weight"].to_numpy()
        if len(edges) and np.linalg.norm(w) > 0:
            out[source] = z[edges["target"]].to_numpy() @ w / np.linalg.norm(w)
    return pd.DataFrame(out, index=expr.index)


def main(argv=None):
    import grnvae

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--cells", type=int, default=3000)
    p.add_argument("--out", default="runs/scverse")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import scanpy as sc
    except ImportError:
        sc = None

    # 1. an AnnData as a scverse user has it: counts kept in a layer, X log-normalised
    adata = grnvae.simulate(n_genes=60, n_regulators=8, n_cells=args.cells, n_doubles=4, seed=0)
    adata.layers["counts"] = adata.X.copy()
    if sc is not None:
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    else:
        x = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float64)
        adata.X = np.log1p(x / x.sum(1, keepdims=True) * 1e4).astype(np.float32)

    # 2. register the keys and train on the counts layer
    grnvae.Model.setup_anndata(adata, perturbation_key="perturbation", control="control", layer="counts")
    model = grnvae.Model(adata, recipe="grnvae", train__max_epochs=args.epochs, train__progress_bar=False)
    model.train(out=out / "run", overwrite=True)

    # 3. predictions, basal states, expected expression and the GRN back into AnnData
    singles = [c for c in adata.obs["perturbation"].cat.categories if c != "control" and "+" not in c][:3]
    pred = model.predict(singles + [f"{singles[0]}+{singles[1]}"])
    print(f"predicted {pred.n_obs - 1} perturbations; largest changes under {singles[0]}:")
    print(pd.Series(pred.layers["delta"][1], index=pred.var_names).abs().nlargest(5).round(3).to_string())
    model.get_latent_representation(write=True)
    model.get_normalized_expression(write=True)
    net = model.grn(write=True)
    print(f"obsm: {list(adata.obsm)}, layers: {list(adata.layers)}, uns: {[k for k in adata.uns if 'grnvae' in k]}")

    # 4. an embedding of the basal states, coloured by perturbation
    if sc is not None:
        sc.pp.neighbors(adata, use_rep="X_grnvae")
        sc.tl.umap(adata)
        ax = sc.pl.umap(adata, color="perturbation", show=False)
        ax.figure.savefig(out / "umap_basal.png", dpi=120, bbox_inches="tight")
        embedding = "UMAP"
    else:
        from matplotlib.figure import Figure

        z = adata.obsm["X_grnvae"] - adata.obsm["X_grnvae"].mean(0)
        coords = z @ np.linalg.svd(z, full_matrices=False)[2][:2].T
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.subplots()
        for label, idx in adata.obs.groupby("perturbation", observed=True).indices.items():
            ax.scatter(*coords[idx].T, s=3, label=label)
        ax.set(xlabel="PC1 of basal states", ylabel="PC2", title="grnvae basal states")
        ax.legend(fontsize=6, markerscale=3, ncols=2)
        fig.savefig(out / "pca_basal.png", dpi=120)
        embedding = "PCA"
    # the basal states carry no perturbation: each condition's mean sits near the controls'
    means = pd.DataFrame(adata.obsm["X_grnvae"]).groupby(adata.obs["perturbation"].to_numpy()).mean()
    spread = float((means - means.loc["control"]).abs().to_numpy().mean())
    print(f"{embedding} of basal states written to {out}; mean shift of a condition's basal mean: {spread:.3f}")

    # 5. regulator activity per cell from the learned GRN (source, target, weight)
    top = net[net["source"] != net["target"]].assign(strength=lambda d: d["weight"].abs())
    top = top.sort_values("strength", ascending=False).groupby("source").head(10)
    expr = pd.DataFrame(np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X),
                        index=adata.obs_names, columns=adata.var_names)
    try:
        import decoupler as dc

        acts = dc.mt.ulm(expr, top[["source", "target", "weight"]], tmin=3)[0]
    except (ImportError, AttributeError):
        acts = activity(expr, top)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    rows = []
    for reg in [r for r in singles if r in acts.columns]:
        hit, ctrl = acts.loc[labels == reg, reg].mean(), acts.loc[labels == "control", reg].mean()
        rows.append((reg, hit, ctrl))
    table = pd.DataFrame(rows, columns=["regulator", "activity_in_its_knockdown", "activity_in_controls"])
    print("regulator activity from the learned GRN (lower in its own knock-down):")
    print(table.round(3).to_string(index=False))
    adata.write_h5ad(out / "adata_with_grnvae.h5ad")
    return adata, table


if __name__ == "__main__":
    main()
