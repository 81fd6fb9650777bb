"""The ledger of paid queries: one durable line per answered query, written before the answer is
used; a resumed run's counts (and budget) come from it; ``usage RUN`` prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from privacy_lit.callbacks.budget import BudgetExceeded, QueryBudget
from privacy_lit.mllm.base import Answer, BatchError, Request
from privacy_lit.mllm.cache import LEDGER_NAME, CachedMLLM, QueryLedger
from privacy_lit.mllm.loopback import LoopbackServer
from privacy_lit.mllm.openai_backend import OpenAIChatMLLM
from privacy_lit.system import PrivacySystem
from privacy_lit.usage import main as usage_main
from privacy_lit.usage import usage
from tests.conftest import TinyBenchmark

PRICES = {"loopback": {"prompt": 2.0, "completion": 10.0}}
FAST = {"backoff_initial_s": 0.001, "backoff_max_s": 0.01, "timeout_s": 5.0, "max_retries": 1}


def _requests(n: int, seed: int = 0) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    return [
        Request(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8, generator=generator), f"q{i}")
        for i in range(n)
    ]


def _backend(server: LoopbackServer) -> OpenAIChatMLLM:
    return OpenAIChatMLLM("loopback", server.base_url, concurrency=4, prices=PRICES, **FAST)


def test_each_answer_is_on_record_before_anyone_uses_it(tmp_path: Path) -> None:
    with LoopbackServer(latency_s=0.01, jitter_s=0.02) as server:
        backend = _backend(server)
        cached = CachedMLLM(backend, str(tmp_path))
        seen_on_record: list[bool] = []

        def use(index: int, answer: Answer) -> None:
            keys = {r["key"] for r in cached.ledger.records() if r["kind"] == "paid"}
            seen_on_record.append(cached.cache.key(backend.cache_identity(), requests[index])
                                  in keys)  # fmt: skip

        requests = _requests(6)
        try:
            cached.answer(requests, on_answer=use)
            cached.answer(requests[:2])  # two hits
        finally:
            cached.close()
    assert seen_on_record == [True] * 6
    records = [json.loads(line) for line in (tmp_path / LEDGER_NAME).read_text().splitlines()]
    paid = [r for r in records if r["kind"] == "paid"]
    assert len(paid) == 6 == server.answered and sum(r["kind"] == "hit" for r in records) == 2
    assert {"key", "time", "run", "stage", "prompt_tokens", "completion_tokens",
            "cost_usd"} <= set(paid[0])  # fmt: skip
    assert sum(r["prompt_tokens"] for r in paid) == server.prompt_tokens
    totals = cached.ledger.totals(cached.ledger.run)
    assert totals.calls == backend.stats.calls == 6 and totals.cache_hits == 2
    assert totals.cost_usd == pytest.approx(backend.stats.cost_usd) and totals.cost_usd > 0
    assert totals.completion_tokens == server.completion_tokens


def test_a_failed_batch_records_what_was_answered(tmp_path: Path) -> None:
    with LoopbackServer(rule=lambda text: "500" if text == "q1" else None) as server:
        cached = CachedMLLM(_backend(server), str(tmp_path))
        try:
            with pytest.raises(BatchError):
                cached.answer(_requests(4))
        finally:
            cached.close()
    assert cached.ledger.totals().calls == 3 == server.answered == cached.stats.calls


def test_a_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    ledger = QueryLedger(tmp_path / LEDGER_NAME, run="r")
    ledger.paid("k1", Answer("a", prompt_tokens=3, cost_usd=0.5), "train")
    ledger.close()
    with (tmp_path / LEDGER_NAME).open("a") as file:
        file.write('{"kind": "paid", "run": "r", "key": "k2", "pro')  # killed mid-write
    again = QueryLedger(tmp_path / LEDGER_NAME, run="r")
    again.paid("k3", Answer("b", prompt_tokens=4), "test")
    totals = again.totals("r")
    assert totals.calls == 2 and totals.prompt_tokens == 7 and totals.by_stage == {
        "train": 1, "test": 1}  # fmt: skip
    assert totals.cost_usd == 0.5 and again.totals("another run").calls == 0


def test_a_resumed_run_counts_what_was_paid_after_its_checkpoint(
    tiny: TinyBenchmark, tmp_path: Path
) -> None:
    with LoopbackServer() as server:
        cached = CachedMLLM(_backend(server), str(tmp_path / "cache"))
        system = PrivacySystem(cached, reviewer_arch="resnet18", **tiny.system_args)
        try:
            cached.answer(_requests(3))
            checkpoint: dict = {}
            system.on_save_checkpoint(checkpoint)  # the last checkpoint before the kill
            cached.answer(_requests(5, seed=1))  # paid, then the process dies
        finally:
            cached.close()
        # a new process resumes from the checkpoint: the counter it saved says 3
        assert checkpoint["zo"]["mllm_stats"]["calls"] == 3
        resumed = CachedMLLM(_backend(server), str(tmp_path / "cache"))
        system = PrivacySystem(resumed, reviewer_arch="resnet18", **tiny.system_args)
        system.on_load_checkpoint(checkpoint)
        resumed.close()
    assert resumed.ledger.run == cached.ledger.run
    assert resumed.stats.calls == 8 == server.answered
    assert resumed.stats.cost_usd == pytest.approx(cached.stats.cost_usd)
    # and the budget reads the same totals: two more queries would cross max_calls=9
    budget = QueryBudget(max_calls=9)
    assert budget.budget.reached(resumed.stats, next_calls=2) is not None
    assert budget.budget.reached(resumed.stats, next_calls=1) is None


def test_usage_prints_a_runs_calls_hits_tokens_and_dollars(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LoopbackServer() as server:
        cached = CachedMLLM(_backend(server), str(tmp_path / "cache"))
        try:
            cached.answer(_requests(4))
            cached.answer(_requests(2))
        finally:
            cached.close()
    run_dir = tmp_path / "runs" / "version_0"
    run_dir.mkdir(parents=True)
    pointer = {"ledger": str(cached.ledger.path), "run": cached.ledger.run}
    (run_dir / "ledger.json").write_text(json.dumps(pointer))
    [row] = usage(run_dir)
    assert (row["calls"], row["cache_hits"]) == (4, 2)
    assert row["prompt_tokens"] == server.prompt_tokens
    assert row["cost_usd"] == pytest.approx(cached.stats.cost_usd)
    assert usage(tmp_path / "runs") == [row] and usage(tmp_path / "cache")[0]["calls"] == 4
    assert usage_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert cached.ledger.run in out and f"{cached.stats.cost_usd:.4f}" in out
    assert usage_main([str(tmp_path / "nothing")]) == 1


def test_the_evaluation_is_under_the_same_budget(tiny: TinyBenchmark, tmp_path: Path) -> None:
    from tests.conftest import FixedAnswerMLLM

    backend = FixedAnswerMLLM()
    mllm = CachedMLLM(backend, str(tmp_path))
    system = PrivacySystem(mllm, reviewer_arch="resnet18", **tiny.system_args)
    budget = QueryBudget(max_calls=10, evaluation_calls=4)
    budget.setup(None, system, "fit")
    mllm.answer(_requests(7))  # training: stopped between steps by the callback, not refused
    assert budget.training_budget.reached(mllm.stats) is not None  # 7 > 10 - 4 kept
    with mllm.counting_as("test"):
        assert len(mllm.answer(_requests(3, seed=1))) == 3  # 10 of 10
        assert len(mllm.answer(_requests(3, seed=1))) == 3  # cache hits are free
        with pytest.raises(BudgetExceeded, match="1 test queries refused, query budget"):
            mllm.answer(_requests(1, seed=2))
    assert mllm.stats.calls == 10 == mllm.ledger.totals().calls
    assert mllm.stats.by_stage == {"train": 7, "test": 3}
    budget.teardown(None, system, "fit")
    with mllm.counting_as("test"):
        mllm.answer(_requests(1, seed=2))  # no budget callback, no cap
    with pytest.raises(ValueError, match="evaluation_calls"):
        QueryBudget(max_calls=10, evaluation_calls=11)
