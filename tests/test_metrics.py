"""Metrics against reference implementations (sklearn), hand-worked VQA cases of the official rule,
and the same numbers from 2 gloo processes as from one."""

from __future__ import annotations

import doctest
import socket
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.classification import MulticlassAccuracy

from privacy_lit.metrics import (
    ActionTop1,
    ClasswiseMAP,
    PerAttributePrecision,
    VQAAccuracy,
    classwise_map,
    normalize_answer,
    per_attribute_precision,
    vqa_accuracy,
    vqa_score,
)
from privacy_lit.metrics.vqa import leave_one_out_accuracy

# sklearn is imported inside the tests that use it: the spawned DDP workers import this module, and
# each import of sklearn costs seconds on a busy 2-core machine.

NUM_LABELS = 7
NAMES = ["gender", "face_complete", "face_partial", "skin", "nudity", "rel_personal", "rel_social"]


def _multilabel(seed: int, n: int = 203, c: int = NUM_LABELS) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores correlated with the labels (a realistic AP, not 0.5), every class with positives."""
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, c, generator=g) < torch.linspace(0.1, 0.6, c)).long()
    target[0] = 1  # every class has at least one positive
    preds = (0.6 * target + torch.rand(n, c, generator=g)).div(1.6)
    return preds, target


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# ---------------------------------------------------------------- docstring examples


@pytest.mark.parametrize("module", ["action", "privacy", "vqa"])
def test_docstring_examples(module: str) -> None:
    import importlib

    result = doctest.testmod(importlib.import_module(f"privacy_lit.metrics.{module}"))
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- cMAP


@pytest.mark.parametrize("empty_classes", ["ignore", "zero", "error"])
def test_cmap_equals_sklearn_macro_ap_over_batches(empty_classes: str) -> None:
    from sklearn.metrics import average_precision_score

    for seed in range(3):
        preds, target = _multilabel(seed)
        expected = average_precision_score(target.numpy(), preds.numpy(), average="macro")
        metric = ClasswiseMAP(NUM_LABELS, empty_classes=empty_classes)
        for part in _batches(len(preds), 37):
            metric.update(preds[part], target[part])
        got = float(metric.compute())
        assert abs(got - expected) < 1e-6, (seed, got, expected)
        assert float(classwise_map(preds, target, empty_classes)) == pytest.approx(expected, 1e-6)


def test_cmap_per_class_and_ties_match_sklearn() -> None:
    from sklearn.metrics import average_precision_score

    preds, target = _multilabel(5)
    preds = torch.round(preds * 4) / 4  # many tied scores: sklearn's step-wise AP must still match
    expected = average_precision_score(target.numpy(), preds.numpy(), average=None)
    metric = ClasswiseMAP(NUM_LABELS, average="none")
    for part in _batches(len(preds), 50):
        metric.update(preds[part], target[part])
    np.testing.assert_allclose(metric.compute().numpy(), expected, atol=1e-6)


def test_cmap_with_a_single_attribute_matches_sklearn() -> None:
    """A one-attribute setting (e.g. one VP column): torchmetrics' multilabel checks refuse one
    label, the metric must not."""
    from sklearn.metrics import average_precision_score

    for seed in range(3):
        preds, target = _multilabel(seed)
        preds, target = preds[:, 2:3], target[:, 2:3]
        preds[:10] = torch.round(preds[:10] * 4) / 4  # some ties
        expected = average_precision_score(target[:, 0].numpy(), preds[:, 0].numpy())
        metric = ClasswiseMAP(1, names=["face_partial"])
        per_class = ClasswiseMAP(1, average="none")
        for part in _batches(len(preds), 37):
            metric.update(preds[part], target[part])
            per_class.update(preds[part], target[part])
        assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
        # torchmetrics squeezes a one-element result to a scalar
        assert float(per_class.compute()) == pytest.approx(expected, abs=1e-6)
        assert float(classwise_map(preds, target)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="N x 1"):
        ClasswiseMAP(1).update(torch.rand(4, 2), torch.ones(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="0/1"):
        classwise_map(torch.rand(4, 1), torch.full((4, 1), 3))
    with pytest.raises(ValueError, match="positive integer"):
        ClasswiseMAP(0)


def test_cmap_empty_class_policies() -> None:
    from sklearn.metrics import average_precision_score

    preds, target = _multilabel(1)
    target[:, 2] = 0  # "face_partial" never present in this test set
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the empty class
        sk_macro = average_precision_score(target.numpy(), preds.numpy(), average="macro")
        sk_per_class = average_precision_score(target.numpy(), preds.numpy(), average=None)
    assert sk_per_class[2] == 0.0  # sklearn's choice: recall := 1, so AP = 0

    zero = ClasswiseMAP(NUM_LABELS, empty_classes="zero", names=NAMES)
    zero.update(preds, target)
    assert float(zero.compute()) == pytest.approx(sk_macro, abs=1e-6)

    ignore = ClasswiseMAP(NUM_LABELS, names=NAMES)  # the default
    ignore.update(preds, target)
    with pytest.warns(UserWarning, match="face_partial"):
        got = float(ignore.compute())
    kept = np.delete(sk_per_class, 2)
    assert got == pytest.approx(kept.mean(), abs=1e-6)
    assert got > sk_macro  # counting the empty class as 0 would flatter the anonymizer

    strict = ClasswiseMAP(NUM_LABELS, empty_classes="error", names=NAMES)
    strict.update(preds, target)
    with pytest.raises(ValueError, match="face_partial"):
        strict.compute()
    with pytest.raises(ValueError, match="empty_classes"):
        ClasswiseMAP(NUM_LABELS, empty_classes="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names"):
        ClasswiseMAP(NUM_LABELS, names=["a", "b"])


# ---------------------------------------------------------------- per-attribute precision


def test_per_attribute_precision_matches_sklearn() -> None:
    from sklearn.metrics import precision_score

    preds, target = _multilabel(2)
    preds[:, 4] = preds[:, 4] * 0.4  # attribute 4 is never predicted: precision 0 (sklearn too)
    expected = precision_score(
        target.numpy(), (preds > 0.5).numpy().astype(int), average=None, zero_division=0
    )
    metric = PerAttributePrecision(NUM_LABELS, names=NAMES)
    for part in _batches(len(preds), 41):
        metric.update(preds[part], target[part])
    got = metric.compute()
    assert got.shape == (NUM_LABELS,)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(per_attribute_precision(preds, target).numpy(), expected, atol=1e-6)
    named = metric.as_dict(got)
    assert list(named) == NAMES and named["nudity"] == 0.0
    assert PerAttributePrecision(2).as_dict(torch.tensor([0.25, 1.0])) == {"0": 0.25, "1": 1.0}


def test_action_top1_is_micro_accuracy() -> None:
    from sklearn.metrics import accuracy_score

    g = torch.Generator().manual_seed(0)
    target = torch.cat([torch.zeros(40, dtype=torch.long), torch.randint(1, 5, (20,), generator=g)])
    preds = torch.where(torch.rand(60, generator=g) < 0.7, target, torch.zeros_like(target))
    metric = ActionTop1(5)
    for part in _batches(60, 16):
        metric.update(preds[part], target[part])
    expected = accuracy_score(target.numpy(), preds.numpy())
    assert float(metric.compute()) == pytest.approx(expected)
    macro = MulticlassAccuracy(5)(preds, target)  # torchmetrics' default is another number here
    assert abs(float(macro) - expected) > 0.05
    with pytest.raises(TypeError, match="average"):
        ActionTop1(5, average="macro")


# ---------------------------------------------------------------- VQA accuracy

# (prediction, human answers, accuracy worked out by hand from the official rule)
VQA_CASES = [
    ("Two", ["2"] * 10, 1.0),  # number word → digit, lower-case
    ("the dog.", ["dog"] * 10, 1.0),  # final period stripped, article dropped
    ("dont", ["don't"] * 10, 1.0),  # contraction restored
    ("don't", ["don't"] * 10, 1.0),  # apostrophe is not punctuation
    ("1,000", ["1000"] * 10, 1.0),  # comma between digits deleted
    ("3.5", ["3.5"] * 10, 1.0),  # a period before a digit stays
    ("A Yellow  Banana\n", ["yellow banana"] * 10, 1.0),  # newline, double space, article
    ("none", ["0"] * 10, 1.0),  # "none" → "0" (manual map)
    ("red,blue", ["red blue"] * 10, 1.0),  # comma without digits → space
    ("cat", ["dog"] * 10, 0.0),
    ("cat", ["cat"] + ["dog"] * 9, 0.3),  # 1 human: 9 subsets see 1 match → 9·(1/3)/10
    ("cat", ["cat"] * 2 + ["dog"] * 8, 0.6),  # 2 humans: (2·1/3 + 8·2/3)/10 = 6/10
    ("cat", ["cat"] * 3 + ["dog"] * 7, 0.9),  # 3 humans: (3·2/3 + 7·1)/10 = 9/10, *not* 1
    ("cat", ["cat"] * 4 + ["dog"] * 6, 1.0),  # 4 humans: every subset keeps >= 3 matches
    # humans disagree → their answers get punctuation processing: "ice-cream" → "ice cream"
    ("ice cream", ["ice-cream"] * 5 + ["ice cream"] * 5, 1.0),
    # humans agree → their answers are left as they are (the official rule), so no match
    ("ice-cream", ["ice-cream"] * 10, 0.0),
]


@pytest.mark.parametrize(("prediction", "references", "expected"), VQA_CASES)
def test_vqa_official_rule_hand_worked(prediction: str, references: list[str], expected: float):
    assert vqa_score(prediction, references) == pytest.approx(expected, abs=1e-12)


def test_vqa_normalization_details() -> None:
    # ", " → the comma is deleted, the space stays: two spaces, which split() then collapses
    assert normalize_answer("red, blue") == "red blue"
    assert vqa_score("red, blue", ["red blue"] * 10) == 1.0
    assert normalize_answer("Is it 1,000.") == "is it 1000"
    assert normalize_answer("an apple") == "apple"
    assert normalize_answer("(yes)") == "yes"
    # normalize_references: raw human answers get the prediction's full processing
    assert vqa_score("ice-cream", ["ice-cream"] * 10, normalize_references=True) == 1.0
    assert vqa_score("2", ["Two"] * 10) == 0.0  # official: agreeing references are not touched
    assert vqa_score("2", ["Two"] * 10, normalize_references=True) == 1.0


def test_vqa_closed_form_equals_explicit_leave_one_out() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 12))
        humans = list(rng.choice(["a1", "b2", "c3"], size=n))
        answer = "a1"
        explicit = np.mean(
            [min(1.0, sum(h == answer for h in humans[:i] + humans[i + 1 :]) / 3) for i in range(n)]
        )
        matches = sum(h == answer for h in humans)
        assert leave_one_out_accuracy(matches, n) == pytest.approx(explicit, abs=1e-12)


def test_vqa_metric_batches_and_errors() -> None:
    preds = [c[0] for c in VQA_CASES]
    refs = [c[1] for c in VQA_CASES]
    expected = sum(c[2] for c in VQA_CASES) / len(VQA_CASES)
    metric = VQAAccuracy()
    for part in _batches(len(preds), 4):
        metric.update(preds[part], refs[part])
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-12)
    assert float(vqa_accuracy(preds, refs)) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="expected 10"):
        metric.update(["cat"], [["cat"] * 5])
    assert float(VQAAccuracy(num_answers=None)(["cat"], [["cat"] * 5])) == 1.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        metric.update(["a", "b"], [["a"] * 10])
    with pytest.raises(TypeError, match="list of strings"):
        metric.update(["a"], ["a" * 10])


# ---------------------------------------------------------------- 2 processes vs 1


def _all_data() -> dict:
    preds, target = _multilabel(11, n=101)  # odd: the two ranks get 51 and 50 samples
    g = torch.Generator().manual_seed(3)
    actions = torch.randint(0, 6, (101,), generator=g)
    guesses = torch.where(torch.rand(101, generator=g) < 0.5, actions, torch.zeros_like(actions))
    answers = [c[0] for c in VQA_CASES]
    humans = [c[1] for c in VQA_CASES]
    return dict(preds=preds, target=target, actions=actions, guesses=guesses, answers=answers,
                humans=humans)  # fmt: skip


def _compute_all(rank: int, world: int) -> dict[str, torch.Tensor]:
    data = _all_data()

    def mine(seq):
        n = len(seq)
        return seq[rank * ((n + 1) // 2) : (rank + 1) * ((n + 1) // 2)] if world == 2 else seq

    metrics = {
        "cmap": ClasswiseMAP(NUM_LABELS),
        "ap_per_class": ClasswiseMAP(NUM_LABELS, average="none"),
        "precision": PerAttributePrecision(NUM_LABELS),
        "top1": ActionTop1(6),
        "vqa": VQAAccuracy(),
    }
    metrics["cmap"].update(mine(data["preds"]), mine(data["target"]))
    metrics["ap_per_class"].update(mine(data["preds"]), mine(data["target"]))
    metrics["precision"].update(mine(data["preds"]), mine(data["target"]))
    metrics["top1"].update(mine(data["guesses"]), mine(data["actions"]))
    metrics["vqa"].update(mine(data["answers"]), mine(data["humans"]))
    return {k: m.compute() for k, m in metrics.items()}


def _join_group(rank: int, world: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))  # fmt: skip


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    _join_group(rank, world, port)
    try:
        torch.save(_compute_all(rank, world), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a spawned process (imports torch again)
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    """Rank 0 is this process and rank 1 a spawned one: a spawned process pays the import of torch
    and torchmetrics (~10 s on a busy 2-core machine), so one child instead of two halves the
    cost while still running the real gloo all-gather / all-reduce of every metric state."""
    single = _compute_all(0, 1)
    port = _free_port()
    child = mp.get_context("spawn").Process(target=_worker, args=(1, 2, port, str(tmp_path)))
    child.start()
    try:
        _join_group(0, 2, port)
        try:
            rank0 = _compute_all(0, 2)
        finally:
            dist.destroy_process_group()
    finally:
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0, f"rank 1 failed with exit code {child.exitcode}"
    rank1 = torch.load(tmp_path / "rank1.pt")
    for name, distributed in (("rank 0", rank0), ("rank 1", rank1)):
        assert distributed.keys() == single.keys()
        for key, value in single.items():  # compute() syncs: every rank holds the global value
            torch.testing.assert_close(distributed[key], value, msg=f"{key} on {name}")
