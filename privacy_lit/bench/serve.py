"""``python -m privacy_lit bench serve``: what putting the privacy proxy in front of an MLLM costs,
measured side by side in one run.

A loopback chat-completions server (:mod:`privacy_lit.mllm.loopback`) plays the upstream, with a
chosen latency (a model's time to answer); the proxy runs as ``python -m privacy_lit.serve`` in
its own process, as it is deployed. The same requests (photo-like JPEGs, as a client sends them)
go straight to the upstream and through the proxy with the official ``openai`` client:

- *added latency per request*: median wall time through the proxy − median straight to the
  upstream, one client, for 1 image at each ``--sizes`` and for an ``--video-frames``-frame
  video (the frames as image parts of one request); the proxy's own anonymization time per
  request (fetch, decode, anonymize, re-encode) is read from its ``/metrics``;
- *throughput* with ``--concurrency`` clients (each its own ``AsyncOpenAI``) sending
  ``--requests`` requests of 1 image at the first size, through the proxy and straight, and
  the ratio, at every ``--latency-ms``.

Without ``--ckpt`` the default architecture with untrained weights is served (the same
computation as a trained one). Everything shares this machine's CPU: the clients, the proxy and
the upstream, as when the proxy runs next to the application.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import numpy as np
import openai
from PIL import Image

from privacy_lit.bench import write_json
from privacy_lit.deploy import save_anonymizer
from privacy_lit.mllm.loopback import LoopbackProcess, ServerProcess
from privacy_lit.models.anonymizer import Anonymizer

Messages = list[dict[str, Any]]


def photo(size: int, seed: int) -> bytes:
    """A photo-like ``size``² JPEG: smooth colour gradients with a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([x, y, (x + y) / 2], -1) * 200 + rng.integers(0, 40, 3)
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def messages(images: Sequence[bytes], text: str) -> Messages:
    parts = [{"type": "text", "text": text}]
    for data in images:
        url = f"data:image/jpeg;base64,{base64.b64encode(data).decode()}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "user", "content": parts}]


def _anonymization_totals(proxy_url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the proxy's anonymization histogram."""
    text = urlopen(proxy_url.removesuffix("/v1") + "/metrics", timeout=30).read().decode()
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if name.startswith("privacy_proxy_anonymization_seconds_")
    }
    return values["privacy_proxy_anonymization_seconds_sum"], values[
        "privacy_proxy_anonymization_seconds_count"
    ]


def latency(direct_url: str, proxy_url: str, workload: Messages, repeats: int) -> dict[str, float]:
    """Median seconds per request straight and through the proxy (interleaved, after one
    warm-up each), and the proxy's mean anonymization seconds per request."""
    clients = {
        name: openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
        for name, url in (("direct", direct_url), ("proxy", proxy_url))
    }
    times: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():
        client.chat.completions.create(model="loopback", messages=workload)
    before = _anonymization_totals(proxy_url)
    for _ in range(repeats):
        for name, client in clients.items():
            start = time.perf_counter()
            client.chat.completions.create(model="loopback", messages=workload)
            times[name].append(time.perf_counter() - start)
    after = _anonymization_totals(proxy_url)
    for client in clients.values():
        client.close()
    direct, proxy = statistics.median(times["direct"]), statistics.median(times["proxy"])
    return {
        "direct_s": direct,
        "proxy_s": proxy,
        "added_s": proxy - direct,
        "anonymization_s": (after[0] - before[0]) / (after[1] - before[1]),
    }


async def _clients(url: str, workloads: list[Messages], concurrency: int) -> float:
    """Seconds for ``concurrency`` clients to send ``workloads`` (round robin), after each
    client's first (untimed) request opened its connection."""
    clients = [
        openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
        for _ in range(concurrency)
    ]

    async def run(client: openai.AsyncOpenAI, mine: list[Messages]) -> None:
        for workload in mine:
            await client.chat.completions.create(model="loopback", messages=workload)

    await asyncio.gather(*(run(client, workloads[:1]) for client in clients))
    start = time.perf_counter()
    await asyncio.gather(
        *(run(client, workloads[i::concurrency]) for i, client in enumerate(clients))
    )
    seconds = time.perf_counter() - start
    await asyncio.gather(*(client.close() for client in clients))
    return seconds


def throughput(
    direct_url: str, proxy_url: str, workloads: list[Messages], concurrency: int
) -> dict[str, float]:
    """Requests per second straight and through the proxy, and their ratio."""
    direct = len(workloads) / asyncio.run(_clients(direct_url, workloads, concurrency))
    proxy = len(workloads) / asyncio.run(_clients(proxy_url, workloads, concurrency))
    return {"direct_rps": direct, "proxy_rps": proxy, "ratio": proxy / direct}


