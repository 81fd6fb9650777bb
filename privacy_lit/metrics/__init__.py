"""Evaluation metrics as torchmetrics ``Metric`` classes, with functional forms for the maths.

- :class:`ClasswiseMAP` / :func:`classwise_map`: privacy cMAP (macro mean of per-class AP) ↓
- :class:`PerAttributePrecision` / :func:`per_attribute_precision`: Tab. B11's per-class
  precision ↓
- :class:`ActionTop1`: action top-1 accuracy ↑
- :class:`VQAAccuracy` / :func:`vqa_accuracy`: VQA accuracy with the official rule ↑

Use them like any torchmetrics metric (one clone per stage in a ``MetricCollection``); they sync
across DDP processes in ``compute()``.
"""

from privacy_lit.metrics.action import ActionTop1
from privacy_lit.metrics.privacy import (
    ClasswiseMAP,
    PerAttributePrecision,
    classwise_map,
    per_attribute_precision,
    reduce_classwise_ap,
)
from privacy_lit.metrics.vqa import (
    VQAAccuracy,
    normalize_answer,
    process_digit_article,
    process_punctuation,
    vqa_accuracy,
    vqa_score,
)

__all__ = [
    "ActionTop1",
    "ClasswiseMAP",
    "PerAttributePrecision",
    "VQAAccuracy",
    "classwise_map",
    "normalize_answer",
    "per_attribute_precision",
    "process_digit_article",
    "process_punctuation",
    "reduce_classwise_ap",
    "vqa_accuracy",
    "vqa_score",
]
