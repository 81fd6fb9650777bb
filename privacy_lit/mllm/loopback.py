"""A real chat-completions HTTP server on 127.0.0.1, with latency and faults on demand.

It speaks enough of the OpenAI chat-completions schema (``POST …/chat/completions`` in,
``choices[0].message.content`` and ``usage`` out) for :class:`~privacy_lit.mllm.openai_backend.
OpenAIChatMLLM` to talk to it exactly as it talks to GPT-4o or vLLM. Tests and ``bench mllm`` use
it; so can a user who wants to check retries, rate limits, caching and budgets before paying.

Answers are deterministic echoes of the request (prompt text, number of images and a digest of
their bytes), so a caller can tell which request an answer belongs to. Faults:

- ``"429"``, ``"500"``, ``"503"``, … (any status): an OpenAI-style JSON error with that status;
- ``"drop"``: read the request, then close the socket without a response;
- ``"hang"``: wait ``hang_s`` (longer than the client's timeout), then close without a response;
- ``"garbage"``: a 200 whose JSON is not a chat completion.

and odd answers, answered and billed like ``"ok"`` (the echo is part of each, so a caller can
still tell which request it belongs to): ``"bad-utf8"`` (invalid UTF-8 bytes in the body),
``"surrogate"`` (a lone ``\\ud800`` escape), ``"control"`` (NUL, BEL, ESC characters), ``"empty"``
(no text), ``"refusal"`` (no content, OpenAI's ``refusal`` field set) and ``"overlong"``
(thousands of words, cut at the length limit: ``finish_reason: "length"``).

They are chosen per arrival: first from ``script`` (the first arrivals, in order), then by
``rule(prompt_text)`` (e.g. always fail one request), then at random with ``rates``.

``"stream": true`` is answered as server-sent events (``chat.completion.chunk`` deltas, a usage
chunk when ``stream_options.include_usage`` asks for one, then ``[DONE]``), as OpenAI streams.
``GET …/models`` lists one model, ``loopback``; ``GET …/stats`` returns the counters as JSON.
:class:`LoopbackProcess` runs the server in its own process (what ``bench mllm`` does, so the
server's CPU time does not compete with the client's for one interpreter); by hand::

    python -m privacy_lit.mllm.loopback --port 8000 --latency-ms 50 --rate 429=0.1 --rate drop=0.05

prints its base URL on the first line of stdout and serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.request import urlopen

IMAGE_TOKENS = 85
"""Prompt tokens billed per image, as OpenAI bills a low-detail image."""


class LoopbackServer:
    """A threaded chat-completions server; use as a context manager (``with LoopbackServer() as
    server: …server.base_url…``). Counters are read after (or between) batches.

    Args:
        latency_s: delay before every response (a model's time to answer).
        jitter_s: plus a random delay up to this, so answers finish out of order.
        script: fault actions for the first arrivals, in order (``"ok"`` for none).
        rates: probability of each fault action per arrival, e.g. ``{"429": 0.1, "drop": 0.05}``.
        rule: prompt text → fault action or None, checked for every arrival after ``script``.
        hang_s: how long a ``"hang"`` holds the connection before closing it.
        max_concurrency: requests answered at once, as a model server's batch slots; later
            arrivals wait for a free slot (None: no limit).
        seed: seed of the ``rates`` draws.
        port: port on 127.0.0.1 (0: any free one).
    """

    def __init__(
        self,
        latency_s: float = 0.0,
        jitter_s: float = 0.0,
        script: Sequence[str] = (),
        rates: Mapping[str, float] | None = None,
        rule: Callable[[str], str | None] | None = None,
        hang_s: float = 2.0,
        seed: int = 0,
        port: int = 0,
        max_concurrency: int | None = None,
    ):
        self.latency_s, self.jitter_s, self.hang_s = latency_s, jitter_s, hang_s
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.slots = (
            contextlib.nullcontext()
            if max_concurrency is None
            else threading.BoundedSemaphore(max_concurrency)
        )
        self.script = list(script)
        self.rates = dict(rates or {})
        if sum(self.rates.values()) > 1:
            raise ValueError(f"fault rates add up to more than 1: {self.rates}")
        for action in [*self.script, *self.rates]:
            _check_action(action)
        self.rule = rule
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.received = 0
        """Requests that arrived (every attempt, including the ones that got a fault)."""
        self.answered = 0
        """Successful responses written out: what a paid API would bill."""
        self.faults: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.authorizations: set[str] = set()
        self.image_counts: list[int] = []
        self.image_types: set[str] = set()
        self.bodies: list[bytes] = []
        """The raw body of every POST that arrived, in arrival order: what a test checks a
        client (or a proxy in front of this server) actually sent."""
        self.outcomes: list[tuple[str, str]] = []
        """(SHA-256 of the body, action) of every chat-completions request, in arrival order:
        which requests were answered (``"ok"`` or an odd answer) and which got a fault."""
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.loopback = self
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        """What to give an OpenAI client as ``base_url``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LoopbackServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- behaviour
    def counters(self) -> dict[str, Any]:
        """The counters as one JSON-ready snapshot."""
        with self._lock:
            return {
                "received": self.received,
                "answered": self.answered,
                "faults": dict(self.faults),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "max_in_flight": self.max_in_flight,
            }

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no request is being handled (a ``"hang"`` outlives the client's wait)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.in_flight} requests still in flight")
            time.sleep(0.01)

    def _delay(self) -> float:
        with self._lock:
            return self.latency_s + self.jitter_s * self._random.random()

    def _arrive(self, prompt: str) -> str:
        """Count an arrival and choose its fate."""
        with self._lock:
            self.received += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.script:
                return self.script.pop(0)
            if self.rule is not None and (action := self.rule(prompt)) is not None:
                return action
            draw, edge = self._random.random(), 0.0
            for action, rate in self.rates.items():
                edge += rate
                if draw < edge:
                    return action
            return "ok"

    def _book(
        self,
        action: str,
        usage: tuple[int, int] | None = None,
        images: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Book a request's outcome. Handlers call this *before* writing the reply: a client
        that reads the reply and then checks the counters must find its request there. The
        request stays in flight until :meth:`_settle`, after the write."""
        with self._lock:
            if usage is None:
                self.faults[action] += 1
            else:
                self.answered += 1
                self.prompt_tokens += usage[0]
                self.completion_tokens += usage[1]
                self.image_counts.append(len(images))
                self.image_types.update(kind for kind, _ in images)

    def _settle(self) -> None:
        """The request's reply is written (or the connection closed): no longer in flight, so
        :meth:`wait_idle` returns only when no booking can change any more."""
        with self._lock:
            self.in_flight -= 1

    def _retract(self, usage: tuple[int, int], images: Sequence[tuple[str, Any]]) -> None:
        """Undo an answer's booking when the client hung up before the reply went out."""
        with self._lock:
            self.answered -= 1
            self.prompt_tokens -= usage[0]
            self.completion_tokens -= usage[1]
            self.image_counts.remove(len(images))
            self.faults["client gone"] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once: a full backlog stalls them for 1 s
    loopback: LoopbackServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs do: no new connection per query
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        pass  # one line per request would drown test and benchmark output

    def do_GET(self) -> None:  # noqa: N802 - stdlib's name
        if self.path.rstrip("/").endswith("/stats"):
            self._send_json(200, self.server.loopback.counters())
        elif self.path.rstrip("/").endswith("/models"):
            model = {"id": "loopback", "object": "model", "created": 0, "owned_by": "loopback"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - stdlib's name
        server = self.server.loopback
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with server._lock:
            server.bodies.append(body)
        if not self.path.endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            request = json.loads(body)
            text, images = _parse_messages(request["messages"])
        except (ValueError, KeyError, TypeError) as error:
            self._send_json(400, {"error": {"message": f"bad request: {error}"}})
            return
        action = server._arrive(text)
        with server._lock:
            server.outcomes.append((hashlib.sha256(body).hexdigest(), action))
        try:
            with server._lock:
                server.authorizations.add(self.headers.get("Authorization", ""))
            if action == "ok" or action in ODD_ANSWERS:
                with server.slots:
                    time.sleep(server._delay())
                content = _echo(text, images)
                usage = (
                    math.ceil(len(text) / 4) + IMAGE_TOKENS * len(images),
                    len(content.split()),
                )
                reply = _completion(request.get("model", "loopback"), content, usage)
                raw = _odd_answer(reply, action) if action != "ok" else None
                server._book(action, usage, images)
                try:
                    if request.get("stream"):
                        options = request.get("stream_options") or {}
                        self._send_stream(reply, bool(options.get("include_usage")))
                    else:
                        self._send_json(200, reply, raw)
                except OSError:  # the client gave up: not answered
                    server._retract(usage, images)
                return
            if action in ("drop", "hang"):
                if action == "hang":
                    time.sleep(server.hang_s)
                server._book(action)
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if action == "garbage":
                server._book(action)
                self._send_json(200, {"unexpected": True})
                return
            try:
                status = int(_check_action(action))
            except ValueError as error:  # a rule's typo: say so instead of killing the handler
                status, action = 500, f"invalid action {action!r}"
                server._book(action)
                self._send_json(status, {"error": {"message": str(error), "type": "loopback"}})
                return
            server._book(action)
            self._send_json(
                status, {"error": {"message": f"injected {status}", "type": "loopback"}}
            )
        finally:
            server._settle()

    def _send_json(self, status: int, payload: dict[str, Any], raw: bytes | None = None) -> None:
        data = json.dumps(payload).encode() if raw is None else raw
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_stream(self, reply: dict[str, Any], include_usage: bool) -> None:
        """``reply`` as OpenAI streams it: one ``chat.completion.chunk`` per word, in chunked
        transfer encoding (the connection stays open for the next request)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        head = {key: reply[key] for key in ("id", "created", "model")}
        head["object"] = "chat.completion.chunk"
        words = re.split(r"(?<=\s)(?=\S)", reply["choices"][0]["message"]["content"])
        deltas = [{"role": "assistant", "content": ""}, *({"content": w} for w in words), {}]
        events = [
            {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            for delta, finish in zip(deltas, [None] * (len(deltas) - 1) + ["stop"], strict=True)
        ]
        if include_usage:
            events.append({**head, "choices": [], "usage": reply["usage"]})
        for event in [*map(json.dumps, events), "[DONE]"]:
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


ODD_ANSWERS = ("bad-utf8", "surrogate", "control", "empty", "refusal", "overlong")
ACTIONS = ("ok", "drop", "hang", "garbage", *ODD_ANSWERS)


def _odd_answer(reply: dict[str, Any], action: str) -> bytes | None:
    """Turn ``reply`` (an echo) into the odd answer ``action``, in place; the body to send
    where JSON cannot say it (invalid UTF-8), else None."""
    choice = reply["choices"][0]
    message = choice["message"]
    echo = message["content"]
    if action == "surrogate":
        message["content"] = f"\ud800 {echo}"  # json.dumps writes the lone escape
    elif action == "control":
        message["content"] = f"\x00\x07{echo}\x1b[0m"
    elif action == "empty":
        message["content"] = ""
    elif action == "refusal":
        message["content"] = None
        message["refusal"] = "I'm sorry, but I can't help with identifying people in images."
    elif action == "overlong":
        message["content"] = f"{echo} " + "and then " * 5000
        choice["finish_reason"] = "length"
    elif action == "bad-utf8":
        message["content"] = f"INVALID {echo}"
        return json.dumps(reply).encode().replace(b"INVALID", b"\xff\xfe\xc3(", 1)
    return None


def _check_action(action: str) -> str:
    if action in ACTIONS or (action.isdigit() and 400 <= int(action) <= 599):
        return action
    raise ValueError(f"unknown loopback action {action!r}: one of {ACTIONS} or an error status")


def _parse_messages(messages: list[dict[str, Any]]) -> tuple[str, list[tuple[str, bytes]]]:
    """All text parts joined, and every image as (MIME subtype, decoded bytes)."""
    texts: list[str] = []
    images: list[tuple[str, bytes]] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content:
            if part["type"] == "text":
                texts.append(part["text"])
            elif part["type"] == "image_url":
                images.append(_decode_data_url(part["image_url"]["url"]))
            else:
                raise ValueError(f"unknown content part {part['type']!r}")
    return "\n".join(texts), images


def _decode_data_url(url: str) -> tuple[str, bytes]:
    header, _, payload = url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise ValueError(f"expected a base64 image data URL, got {url[:40]!r}")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise ValueError(f"bad base64 image: {error}") from error
    kind = header.removeprefix("data:image/").removesuffix(";base64")
    magic = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG"}
    if kind in magic and not data.startswith(magic[kind]):
        raise ValueError(f"image/{kind} data URL does not hold a {kind} file")
    return kind, data


def _echo(text: str, images: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256(b"".join(data for _, data in images)).hexdigest()[:12]
    return f"echo: {text} | {len(images)} images {digest}"


def _completion(model: str, content: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-loopback-{hashlib.sha256(content.encode()).hexdigest()[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
    }


class ServerProcess:
    """A server in a child process that prints its base URL on the first line of stdout (this
    file run as a script does, and so does ``python -m privacy_lit.serve --port 0``), as a
    context manager: the URL is :attr:`base_url` inside it, the process is ended after it."""

    def __init__(self, command: Sequence[str]):
        self.command = list(command)
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        self.base_url = self._process.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            self.__exit__()
            raise RuntimeError(f"the server did not start: {self.command}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None


class LoopbackProcess(ServerProcess):
    """A :class:`LoopbackServer` in a child process, as a context manager.

    The child runs this file as a script: it needs only the standard library, so it starts in
    milliseconds instead of importing torch with the package.
    """

    def __init__(
        self,
        latency_s: float = 0.0,
        rates: Mapping[str, float] | None = None,
        hang_s: float = 2.0,
        seed: int = 0,
        max_concurrency: int | None = None,
    ):
        super().__init__([
            sys.executable, __file__, "--latency-ms", str(1000 * latency_s),
            "--hang-s", str(hang_s), "--seed", str(seed),
            *(f"--rate={action}={p}" for action, p in (rates or {}).items()),
            *([] if max_concurrency is None else ["--max-concurrency", str(max_concurrency)]),
        ])  # fmt: skip

    def __enter__(self) -> LoopbackProcess:
        super().__enter__()
        return self

    def counters(self) -> dict[str, Any]:
        """The server's counters (see :meth:`LoopbackServer.counters`)."""
        with urlopen(f"{self.base_url}/stats", timeout=10) as response:
            return json.load(response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit.mllm.loopback",
        description="A local chat-completions server with injectable latency and faults.",
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--rate", action="append", default=[], metavar="ACTION=P",
        help="fault probability per request, e.g. 429=0.1, 500=0.05, drop=0.02, hang=0.01",
    )  # fmt: skip
    parser.add_argument("--hang-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-concurrency", type=int, default=None, help="requests at once")
    args = parser.parse_args(argv)
    rates = {a: float(p) for a, _, p in (r.partition("=") for r in args.rate)}
    server = LoopbackServer(
        args.latency_ms / 1000, rates=rates, hang_s=args.hang_s, seed=args.seed, port=args.port,
        max_concurrency=args.max_concurrency,
    )  # fmt: skip
    print(server.base_url, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
