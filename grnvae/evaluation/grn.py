"""Scoring a learned GRN against a reference edge list."""

from __future__ import annotations

from typing import Dict

import numpy as np
import pandas as pd

from ..grn import GRN


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (step-wise, ties grouped).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over distinct score thresholds, highest first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each tie group
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_against_truth(grn: GRN, truth: pd.DataFrame, score: str = "probability") -> Dict[str, float]:
    """Precision-recall of a learned GRN's edge scores against known true edges.

    Evaluable pairs are the learned GRN's edges between distinct nodes; a pair is positive when
    the reference has that directed edge. ``auprc_random`` is the fraction of positives (the
    AUPRC of random scores); ``early_precision`` is the precision among the top-k edges with k
    the number of positives.
    """
    df = grn.to_dataframe()
    df = df[df["source"] != df["target"]]
    true = set(zip(truth["source"].astype(str), truth["target"].astype(str)))
    labels = np.array([(s, t) in true for s, t in zip(df["source"], df["target"])], dtype=bool)
    scores = df[score].to_numpy(dtype=np.float64)
    n_pos = int(labels.sum())
    top = np.argsort(-scores, kind="mergesort")[:n_pos]
    return {
        "evaluable_pairs": int(len(df)),
        "true_edges": n_pos,
        "auprc": average_precision(scores, labels),
        "auprc_random": n_pos / max(len(df), 1),
        "auroc": roc_auc(scores, labels),
        "early_precision": float(labels[top].mean()) if n_pos else float("nan"),
    }
