"""The privacy proxy with the official ``openai`` client in front and the loopback server behind,
recording what reaches it: only anonymized images, everything else unchanged, fail closed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import numpy as np
import openai
import pytest
import torch
from aiohttp import web
from PIL import Image

from privacy_lit.cli import _subcommand
from privacy_lit.deploy import AnonymizerPipeline, save_anonymizer
from privacy_lit.mllm.loopback import LoopbackServer, _echo, _parse_messages
from privacy_lit.models.anonymizer import Anonymizer, anonymize_pixels
from privacy_lit.serve import ProxyConfig, create_app
from privacy_lit.serve.app import PROXY, PrivacyProxy
from privacy_lit.serve.metrics import summary
from tests.test_anonymize import small_anonymizer

CLIENT_KEY = "sk-client-5ecret-b3a7"
PROXY_KEY = "sk-proxy-5ecret-9f21"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model() -> Anonymizer:
    return small_anonymizer()


@pytest.fixture(scope="module")
def ckpt(model: Anonymizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_anonymizer(model, tmp_path_factory.mktemp("ckpt") / "anonymizer.ckpt")


@pytest.fixture(scope="module")
def pipeline(ckpt: Path) -> AnonymizerPipeline:
    return AnonymizerPipeline.from_checkpoint(ckpt, batch_size=16)


@dataclass
class Stack:
    """A client → proxy → loopback upstream chain."""

    url: str
    upstream: LoopbackServer
    app: web.Application

    def client(self, key: str = CLIENT_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=20)

    def received(self) -> list[dict[str, Any]]:
        """Every request body that reached the upstream."""
        return [json.loads(body) for body in self.upstream.bodies]


@contextmanager
def running(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a free port from a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def stack(
    pipeline: AnonymizerPipeline, upstream: LoopbackServer | None = None, **config: Any
) -> Iterator[Stack]:
    with upstream or LoopbackServer() as server:
        app = create_app(pipeline, ProxyConfig(server.base_url, **config))
        with running(app) as url:
            yield Stack(url, server, app)


@pytest.fixture
def chain(pipeline: AnonymizerPipeline) -> Iterator[Stack]:
    with stack(pipeline) as chain:
        yield chain


# ----------------------------------------------------------------------------- images
def pixels(h: int = 40, w: int = 56, seed: int = 0, smooth: bool = False) -> np.ndarray:
    if smooth:  # a photo-like image, for JPEG
        y, x = np.mgrid[0:h, 0:w]
        return np.stack([x * 4 + seed, y * 5, (x + y) * 2], -1).astype(np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encoded(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    """One user message made of these content parts."""
    return [{"role": "user", "content": list(parts)}]


def decoded(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))))


def anonymized(model: Anonymizer, rgb: np.ndarray) -> np.ndarray:
    return anonymize_pixels(model, torch.from_numpy(rgb.copy())).numpy()


def image_urls(body: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


def without_images(body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part["type"] == "image_url":
                part["image_url"]["url"] = "<image>"
    return body


# ----------------------------------------------------------------------------- what goes through
def test_upstream_gets_the_anonymizer_output_and_everything_else_unchanged(
    chain: Stack, model: Anonymizer
) -> None:
    png, photo = pixels(), pixels(48, 64, smooth=True)
    jpeg = encoded(photo, "JPEG")
    messages = [
        {"role": "system", "content": "You describe images."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is here? ünïcödé ✓"},
            image_part(data_url(encoded(png))),
            image_part(data_url(jpeg, "image/jpeg"), detail="low"),
        ]},
        {"role": "assistant", "content": "A pattern."},
        {"role": "user", "content": "And the colours?"},
    ]  # fmt: skip
    settings = {"temperature": 0.25, "max_tokens": 17, "seed": 3, "user": "u-1"}
    answer = chain.client().chat.completions.create(
        model="gpt-4o", messages=messages, **settings, extra_body={"top_k": 5}
    )
    [received] = chain.received()
    sent = {"model": "gpt-4o", "messages": messages, **settings, "top_k": 5}
    assert without_images(received) == without_images(sent)  # text and every field as sent

    png_url, jpeg_url = image_urls(received)
    assert png_url.startswith("data:image/png;base64,")
    assert np.array_equal(decoded(png_url), anonymized(model, png))  # exactly f_A's output
    assert not np.array_equal(decoded(png_url), png)
    assert jpeg_url.startswith("data:image/jpeg;base64,")  # a photo stays a JPEG ...
    expected = anonymized(model, np.asarray(Image.open(io.BytesIO(jpeg))))
    error = np.abs(decoded(jpeg_url).astype(int) - expected).mean()
    original = np.abs(decoded(jpeg_url).astype(int) - photo).mean()
    assert error < 2 and original > 5 * error  # ... of f_A's output, not of the original
    assert received["messages"][1]["content"][2]["image_url"]["detail"] == "low"

    text, images = _parse_messages(received["messages"])
    assert answer.choices[0].message.content == _echo(text, images)  # the upstream's answer
    assert chain.upstream.authorizations == {f"Bearer {CLIENT_KEY}"}


def test_streaming_is_relayed(chain: Stack, model: Anonymizer) -> None:
    image = pixels(seed=4)
    question = user({"type": "text", "text": "a long answer"}, image_part(data_url(encoded(image))))
    stream = chain.client().chat.completions.create(
        model="m", stream=True, stream_options={"include_usage": True}, messages=question
    )
    chunks = list(stream)
    [received] = chain.received()
    assert received["stream"] is True
    assert np.array_equal(decoded(image_urls(received)[0]), anonymized(model, image))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _echo(*_parse_messages(received["messages"]))
    assert len(chunks) > 5 and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_sixteen_concurrent_clients_get_their_own_answers(
    pipeline: AnonymizerPipeline, model: Anonymizer
) -> None:
    async def ask(url: str, i: int) -> str:
        async with openai.AsyncOpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0) as client:
            answer = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": [
                    {"type": "text", "text": f"client {i}"},
                    image_part(data_url(encoded(pixels(32, 32, seed=i)))),
                ]}],
            )  # fmt: skip
            return answer.choices[0].message.content or ""

    async def ask_all(url: str) -> list[str]:
        return await asyncio.gather(*(ask(url, i) for i in range(16)))

    with stack(pipeline, LoopbackServer(latency_s=0.3, jitter_s=0.1)) as chain:
        answers = asyncio.run(ask_all(chain.url))
        received = {body["messages"][0]["content"][0]["text"]: body for body in chain.received()}
    assert len(received) == 16 and chain.upstream.max_in_flight > 1
    for i, answer in enumerate(answers):
        [url] = image_urls(received[f"client {i}"])
        digest = hashlib.sha256(base64.b64decode(url.partition(",")[2])).hexdigest()[:12]
        assert answer == f"echo: client {i} | 1 images {digest}"  # its own answer
        assert np.array_equal(decoded(url), anonymized(model, pixels(32, 32, seed=i)))


def test_video_frames_are_anonymized_in_one_batch(
    chain: Stack, pipeline: AnonymizerPipeline, model: Anonymizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[tuple[int, ...]] = []
    frames_of = pipeline.frames

    def spy(frames: torch.Tensor) -> torch.Tensor:
        batches.append(tuple(frames.shape))
        return frames_of(frames)

    monkeypatch.setattr(pipeline, "frames", spy)
    video = [pixels(24, 32, seed=10 + t) for t in range(8)]
    chain.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": [
            {"type": "text", "text": "What happens in these 8 frames?"},
            *(image_part(data_url(encoded(frame))) for frame in video),
        ]}],
    )  # fmt: skip
    assert batches == [(8, 24, 32, 3)]
    urls = image_urls(chain.received()[0])
    assert len(urls) == 8
    for url, frame in zip(urls, video, strict=True):
        assert np.array_equal(decoded(url), anonymized(model, frame))


def test_models_pass_through_and_other_endpoints_are_refused(chain: Stack) -> None:
    client = chain.client()
    assert [m.id for m in client.models.list()] == ["loopback"]
    with pytest.raises(openai.NotFoundError, match="not forwarded"):
        client.embeddings.create(model="m", input="text")
    assert chain.upstream.bodies == []


def test_upstream_errors_come_back_unchanged(pipeline: AnonymizerPipeline) -> None:
    with stack(pipeline, LoopbackServer(script=["429"])) as chain:
        with pytest.raises(openai.RateLimitError, match="injected 429"):
            chain.client().chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    gone = ProxyConfig("http://127.0.0.1:9/v1")  # nothing listens on the discard port
    with running(create_app(pipeline, gone)) as url:
        client = openai.OpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError, match="cannot be reached") as error:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 502


# ----------------------------------------------------------------------------- fail closed
GOOD = pixels(seed=7)
PNG = encoded(GOOD)
BAD_PARTS = {
    "corrupt": (image_part(data_url(b"this is not an image at all")), 400, "image_undecodable"),
    "truncated": (image_part(data_url(PNG[: len(PNG) // 2])), 400, "image_undecodable"),
    "bad base64": (image_part("data:image/png;base64,@@not base64@@"), 400, "image_undecodable"),
    "oversized": (image_part(data_url(encoded(pixels(64, 64)))), 413, "image_too_large"),
    "too small": (image_part(data_url(encoded(pixels(1, 1)))), 422, "image_too_small"),
    "animated": (None, 422, "image_animated"),
    "audio": ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, 400,
              "unsupported_content"),
    "video_url": ({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, 400,
                  "unsupported_content"),
    "file URL": (image_part("file:///etc/passwd"), 400, "bad_image_url"),
}  # fmt: skip


def _animated_gif() -> dict[str, Any]:
    frames = [Image.fromarray(pixels(16, 16, seed=s)) for s in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    return image_part(data_url(buffer.getvalue(), "image/gif"))


@pytest.mark.parametrize("case", list(BAD_PARTS))
def test_a_bad_image_is_refused_naming_its_part_and_nothing_is_forwarded(
    pipeline: AnonymizerPipeline, case: str
) -> None:
    part, status, code = BAD_PARTS[case]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "compare"}, image_part(data_url(PNG)),
            part if part is not None else _animated_gif(),
        ]},
    ]  # fmt: skip
    with stack(pipeline, max_pixels=56 * 40) as chain:  # GOOD fits; the 64×64 one does not
        with pytest.raises(openai.APIStatusError) as error:
            chain.client().chat.completions.create(model="m", messages=messages)
        assert chain.upstream.bodies == [] and chain.upstream.received == 0
    assert error.value.status_code == status
    assert error.value.body["code"] == code  # type: ignore[index]
    assert "messages[1].content[2]" in error.value.message


def test_a_request_that_skipped_anonymization_is_never_forwarded(
    chain: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last check before forwarding catches an image the anonymizing step left alone."""

    async def skip(self: PrivacyProxy, images: list[Any]) -> set[str]:
        return set()

    monkeypatch.setattr(PrivacyProxy, "_anonymize", skip)
    with pytest.raises(openai.InternalServerError, match="was not anonymized"):
        chain.client().chat.completions.create(model="m", messages=user(image_part(data_url(PNG))))
    assert chain.upstream.bodies == []


