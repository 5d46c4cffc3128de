"""What ``model.edges.linear_ridge: auto`` sees: the left-out scores of the linear map per ridge.

    python benchmarks/select_linear_ridge.py [--data papalexi sim]

For each data set, the training perturbations of the by-perturbation split (for the Papalexi
subset: IFNGR2, STAT1, IRF1, SMAD4, CUL3 and MYC held out, as in ``accuracy.py``; their cells
are never read) are each left out in turn: the linear map of the edge prior (the ``linear``
baseline with a ridge relative to the fit's scale) is fitted to the other training regulators'
mean changes and predicts the left-out one's; the score is the Pearson correlation with its
observed change over the measured genes, averaged over the measured regulators
(:func:`grnvae.data.features.left_out_scores`, with the changes the model itself computes,
:func:`grnvae.data.features.response_weights`). ``linear_ridge: auto`` takes the best ridge.
With ``learned_map: false`` the model predicts an unseen measured regulator through exactly
this map (its predictions correlate 0.995-0.998 with it).

``--per-regulator`` also prints each left-out regulator's scores beside the ``mean_effect`` and
``linear`` baselines' (:mod:`grnvae.evaluation.baselines`, fitted to the same changes): what the
baselines would score on the same validation regulators.

``--alternatives`` scores, on the same left-out regulators and with the same own-gene change,
other ways to carry a regulator's embedding to its response: the map's limit of infinite ridge
(the mean change plus the own change, no embedding at all), the same map over the controls'
co-expression embedding (:func:`grnvae.data.features.node_features`, ``expression``) or over
both embeddings, and a Gaussian-process regression with a cosine kernel between response
embeddings (a left-out regulator like no seen one gets the mean) at several noise levels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from accuracy import PAPALEXI, SIMULATOR, UNSEEN  # noqa: E402


def main(argv=None) -> int:
    import grnvae
    from grnvae.data.features import choose_ridge, response_weights
    from grnvae.run import load_data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["papalexi", "sim"], choices=["papalexi", "sim"])
    p.add_argument("--per-regulator", action="store_true", help="each left-out regulator's scores, with the baselines'")
    p.add_argument("--alternatives", action="store_true", help="other embeddings and estimators, left out the same way")
    args = p.parse_args(argv)
    for name in args.data:
        if name == "papalexi" and not PAPALEXI.exists():
            print(f"papalexi: skipped, {PAPALEXI} not found")
            continue
        if name == "papalexi":
            overrides = [f"data.path={PAPALEXI}", "data.covariates=[bio_rep]", "data.split.by=perturbation",
                         f"data.split.test=[{','.join(UNSEEN)}]"]
        else:
            overrides = [SIMULATOR, "data.split.by=perturbation"]
        data = load_data(grnvae.load_recipe("grnvae", overrides=overrides + ["seed=0"]), None)
        response = response_weights(data)  # [S, genes]: each training regulator's mean change
        gene = {g: i for i, g in enumerate(map(str, data.genes))}
        # regulators by gene column; one that is no measured gene gets an id no column has
        regulators = np.array([gene.get(str(data.nodes[n]), -1 - k) for k, n in enumerate(response["nodes"])])
        ridge, scores, n = choose_ridge(response["delta"], regulators, np.arange(len(gene)))
        print(f"{name}: {n} measured training regulators, each left out in turn; auto chooses {ridge:g}")
        for r, v in scores.items():
            print(f"  relative ridge {r:<6g} mean pearson {v:.3f}")
        if args.per_regulator:
            per_regulator(response["delta"], regulators, [str(data.nodes[n]) for n in response["nodes"]])
        if args.alternatives:
            from grnvae.data.features import node_features

            F = node_features(data, kinds=["expression"])
            node = {str(v): i for i, v in enumerate(data.nodes)}
            expression = F[[node[g] for g in gene], :-1]  # genes x PCs (the last column flags measured nodes)
            for label, v in alternatives(response["delta"], regulators, expression).items():
                print(f"  {label:<34s} mean pearson {v:.3f}")
    return 0


def alternatives(delta: np.ndarray, regulators: np.ndarray, expression: np.ndarray, pcs: int = 10) -> dict:
    """Mean left-out Pearson (as :func:`grnvae.data.features.left_out_table`, the same regulators
    and own-gene change) of other estimators: ``{label: score}``."""
    from grnvae.data.features import RIDGE_GRID, RIDGE_HELD_OUT
    from grnvae.utils import bilinear_ridge, pca_scores

    Y = np.asarray(delta, dtype=np.float64).T  # genes x regulators
    held = [s for s, r in enumerate(regulators) if r >= 0]
    if len(held) > RIDGE_HELD_OUT:
        held = [held[i] for i in np.linspace(0, len(held) - 1, RIDGE_HELD_OUT).round().astype(int)]

    def unit(B):
        return B / np.sqrt((B ** 2).sum(1).mean())

    def cosine(A, B):
        na, nb = np.linalg.norm(A, axis=1)[:, None], np.linalg.norm(B, axis=1)[None, :]
        return np.divide(A @ B.T, na * nb, out=np.zeros((len(A), len(B))), where=(na * nb) > 0)

    def score(predict) -> float:
        out = []
        for s in held:
            keep = np.arange(len(regulators)) != s
            Yk, rk, t = Y[:, keep], regulators[keep], int(regulators[s])
            mean = Yk.mean(axis=1)
            fitted, pred = predict(Yk, Yk - mean[:, None], rk, t)  # centred fits of the seen, prediction of t
            own = np.mean([Yk[r, j] - mean[r] - fitted[r, j] for j, r in enumerate(rk) if r >= 0])
            pred = mean + pred
            pred[t] += own
            out.append(np.corrcoef(pred, Y[:, s])[0, 1])
        return float(np.nanmean(out))

    def ridge_map(embedding, ridge):
        def predict(Yk, Yc, rk, t):
            if ridge is None:
                return np.zeros_like(Yc), np.zeros(len(Yc))
            G = embedding(Yk)
            P = np.array([G[r] if r >= 0 else np.zeros(G.shape[1]) for r in rk])
            W = bilinear_ridge(G, Yc, P, ridge, relative=True)
            return G @ W @ P.T, G @ W @ G[t]
        return predict

    def gp(noise):
        def predict(Yk, Yc, rk, t):
            G = pca_scores(Yk, pcs)
            m = rk >= 0
            P = G[rk[m]]
            A = np.linalg.inv(cosine(P, P) + noise * np.eye(int(m.sum())))
            fitted = np.zeros_like(Yc)
            fitted[:, m] = Yc[:, m] @ (cosine(P, P) @ A).T
            return fitted, Yc[:, m] @ (cosine(G[t][None], P) @ A)[0]
        return predict

    out = {"infinite ridge (mean + own change)": score(ridge_map(None, None))}
    for r in RIDGE_GRID:
        out[f"expression embedding, ridge {r:g}"] = score(ridge_map(lambda Yk: expression, r))
    for r in RIDGE_GRID:
        out[f"both embeddings, ridge {r:g}"] = score(
            ridge_map(lambda Yk: np.hstack([unit(pca_scores(Yk, pcs)), unit(expression)]), r))
    for noise in (0.1, 1.0, 10.0, 100.0):
        out[f"cosine-kernel GP, noise {noise:g}"] = score(gp(noise))
    return out


def per_regulator(delta: np.ndarray, regulators: np.ndarray, names) -> None:
    """Each measured regulator left out in turn: Pearson of its predicted and observed change
    for ``mean_effect``, ``linear`` (the baseline as ``grnvae evaluate`` fits it, to the same
    changes) and the edge prior's map at every relative ridge."""
    import pandas as pd

    from grnvae.data.features import RIDGE_GRID, left_out_table
    from grnvae.evaluation import baselines as B

    genes = [f"g{i}" for i in range(delta.shape[1])]
    frame = pd.DataFrame(delta.T, index=genes, columns=[f"g{r}" if r >= 0 else n for r, n in zip(regulators, names)])
    held, scores = left_out_table(delta, regulators, np.arange(delta.shape[1]))
    print(f"  {'left out':12s} {'mean_effect':>11s} {'linear':>7s} " + " ".join(f"{r:>6g}" for r in RIDGE_GRID))
    rows = []
    for k, s in enumerate(held):
        train, obs, col = frame.drop(columns=frame.columns[s]), delta[s], [frame.columns[s]]
        row = [np.corrcoef(B.mean_effect(train, col).iloc[:, 0], obs)[0, 1],
               np.corrcoef(B.linear(train, col).iloc[:, 0], obs)[0, 1]] + [scores[float(r)][k] for r in RIDGE_GRID]
        rows.append(row)
        print(f"  {names[s]:12s} {row[0]:11.3f} {row[1]:7.3f} " + " ".join(f"{v:6.3f}" for v in row[2:]))
    mean = np.nanmean(np.array(rows), axis=0)
    print(f"  {'mean':12s} {mean[0]:11.3f} {mean[1]:7.3f} " + " ".join(f"{v:6.3f}" for v in mean[2:]))


if __name__ == "__main__":
    raise SystemExit(main())
