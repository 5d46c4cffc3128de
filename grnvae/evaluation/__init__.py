"""Evaluation: held-out effect metrics, baselines, the reliability ceiling, GRN scoring.

``grnvae evaluate RUN`` (:func:`grnvae.evaluation.evaluate.evaluate`) runs all of it.
"""

from . import baselines, evaluate
from .grn import average_precision, roc_auc
from .grn_scoring import causal_test, correlation_grn, read_reference, score_reference
from .metrics import METRICS, effect_metrics, score_effects, split_half_ceiling

__all__ = [
    "METRICS", "average_precision", "baselines", "causal_test", "evaluate", "correlation_grn", "effect_metrics",
    "read_reference", "roc_auc", "score_effects", "score_reference",
    "split_half_ceiling",
]
