"""``python -m privacy_lit bench mllm``: what concurrency buys against a black box that takes
time to answer, and what the framework itself costs per query.

A loopback chat-completions server (:mod:`privacy_lit.mllm.loopback`, in a child process like a
real server) answers after an injected latency (a model's time to answer). The same requests,
synthetic clips like the demo's, go through :class:`~privacy_lit.mllm.openai_backend.
OpenAIChatMLLM` over real HTTP, once one at a time and once ``--concurrency`` at a time, with
each of the openai client's transports (``aiohttp``, the backend's default, and ``httpx``), side
by side in one run.

Reported per transport: throughput of both modes and their ratio, and the overhead per query:

- *overhead* = sequential wall time per query − the injected latency. It holds the encoding, the
  HTTP client, the event-loop hand-off and the loopback server's own parsing (an upper bound on
  the framework's share). On a busy machine it also holds time spent waiting for a core;
- *client CPU* per query (this process only, load-independent): it bounds the concurrent
  throughput (≈ 1 / CPU time per query once the latency is hidden);
- *framework's own* CPU per query: frame sampling, JPEG + base64 encoding and the request body
  (:meth:`OpenAIChatMLLM.messages`), the part of the client CPU that is this project's code
  rather than the openai client's. The transports' CPU ratio is the comparison of the two.

``--fleet``: what a fleet of servers buys. Each loopback server (a child process) answers at
most ``--server-concurrency`` requests at once after the latency, like a model server with a
fixed number of batch slots, so one server's throughput is bounded whatever the client sends.
The same requests go through one backend over 1, 2 and 4 such endpoints (``base_url`` a list),
each setting once per round, rounds interleaved, the best round kept; reported as throughput,
its ratio to one endpoint and its share of the ideal (endpoints × slots / latency).
"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from privacy_lit.bench import write_json
from privacy_lit.mllm.base import Request
from privacy_lit.mllm.loopback import LoopbackProcess, LoopbackServer
from privacy_lit.mllm.openai_backend import OpenAIChatMLLM

TRANSPORTS = ("aiohttp", "httpx")


def _requests(n: int, frames: int, size: int, seed: int) -> list[Request]:
    generator = torch.Generator().manual_seed(seed)
    shape = (frames, size, size, 3)
    return [
        Request(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator), f"q{i}")
        for i in range(n)
    ]


def _backend(base_url: str, concurrency: int, http_client: str) -> OpenAIChatMLLM:
    return OpenAIChatMLLM(
        model="loopback", base_url=base_url, concurrency=concurrency, num_frames=8,
        http_client=http_client,
    )  # fmt: skip


def _timed_run(
    base_url: str, requests: list[Request], concurrency: int, http_client: str
) -> tuple[float, float]:
    """Wall and CPU seconds of this process to answer ``requests``, after a warm-up query
    opened the connection."""
    with _backend(base_url, concurrency, http_client) as backend:
        backend.answer(requests[:1])  # warm-up: thread, client, connection
        start, cpu = time.perf_counter(), time.process_time()
        answers = backend.answer(requests)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    _check_order(answers, requests)
    return seconds, cpu


def _encoding_cpu_ms(requests: list[Request]) -> float:
    """CPU milliseconds per query of the framework's own request building (no HTTP)."""
    backend = _backend("http://127.0.0.1:1/v1", 1, "httpx")  # never connects
    start = time.process_time()
    for request in requests:
        backend._body(backend.messages(request))
    return 1000 * (time.process_time() - start) / len(requests)


def _pct(value: float, latency_ms: float) -> float | None:
    return 100 * value / latency_ms if latency_ms else None