def proxy_process(ckpt: Path, upstream: str, device: str) -> ServerProcess:
    return ServerProcess([
        sys.executable, "-m", "privacy_lit.serve", "--ckpt", str(ckpt), "--upstream", upstream,
        "--port", "0", "--device", device, "--log-level", "warning",
    ])  # fmt: skip


def run(
    ckpt: Path | None = None,
    sizes: Sequence[int] = (224, 512, 1024),
    video_frames: int = 8,
    repeats: int = 5,
    requests: int = 64,
    concurrency: int = 16,
    latencies_ms: Sequence[float] = (0.0, 1000.0),
    device: str = "cpu",
) -> dict[str, Any]:
    """Every figure of the tables (see the module docstring) as one JSON-ready dict."""
    load_before = os.getloadavg()
    workloads = {f"1 image, {s}×{s}": messages([photo(s, 0)], f"{s} px") for s in sizes}
    frames = [photo(sizes[0], t) for t in range(video_frames)]
    workloads[f"{video_frames}-frame video, {sizes[0]}×{sizes[0]}"] = messages(frames, "video")
    stream = [messages([photo(sizes[0], i)], f"request {i}") for i in range(requests)]
    result: dict[str, Any] = {
        "device": device, "cpus": os.cpu_count(), "repeats": repeats, "requests": requests,
        "concurrency": concurrency, "checkpoint": str(ckpt) if ckpt else "untrained default",
        "latency": {}, "throughput": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if ckpt is None:
            ckpt = save_anonymizer(Anonymizer(), Path(tmp) / "default.ckpt")
        for i, latency_ms in enumerate(latencies_ms):
            with (
                LoopbackProcess(latency_s=latency_ms / 1000) as upstream,
                proxy_process(ckpt, upstream.base_url, device) as proxy,
            ):
                if i == 0:  # added latency does not depend on the upstream's own
                    result["upstream_latency_ms_for_latency"] = latency_ms
                    for name, workload in workloads.items():
                        result["latency"][name] = latency(
                            upstream.base_url, proxy.base_url, workload, repeats
                        )
                result["throughput"][f"{latency_ms:g}"] = throughput(
                    upstream.base_url, proxy.base_url, stream, concurrency
                )
    result["throughput_workload"] = f"1 image, {sizes[0]}×{sizes[0]}"
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


def format_table(result: dict[str, Any]) -> str:
    load = result["load_average"]
    lines = [
        f"bench serve: anonymizer on {result['device']} ({result['checkpoint']}), "
        f"{result['cpus']} CPUs, load average {load['before'][0]:.2f} before, "
        f"{load['after'][0]:.2f} after",
        "",
        f"| request (one client, median of {result['repeats']}) | straight to upstream (ms) "
        "| through the proxy (ms) | added (ms) | proxy's anonymization, mean (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in result["latency"].items():
        lines.append(
            f"| {name} | {1000 * r['direct_s']:.1f} | {1000 * r['proxy_s']:.1f} "
            f"| {1000 * r['added_s']:.1f} | {1000 * r['anonymization_s']:.1f} |"
        )
    lines += [
        "",
        f"| {result['concurrency']} concurrent clients, {result['requests']} requests of "
        f"{result['throughput_workload']} | straight (req/s) | through the proxy (req/s) "
        "| proxy / straight |",
        "| --- | ---: | ---: | ---: |",
    ]
    for latency_ms, t in result["throughput"].items():
        lines.append(
            f"| upstream latency {latency_ms} ms | {t['direct_rps']:.1f} | {t['proxy_rps']:.1f} "
            f"| {t['ratio']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m privacy_lit bench serve", description=__doc__)
    parser.add_argument("--ckpt", type=Path, default=None, help="default: untrained default model")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024])
    parser.add_argument("--video-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per workload")
    parser.add_argument("--requests", type=int, default=64, help="requests per throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument(
        "--latency-ms", type=float, nargs="+", default=[0.0, 1000.0],
        help="upstream latencies for the throughput runs (the first also for the latency table)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if min(args.repeats, args.requests, args.concurrency, args.video_frames) < 1:
        parser.error("--repeats, --requests, --concurrency and --video-frames must be >= 1")
    result = run(
        args.ckpt, args.sizes, args.video_frames, args.repeats, args.requests, args.concurrency,
        args.latency_ms, args.device,
    )  # fmt: skip
    print(format_table(result))
    write_json(args.json, result)
    return result
