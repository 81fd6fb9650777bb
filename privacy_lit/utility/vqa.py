"""The VQA utility loss of App. E: text-embedding cosine distance to the ground-truth answer.

L_MLLM for a question = 1 − cos(e(answer), e(reference)), with unit-norm sentence embeddings
(all-MiniLM-L6-v2 shipped offline, the same encoder as the retrieval scoring; the paper uses
CLIP's text tower — pass ``encoder`` to use another sentence-transformers model). The distance
lies in [0, 2]; unrelated texts sit near 1.

OK-VQA gives ten human answers per question. ``reference`` picks what the answer is compared to:

- ``"most_frequent"`` (default): the answer most annotators gave (after lower-casing and trimming
  punctuation; ties go to the one given first). The paper compares with "the ground truth", one
  text, and the most frequent answer is what VQA accuracy credits fully — one clear target keeps
  the loss's variance low, which matters for a zeroth-order gradient.
- ``"best_match"``: the nearest of the distinct human answers. Kinder to synonyms ("football"
  vs "soccer" split among annotators), but rewards matching one annotator's odd answer as much
  as the consensus.

Empty answers and refusals get ``uninformative_distance`` (default 1.0: what an unrelated answer
scores, i.e. no evidence either way — the VQA analogue of the retrieval scorer's uniform scores);
multi-sentence answers follow the same rule as retrieval (refusal sentences dropped, then the first
sentence or all). The scored text and the references are normalized alike (lower case, no
punctuation at the ends) so that "Tennis." matches "tennis" exactly. Awkward answers are counted
in ``scorer.counts`` (:class:`AnswerCounts`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from privacy_lit.utility.retrieval import (
    AnswerCounts,
    SentencePolicy,
    TextEncoder,
    as_encoder,
    parse_answer,
)

Reference = Literal["most_frequent", "best_match"]

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, trim punctuation at both ends (for counting only; the
    official VQA accuracy normalization lives with the metric)."""
    return _EDGE_PUNCTUATION.sub("", " ".join(text.lower().split()))


def most_frequent(answers: Sequence[str]) -> str:
    """The most frequent normalized answer; ties go to the one that appears first."""
    normalized = [n for n in (normalize_answer(a) for a in answers) if n]
    if not normalized:
        raise ValueError(f"no non-empty ground-truth answer among {list(answers)!r}")
    counts = Counter(normalized)  # insertion-ordered: max() keeps the first of equals
    return max(counts, key=counts.__getitem__)


class VQAScorer:
    """Cosine-distance loss between MLLM answers and VQA ground truth (see module docstring)."""

    def __init__(
        self,
        encoder: str | TextEncoder | None = None,
        reference: Reference = "most_frequent",
        sentences: SentencePolicy = "first",
        uninformative_distance: float = 1.0,
        memo_size: int = 50_000,
    ):
        if reference not in ("most_frequent", "best_match"):
            raise ValueError(
                f"reference must be 'most_frequent' or 'best_match', got {reference!r}"
            )
        if sentences not in ("first", "all"):
            raise ValueError(f"sentences must be 'first' or 'all', got {sentences!r}")
        if not 0.0 <= uninformative_distance <= 2.0:
            raise ValueError(
                f"uninformative_distance must lie in [0, 2], got {uninformative_distance}"
            )
        self.encoder = as_encoder(encoder, memo_size)
        self.reference: Reference = reference
        self.sentences: SentencePolicy = sentences
        self.uninformative_distance = uninformative_distance
        self.counts = AnswerCounts()

    def _references(self, ground_truth: Sequence[str] | str, index: int) -> list[str]:
        answers = [ground_truth] if isinstance(ground_truth, str) else list(ground_truth)
        if self.reference == "most_frequent":
            try:
                return [most_frequent(answers)]
            except ValueError as err:
                raise ValueError(f"question {index}: {err}") from None
        distinct = list(dict.fromkeys(n for n in map(normalize_answer, answers) if n))
        if not distinct:
            raise ValueError(f"question {index}: no non-empty ground-truth answer in {answers!r}")
        return distinct

    def distances(
        self, answers: Sequence[str], ground_truth: Sequence[Sequence[str] | str]
    ) -> Tensor:
        """Per-question cosine distance ``B`` (float32, no graph).

        ``ground_truth[i]`` is question i's human answers (OK-VQA: ten) or a single string.
        """
        if len(answers) != len(ground_truth):
            raise ValueError(f"{len(answers)} answers but {len(ground_truth)} ground truths")
        references = [self._references(t, i) for i, t in enumerate(ground_truth)]
        parsed = [parse_answer(a, self.sentences) for a in answers]
        for p in parsed:
            self.counts.add(p)
        scored = [i for i, p in enumerate(parsed) if p.text is not None]
        # one encoder call for the whole batch; the memo makes repeated references free
        # the answer is normalized like the references: "Tennis." and "tennis" are one answer
        texts = [t for i in scored for t in (normalize_answer(parsed[i].text), *references[i])]
        embeddings = iter(self.encoder(texts)) if texts else iter(())
        out = torch.full((len(answers),), self.uninformative_distance)
        for i in scored:
            answer = next(embeddings)
            similarity = max(float(answer @ next(embeddings)) for _ in references[i])
            out[i] = 1.0 - min(max(similarity, -1.0), 1.0)
        return out

    def loss(self, answers: Sequence[str], ground_truth: Sequence[Sequence[str] | str]) -> Tensor:
        """Mean cosine distance over the batch: L_MLLM for VQA."""
        return self.distances(answers, ground_truth).mean()