def run(
    requests: int,
    latency_ms: float,
    concurrency: int,
    frames: int = 8,
    size: int = 64,
    in_process: bool = False,
) -> dict[str, Any]:
    batch = _requests(requests, frames, size, seed=0)
    server = (
        LoopbackServer(latency_s=latency_ms / 1000)
        if in_process
        else LoopbackProcess(latency_s=latency_ms / 1000)
    )
    transports: dict[str, dict[str, float]] = {}
    with server:
        for http_client in TRANSPORTS:
            sequential, cpu = _timed_run(server.base_url, batch, 1, http_client)
            concurrent, _ = _timed_run(server.base_url, batch, concurrency, http_client)
            overhead_ms = 1000 * sequential / requests - latency_ms
            cpu_ms = 1000 * cpu / requests
            transports[http_client] = {
                "sequential_s": sequential,
                "concurrent_s": concurrent,
                "sequential_rps": requests / sequential,
                "concurrent_rps": requests / concurrent,
                "speedup": sequential / concurrent,
                "overhead_ms_per_query": overhead_ms,
                "overhead_pct_of_latency": _pct(overhead_ms, latency_ms),
                "client_cpu_ms_per_query": cpu_ms,
                "client_cpu_pct_of_latency": _pct(cpu_ms, latency_ms),
            }
        answered = server.counters()["answered"]
    own_ms = _encoding_cpu_ms(batch)
    default = transports[TRANSPORTS[0]]
    return {
        "requests": requests,
        "latency_ms": latency_ms,
        "concurrency": concurrency,
        "frames": frames,
        "size": size,
        "default_transport": TRANSPORTS[0],
        **default,  # the headline figures: the backend's default transport
        "transports": transports,
        "cpu_ratio_aiohttp_to_httpx": (
            transports["aiohttp"]["client_cpu_ms_per_query"]
            / transports["httpx"]["client_cpu_ms_per_query"]
        ),
        "framework_cpu_ms_per_query": own_ms,
        "framework_cpu_pct_of_latency": _pct(own_ms, latency_ms),
        "server_answered": answered,
        "server": "in-process thread" if in_process else "child process",
    }


def _share(value: float | None) -> str:
    return "" if value is None else f" ({value:.1f} % of the latency)"


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"bench mllm: {result['requests']} requests of {result['frames']}×{result['size']}²"
        f" frames, {result['latency_ms']:g} ms server latency, loopback HTTP"
        f" (server: {result['server']})",
        "",
        f"| transport | sequential (req/s) | concurrency {result['concurrency']} (req/s) "
        "| speedup | overhead / query (ms) | client CPU / query (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in result["transports"].items():
        lines.append(
            f"| {name} | {t['sequential_rps']:.1f} | {t['concurrent_rps']:.1f} "
            f"| {t['speedup']:.1f}× | {t['overhead_ms_per_query']:.2f} "
            f"| {t['client_cpu_ms_per_query']:.2f} |"
        )
    lines += [
        "",
        f"default transport ({result['default_transport']}): speedup {result['speedup']:.1f}×"
        " (target ≥ 10×)",
        f"overhead per query (sequential wall time − latency): "
        f"{result['overhead_ms_per_query']:.2f} ms{_share(result['overhead_pct_of_latency'])}",
        f"client CPU per query (encoding, openai client, HTTP, parsing): "
        f"{result['client_cpu_ms_per_query']:.2f} ms"
        f"{_share(result['client_cpu_pct_of_latency'])}",
        f"of which the framework's own (frame sampling, JPEG + base64, request body): "
        f"{result['framework_cpu_ms_per_query']:.2f} ms"
        f"{_share(result['framework_cpu_pct_of_latency'])}",
        f"client CPU, aiohttp / httpx: {result['cpu_ratio_aiohttp_to_httpx']:.2f}×",
    ]
    return "\n".join(lines)


def _fleet_run(
    urls: list[str], requests: list[Request], concurrency: int
) -> tuple[float, dict[str, float]]:
    """Wall seconds to answer ``requests`` over the endpoints ``urls``, after a warm-up query per
    endpoint; and the calls each endpoint answered in the timed batch."""
    backend = OpenAIChatMLLM(model="loopback", base_url=urls, concurrency=concurrency, num_frames=8)
    with backend:
        backend.answer(requests[: len(urls)])  # warm-up: one connection to every endpoint
        before = {name: f["calls"] for name, f in backend.stats.by_endpoint.items()}
        start = time.perf_counter()
        answers = backend.answer(requests)
        seconds = time.perf_counter() - start
    _check_order(answers, requests)
    calls = {n: f["calls"] - before.get(n, 0) for n, f in backend.stats.by_endpoint.items()}
    return seconds, calls


def _check_order(answers: list[Any], requests: list[Request]) -> None:
    echoed = [a.text.split(" | ")[0].rsplit("\n", 1)[-1] for a in answers]
    if echoed != [r.prompt for r in requests]:  # the loopback server echoes the prompt
        raise RuntimeError("answers came back out of order")


