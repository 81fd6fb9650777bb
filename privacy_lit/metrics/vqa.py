r"""VQA accuracy with the official VQA evaluation rule (Antol et al. 2015; used by OK-VQA).

The rule, as in the official evaluation script (``vqaEval.py`` of the VQA API):

1. The prediction is cleaned (newlines and tabs → spaces, stripped), then goes through
   *punctuation processing* and *digit/article processing*: lower-case, number words → digits
   (``"two"`` → ``"2"``, ``"none"`` → ``"0"``), articles ``a``/``an``/``the`` dropped, missing
   apostrophes restored (``"dont"`` → ``"don't"``).
2. The ground-truth answers get punctuation processing *only* when they disagree with each other
   (they are already normalised in the released annotations). ``normalize_references=True``
   instead gives them the full processing, for references that are raw text.
3. Accuracy of one question with humans :math:`h_1..h_n` (n = 10):

   .. math::
       \mathrm{acc} = \frac{1}{n} \sum_{i=1}^{n}
           \min\Big(1, \frac{\#\{j \ne i : h_j = \hat a\}}{3}\Big)

   i.e. ``min(#matching humans / 3, 1)`` averaged over the n leave-one-out subsets. With m of
   the 10 humans matching this is ``(m·min(1, (m−1)/3) + (10−m)·min(1, m/3)) / 10``:
   m = 0, 1, 2, 3, ≥4 → 0, 0.3, 0.6, 0.9, 1.0 (so 3 matching humans give 0.9, not 1).

Punctuation processing reproduces the official quirks on purpose, so that numbers are comparable
with published ones: a listed mark is deleted if it stands next to a space somewhere in the text or
if the text has a comma between digits (``"1,000"`` → ``"1000"``), otherwise it becomes a space
(``"red,blue"`` → ``"red blue"``); a period is deleted unless a digit follows it (``"3.5"``
stays); the official code passes ``re.UNICODE`` (= 32) as the ``count`` of that substitution, so
at most 32 periods go.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

# The tables of the official script, unchanged (including its oddities: capitalised keys that
# never match after lower-casing, and "somebody'd" → "somebodyd").
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")  # fmt: skip
# "(?!<=\d)" is a no-op lookahead in the official pattern (meant as a lookbehind); kept verbatim.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)  # the official script passes re.UNICODE as `count`
HUMANS_PER_MATCH = 3  # "an answer is correct if at least 3 humans gave it"


def clean_answer(text: str) -> str:
    """Newlines and tabs → spaces, surrounding whitespace stripped."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official punctuation processing (see the module docstring for its rules).

    Example:
        >>> [process_punctuation(t) for t in ("1,000", "red,blue", "dog.", "3.5")]
        ['1000', 'red blue', 'dog', '3.5']
    """
    out = text
    strip_all = _COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if strip_all or mark + " " in text or " " + mark in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words → digits, drop articles, restore contractions (official order).

    Example:
        >>> process_digit_article("The Two dogs dont")
        "2 dogs don't"
    """
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(text: str) -> str:
    """The full processing an answer gets before matching (the prediction, always).

    Example:
        >>> normalize_answer("  The dog.\\n"), normalize_answer("Two"), normalize_answer("dont")
        ('dog', '2', "don't")
    """
    return process_digit_article(process_punctuation(clean_answer(text)))


def leave_one_out_accuracy(matches: int, num_answers: int) -> float:
    """``1/n Σ_i min(1, #matches among the other n−1 humans / 3)`` in closed form.

    The ``matches`` subsets that drop a matching human see ``matches − 1`` matches; the others see
    ``matches``.

    Example:
        >>> [round(leave_one_out_accuracy(m, 10), 4) for m in range(5)]
        [0.0, 0.3, 0.6, 0.9, 1.0]
    """
    if not 0 <= matches <= num_answers:
        raise ValueError(f"matches must be in [0, {num_answers}], got {matches}")
    if matches == 0:
        return 0.0
    dropped_match = min(1.0, (matches - 1) / HUMANS_PER_MATCH)
    dropped_other = min(1.0, matches / HUMANS_PER_MATCH)
    return (matches * dropped_match + (num_answers - matches) * dropped_other) / num_answers


