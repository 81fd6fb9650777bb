"""The black-box seam: pixels in, text out, every query counted, no gradient ever through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from privacy_lit.data.synthetic import ACTION_PHRASES
from privacy_lit.mllm.base import Request
from privacy_lit.mllm.standin import EmbeddedActionMLLM
from privacy_lit.utility.retrieval import RetrievalScorer
from tests.conftest import TinyBenchmark


@pytest.fixture(scope="module")
def standin(tiny: TinyBenchmark) -> EmbeddedActionMLLM:
    backend = tiny.standin()
    backend.prepare()
    return backend


def test_requests_reject_anything_but_plain_pixels() -> None:
    with pytest.raises(TypeError, match="uint8"):
        Request(torch.rand(8, 64, 64, 3), "q")
    with pytest.raises(TypeError, match="uint8"):
        Request(torch.rand(8, 64, 64, 3, requires_grad=True), "q")
    with pytest.raises(ValueError, match="T×H×W×3"):
        Request(torch.zeros(3, 64, 64, dtype=torch.uint8).unsqueeze(0).unsqueeze(0), "q")


def test_standin_answers_text_and_counts_queries(standin: EmbeddedActionMLLM) -> None:
    clips = torch.randint(0, 256, (5, 8, 64, 64, 3), dtype=torch.uint8)
    before = standin.stats.calls
    answers = standin.answer([Request(c, "What is happening?") for c in clips])
    assert len(answers) == 5 and all(isinstance(a.text, str) and a.text for a in answers)
    assert all(a.option_scores is None for a in answers)  # no logits leak out
    assert standin.stats.calls == before + 5
    again = standin.answer([Request(clips[0], "What is happening?")])
    assert again[0].text == answers[0].text  # deterministic, like greedy decoding


def test_answers_become_a_loss_without_a_graph(standin: EmbeddedActionMLLM) -> None:
    x = torch.rand(2, 8, 64, 64, 3, requires_grad=True)
    pixels = (x * 255).round().to(torch.uint8)  # what is uploaded: no autograd history
    answers = [a.text for a in standin.answer([Request(p, "q") for p in pixels])]
    scorer = RetrievalScorer([ACTION_PHRASES[a] for a in sorted(ACTION_PHRASES)])
    loss = scorer.loss(answers, torch.tensor([0, 1]))
    assert loss.grad_fn is None and not loss.requires_grad
    with pytest.raises(RuntimeError):
        loss.backward()


def test_retrieval_scoring_recovers_the_class_of_clear_answers() -> None:
    phrases = [ACTION_PHRASES[a] for a in sorted(ACTION_PHRASES)]
    scorer = RetrievalScorer(phrases)
    answers = [f"The person seems to be {p}." for p in phrases]
    assert scorer.predict(answers).tolist() == list(range(len(phrases)))
    assert scorer.logits([""]).abs().sum() == 0  # an empty answer favours no class


def test_standin_is_indifferent_to_per_channel_tints() -> None:
    from privacy_lit.models.recognizer import standardize

    clips = torch.rand(2, 3, 4, 8, 8)
    tint = torch.tensor([0.2, 0.7, 1.3]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(
        standardize(clips * tint + 0.1, eps=0.0), standardize(clips, eps=0.0)
    )


def test_training_the_standin_leaves_the_callers_random_state_alone(
    tiny_root: Path, tmp_path: Path
) -> None:
    """A run that trains the stand-in on first use and one that finds it cached must draw the
    same random numbers afterwards, or the same seed gives different figures."""

    def state_after_prepare() -> torch.Tensor:
        torch.manual_seed(123)
        EmbeddedActionMLLM(str(tiny_root), str(tmp_path / "standin.pt"), train_epochs=1).prepare()
        return torch.get_rng_state()

    trained = state_after_prepare()
    assert (tmp_path / "standin.pt").is_file()
    assert torch.equal(state_after_prepare(), trained)  # cached


def test_standin_wording_follows_its_belief_not_the_pixels(standin: EmbeddedActionMLLM) -> None:
    clips = torch.randint(0, 256, (6, 8, 64, 64, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(3))  # fmt: skip
    nudged = clips.clone()
    nudged[:, 0, 0, 0, 0] ^= 1  # one pixel of one frame, by one grey level
    answers = standin.answer([Request(c, "q") for c in clips])
    again = standin.answer([Request(c, "q") for c in nudged])
    assert [a.text for a in answers] == [a.text for a in again]  # greedy: the belief is unchanged
    probs = torch.tensor(
        [0.7, 0.2] + [0.1 / (len(standin.classes) - 2)] * (len(standin.classes) - 2)
    )
    said = {standin._phrase(probs.roll(i), clips[0]).text for i in range(len(standin.classes))}
    assert len(said) == len(standin.classes)  # each class in its own words


def test_standin_temperature_is_an_explicit_noisier_option(tiny: TinyBenchmark) -> None:
    with pytest.raises(ValueError, match="temperature"):
        tiny.standin(temperature=-1.0)
    hot = tiny.standin(temperature=5.0)
    clip = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    first = hot.answer([Request(clip, "q")])[0].text
    assert hot.answer([Request(clip, "q")])[0].text == first  # seeded per query: reproducible
    nudges = []
    for i in range(12):
        nudged = clip.clone()
        nudged[0, 0, i, 0] ^= 1
        nudges.append(hot.answer([Request(nudged, "q")])[0].text)
    assert len(set(nudges)) > 1  # at a high temperature an imperceptible change redraws
