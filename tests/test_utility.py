"""Answers → losses: retrieval cross-entropy and VQA embedding distance with the real offline
all-MiniLM-L6-v2, and the deliberate handling of empty, refusing and multi-sentence answers."""

from __future__ import annotations

import math

import pytest
import torch

from privacy_lit.mllm.base import Answer
from privacy_lit.utility import (
    ABSTAIN,
    RetrievalScorer,
    TextEncoder,
    VQAScorer,
    most_frequent,
    parse_answer,
)

CLASSES = ["riding a horse", "playing tennis", "swimming in a pool", "cooking food"]
RIGHT = [
    "A man is on horseback, riding across a field.",
    "Someone is hitting a ball with a tennis racket.",
    "The person swims laps in the water.",
    "She is preparing a meal in the kitchen.",
]
REFUSALS = [
    "I can't help with that.",
    "I'm sorry, but I cannot identify the people in this video.",
    "As an AI, I do not analyse videos of people.",
    "I’m unable to assist with this request.",  # curly apostrophe
    "Sorry, I cannot answer.",
    "Unfortunately, I can't determine that.",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()  # the shipped MiniLM, loaded once for the module


@pytest.fixture
def scorer(encoder: TextEncoder) -> RetrievalScorer:
    return RetrievalScorer(CLASSES, encoder)


# ----------------------------------------------------------------------------- the rules
@pytest.mark.parametrize("text", ["", "   ", "\n\t", "...", " - "])
def test_empty_answers_are_recognized(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.empty and parsed.text is None and not parsed.refusal


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_are_recognized(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.refusal and parsed.text is None and not parsed.empty


ORDINARY = ["I can see a man riding a horse.", "Ice skating.", "Cooking; a sorry state kitchen."]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_answers_are_not_refusals(text: str) -> None:
    assert parse_answer(text).text == text


def test_multi_sentence_answers_first_or_all_with_disclaimers_dropped() -> None:
    text = "I'm sorry, I cannot identify people. The person is swimming. The pool is blue."
    first, whole = parse_answer(text, "first"), parse_answer(text, "all")
    assert first.text == "The person is swimming." and first.multi_sentence
    assert whole.text == "The person is swimming. The pool is blue."
    assert not first.refusal  # it did answer, after the disclaimer
    only_refusing = parse_answer("I'm sorry. I can't help with that.")
    assert only_refusing.refusal and only_refusing.multi_sentence and only_refusing.text is None
    with pytest.raises(ValueError, match="'first' or 'all'"):
        parse_answer(text, "middle")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- retrieval
def test_right_answers_score_lower_loss_than_wrong_ones(scorer: RetrievalScorer) -> None:
    targets = torch.arange(len(CLASSES))
    right = scorer.loss(RIGHT, targets)
    wrong = scorer.loss(RIGHT, targets.roll(1))
    assert float(right) < 0.5 < math.log(len(CLASSES)) < float(wrong)
    assert scorer.predict(RIGHT).tolist() == targets.tolist()


def test_refusals_and_empty_answers_give_the_maximum_entropy_loss(
    scorer: RetrievalScorer,
) -> None:
    answers = ["", "  ", *REFUSALS]
    logits = scorer.logits(answers)
    assert logits.abs().sum() == 0  # uniform scores: no class favoured
    for target in range(len(CLASSES)):
        loss = scorer.loss(answers, torch.full((len(answers),), target))
        assert float(loss) == pytest.approx(math.log(len(CLASSES)))
    # a refusal is never a correct prediction (argmax of uniform scores would say class 0)
    assert scorer.predict(answers).tolist() == [ABSTAIN] * len(answers)
    assert scorer.predict(answers, abstain=None).tolist() == [0] * len(answers)


def test_awkward_answers_are_counted(scorer: RetrievalScorer) -> None:
    scorer.loss(
        ["", "I can't help with that.", "The person swims. The water is cold.", RIGHT[0]],
        torch.tensor([0, 1, 2, 0]),
    )
    assert scorer.counts.as_dict() == {"total": 4, "empty": 1, "refusal": 1, "multi_sentence": 1}
    scorer.counts.reset()
    assert scorer.counts.total == 0


def test_multi_sentence_answers_are_scored_by_their_first_sentence(encoder: TextEncoder) -> None:
    text = "The person is swimming in a pool. Behind them, a man plays tennis on a court."
    first = RetrievalScorer(CLASSES, encoder, sentences="first")
    assert first.predict([text]).item() == CLASSES.index("swimming in a pool")
    whole = RetrievalScorer(CLASSES, encoder, sentences="all")
    p_first = first.logits([text]).softmax(-1)[0, CLASSES.index("playing tennis")]
    p_whole = whole.logits([text]).softmax(-1)[0, CLASSES.index("playing tennis")]
    assert p_whole > p_first  # the scene description pulls the whole answer towards tennis


def test_option_scores_replace_retrieval_when_a_backend_gives_them(
    scorer: RetrievalScorer,
) -> None:
    scores = {c: -10.0 for c in CLASSES} | {"cooking food": -1.0}
    answers = [Answer("cooking food", scores), RIGHT[0]]
    assert scorer.predict(answers).tolist() == [3, 0]
    torch.testing.assert_close(scorer.logits(answers)[0], torch.tensor([-10.0, -10, -10, -1]))
    with pytest.raises(KeyError, match="options must be the scorer's class texts"):
        scorer.logits([Answer("x", {"swimming": 0.0})])


def test_the_memo_is_bounded(encoder: TextEncoder) -> None:
    small = TextEncoder(encoder.name, memo_size=3)
    small._model = encoder._model  # share the loaded weights, keep a separate memo
    vectors = small(["a", "b", "c", "d", "a"])
    assert len(small._memo) == 3 and vectors.shape[0] == 5
    torch.testing.assert_close(vectors[0], vectors[4])


# ----------------------------------------------------------------------------- VQA
OKVQA_TRUTH = [
    ["tennis"] * 6 + ["racket sport"] * 2 + ["badminton", "tenis"],
    ["frisbee"] * 8 + ["disc", "frisbe"],
    ["football"] * 6 + ["soccer"] * 4,
]


@pytest.fixture
def vqa(encoder: TextEncoder) -> VQAScorer:
    return VQAScorer(encoder)


def test_most_frequent_answer_with_ties_to_the_first() -> None:
    assert most_frequent(OKVQA_TRUTH[0]) == "tennis"
    assert most_frequent(["Dog.", "cat", "dog", "cat "]) == "dog"
    with pytest.raises(ValueError, match="no non-empty"):
        most_frequent(["", " ."])


def test_vqa_right_answers_are_closer_than_wrong_ones(vqa: VQAScorer) -> None:
    right = vqa.distances(["They are playing tennis.", "A frisbee.", "Football"], OKVQA_TRUTH)
    wrong = vqa.distances(["He is eating pizza.", "A laptop.", "Cooking"], OKVQA_TRUTH)
    assert (right < wrong).all(), (right, wrong)
    assert right[2] == pytest.approx(0.0, abs=1e-5)  # the exact consensus answer
    assert float(vqa.loss(["A frisbee."] * 3, OKVQA_TRUTH)) > float(right.mean())


def test_vqa_best_match_credits_minority_synonyms(encoder: TextEncoder) -> None:
    consensus = VQAScorer(encoder, reference="most_frequent")
    best = VQAScorer(encoder, reference="best_match")
    truth = [OKVQA_TRUTH[2]]
    assert float(best.distances(["soccer"], truth)) == pytest.approx(0.0, abs=1e-5)
    assert float(consensus.distances(["soccer"], truth)) > 0.1  # compared with "football"


def test_vqa_refusals_empties_and_multi_sentence(vqa: VQAScorer) -> None:
    answers = ["", "I'm sorry, but I can't help with that.", "Tennis. The sky is blue and sunny."]
    distances = vqa.distances(answers, ["tennis", "tennis", "tennis"])
    assert distances[:2].tolist() == [1.0, 1.0]  # no evidence either way
    assert float(distances[2]) < 0.05  # the first sentence is the answer
    assert vqa.counts.as_dict() == {"total": 3, "empty": 1, "refusal": 1, "multi_sentence": 1}
    whole = VQAScorer(vqa.encoder, sentences="all").distances(answers[2:], ["tennis"])
    assert float(whole) > float(distances[2])


def test_vqa_errors_name_the_question(vqa: VQAScorer) -> None:
    with pytest.raises(ValueError, match="question 1"):
        vqa.distances(["a", "b"], [["x"], [""]])
    with pytest.raises(ValueError, match="2 answers but 1"):
        vqa.distances(["a", "b"], [["x"]])
