"""Turning black-box answers into losses and predictions.

:mod:`.retrieval` scores open-ended answers against class names (action recognition) and holds
the shared rules for empty, refusing and multi-sentence answers; :mod:`.vqa` measures the
embedding distance to VQA ground truth. Both count awkward answers in ``scorer.counts``.
"""

from privacy_lit.utility.retrieval import (
    ABSTAIN,
    AnswerCounts,
    ParsedAnswer,
    RetrievalScorer,
    TextEncoder,
    parse_answer,
)
from privacy_lit.utility.vqa import VQAScorer, most_frequent

__all__ = [
    "ABSTAIN",
    "AnswerCounts",
    "ParsedAnswer",
    "RetrievalScorer",
    "TextEncoder",
    "VQAScorer",
    "most_frequent",
    "parse_answer",
]
