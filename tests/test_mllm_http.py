"""The HTTP black box against a real loopback chat-completions server: ordering, retries,
exact counting, the response cache, cost, the budget callback and ``bench mllm``."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from privacy_lit.callbacks.budget import QueryBudget
from privacy_lit.mllm.base import Answer, BatchError, BlackBoxMLLM, QueryStats, Request
from privacy_lit.mllm.cache import CachedMLLM, ResponseCache
from privacy_lit.mllm.cost import Budget, ModelPrice, PriceTable
from privacy_lit.mllm.loopback import LoopbackServer
from privacy_lit.mllm.openai_backend import OpenAIChatMLLM, _retry_after

ROOT = Path(__file__).resolve().parents[1]
FAST = {"backoff_initial_s": 0.005, "backoff_max_s": 0.04, "timeout_s": 5.0, "max_retries": 8}


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture
def make_backend() -> Iterator[Callable[..., OpenAIChatMLLM]]:
    made: list[OpenAIChatMLLM] = []

    def make(server: LoopbackServer, **overrides: Any) -> OpenAIChatMLLM:
        settings = {"model": "loopback", "base_url": server.base_url, "concurrency": 8}
        backend = OpenAIChatMLLM(**(settings | FAST | overrides))
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def images(n: int, seed: int = 0, size: int = 16) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    return [
        Request(torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=generator),
                f"q{i}")
        for i in range(n)
    ]  # fmt: skip


def echoed(text: str) -> str:
    """The prompt the loopback server echoes back (an image request has no video note)."""
    return text.removeprefix("echo: ").split(" | ")[0]


# ----------------------------------------------------------------------------- transport
TRANSPORTS = pytest.mark.parametrize("http_client", ["aiohttp", "httpx"])


@TRANSPORTS
def test_answers_come_back_in_request_order_each_counted_once(make_backend, http_client) -> None:
    with LoopbackServer(latency_s=0.005, jitter_s=0.03, seed=1) as server:
        backend = make_backend(server, concurrency=8, http_client=http_client)
        requests = images(32)
        answers = backend.answer(requests)
        assert [echoed(a.text) for a in answers] == [r.prompt for r in requests]
        assert backend.stats.calls == server.answered == server.received == 32
        assert 1 < server.max_in_flight <= 8
        assert backend.stats.prompt_tokens == server.prompt_tokens > 0
        assert backend.stats.completion_tokens == server.completion_tokens > 0
        assert backend.stats.by_stage == {"train": 32} and backend.retries == 0


@TRANSPORTS
def test_retries_survive_rate_limits_server_errors_drops_and_timeouts(
    make_backend, http_client
) -> None:
    script = ["429", "500", "drop", "hang", "503"]
    rates = {"429": 0.15, "500": 0.1, "drop": 0.1}
    with LoopbackServer(script=script, rates=rates, hang_s=0.6, seed=3) as server:
        backend = make_backend(server, timeout_s=0.3, http_client=http_client)
        requests = images(40)
        answers = backend.answer(requests)
        server.wait_idle()
        assert [echoed(a.text) for a in answers] == [r.prompt for r in requests]
        faults = sum(server.faults.values())
        assert {"429", "500", "503", "drop", "hang"} <= set(server.faults)
        assert backend.stats.calls == server.answered == 40  # nothing lost, nothing twice
        assert server.received == 40 + faults and backend.retries == faults
        assert backend.stats.prompt_tokens == server.prompt_tokens


@TRANSPORTS
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("500", "HTTP 500"),
        ("drop", "connection error"),
        ("429", "HTTP 429"),
        ("hang", "timed out after 0.3 s"),
    ],
)
def test_a_request_failing_every_attempt_is_named_with_its_last_status(
    make_backend, fault: str, reason: str, http_client: str
) -> None:
    with LoopbackServer(rule=lambda text: fault if text == "q3" else None, hang_s=0.5) as server:
        backend = make_backend(server, max_retries=2, timeout_s=0.3, http_client=http_client)
        with pytest.raises(BatchError, match=rf"1 of 6 requests failed: request 3: .*{reason}"):
            backend.answer(images(6))
        server.wait_idle()
        assert server.faults[fault] == 3  # max_retries + 1 attempts, then a clear error
        assert backend.stats.calls == server.answered == 5  # the others were answered and count


@pytest.mark.parametrize(("fault", "reason"), [("400", "HTTP 400.*not retryable")])
def test_a_client_error_is_not_retried(make_backend, fault: str, reason: str) -> None:
    # a malformed reply is retried (tests/test_bad_answers.py)
    with LoopbackServer(rule=lambda text: fault if text == "q1" else None) as server:
        backend = make_backend(server)
        with pytest.raises(BatchError, match=f"request 1: {reason}") as error:
            backend.answer(images(3))
        assert server.faults[fault] == 1 and backend.retries == 0
        assert [a is None for a in error.value.answers] == [False, True, False]
        assert backend.stats.calls == 2


def test_rate_limits_pace_the_requests(make_backend, server: LoopbackServer) -> None:
    # 20 requests/s with bursts of one second: 30 requests take at least half a second, also
    # when they come in two batches (two training steps)
    backend = make_backend(server, requests_per_minute=1200)
    start = time.perf_counter()
    backend.answer(images(15))
    backend.answer(images(15, seed=2))
    assert time.perf_counter() - start >= 0.45
    # tokens: each request is estimated at ceil(2/4) + 85 + 16 = 102 tokens
    backend = make_backend(server, tokens_per_minute=60 * 102 * 20, max_tokens=16)
    start = time.perf_counter()
    backend.answer(images(30, seed=1))
    assert time.perf_counter() - start >= 0.3
    assert _retry_after({"retry-after-ms": "20"}) == pytest.approx(0.02)
    assert _retry_after({"retry-after": "2"}) == 2.0 and _retry_after({}) is None


def test_videos_go_as_uniformly_sampled_frames(make_backend, server: LoopbackServer) -> None:
    backend = make_backend(server, num_frames=4)
    video = torch.arange(16, dtype=torch.uint8).view(16, 1, 1, 1).expand(16, 8, 8, 3).clone()
    assert backend.frames(video)[:, 0, 0, 0].tolist() == [0, 5, 10, 15]
    assert len(backend.frames(video[:3])) == 3  # shorter clips: every frame
    answers = backend.answer([Request(video, "v"), Request(video[0], "i"), Request(video[:3], "s")])
    assert sorted(server.image_counts) == [1, 3, 4] and server.image_types == {"jpeg"}
    assert "4 frames sampled uniformly" in answers[0].text and echoed(answers[1].text) == "i"
    make_backend(server, image_format="png").answer([Request(video[0], "p")])
    assert server.image_types == {"jpeg", "png"}


def test_the_api_key_comes_from_the_named_environment_variable(
    make_backend, server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    remote = OpenAIChatMLLM(base_url="https://api.example.invalid/v1")
    with pytest.raises(RuntimeError, match="environment variable OPENAI_API_KEY"):
        remote.prepare()
    with pytest.raises(RuntimeError, match="LOOPBACK_KEY"):
        make_backend(server, api_key_env="LOOPBACK_KEY", require_api_key=True).prepare()
    make_backend(server).answer(images(1))  # local server: the dummy key
    monkeypatch.setenv("LOOPBACK_KEY", "sekrit")
    make_backend(server, api_key_env="LOOPBACK_KEY").answer(images(1))
    assert server.authorizations == {"Bearer EMPTY", "Bearer sekrit"}
    with pytest.warns(UserWarning, match="no price for model 'mystery'"):
        OpenAIChatMLLM(model="mystery", base_url="https://api.example.invalid/v1")


def test_answer_works_inside_a_running_event_loop(make_backend, server) -> None:
    backend = make_backend(server)

    async def notebook_cell() -> list[str]:
        return [a.text for a in backend.answer(images(3))]

    assert [echoed(t) for t in asyncio.run(notebook_cell())] == ["q0", "q1", "q2"]


def test_a_pickled_backend_reconnects(make_backend, server: LoopbackServer) -> None:
    backend = make_backend(server)
    backend.answer(images(1))
    copy = pickle.loads(pickle.dumps(backend))
    try:
        assert echoed(copy.answer(images(2))[1].text) == "q1"
        assert copy.stats.calls == 3
    finally:
        copy.close()


# ----------------------------------------------------------------------------- cache
def test_a_rerun_through_the_cache_makes_no_calls(make_backend, server, tmp_path: Path) -> None:
    requests = images(12)
    first = CachedMLLM(make_backend(server), str(tmp_path))
    answers = first.answer(requests)
    assert first.stats.calls == server.received == 12 and first.stats.cache_hits == 0

    again = CachedMLLM(make_backend(server), str(tmp_path))  # a new run, same folder
    assert again.answer(requests) == answers
    assert server.received == 12  # the server saw nothing new
    assert again.stats.calls == 0 and again.stats.cache_hits == 12
    assert again.stats.prompt_tokens == 0 and again.stats.cost_usd == 0.0

    hotter = CachedMLLM(make_backend(server, temperature=0.7), str(tmp_path))
    hotter.answer(requests[:2])  # another generation setting is another question
    assert hotter.stats.calls == 2
    changed = Request(requests[0].visual.clone(), requests[0].prompt)
    changed.visual[0, 0, 0] ^= 1  # one bit of one pixel
    again.answer([changed, requests[1]])
    assert again.stats.calls == 1 and again.stats.cache_hits == 13


def test_the_cache_shares_stats_stage_and_innermost_with_its_backend(
    make_backend, server, tmp_path
) -> None:
    backend = make_backend(server)
    cached = CachedMLLM(backend, str(tmp_path))
    cached.stage = "val"
    request = images(1)[0]
    cached.answer([request, request])  # a repeat within a batch is sent once
    assert backend.stats.by_stage == {"val": 1} and cached.stats.cache_hits == 1
    cached.stats = QueryStats(calls=5)  # what a checkpoint restore does
    assert backend.stats.calls == 5 and isinstance(cached, BlackBoxMLLM)
    assert cached.innermost is backend and backend.innermost is backend


def test_half_written_cache_files_are_ignored_and_repaired(
    make_backend, server, tmp_path: Path
) -> None:
    request = images(1)[0]
    cached = CachedMLLM(make_backend(server), str(tmp_path))
    answer = cached.answer([request])[0]
    key = ResponseCache.key(cached.cache_identity(), request)
    entry = cached.cache.path(key)
    # a writer killed mid-write leaves its temporary file; an entry may be truncated by a crash
    stray = entry.parent / f".{key[:16]}.crashed.tmp"
    stray.write_text('{"key": "' + key + '", "te')
    entry.write_text(entry.read_text()[:20])
    rerun = CachedMLLM(make_backend(server), str(tmp_path))
    assert rerun.answer([request])[0] == answer
    assert rerun.stats.calls == 1 and server.received == 2  # asked again: never a broken answer
    assert json.loads(entry.read_text())["text"] == answer.text  # repaired
    assert rerun.answer([request])[0] == answer and rerun.stats.cache_hits == 1
    assert rerun.cache.sweep(older_than_s=3600) == 0  # it may belong to a live writer
    old = time.time() - 7200
    os.utime(stray, (old, old))
    assert rerun.cache.sweep(older_than_s=3600) == 1 and not stray.exists()


def test_a_crash_while_storing_leaves_no_entry_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ResponseCache(tmp_path)
    request = images(1)[0]
    key = cache.key({"model": "m"}, request)

    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):  # killed between writing and renaming
        cache.put(key, Answer("x"))
    assert cache.get(key) is None and list(tmp_path.rglob("*")) == [cache.path(key).parent]


def test_answers_of_a_failed_batch_are_cached(make_backend, tmp_path: Path) -> None:
    with LoopbackServer(rule=lambda text: "500" if text == "q2" else None) as server:
        requests = images(5)
        cached = CachedMLLM(make_backend(server, max_retries=1), str(tmp_path))
        with pytest.raises(BatchError, match="request 2: .*HTTP 500") as error:
            cached.answer(requests)
        assert cached.stats.calls == 4 and error.value.answers[2] is None
        server.rule = None  # the server recovers
        before = server.received
        answers = cached.answer(requests)
        assert server.received == before + 1  # only the failed request is sent again
        assert [echoed(a.text) for a in answers] == [r.prompt for r in requests]
        assert cached.stats.calls == 5 and cached.stats.cache_hits == 4


# ----------------------------------------------------------------------------- cost, budget
def test_cost_follows_the_price_table(make_backend, server, tmp_path: Path) -> None:
    prices = {"loopback": {"prompt": 2.0, "completion": 8.0}}
    backend = make_backend(server, prices=prices)
    CachedMLLM(backend, str(tmp_path)).answer(images(4))
    expected = (server.prompt_tokens * 2.0 + server.completion_tokens * 8.0) / 1e6
    assert backend.stats.cost_usd == pytest.approx(expected) and expected > 0
    CachedMLLM(backend, str(tmp_path)).answer(images(4))  # hits are free
    assert backend.stats.cost_usd == pytest.approx(expected)

    table = PriceTable()
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o") == ModelPrice(2.5, 10.0)
    assert table.price("gpt-4o-mini-2024-07-18") == ModelPrice(0.15, 0.6)
    assert table.cost("local-llava", 10**6, 10**6) == 0.0
    assert table.cost("gpt-4o", 10**6, 10**5) == pytest.approx(3.5)
    with pytest.raises(ValueError, match="prompt"):
        PriceTable({"m": {"input": 1.0}})


def test_a_budget_stops_before_a_step_that_would_cross_it() -> None:
    budget = Budget(max_calls=10, max_usd=1.0)
    assert budget.reached(QueryStats(calls=8), next_calls=2) is None
    assert "max_calls=10" in budget.reached(QueryStats(calls=8), next_calls=3)
    assert "max_calls=10" in budget.reached(QueryStats(calls=10))
    assert "max_usd=1.0" in budget.reached(QueryStats(cost_usd=0.9), next_usd=0.2)
    with pytest.raises(ValueError, match="max_calls and/or max_usd"):
        Budget()


class TinyBlackBoxModule(L.LightningModule):
    """Two black-box queries per step, a parameter update from their answers' length."""

    def __init__(self, mllm: BlackBoxMLLM):
        super().__init__()
        self.mllm = mllm
        self.layer = torch.nn.Linear(1, 1)
        self.completed_steps = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        pixels = (batch[0] * 255).to(torch.uint8).view(-1, 4, 4, 3)
        answers = self.mllm.answer([Request(p, "q") for p in pixels])
        self.completed_steps += 1
        target = torch.tensor([[float(len(answers))]])
        return torch.nn.functional.mse_loss(self.layer(torch.ones(1, 1)), target)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mllm_stats"] = vars(self.mllm.stats).copy()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mllm.stats = QueryStats(**checkpoint["mllm_stats"])


