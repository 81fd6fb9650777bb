"""Comparison rows kept on disk: a second evaluation reads them instead of training again, and
anything the figures depend on misses the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.evaluation import evaluate
from privacy_lit.mllm.base import Answer, BlackBoxMLLM, Request
from privacy_lit.row_cache import RowCache
from privacy_lit.utility.retrieval import RetrievalScorer
from tests.conftest import TINY_IMAGES, TINY_VIDEOS


class _FirstClass(BlackBoxMLLM):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def _answer(self, requests: list[Request]) -> list[Answer]:
        return [Answer(self.text) for _ in requests]


class _Counted:
    """A trained comparison's builder that counts how often it had to train."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self) -> nn.Module:
        self.builds += 1
        return nn.Identity()


def test_a_second_evaluation_reads_cached_rows_and_does_not_build_them(tiny_root: Path, tmp_path):
    data = SyntheticDataModule(str(tiny_root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES)
    mllm = _FirstClass(f"The person is {data.class_names[0]}.")
    scorer = RetrievalScorer(data.class_names)
    cache = RowCache(tmp_path / "rows")
    keys = {"raw": {"data": {"root": "x"}}, "trained": {"data": {"root": "x"}, "steps": 3}}

    def run(seed: int, builder: _Counted, messages: list[str]):
        return evaluate(
            {"raw": nn.Identity(), "trained": builder, "ours": nn.Identity()}, data, mllm,
            scorer, "What?", "resnet18", 1, seed=seed, calls_per_sample={"ours": 2.0},
            progress=messages.append, cache=cache, cache_keys=keys,
        )  # fmt: skip

    first_builder, first_messages = _Counted(), []
    first = run(0, first_builder, first_messages)
    assert first_builder.builds == 1
    assert len(list((tmp_path / "rows").glob("*.json"))) == 2  # "ours" is never cached

    second_builder, second_messages = _Counted(), []
    second = run(0, second_builder, second_messages)
    assert second_builder.builds == 0  # read, not trained again
    assert [m.split(":")[0] for m in second_messages] == ["cached raw", "cached trained",
                                                          "evaluated ours"]  # fmt: skip
    assert [(r.method, r.top1, r.cmap) for r in second] == [(r.method, r.top1, r.cmap)
                                                            for r in first]  # fmt: skip
    assert second[2].mllm_calls_per_sample == 2.0

    other_seed = _Counted()
    run(1, other_seed, [])
    assert other_seed.builds == 1  # another reviewer seed is another measurement


def test_an_unreadable_entry_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cache = RowCache(tmp_path)
    key = RowCache.key({"method": "raw"})
    cache.put(key, {"method": "raw", "top1": 1.0, "cmap": 0.5}, {"method": "raw"})
    assert cache.get(key)["cmap"] == 0.5
    (tmp_path / f"{key}.json").write_text("{not json")
    assert cache.get(key) is None
    assert "unreadable" in caplog.text


@pytest.mark.slow  # spawns worker processes (each imports torch)
def test_reviewers_in_worker_processes_give_the_rows_of_one_worker(tiny_root: Path):
    """The figures depend on the one thread a worker uses, not on how many workers run."""
    data = SyntheticDataModule(str(tiny_root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES)
    mllm = _FirstClass(f"The person is {data.class_names[0]}.")
    scorer = RetrievalScorer(data.class_names)
    saved: list[int] = []

    def run(processes: int):
        return evaluate(
            {"raw": nn.Identity(), "flip": _Flip(), "other": nn.Identity()}, data, mllm, scorer,
            "What?", "resnet18", 1, seed=0, progress=lambda _: None,
            on_row=lambda rows: saved.append(len(rows)), reviewer_processes=processes,
        )  # fmt: skip

    one, two = run(1), run(2)
    assert [(r.method, r.top1, r.cmap, r.attribute_precision) for r in one] == [
        (r.method, r.top1, r.cmap, r.attribute_precision) for r in two
    ]
    assert one[0].cmap != one[1].cmap  # the rows are different measurements
    assert saved == [1, 2, 3, 1, 2, 3]  # every row handed over in order, each run


class _Flip(nn.Module):
    def forward(self, x):
        return x.flip(-1)