def vqa_score(
    prediction: str, references: Sequence[str], normalize_references: bool = False
) -> float:
    """VQA accuracy of one answer against the human answers (official rule, module docstring).

    Example:
        >>> vqa_score("Two", ["2"] * 10)
        1.0
        >>> vqa_score("cat", ["cat"] * 2 + ["dog"] * 8)
        0.6
    """
    if isinstance(references, str):
        raise TypeError("references must be a list of the human answers, not one string")
    if len(references) == 0:
        raise ValueError("references is empty: a question needs its human answers")
    answer = normalize_answer(prediction)
    refs = [clean_answer(r) for r in references]
    if normalize_references:
        refs = [process_digit_article(process_punctuation(r)) for r in refs]
    elif len(set(refs)) > 1:
        refs = [process_punctuation(r) for r in refs]
    matches = sum(r == answer for r in refs)
    return leave_one_out_accuracy(matches, len(refs))


def _check_batch(
    predictions: Sequence[str], references: Sequence[Sequence[str]], num_answers: int | None
) -> None:
    if isinstance(predictions, str):
        raise TypeError("predictions must be a list of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists: "
            "one list of human answers per prediction"
        )
    for i, (pred, refs) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(pred, str):
            raise TypeError(f"prediction {i} is {type(pred).__name__}, expected str")
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise TypeError(f"references[{i}] must be a list of strings, got {refs!r}")
        if num_answers is not None and len(refs) != num_answers:
            raise ValueError(
                f"references[{i}] has {len(refs)} human answers, expected {num_answers} "
                "(pass num_answers=None to accept any number >= 2)"
            )
        if len(refs) < 2:
            raise ValueError(f"references[{i}] has {len(refs)} answer(s); leave-one-out needs 2+")


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    num_answers: int | None = 10,
    normalize_references: bool = False,
) -> Tensor:
    """Mean VQA accuracy over questions (float64 scalar).

    Example:
        >>> vqa_accuracy(["Two", "the dog."], [["2"] * 10, ["dog"] * 3 + ["cat"] * 7])
        tensor(0.9500, dtype=torch.float64)
    """
    _check_batch(predictions, references, num_answers)
    if len(predictions) == 0:
        raise ValueError("no predictions")
    scores = [
        vqa_score(p, r, normalize_references) for p, r in zip(predictions, references, strict=True)
    ]
    return torch.tensor(sum(scores) / len(scores), dtype=torch.float64)


class VQAAccuracy(Metric):
    """Mean VQA accuracy (official rule, see the module docstring) as a torchmetrics ``Metric``.

    The states are the sum of per-question scores and the number of questions, both reduced with
    ``sum`` across processes, so the distributed result equals the single-process one exactly.

    Args:
        num_answers: human answers expected per question (10 in VQA v2 / OK-VQA); ``None`` accepts
            any number >= 2 (leave-one-out over however many there are).
        normalize_references: give the references the prediction's full processing (for raw
            reference text); ``False`` is the official rule.

    Example:
        >>> metric = VQAAccuracy()
        >>> metric.update(["Two"], [["2"] * 10])
        >>> metric.update(["cat"], [["cat"] * 3 + ["dog"] * 7])
        >>> round(float(metric.compute()), 4)
        0.95
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: Tensor
    total: Tensor

    def __init__(
        self, num_answers: int | None = 10, normalize_references: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if num_answers is not None and num_answers < 2:
            raise ValueError(f"num_answers must be >= 2 or None, got {num_answers}")
        self.num_answers = num_answers
        self.normalize_references = normalize_references
        # float64: the sum of many per-question scores in {0, 0.3, 0.6, 0.9, 1} stays exact enough.
        self.add_state("score_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add a batch: ``predictions[i]`` is scored against the human answers ``references[i]``."""
        _check_batch(predictions, references, self.num_answers)
        scores = [
            vqa_score(p, r, self.normalize_references)
            for p, r in zip(predictions, references, strict=True)
        ]
        self.score_sum += sum(scores)
        self.total += len(scores)

    def compute(self) -> Tensor:
        return self.score_sum / self.total
