"""``bench zo`` on the tiny benchmark: every method runs on the same budget and is reported."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from privacy_lit.bench.zo import HeadTask, format_table, run
from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.mllm.standin import EmbeddedActionMLLM
from tests.conftest import TINY_IMAGES, TINY_VIDEOS


@pytest.fixture(scope="module")
def task_factory(tiny_root: Path):
    data = SyntheticDataModule(str(tiny_root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES)
    mllm = EmbeddedActionMLLM(str(tiny_root), str(tiny_root / "standin.pt"), train_epochs=1)
    return lambda seed: HeadTask(data, mllm, num_clips=2, seed=seed)


def test_bench_zo_runs_every_method_on_the_same_budget(task_factory) -> None:
    rows, meta = run(task_factory, seeds=1, budget=8)
    assert [r.method for r in rows] == [
        "white-box", "ours (critical history)", "SPSA", "SPSA-GC", "NES", "RL (REINFORCE)",
        "CMA-ES (separable)",
    ]  # fmt: skip
    assert meta["parameters"] == 9067 and meta["budget"] == 8 and meta["clips"] == 2
    assert meta["best_loss"] <= meta["target_loss"] <= meta["start_loss"]
    for row in rows:
        assert math.isfinite(row.final_loss) and 0.0 <= row.final_top1 <= 1.0
    assert "| white-box |" in format_table(rows, meta)


def test_the_white_box_gradient_flows_into_the_head(task_factory) -> None:
    task = task_factory(0)
    gradient = task.true_gradient(task.start)
    assert gradient.shape == task.start.shape and float(gradient.norm()) > 0
