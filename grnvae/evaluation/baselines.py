"""Simple perturbation-response baselines, to score alongside a model with :func:`.score_effects`.

Every baseline returns a genes x perturbations DataFrame of predicted deltas (mean change from
control in log-normalised space; index genes, columns the requested perturbations). Training
effects come as ``train_delta``: a genes x perturbations frame of the training perturbations'
observed deltas. A combination is named by its targets joined with ``separator`` ("A+B").
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..errors import DataError
from ..utils import bilinear_ridge, pca_scores


def _perturbation_list(perturbations, where: str) -> List[str]:
    if isinstance(perturbations, str):
        perturbations = [perturbations]
    perts = list(perturbations) if perturbations is not None else []
    if not perts:
        raise DataError(f"{where}: no perturbation to predict (perturbations is empty)")
    dup = pd.Index(perts)
    if dup.has_duplicates:
        raise DataError(f"{where}: duplicate perturbations {sorted(map(str, dup[dup.duplicated()].unique()))}")
    return perts


def _check_train(train_delta: pd.DataFrame, where: str) -> None:
    if not isinstance(train_delta, pd.DataFrame):
        raise DataError(f"{where}: train_delta must be a pandas DataFrame (genes x training perturbations)")
    if train_delta.shape[0] == 0 or train_delta.shape[1] == 0:
        raise DataError(
            f"{where}: train_delta is empty (shape {train_delta.shape}); expected genes x training perturbations"
        )
    if train_delta.index.has_duplicates:
        raise DataError(f"{where}: train_delta has duplicate genes")
    if train_delta.columns.has_duplicates:
        raise DataError(f"{where}: train_delta has duplicate perturbations")


def _frame(values: np.ndarray, genes, perts) -> pd.DataFrame:
    return pd.DataFrame(values, index=pd.Index(genes), columns=pd.Index(perts, name="perturbation"))


def _targets(pert: str, separator: str, where: str) -> List[str]:
    parts = str(pert).split(separator) if separator else [str(pert)]
    if any(p == "" for p in parts):
        raise DataError(f"{where}: perturbation {pert!r} has an empty target (separator {separator!r})")
    return parts


def no_change(genes: Sequence, perturbations: Sequence) -> pd.DataFrame:
    """Predict no effect: a zero delta for every gene and perturbation.

    Its Pearson r is undefined (NaN, the prediction is constant); its MSE is the mean squared
    observed delta.
    """
    genes = list(genes) if genes is not None else []
    if not genes:
        raise DataError("no_change: no genes given")
    perts = _perturbation_list(perturbations, "no_change")
    return _frame(np.zeros((len(genes), len(perts))), genes, perts)


def train_mean(train_delta: pd.DataFrame, perturbations: Sequence) -> pd.DataFrame:
    """Predict each perturbation's own training delta (its column of ``train_delta``).

    Only defined for perturbations seen in training (the cell-split setting, where held-out cells
    of a training perturbation are scored): a perturbation absent from ``train_delta`` gets a
    NaN column, which :func:`.score_effects` scores as undefined (all metrics NaN, counted in
    ``n_undefined``).
    """
    _check_train(train_delta, "train_mean")
    perts = _perturbation_list(perturbations, "train_mean")
    out = train_delta.reindex(columns=perts).astype(np.float64)
    out.columns = pd.Index(perts, name="perturbation")
    return out


def mean_effect(train_delta: pd.DataFrame, perturbations: Sequence) -> pd.DataFrame:
    """Predict, for every perturbation, the mean training delta (the mean over the columns of
    ``train_delta``, i.e. over all training perturbations, each weighted equally).

    The strong baseline for unseen perturbations (Systema, Vinas Torne et al. 2025): much of what
    a perturbation changes is shared by all perturbations (a generic response to being perturbed,
    plus any systematic difference between perturbed and control cells), and this predicts exactly
    that shared part. Seen or unseen, single or combination, every requested perturbation gets the
    same column. A gene's mean skips training perturbations where it is NaN (NaN only if it is
    NaN in all of them).

    This vector is also the ``ref`` of :func:`.score_effects`' ``pearson_systema``, which centres
    predictions and observations on it: this baseline's centred prediction is then zero (constant),
    so its ``pearson_systema`` is NaN (undefined) by construction, and as its prediction is the
    same for every perturbation its ``discrimination`` is 0.5 on average (chance).
    """
    _check_train(train_delta, "mean_effect")
    perts = _perturbation_list(perturbations, "mean_effect")
    mean = train_delta.astype(np.float64).mean(axis=1).to_numpy()
    return _frame(np.repeat(mean[:, None], len(perts), axis=1), train_delta.index, perts)


def additive(train_delta: pd.DataFrame, perturbations: Sequence, separator: str = "+") -> pd.DataFrame:
    """Predict a combination as the sum of its singles' training deltas.

    For ``"A+B"`` (any number of targets) the prediction is ``delta_A + delta_B`` from
    ``train_delta``; NaN (undefined) if any single is not a training perturbation. Whether the
    combination itself was seen in training does not matter. A single perturbation is NaN: it is
    no combination, and its training delta is :func:`train_mean`'s (scored there, not twice).
    """
    _check_train(train_delta, "additive")
    perts = _perturbation_list(perturbations, "additive")
    seen = set(train_delta.columns)
    Y = train_delta.to_numpy(dtype=np.float64)
    col = {p: j for j, p in enumerate(train_delta.columns)}
    out = np.full((train_delta.shape[0], len(perts)), np.nan)
    for j, p in enumerate(perts):
        targets = _targets(p, separator, "additive")
        if len(targets) == 1:
            continue
        if all(t in seen for t in targets):
            out[:, j] = sum(Y[:, col[t]] for t in targets)
    return _frame(out, train_delta.index, perts)


def linear(
    train_delta: pd.DataFrame,
    perturbations: Sequence,
    gene_embedding: Optional[Union[pd.DataFrame, np.ndarray]] = None,
    n_components: int = 10,
    ridge: float = 0.1,
    separator: str = "+",
) -> pd.DataFrame:
    """Linear baseline of Ahlmann-Eltze et al. (Nat Methods 2025): ``Y ~ G W P^T + b``.

    * ``Y`` (genes x training perturbations) is ``train_delta``; ``b`` the row means of Y (each
      gene's mean training delta).
    * ``G`` (genes x K) is the gene embedding: by default the top-K principal-component scores of
      the rows (genes) of Y (columns centred over genes, ``U_K S_K`` of the SVD; K =
      ``min(n_components, n_genes, n_training_perturbations)``). A given ``gene_embedding`` is a
      DataFrame indexed by gene (it must cover every gene of ``train_delta`` and may hold more
      rows, e.g. unmeasured targets) or an array aligned with ``train_delta``'s genes.
    * A perturbation's embedding (row of ``P``) is the row of the gene embedding for its target
      gene; a combination sums its targets' rows. A target without a row (with the default
      embedding: a target that is not a measured gene) adds nothing, so a perturbation with no
      embeddable target is predicted as ``b`` alone (the mean training delta).
    * ``W`` (K x K) minimises ``||Y - b 1^T - G W P^T||_F^2 + ridge ||W||_F^2`` over the training
      perturbations, in closed form: with ``G^T G = U diag(g) U^T`` and
      ``P^T P = V diag(q) V^T``, ``W = U [ (U^T G^T (Y - b 1^T) P V) / (g_i q_j + ridge) ] V^T``
      (the exact ridge solution; eigenvalues at rounding level count as 0 and entries with
      ``g_i q_j + ridge == 0`` are set to 0, giving the minimum-norm least-squares solution when
      ``ridge == 0``). The paper's code uses the
      separable approximation ``(G^T G + rI)^-1 G^T Y P (P^T P + rI)^-1``; both agree when
      ``ridge == 0``.

    The prediction for a perturbation with embedding ``p`` is ``b + G W p``. Deterministic (the
    predictions do not depend on the SVD's sign or rotation ambiguity).
    """
    _check_train(train_delta, "linear")
    perts = _perturbation_list(perturbations, "linear")
    if ridge < 0:
        raise DataError(f"linear: ridge must be >= 0, got {ridge}")
    Y = train_delta.to_numpy(dtype=np.float64)
    if not np.isfinite(Y).all():
        raise DataError("linear: train_delta holds non-finite values")
    genes = train_delta.index
    n_genes, n_train = Y.shape

    if gene_embedding is None:
        k = int(min(n_components, n_genes, n_train))
        if k < 1:
            raise DataError(f"linear: n_components must be >= 1, got {n_components}")
        G = pca_scores(Y, k)
        emb_index: Dict[str, int] = {str(g): i for i, g in enumerate(genes)}
        emb = G
    elif isinstance(gene_embedding, pd.DataFrame):
        if gene_embedding.shape[1] == 0:
            raise DataError("linear: gene_embedding has no columns")
        if gene_embedding.index.has_duplicates:
            raise DataError("linear: gene_embedding has duplicate genes")
        missing = genes.difference(gene_embedding.index)
        if len(missing):
            raise DataError(
                f"linear: gene_embedding lacks {len(missing)} genes of train_delta, e.g. {list(map(str, missing[:10]))}"
            )
        emb = gene_embedding.to_numpy(dtype=np.float64)
        emb_index = {str(g): i for i, g in enumerate(gene_embedding.index)}
        G = gene_embedding.reindex(genes).to_numpy(dtype=np.float64)
    else:
        G = np.asarray(gene_embedding, dtype=np.float64)
        if G.ndim != 2 or G.shape[0] != n_genes or G.shape[1] == 0:
            raise DataError(f"linear: gene_embedding must be [{n_genes}, K] (genes of train_delta), got {G.shape}")
        emb = G
        emb_index = {str(g): i for i, g in enumerate(genes)}
    if not np.isfinite(emb).all():
        raise DataError("linear: gene_embedding holds non-finite values")
    K = G.shape[1]

    def embed(p) -> np.ndarray:
        v = np.zeros(K)
        for t in _targets(p, separator, "linear"):
            i = emb_index.get(t)
            if i is not None:
                v += emb[i]
        return v

    P = np.stack([embed(p) for p in train_delta.columns])  # n_train x K
    b = Y.mean(axis=1)
    Yc = Y - b[:, None]
    W = bilinear_ridge(G, Yc, P, ridge)

    Pq = np.stack([embed(p) for p in perts])  # n_pred x K
    pred = b[:, None] + G @ W @ Pq.T
    return _frame(pred, genes, perts)
