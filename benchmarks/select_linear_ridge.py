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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
