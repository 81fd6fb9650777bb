"""The black-box interface: pixels and a prompt in, text out, every query counted.

This is the seam between the training step and any MLLM (local, cloud or the embedded stand-in).
Requests carry *uint8 pixels* — what a user would upload — never tensors that require grad, so
nothing a backend does can send a gradient back into the anonymizer.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from privacy_lit.mllm.cache import QueryLedger


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
    """The MLLM's free-text answer; ``option_scores`` only where a backend can give them.

    The other fields describe the query, not the answer (equal answers compare equal whatever
    they cost): ``overlong`` (the generation was cut at its length limit, or the text at
    :data:`MAX_ANSWER_CHARS`), ``failed`` (no answer came back: the text is empty and the
    scorers treat it as a blind guess), and the query's tokens and dollars where the backend
    knows them (what the cache's ledger records).
    """

    text: str
    option_scores: dict[str, float] | None = None
    overlong: bool = field(default=False, compare=False)
    failed: bool = field(default=False, compare=False)
    prompt_tokens: int = field(default=0, compare=False)
    completion_tokens: int = field(default=0, compare=False)
    cost_usd: float = field(default=0.0, compare=False)


FAILED = Answer("", failed=True)
"""What stands in for a query that failed for good (after its retries): an empty answer, which
the scorers score as a blind guess (uniform class scores; the largest VQA distance)."""

MAX_ANSWER_CHARS = 4000
"""Answers are cut to this many characters: asked for a sentence, a model that keeps going has
nothing more to say about the question, and a runaway reply must not reach the text encoder."""

_KEPT_CONTROLS = frozenset("\n\t")


def sanitize_text(text: str | bytes, max_chars: int = MAX_ANSWER_CHARS) -> tuple[str, bool]:
    """Text any tokenizer, JSON file and log accepts, and whether it had to be cut.

    Bytes are decoded as UTF-8 with invalid sequences replaced (U+FFFD); lone surrogates (a JSON
    ``\\ud800`` escape decodes to one) become U+FFFD while escaped pairs join; control characters
    other than newline and tab become spaces; the text is cut at ``max_chars``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if any(unicodedata.category(ch) == "Cc" and ch not in _KEPT_CONTROLS for ch in text):
        text = "".join(
            " " if unicodedata.category(ch) == "Cc" and ch not in _KEPT_CONTROLS else ch
            for ch in text
        )
    return (text[:max_chars], True) if len(text) > max_chars else (text, False)


def sanitized(answer: Answer) -> Answer:
    """``answer`` with :func:`sanitize_text` applied (itself when nothing changes)."""
    text, cut = sanitize_text(answer.text)
    if text == answer.text:
        return answer
    return dataclasses.replace(answer, text=text, overlong=answer.overlong or cut)


OnAnswer = Callable[[int, Answer], None]
"""``(index in the batch, answer)``: called once per answered request as its answer arrives."""


@dataclass
class QueryStats:
    """Query accounting, read by callbacks and written to results (Tab. 6: calls per sample)."""

    calls: int = 0
    cache_hits: int = 0
    failed: int = 0
    """Queries that failed for good (after any retries): not answered, not paid."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_stage: dict[str, int] = field(default_factory=dict)
    by_endpoint: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per server, for backends that spread queries over several: ``calls`` (answered; they add
    up to ``calls``), ``errors`` (failed attempts) and ``latency_s`` (time spent on the answered
    ones)."""

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "failed": self.failed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            **{f"calls_{k}": v for k, v in self.by_stage.items()},
            **{
                f"endpoint/{name}/{k}": v
                for name, figures in self.by_endpoint.items()
                for k, v in figures.items()
            },
        }


class BatchError(RuntimeError):
    """Some requests of a batch failed for good (after any retries); the others were answered.

    Raised by :meth:`BlackBoxMLLM._answer` instead of a bare error so that what *was* answered —
    and, on a paid API, billed — is still counted, and can still be cached by a wrapper.

    Args:
        failures: request index (in the batch passed to ``answer``) → why it failed.
        answers: one entry per request of the batch: its answer, or None where it failed.
    """

    def __init__(self, failures: Mapping[int, str], answers: Sequence[Answer | None]):
        self.failures = dict(sorted(failures.items()))
        self.answers = list(answers)
        shown = [f"request {i}: {why}" for i, why in list(self.failures.items())[:5]]
        more = len(self.failures) - len(shown)
        super().__init__(
            f"{len(self.failures)} of {len(self.answers)} requests failed: "
            + "; ".join(shown)
            + (f"; and {more} more" if more > 0 else "")
        )


