"""The black-box interface: pixels and a prompt in, text out, every query counted.

This is the seam between the training step and any MLLM (local, cloud or the embedded stand-in).
Requests carry *uint8 pixels* — what a user would upload — never tensors that require grad, so
nothing a backend does can send a gradient back into the anonymizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class Request:
    """One query: an image ``H × W × 3`` or video ``T × H × W × 3`` (uint8) and a prompt."""

    visual: Tensor
    prompt: str

    def __post_init__(self) -> None:
        # uint8 is what a user uploads, and an integer tensor cannot carry autograd history.
        if self.visual.dtype != torch.uint8:
            raise TypeError(f"black-box requests take uint8 pixels, got {self.visual.dtype}")
        if self.visual.dim() not in (3, 4) or self.visual.shape[-1] != 3:
            raise ValueError(
                f"expected an H×W×3 image or T×H×W×3 video, got shape {tuple(self.visual.shape)}"
            )


@dataclass(frozen=True)
class Answer:
    """The MLLM's free-text answer; ``option_scores`` only where a backend can give them."""

    text: str
    option_scores: dict[str, float] | None = None


@dataclass
class QueryStats:
    """Query accounting, read by callbacks and written to results (Tab. 6: calls per sample)."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_stage: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            **{f"calls_{k}": v for k, v in self.by_stage.items()},
        }


class BlackBoxMLLM(ABC):
    """Base class of every backend: subclasses implement :meth:`_answer`, this class counts."""

    def __init__(self) -> None:
        self.stats = QueryStats()
        self.stage = "train"

    def prepare(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Load weights or open connections; called once before the first query."""

    def answer(self, requests: Sequence[Request]) -> list[Answer]:
        """Answer a batch of requests; every request counts as one query."""
        if not requests:
            return []
        answers = self._answer(list(requests))
        if len(answers) != len(requests):
            raise RuntimeError(
                f"backend returned {len(answers)} answers for {len(requests)} requests"
            )
        self.stats.calls += len(requests)
        self.stats.by_stage[self.stage] = self.stats.by_stage.get(self.stage, 0) + len(requests)
        return answers

    @abstractmethod
    def _answer(self, requests: list[Request]) -> list[Answer]:
        """Backend-specific answering of a non-empty batch."""