def run_fleet(
    requests: int,
    latency_ms: float,
    server_concurrency: int,
    sizes: tuple[int, ...] = (1, 2, 4),
    rounds: int = 2,
    frames: int = 8,
    size: int = 64,
) -> dict[str, Any]:
    """Throughput over fleets of ``sizes`` endpoints (see the module docstring)."""
    batch = _requests(requests, frames, size, seed=0)
    # the client keeps every server's slots busy: twice as many in flight as it has slots
    concurrency = 2 * server_concurrency
    best: dict[int, tuple[float, dict[str, float]]] = {}
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                LoopbackProcess(latency_s=latency_ms / 1000, max_concurrency=server_concurrency)
            )
            for _ in range(max(sizes))
        ]
        urls = [server.base_url for server in servers]
        for _ in range(rounds):
            for n in sizes:
                seconds, calls = _fleet_run(urls[:n], batch, concurrency)
                if n not in best or seconds < best[n][0]:
                    best[n] = (seconds, calls)
        answered = sum(server.counters()["answered"] for server in servers)
    one = requests / best[min(sizes)][0]
    ideal_per_endpoint = server_concurrency / (latency_ms / 1000) if latency_ms else None
    fleets = {}
    for n in sizes:
        seconds, calls = best[n]
        rps = requests / seconds
        fleets[n] = {
            "seconds": seconds,
            "rps": rps,
            "ratio_to_smallest": rps / one,
            "share_of_ideal": rps / (n * ideal_per_endpoint) if ideal_per_endpoint else None,
            "calls_per_endpoint": sorted(calls.values(), reverse=True),
        }
    return {
        "mode": "fleet",
        "requests": requests,
        "latency_ms": latency_ms,
        "server_concurrency": server_concurrency,
        "client_concurrency_per_endpoint": concurrency,
        "rounds": rounds,
        "frames": frames,
        "size": size,
        "fleets": fleets,
        "speedup_largest": fleets[max(sizes)]["ratio_to_smallest"],
        "server_answered": answered,
    }


def format_fleet_table(result: dict[str, Any]) -> str:
    fleets = result["fleets"]
    smallest, largest = min(fleets), max(fleets)
    lines = [
        f"bench mllm --fleet: {result['requests']} requests of {result['frames']}×"
        f"{result['size']}² frames per setting; each loopback server answers"
        f" {result['server_concurrency']} at once after {result['latency_ms']:g} ms; the client"
        f" keeps {result['client_concurrency_per_endpoint']} in flight per endpoint; best of"
        f" {result['rounds']} interleaved rounds",
        "",
        f"| endpoints | req/s | × {smallest} endpoint | of ideal | calls per endpoint |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for n, f in fleets.items():
        share = "—" if f["share_of_ideal"] is None else f"{100 * f['share_of_ideal']:.0f} %"
        calls = ", ".join(str(int(c)) for c in f["calls_per_endpoint"])
        lines.append(
            f"| {n} | {f['rps']:.1f} | {f['ratio_to_smallest']:.2f}× | {share} | {calls} |"
        )
    speedup = result["speedup_largest"]
    lines += ["", f"{smallest} → {largest} endpoints: {speedup:.2f}× (bar ≥ 3.5× from 1 to 4)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m privacy_lit bench mllm", description=__doc__)
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per mode (128; --fleet: 320)"
    )
    parser.add_argument("--latency-ms", type=float, default=50.0, help="server latency")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument(
        "--in-process", action="store_true",
        help="run the server as a thread of this process (its CPU time then counts as overhead)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--fleet", action="store_true",
        help="throughput over 1, 2 and 4 endpoints, each serving --server-concurrency at once",
    )  # fmt: skip
    parser.add_argument("--server-concurrency", type=int, default=4, help="--fleet: slots/server")
    parser.add_argument("--endpoints", default="1,2,4", help="--fleet: fleet sizes")
    parser.add_argument("--rounds", type=int, default=2, help="--fleet: rounds, best kept")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 320 if args.fleet else 128
    if args.requests < 1 or args.concurrency < 1 or args.server_concurrency < 1:
        parser.error("--requests, --concurrency and --server-concurrency must be >= 1")
    if args.fleet:
        sizes = tuple(sorted({int(n) for n in args.endpoints.split(",")}))
        if not sizes or sizes[0] < 1 or args.rounds < 1:
            parser.error("--endpoints must be positive integers and --rounds >= 1")
        result = run_fleet(
            args.requests, args.latency_ms, args.server_concurrency, sizes, args.rounds,
            args.frames, args.size,
        )  # fmt: skip
        print(format_fleet_table(result))
    else:
        result = run(
            args.requests, args.latency_ms, args.concurrency, args.frames, args.size,
            args.in_process,
        )  # fmt: skip
        print(format_table(result))
    write_json(args.json, result)
    return result
