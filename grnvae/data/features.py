"""Gene features from training cells: what an amortised edge encoder knows about each GRN node.

A GRN node that is a measured gene gets two embeddings, both computed from training cells only:

- ``expression``: its loadings on the top principal components of the controls'
  standardised log-normalised expression (co-expression: genes that vary together in unperturbed
  cells are close);
- ``response``: its row of the top principal-component scores of the training perturbations'
  mean responses (genes x perturbations, as the gene embedding of the linear baseline of
  Ahlmann-Eltze et al., Nat Methods 2025: genes that respond alike to the seen perturbations
  are close).

Each block is scaled to unit mean squared norm over measured genes. A last column flags
measured nodes; a node that is not a measured gene (e.g. a guide target outside the panel) has
zeros everywhere, so an edge encoder gives it the average of what it learned.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FEATURES = ("expression", "response")


def _top_components(Y: np.ndarray, k: int) -> np.ndarray:
    """Row scores ``U_k S_k`` of the top-k components of column-centred ``Y`` (rows: genes)."""
    Yc = Y - Y.mean(axis=0, keepdims=True)
    k = max(0, min(k, *Yc.shape))
    if k == 0:
        return np.zeros((Y.shape[0], 0))
    U, S, _ = np.linalg.svd(Yc, full_matrices=False)
    return U[:, :k] * S[:k]


def _unit(block: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.mean(np.sum(block ** 2, axis=1)))
    return block / norm if norm > 0 else block


def node_features(data, kinds: Sequence[str] = FEATURES, expression_pcs: int = 20, response_pcs: int = 10,
                  max_cells: int = 10000, seed: int = 0) -> np.ndarray:
    """Features of every GRN node ``[V, F]`` (see the module docstring), from training cells."""
    V = len(data.nodes)
    measured = np.nonzero(data.node_gene >= 0)[0]
    cols = data.node_gene[measured]
    blocks = []
    if "expression" in kinds:
        train = data.split_index("train")
        ctrl = train[data.pair[train] == -1]
        cells = ctrl if len(ctrl) >= 2 * expression_pcs else train
        rng = np.random.default_rng(seed)
        if len(cells) > max_cells:
            cells = np.sort(rng.choice(cells, size=max_cells, replace=False))
        Z = data.lognorm_rows(cells, cols).toarray().astype(np.float64)
        Z = (Z - Z.mean(0)) / np.maximum(Z.std(0), 1e-6)
        # gene loadings: rows of the genes x cells matrix projected on its top components
        blocks.append(_unit(_top_components(Z.T, expression_pcs)))
    if "response" in kinds:
        responses = data.condition_effects("train", max_cells=2000, seed=seed)
        if responses:
            Y = np.stack([r[cols] for r in responses.values()], axis=1)  # genes x perturbations
            blocks.append(_unit(_top_components(Y, response_pcs)))
    F = np.zeros((V, sum(b.shape[1] for b in blocks) + 1), dtype=np.float32)
    start = 0
    for b in blocks:
        F[measured, start:start + b.shape[1]] = b
        start += b.shape[1]
    F[measured, -1] = 1.0
    return F


def response_lfc(data, split: str = "train", max_cells: int = 2000, pseudocount: float = 0.1,
                 seed: int = 0):
    """What each seen regulator does to each gene, from the data alone: the pseudo-bulk log-fold
    change of its single-target condition's cells against the controls (one split's cells).

    For counts, ``log(m_c + eps) - log(m_0 + eps)`` where ``m`` is a gene's mean of
    ``x / library * 1e4`` over the condition's (at most ``max_cells``, a seeded subset) and the
    controls' cells and ``eps`` is ``pseudocount`` counts per cell at the controls' median library
    (it shrinks the fold changes of barely detected genes); for log-normalised values, the
    difference of means. Divided by the dosage (so activation screens give the change per unit
    loss, like edge weights). These are population averages (escapers included): the unit of
    the edge weights with ``model.penetrance.population``.

    Returns ``(nodes [S], lfc [S, G])``: the regulator node of each single-target condition with
    cells in the split, and its fold changes (float64).
    """
    idx = data.split_index(split)
    ctrl = idx[data.pair[idx] == -1]
    G = len(data.genes)
    if len(ctrl) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, G))
    rng = np.random.default_rng(seed)

    def subset(cells):
        return np.sort(rng.choice(cells, size=max_cells, replace=False)) if len(cells) > max_cells else cells

    if data.values == "counts":
        eps = pseudocount * 1e4 / max(float(np.median(data.library[ctrl])), 1.0)

        def level(cells):
            total = np.zeros(G)
            for a in range(0, len(cells), 4096):
                part = cells[a:a + 4096]
                X = data.read_rows(part).multiply(1e4 / np.maximum(data.library[part], 1.0)[:, None])
                total += np.asarray(X.sum(axis=0)).ravel()
            return np.log(total / len(cells) + eps)
    else:
        def level(cells):
            return data.mean_lognorm(cells).astype(np.float64)

    base = level(subset(ctrl))
    nodes, rows = [], []
    for c, targets in enumerate(data.condition_nodes):
        cells = idx[data.cell_condition[idx] == c]
        if len(targets) != 1 or len(cells) == 0:
            continue
        nodes.append(targets[0])
        rows.append((level(subset(cells)) - base) / data.dose)
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, G))
    return np.asarray(nodes, dtype=np.int64), np.stack(rows)