def fit_tiny(module: L.LightningModule, budget: QueryBudget, root: Path, **fit: Any) -> L.Trainer:
    data = DataLoader(TensorDataset(torch.rand(40, 2 * 48)), batch_size=1)
    trainer = L.Trainer(
        max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        callbacks=[budget],
    )  # fmt: skip
    trainer.fit(module, data, **fit)
    return trainer


@pytest.mark.parametrize("cap", ["calls", "usd"])
def test_the_budget_callback_ends_training_between_steps_with_a_checkpoint(
    make_backend, server, tmp_path: Path, cap: str
) -> None:
    prices = {"loopback": {"prompt": 1.0, "completion": 1.0}}
    probe = make_backend(server, prices=prices)
    probe.answer(images(1))
    per_query = probe.stats.cost_usd  # every query here costs the same
    limit = {"max_calls": 7} if cap == "calls" else {"max_usd": 7.5 * per_query}
    backend = make_backend(server, prices=prices)
    module = TinyBlackBoxModule(backend)
    budget = QueryBudget(**limit)
    trainer = fit_tiny(module, budget, tmp_path)
    # 2 queries a step: after 3 steps (6) a 4th would cross 7, so training ends there, cleanly
    assert trainer.global_step == module.completed_steps == 3
    assert backend.stats.calls == 6 == server.answered - 1
    assert budget.stop_reason is not None and cap in budget.stop_reason
    assert budget.checkpoint_path == tmp_path / "checkpoints" / "budget.ckpt"
    checkpoint = torch.load(budget.checkpoint_path, weights_only=False)
    assert checkpoint["global_step"] == 3 and checkpoint["mllm_stats"]["calls"] == 6

    # resuming without raising the budget trains no further and asks nothing
    resumed = TinyBlackBoxModule(make_backend(server, prices=prices))
    again = fit_tiny(resumed, QueryBudget(**limit), tmp_path, ckpt_path=budget.checkpoint_path)
    assert resumed.completed_steps == 0 and again.global_step == 3
    assert server.answered == 7


