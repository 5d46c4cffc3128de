"""Evaluation: scoring learned GRNs (and, as it grows, predictions) against references."""

from .grn import average_precision, roc_auc, score_against_truth

__all__ = ["average_precision", "roc_auc", "score_against_truth"]