class BlackBoxMLLM(ABC):
    """Base class of every backend: subclasses implement :meth:`_answer`, this class counts."""

    ledger: QueryLedger | None = None
    """The durable record of the queries paid, where there is one (a
    :class:`~privacy_lit.mllm.cache.CachedMLLM` keeps it beside its cache): what a resumed run's
    counts are read back from."""

    query_guard: Callable[[BlackBoxMLLM, int], None] | None = None
    """Called with the backend and the number of queries before a batch is sent (cache hits are
    not sent); raises to refuse the batch. :class:`~privacy_lit.callbacks.budget.QueryBudget`
    puts the evaluation under the budget with it."""

    def __init__(self) -> None:
        self.stats = QueryStats()
        self.stage = "train"
        self._on_answer: OnAnswer | None = None
        self._delivered: set[int] = set()

    def prepare(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Load weights or open connections; called once before the first query."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections or threads; the backend may be prepared and used again later."""

    @contextmanager
    def counting_as(self, stage: str) -> Iterator[None]:
        """Queries inside the block count under ``stage`` (e.g. evaluation's ``"test"``); the
        previous stage comes back afterwards, also on an error."""
        previous = self.stage
        self.stage = stage
        try:
            yield
        finally:
            self.stage = previous

    @property
    def innermost(self) -> BlackBoxMLLM:
        """The backend that answers, under any wrappers (a :class:`CachedMLLM` gives its
        backend's): where backend-specific settings such as a stand-in's recognizer live."""
        return self

    def cache_identity(self) -> dict[str, object]:
        """Everything besides the request that decides the answer (model, generation settings,
        how pixels are encoded): part of a response-cache key, so that changing any of it
        misses the cache instead of returning an answer to a different question.

        Backends whose answers depend on settings must override this and include them."""
        return {"backend": f"{type(self).__module__}.{type(self).__qualname__}"}

    def answer(
        self, requests: Sequence[Request], on_answer: OnAnswer | None = None
    ) -> list[Answer]:
        """Answer a batch of requests; every answered request counts as one query.

        Every answer's text is sanitised (:func:`sanitize_text`) before anyone sees it. With
        ``on_answer``, each answer is also handed over as soon as it is known — as it arrives for
        backends that answer concurrently (:meth:`_deliver`), else when the batch is done — so a
        caller that records answers durably (the cache's ledger) loses at most those in flight
        when the process dies. A :class:`BatchError` from the backend is re-raised after counting
        and handing over the requests that were answered, since those were sent (and billed)."""
        if not requests:
            return []
        if self.query_guard is not None:
            self.query_guard(self, len(requests))
        self._on_answer, self._delivered = on_answer, set()
        try:
            try:
                answers = self._answer(list(requests))
            except BatchError as error:
                error.answers = [None if a is None else sanitized(a) for a in error.answers]
                self._deliver_rest(error.answers)
                self.count_calls(sum(a is not None for a in error.answers))
                self.stats.failed += len(error.failures)
                raise
            if len(answers) != len(requests):
                raise RuntimeError(
                    f"backend returned {len(answers)} answers for {len(requests)} requests"
                )
            answers = [sanitized(a) for a in answers]
            self._deliver_rest(answers)
        finally:
            self._on_answer = None
        self.count_calls(len(requests))
        return answers

    def _deliver(self, index: int, answer: Answer) -> None:
        """Hand request ``index``'s answer to the caller's ``on_answer`` now (a backend calls
        this as each answer arrives; the rest are handed over when the batch returns)."""
        callback = getattr(self, "_on_answer", None)
        if callback is not None and index not in self._delivered:
            self._delivered.add(index)
            callback(index, sanitized(answer))

    def _deliver_rest(self, answers: Sequence[Answer | None]) -> None:
        for i, answer in enumerate(answers):
            if answer is not None:
                self._deliver(i, answer)

    def count_calls(self, n: int) -> None:
        """Record ``n`` queries that reached the model, in total and for the current stage."""
        if n == 0:
            return
        self.stats.calls += n
        self.stats.by_stage[self.stage] = self.stats.by_stage.get(self.stage, 0) + n

    @abstractmethod
    def _answer(self, requests: list[Request]) -> list[Answer]:
        """Backend-specific answering of a non-empty batch."""


def module_mllm(module: object, attribute: str, user: str) -> BlackBoxMLLM:
    """The black box a LightningModule keeps at ``attribute``, for callbacks that read its
    counters; ``user`` names the callback in the error when there is none."""
    mllm = getattr(module, attribute, None)
    if not isinstance(mllm, BlackBoxMLLM):
        raise TypeError(
            f"{user} needs the module's black box at `{attribute}`, found {type(mllm).__name__}"
        )
    return mllm
