"""The gradient-based comparisons: a surrogate recognizer trained on raw clips, and the adversarial
anonymizer training against it (Tab. 1–4) or against the stand-in's own model (Tab. B7).

The loss-reduction tests use a small frozen (white-box) or trainable (surrogate) linear probe and
a small reviewer, so that they measure the training, fast, not the quality of a tiny recognizer.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from privacy_lit.baselines.surrogate import (
    RECOGNIZER_FAMILIES,
    AdversarialConfig,
    SurrogateConfig,
    clips_to_recognizer,
    train_adversarial_anonymizer,
    train_recognizer_on_raw,
    train_surrogate_anonymizer,
    train_whitebox_anonymizer,
)
from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.evaluation import stack_dataset
from privacy_lit.models.anonymizer import Anonymizer, to_float
from privacy_lit.models.recognizer import ClipRecognizer, TemporalShiftRecognizer
from tests.conftest import TinyBenchmark

SMALL = {"anonymizer_widths": (8, 16), "head_hidden": (8,)}
FAST = AdversarialConfig(steps=6, batch_size=6, privacy_batch_size=4, lr=3e-2, utility_lr=1e-2,
                         privacy_weight=0.0, reviewer_warmup_steps=0)  # fmt: skip


@pytest.fixture(scope="module")
def data(tiny: TinyBenchmark) -> SyntheticDataModule:
    return tiny.data()


@pytest.fixture(scope="module")
def train(data: SyntheticDataModule) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    clips, actions = stack_dataset(data.utility_dataset("train"), "clip", "action")
    images, attributes = stack_dataset(data.privacy_dataset("train"), "image", "attributes")
    return clips, actions, images, attributes


@torch.no_grad()
def _utility_ce(anonymizer: nn.Module, model: nn.Module, clips: Tensor, actions: Tensor) -> float:
    model.eval()
    frames = anonymizer(to_float(clips.flatten(0, 1)))
    return float(F.cross_entropy(model(clips_to_recognizer(frames, len(clips))), actions))


def _anonymizer() -> Anonymizer:
    torch.manual_seed(0)
    return Anonymizer(SMALL["anonymizer_widths"], SMALL["head_hidden"])


def _probe() -> nn.Module:
    """Clips → action logits from a 4 × 4 grid of mean colours: the anonymizer can move them."""
    torch.manual_seed(0)
    probe = nn.Sequential(nn.AdaptiveAvgPool3d((1, 4, 4)), nn.Flatten(), nn.Linear(48, 8))
    with torch.no_grad():
        probe[2].weight.mul_(10)  # confident and wrong at the start: a loss to bring down
    return probe


def _small_reviewer() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 7))


@pytest.mark.parametrize("family", ["tsm", "clip3d"])
def test_surrogate_recognizer_learns_raw_clips_from_its_own_seed(train, family: str) -> None:
    clips, actions = train[:2]
    config = SurrogateConfig(family, epochs=2, width=8, batch_size=12, lr=1e-2)
    untrained = train_recognizer_on_raw(clips, actions, 8, SurrogateConfig(family, 0, width=8))
    rng = torch.get_rng_state()
    model = train_recognizer_on_raw(clips, actions, 8, config)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded in a fork: global state untouched
    identity = nn.Identity()
    ce, ce_untrained = (_utility_ce(identity, m, clips, actions) for m in (model, untrained))
    assert ce < ce_untrained  # the same initialization (same seed), then trained
    assert model.classifier.in_features == 4 * 8 and not model.training
    assert isinstance(model, RECOGNIZER_FAMILIES[family])


def test_the_default_surrogate_is_not_the_black_boxs_family() -> None:
    assert RECOGNIZER_FAMILIES[SurrogateConfig().family] is not ClipRecognizer
    with pytest.raises(ValueError, match="family must be one of"):
        SurrogateConfig(family="i3d")


def test_temporal_shift_moves_a_quarter_of_the_channels_each_way() -> None:
    from privacy_lit.models.recognizer import _TemporalShift

    # value = 10 · frame + channel, 1 clip × 3 frames × 4 channels × 1 × 1
    x = (10 * torch.arange(3.0)[:, None] + torch.arange(4.0)).reshape(1, 3, 4, 1, 1)
    y = _TemporalShift(0.25)(x).reshape(3, 4)
    assert y[:, 0].tolist() == [10, 20, 0]  # channel 0 from the next frame, zeros at the end
    assert y[:, 1].tolist() == [0, 1, 11]  # channel 1 from the previous frame
    assert torch.equal(y[:, 2:], x.reshape(3, 4)[:, 2:])  # the rest stay


def test_temporal_shift_recognizer_sees_frame_order() -> None:
    """Unlike per-frame averaging (TSN), the shift lets it tell a clip from its reverse."""
    torch.manual_seed(0)
    model = TemporalShiftRecognizer(5, width=4).eval()
    clips = torch.rand(2, 3, 6, 32, 32)
    logits = model(clips)
    assert logits.shape == (2, 5)
    assert not torch.allclose(model(clips.flip(2)), logits, atol=1e-4)


def test_whitebox_training_reduces_the_frozen_models_loss_and_leaves_it_untouched(train) -> None:
    clips, actions, images, attributes = train
    model = _probe().requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    anonymizer = _anonymizer()
    start = _utility_ce(anonymizer, model, clips, actions)
    result = train_adversarial_anonymizer(
        clips, actions, images, attributes, model, False, _small_reviewer(), FAST, anonymizer
    )
    assert result.anonymizer is anonymizer and not anonymizer.training
    assert _utility_ce(anonymizer, model, clips, actions) < 0.8 * start
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(result.history["utility_loss"]) == FAST.steps


def test_surrogate_training_reduces_its_utility_loss(train) -> None:
    clips, actions, images, attributes = train
    surrogate = _probe()
    before = surrogate[2].weight.clone()
    anonymizer = _anonymizer()
    start = _utility_ce(anonymizer, surrogate, clips, actions)
    train_adversarial_anonymizer(
        clips, actions, images, attributes, surrogate, True, _small_reviewer(), FAST, anonymizer
    )
    assert _utility_ce(anonymizer, surrogate, clips, actions) < 0.8 * start
    assert not torch.equal(surrogate[2].weight, before)  # SPAct: the surrogate adapts as well


def test_whitebox_on_the_standin_leaves_the_black_box_untouched(tiny: TinyBenchmark, data) -> None:
    recognizer = tiny.standin().recognizer
    before = {k: v.clone() for k, v in recognizer.state_dict().items()}
    config = AdversarialConfig(steps=2, batch_size=2, privacy_batch_size=4,
                               reviewer_warmup_steps=1)  # fmt: skip
    result = train_whitebox_anonymizer(data, recognizer, _small_reviewer(), config, **SMALL)
    after = recognizer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not recognizer.training and not any(p.requires_grad for p in recognizer.parameters())
    assert isinstance(result.anonymizer, Anonymizer) and result.utility_model is recognizer
    with pytest.raises(ValueError, match="frozen"):
        train_whitebox_anonymizer(data, nn.Linear(2, 2))


def test_surrogate_anonymizer_is_a_working_seeded_anonymizer(data) -> None:
    config = AdversarialConfig(steps=2, batch_size=2, privacy_batch_size=4, lr=1e-2,
                               reviewer_warmup_steps=1)  # fmt: skip
    surrogate = SurrogateConfig(epochs=1, batch_size=12)
    torch.manual_seed(0)
    reviewers = [_small_reviewer() for _ in range(2)]
    reviewers[1].load_state_dict(reviewers[0].state_dict())
    rng = torch.get_rng_state()
    runs = [
        train_surrogate_anonymizer(data, reviewer, config, surrogate, progress=print, **SMALL)
        for reviewer in reviewers
    ]
    assert torch.equal(torch.get_rng_state(), rng)
    first, second = (r.anonymizer.state_dict() for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)  # seeded: the same anonymizer
    x = torch.rand(3, 3, 64, 64)
    y = runs[0].anonymizer(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.allclose(y, x, atol=1e-3)  # it was trained: no longer the identity
    assert set(runs[0].history) == {"utility_loss", "privacy_loss", "reviewer_bce"}


def test_the_privacy_term_makes_a_fixed_reviewer_less_certain(train) -> None:
    """The sign of the privacy term: against the same frozen reviewer (reviewer_lr 0, no batch
    norm), training with privacy_weight 1 leaves it less certain than training without."""
    from privacy_lit.privacy import privacy_loss

    clips, actions, images, attributes = train
    torch.manual_seed(1)
    reviewer = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 7))
    for p in reviewer.parameters():  # a confident reviewer: large weights
        p.data.mul_(20)
    utility_model = ClipRecognizer(8, width=4).eval().requires_grad_(False)

    def certainty_after(weight: float) -> float:
        config = AdversarialConfig(steps=8, batch_size=2, privacy_batch_size=8, lr=3e-2,
                                   reviewer_lr=0.0, privacy_weight=weight,
                                   reviewer_warmup_steps=0)  # fmt: skip
        result = train_adversarial_anonymizer(
            clips, actions, images, attributes, utility_model, False, reviewer, config,
            anonymizer=_anonymizer(),
        )  # fmt: skip
        with torch.no_grad():
            return float(privacy_loss(reviewer(result.anonymizer(to_float(images)))))

    with_term, without = certainty_after(1.0), certainty_after(0.0)
    assert with_term < 0.9 * without  # measured: 0.417 vs 0.500