# ----------------------------------------------------------------------------- configs, bench
@pytest.mark.parametrize("name", ["gpt4o.yaml", "vllm.yaml"])
def test_the_configs_build_a_cached_http_backend(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jsonargparse import ArgumentParser

    config = yaml.safe_load((ROOT / "conf" / name).read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--mllm", type=BlackBoxMLLM)
    mllm = parser.instantiate_classes(parser.parse_object({"mllm": config["model"]["mllm"]})).mllm
    assert isinstance(mllm, CachedMLLM) and isinstance(mllm.backend, OpenAIChatMLLM)
    assert mllm.backend.prices.price(mllm.backend.model) is not None or name == "vllm.yaml"
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert "privacy_lit.callbacks.budget.QueryBudget" in callbacks


def test_bench_mllm_reports_throughput_and_overhead(tmp_path: Path) -> None:
    from privacy_lit.bench.mllm import main

    out = tmp_path / "bench.json"
    result = main(
        ["--requests", "6", "--latency-ms", "5", "--concurrency", "3", "--json", str(out)]
    )
    assert {
        "sequential_rps", "concurrent_rps", "speedup", "overhead_ms_per_query",
        "overhead_pct_of_latency", "client_cpu_ms_per_query", "server_answered",
        "framework_cpu_ms_per_query", "cpu_ratio_aiohttp_to_httpx",
    } <= set(result)  # fmt: skip
    assert set(result["transports"]) == {"aiohttp", "httpx"}
    assert result["server_answered"] == 2 * 2 * (6 + 1)  # 2 transports × 2 modes, + warm-ups
    assert 0 < result["framework_cpu_ms_per_query"] < 1000
    assert json.loads(out.read_text())["requests"] == 6