# ----------------------------------------------------------------------------- image URLs
class _ImageHost(ThreadingHTTPServer):
    """Serves ``/ok.png``, ``/big.png`` and ``/slow.png``; records the headers it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ImageHandler)
        self.headers_seen: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ImageHandler(BaseHTTPRequestHandler):
    server: _ImageHost

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        self.server.headers_seen.append(dict(self.headers))
        if self.path == "/slow.png":
            time.sleep(1.0)
        data = {"/ok.png": PNG, "/slow.png": PNG, "/big.png": encoded(pixels(300, 300))}.get(
            self.path
        )
        self.send_response(200 if data else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        self.wfile.write(data or b"")


def test_image_urls_are_fetched_without_credentials_then_anonymized(
    pipeline: AnonymizerPipeline, model: Anonymizer
) -> None:
    host = _ImageHost()
    try:
        with stack(pipeline, max_image_mb=100_000 / 2**20, fetch_timeout_s=0.3) as chain:
            client = chain.client()
            client.chat.completions.create(
                model="m",
                messages=user(image_part(host.url + "/ok.png")),
            )
            [url] = image_urls(chain.received()[0])
            assert url.startswith("data:image/png;base64,")  # the URL itself is never forwarded
            assert np.array_equal(decoded(url), anonymized(model, GOOD))
            assert all("Authorization" not in h for h in host.headers_seen)
            for path, status, message in [
                ("/missing.png", 400, "HTTP 404"),
                ("/big.png", 413, "over the proxy's limit"),
                ("/slow.png", 400, "did not answer within 0.3 s"),
            ]:
                with pytest.raises(openai.APIStatusError, match=message) as error:
                    client.chat.completions.create(
                        model="m",
                        messages=user(image_part(host.url + path)),
                    )
                assert error.value.status_code == status
            assert len(chain.upstream.bodies) == 1
        with stack(pipeline, fetch_images=False) as chain:
            with pytest.raises(openai.BadRequestError, match="not fetched"):
                chain.client().chat.completions.create(
                    model="m",
                    messages=user(image_part(host.url + "/ok.png")),
                )
            assert chain.upstream.bodies == []
    finally:
        host.shutdown()
        host.server_close()


# ----------------------------------------------------------------------------- keys and metrics
def test_the_key_reaches_the_upstream_and_no_log_line(
    pipeline: AnonymizerPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with stack(pipeline, upstream_key=PROXY_KEY, log_interval_s=0.1) as chain:
        client = chain.client()
        image = user(image_part(data_url(PNG)))
        client.chat.completions.create(model="m", messages=image)
        list(client.chat.completions.create(model="m", messages=image, stream=True))
        client.models.list()
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", messages=BAD_MESSAGES)
        time.sleep(0.3)  # a summary line is logged
        metrics = urlopen(chain.url.removesuffix("/v1") + "/metrics").read().decode()
        config = chain.app[PROXY].config
    assert chain.upstream.authorizations == {f"Bearer {PROXY_KEY}"}  # the proxy's own key
    assert "images anonymized" in caplog.text
    for secret in (PROXY_KEY, CLIENT_KEY):
        assert secret not in caplog.text
        assert all(secret not in record.getMessage() for record in caplog.records)
        assert secret not in metrics and secret not in str(error.value.body)
        assert secret not in repr(config)


BAD_MESSAGES = user(image_part(data_url(b"garbage")))


def test_metrics_count_requests_images_and_latencies(pipeline: AnonymizerPipeline) -> None:
    with stack(pipeline) as chain:
        client = chain.client()
        before = chain.app[PROXY].metrics.totals()
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": [image_part(data_url(PNG))] * 3}],
        )
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=BAD_MESSAGES)
        text = urlopen(chain.url.removesuffix("/v1") + "/metrics").read().decode()
        after = chain.app[PROXY].metrics.totals()
    assert "privacy_proxy_images_anonymized_total 3.0" in text
    assert 'privacy_proxy_rejected_requests_total{reason="image_undecodable"} 1.0' in text
    assert 'privacy_proxy_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'privacy_proxy_requests_total{route="/v1/chat/completions",status="400"} 1.0' in text
    assert "privacy_proxy_anonymization_seconds_count 1.0" in text
    assert "privacy_proxy_upstream_seconds_count 1.0" in text
    line = summary(before, after, 60)
    assert line is not None and line.startswith("last 60 s: 2 requests (1 rejected), 3 images")
    assert summary(after, after, 60) is None  # an idle minute logs nothing


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="http"):
        ProxyConfig("api.openai.com/v1")
    with pytest.raises(ValueError, match="max_pixels"):
        ProxyConfig("http://x/v1", max_pixels=0)
    with pytest.raises(ValueError, match="image_format"):
        replace(ProxyConfig("http://x/v1"), image_format="gif")


@pytest.mark.slow  # a second interpreter imports torch: about 5 s
def test_serve_command_keeps_the_key_out_of_every_log_line_and_file(
    ckpt: Path, tmp_path: Path
) -> None:
    """The serve command end to end, with the key in the environment: stderr at debug level,
    stdout and every file the proxy could write (its cwd, HOME and TMPDIR). It runs as
    ``python -m privacy_lit.serve``, the same ``main`` without Lightning's import time."""
    assert _subcommand(["serve", "--port", "0"]) == ("privacy_lit.serve", ["--port", "0"])
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    env = {
        **os.environ,
        "PROXY_TEST_KEY": PROXY_KEY,
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
    }
    with LoopbackServer() as upstream:
        command = [
            sys.executable, "-m", "privacy_lit.serve", "--ckpt", str(ckpt), "--upstream",
            upstream.base_url, "--port", "0", "--upstream-key-env", "PROXY_TEST_KEY",
            "--log-level", "debug", "--log-interval-s", "0.2",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), process.communicate()[1]
            client = openai.OpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0)
            answer = client.chat.completions.create(
                model="m", messages=user(image_part(data_url(PNG)))
            )
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="m", messages=BAD_MESSAGES)
            time.sleep(0.5)
        finally:
            process.terminate()
            stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    [received] = [json.loads(body) for body in upstream.bodies]
    assert answer.choices[0].message.content == _echo(*_parse_messages(received["messages"]))
    assert not np.array_equal(decoded(image_urls(received)[0]), GOOD)
    assert upstream.authorizations == {f"Bearer {PROXY_KEY}"}
    assert "images anonymized" in stderr and '"POST /v1/chat/completions HTTP/1.1" 200' in stderr
    for secret in (PROXY_KEY, CLIENT_KEY):
        assert secret not in stdout and secret not in stderr
        for path in tmp_path.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


@pytest.mark.slow  # two proxy processes import torch: about 15 s
def test_bench_serve_measures_both_paths_in_one_run() -> None:
    from privacy_lit.bench.serve import format_table, run

    result = run(
        sizes=(32,), video_frames=2, repeats=1, requests=4, concurrency=2, latencies_ms=(0, 20)
    )
    assert set(result["latency"]) == {"1 image, 32×32", "2-frame video, 32×32"}
    for figures in result["latency"].values():
        assert figures["proxy_s"] > figures["direct_s"] and figures["anonymization_s"] > 0
    assert set(result["throughput"]) == {"0", "20"}
    for figures in result["throughput"].values():
        assert figures["ratio"] == pytest.approx(figures["proxy_rps"] / figures["direct_rps"])
    assert "| upstream latency 20 ms |" in format_table(result)
