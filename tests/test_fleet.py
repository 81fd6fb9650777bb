"""The HTTP black box served by a fleet of servers: least-outstanding spreading, an endpoint that
fails or hangs leaves the rotation and its requests are answered elsewhere, every query counted
once, per-endpoint figures that add up, and a response cache that a rerun pays nothing through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from privacy_lit.callbacks import MLLMUsageMonitor
from privacy_lit.data.synthetic import SyntheticDataModule
from privacy_lit.mllm.base import Request
from privacy_lit.mllm.cache import CachedMLLM
from privacy_lit.mllm.loopback import LoopbackServer
from privacy_lit.mllm.openai_backend import OpenAIChatMLLM, endpoint_name
from privacy_lit.system import PrivacySystem
from tests.conftest import TINY_IMAGES, TINY_VIDEOS

FAST = {"backoff_initial_s": 0.005, "backoff_max_s": 60.0, "max_retries": 8}


@pytest.fixture
def fleet_of() -> Iterator[Any]:
    """``fleet_of(*servers, **settings)``: a backend over the servers' URLs, closed afterwards."""
    with ExitStack() as stack:

        def make(*servers: LoopbackServer, **settings: Any) -> OpenAIChatMLLM:
            for server in servers:
                stack.enter_context(server)
            backend = OpenAIChatMLLM(
                model="loopback", base_url=[s.base_url for s in servers],
                **({"concurrency": 2, "timeout_s": 5.0} | FAST | settings),
            )  # fmt: skip
            stack.callback(backend.close)
            return backend

        yield make


def images(n: int, seed: int = 0) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    return [
        Request(torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=generator),
                f"q{i}")
        for i in range(n)
    ]  # fmt: skip


def _figures(backend: OpenAIChatMLLM, server: LoopbackServer) -> dict[str, float]:
    return backend.stats.by_endpoint.get(endpoint_name(server.base_url), {})


def _assert_counted_once(backend: OpenAIChatMLLM, servers: list[LoopbackServer]) -> None:
    """Every query answered by exactly one server and counted once, wherever it went."""
    for server in servers:
        server.wait_idle()
    answered = [s.answered for s in servers]
    assert backend.stats.calls == sum(answered)
    assert [_figures(backend, s).get("calls", 0) for s in servers] == answered
    faults = [sum(s.faults.values()) for s in servers]
    assert [_figures(backend, s).get("errors", 0) for s in servers] == faults
    assert backend.retries == sum(faults)  # each failed attempt was retried, none given up


def test_requests_go_to_the_endpoint_with_the_fewest_outstanding(fleet_of) -> None:
    slow, fast = LoopbackServer(latency_s=0.15), LoopbackServer(latency_s=0.005)
    backend = fleet_of(slow, fast, concurrency=3)
    requests = images(30)
    answers = backend.answer(requests)
    assert [a.text.split(" | ")[0] for a in answers] == [f"echo: {r.prompt}" for r in requests]
    _assert_counted_once(backend, [slow, fast])
    assert fast.answered > 3 * slow.answered > 0  # the fast server frees its slots sooner
    assert slow.max_in_flight <= 3 and fast.max_in_flight <= 3  # concurrency is per endpoint
    assert _figures(backend, slow)["latency_s"] / slow.answered > 0.15


@pytest.mark.parametrize("fault", ["500", "hang"])
def test_an_endpoint_that_fails_mid_run_leaves_the_rotation(fleet_of, fault: str) -> None:
    healthy = [LoopbackServer(latency_s=0.01, jitter_s=0.01, seed=i) for i in range(2)]
    # answers its first 4 arrivals, then fails (or hangs past the client's timeout) for good
    failing = LoopbackServer(latency_s=0.01, script=["ok"] * 4, rates={fault: 1.0}, hang_s=1.0)
    backend = fleet_of(*healthy, failing, timeout_s=0.5)
    for batch in range(4):
        backend.answer(images(8, seed=batch))
    servers = [*healthy, failing]
    _assert_counted_once(backend, servers)
    assert backend.stats.calls == 32
    assert failing.answered == 4 and failing.faults[fault] >= 1
    # out of rotation after its first failures: only the attempts in flight then were lost
    assert failing.faults[fault] <= 2
    assert sum(s.answered for s in healthy) == 28


def test_a_lone_endpoint_keeps_retrying_itself(fleet_of) -> None:
    server = LoopbackServer(script=["503", "503"])
    backend = fleet_of(server)
    assert len(backend.answer(images(3))) == 3
    _assert_counted_once(backend, [server])
    assert server.faults["503"] == 2


def test_a_fleet_is_one_cache_identity_whatever_its_nodes() -> None:
    def identity(base_url: str | list[str], model: str = "m") -> dict[str, object]:
        return OpenAIChatMLLM(model=model, base_url=base_url).cache_identity()

    fleet = identity(["http://node1:8000/v1", "http://node2:8000/v1"])
    # another job's allocation, in another order: the same model, the same cache entries
    assert fleet == identity(
        ["http://node7:8000/v1", "http://node3:8000/v1", "http://node1:8000/v1"]
    )
    assert fleet != identity(["http://node1:8000/v1", "http://node2:8000/v1"], model="other")
    assert fleet != identity("http://node1:8000/v1")  # one server: keyed by its URL, as before
    with pytest.raises(ValueError, match="distinct"):
        OpenAIChatMLLM(model="m", base_url=["http://127.0.0.1:1/v1"] * 2)


def _train(root: Path, mllm: CachedMLLM, steps: int) -> tuple[PrivacySystem, dict[str, float]]:
    L.seed_everything(0)
    data = SyntheticDataModule(str(root), videos_per_action=TINY_VIDEOS, images=TINY_IMAGES,
                               batch_size=4, privacy_batch_size=8)  # fmt: skip
    system = PrivacySystem(mllm, reviewer_arch="resnet18", recon_epochs=0, reviewer_epochs=0,
                           c=0.05)  # fmt: skip
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", log_every_n_steps=1,
                        callbacks=[MLLMUsageMonitor()])  # fmt: skip
    trainer.fit(system, datamodule=data)
    return system, {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.slow
def test_training_on_a_fleet_survives_a_failing_server_and_reruns_from_the_cache(
    fleet_of, tiny_root: Path, tmp_path: Path
) -> None:
    healthy = [LoopbackServer(latency_s=0.01, jitter_s=0.01, seed=i) for i in range(2)]
    failing = LoopbackServer(latency_s=0.01, script=["ok"] * 4, rates={"500": 1.0})
    servers = [*healthy, failing]
    backend = fleet_of(*servers)
    steps, queries = 4, 4 * 2 * 4  # θ ± c_kΔ_k for each of the 4 clips of every step
    system, logged = _train(tiny_root, CachedMLLM(backend, str(tmp_path / "cache")), steps)
    assert system.zo_step == steps  # training completed
    _assert_counted_once(backend, servers)
    assert backend.stats.calls == queries and failing.answered == 4 and failing.faults["500"] > 0
    # the usage monitor's per-endpoint figures add up to its total
    per_endpoint = [logged[f"mllm/endpoint/{endpoint_name(s.base_url)}/calls"] for s in servers]
    assert per_endpoint == [float(s.answered) for s in servers]
    assert sum(per_endpoint) == logged["mllm/total_calls"] == queries
    assert logged[f"mllm/endpoint/{endpoint_name(failing.base_url)}/errors"] > 0
    assert json.dumps(backend.stats.as_dict())  # results.json can hold the figures

    # a rerun on other servers (a new backend, the same cache) asks nothing: all is on disk
    again = fleet_of(*[LoopbackServer() for _ in range(2)])
    _train(tiny_root, CachedMLLM(again, str(tmp_path / "cache")), steps)
    assert again.stats.calls == 0 and again.stats.cache_hits == queries


def test_bench_mllm_fleet_mode_reports_ratios_over_fleet_sizes(tmp_path: Path) -> None:
    from privacy_lit.bench.mllm import main

    out = tmp_path / "fleet.json"
    result = main(["--fleet", "--requests", "8", "--latency-ms", "5", "--server-concurrency", "2",
                   "--endpoints", "1,2", "--rounds", "1", "--json", str(out)])  # fmt: skip
    assert set(result["fleets"]) == {1, 2}
    assert result["fleets"][1]["ratio_to_smallest"] == 1.0
    assert result["speedup_largest"] == result["fleets"][2]["ratio_to_smallest"] > 0
    assert result["fleets"][2]["calls_per_endpoint"] == [4, 4]  # least outstanding: even split
    assert result["server_answered"] == (8 + 1) + (8 + 2)  # timed batches and one warm-up each
    assert json.loads(out.read_text())["mode"] == "fleet"
