"""Any OpenAI-compatible chat-completions server as the black box: GPT-4o, vLLM, Ollama, …

Pixels go out as base64 JPEG/PNG data URLs (a video as ``num_frames`` uniformly sampled frames),
text comes back. A batch is sent concurrently (at most ``concurrency`` requests in flight), paced
by a requests/min and tokens/min limiter, and every request is retried on 429, 5xx, timeouts,
dropped connections and replies that are not a chat completion, with exponential backoff and
jitter. Answers are handed over one by one as they arrive (``answer(..., on_answer=...)``), and
their text is sanitised (invalid UTF-8, lone surrogates, control characters) before anyone sees it.

Retries are our own loop, not the client's (``max_retries=0``): the client's backoff delays are
fixed constants, and we need to count every request exactly once and name the request and its
last status when it finally fails.

A *fleet* — ``base_url`` a list, e.g. one vLLM server per GPU node, all serving the same model —
is one black box: each request goes to the endpoint with the fewest requests outstanding (at most
``concurrency`` per endpoint, so N endpoints keep N times the requests in flight). An endpoint
whose attempt fails for a reason of its own (5xx, 408/409/429, a timeout or a dropped connection,
e.g. a server that hangs) leaves the rotation for a back-off that doubles with each failure in a
row, and the request is retried at once on another endpoint; back in rotation, the endpoint takes
one request at a time until it answers one. A query is counted once, whichever endpoint answered
it; ``stats.by_endpoint`` holds each endpoint's answered calls (they add up to ``stats.calls``),
failed attempts and time spent on answers, which :class:`~privacy_lit.callbacks.MLLMUsageMonitor`
logs. The response cache key names a fleet (``base_url`` a list) by its model, not by its
endpoints: a rerun hits the cache whatever endpoint answered first, and on another job's nodes.

:meth:`answer` is synchronous, since the training step calls it. The requests run on an asyncio
event loop in a background thread that lives as long as the backend, so the HTTP connection pool
is kept across steps and ``answer`` also works when the calling thread already runs an event loop
(a notebook, an async app): that loop is blocked while a batch is in flight. One thread at a time
may call ``answer``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import ipaddress
import json
import math
import os
import random
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

import cv2
import openai
import torch
from torch import Tensor

from privacy_lit.mllm.base import Answer, BatchError, BlackBoxMLLM, Request
from privacy_lit.mllm.cost import PriceSpec, PriceTable

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Besides every 5xx: timeout, conflict and rate limit, as the OpenAI client itself retries."""

DUMMY_API_KEY = "EMPTY"
"""What local servers (vLLM, Ollama) accept when they run without authentication."""


@dataclass
class _Outcome:
    answer: Answer | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failure: str | None = None
    endpoint: str | None = None
    """The endpoint that answered (its :func:`endpoint_name`)."""
    latency_s: float = 0.0
    """How long the answering attempt took."""
    errors: list[str] = field(default_factory=list)
    """The endpoint of every failed attempt, in order."""


class OpenAIChatMLLM(BlackBoxMLLM):
    """A chat-completions model behind the black-box interface.

    Args:
        model: model name on the server (``gpt-4o``; for vLLM, the served model's name).
        base_url: server URL up to ``/v1`` (None: OpenAI's API). E.g. ``http://localhost:8000/v1``
            for vLLM, ``http://localhost:11434/v1`` for Ollama. A list of URLs is a fleet of
            servers of the same model (module docstring).
        api_key_env: the environment variable holding the API key. The key is never taken from a
            config file, so configs can be shared and committed.
        require_api_key: whether a missing key is an error. None: required unless ``base_url`` is
            on this machine (local servers take the dummy key ``EMPTY``).
        max_tokens, temperature: generation settings (short greedy answers by default).
        seed, extra_body: optional ``seed`` and server-specific request fields (e.g. vLLM's
            ``top_k``); both are part of the cache key.
        system_prompt: optional system message.
        num_frames: frames sampled uniformly (first and last included) from a video.
        video_note: text put before the prompt for a video (``{n}``: number of frames), since
            the model otherwise sees unrelated images. None: nothing.
        image_format, jpeg_quality: how frames are encoded (PNG is lossless and larger).
        detail: OpenAI's image ``detail`` (``low``: 85 tokens per frame); None omits the field.
        concurrency: requests in flight at once, per endpoint.
        requests_per_minute, tokens_per_minute: the account's rate limits (None: unlimited).
            Tokens are estimated before a request (text, images, ``max_tokens``) and corrected
            with the usage the server reports.
        max_retries: retries of one request before the batch fails (so ``max_retries + 1``
            attempts).
        backoff_initial_s, backoff_max_s: the n-th retry waits ``min(max, initial·2ⁿ)`` with
            jitter (uniform in its upper half); a longer ``Retry-After`` from the server wins.
        timeout_s: time limit of one attempt.
        endpoint_backoff_s: how long an endpoint of a fleet stays out of rotation after a failed
            attempt; doubled for each further failure in a row, at most ``backoff_max_s``.
        prices: USD per 1M tokens per model, ``{model: {prompt: …, completion: …}}`` (None: the
            defaults of :mod:`privacy_lit.mllm.cost`).
        http_client: the openai client's HTTP transport: ``"aiohttp"``
            (``openai.DefaultAioHttpClient``, the client's documented aiohttp option) or
            ``"httpx"`` (its default). aiohttp costs less CPU per request, which is what bounds
            the throughput of many concurrent requests (``bench mllm`` compares the two).
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        base_url: str | Sequence[str] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        require_api_key: bool | None = None,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
        extra_body: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        num_frames: int = 8,
        video_note: str | None = "The images are {n} frames sampled uniformly from one video.",
        image_format: Literal["jpeg", "png"] = "jpeg",
        jpeg_quality: int = 90,
        detail: Literal["low", "high", "auto"] | None = "low",
        concurrency: int = 16,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_retries: int = 6,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        timeout_s: float = 60.0,
        endpoint_backoff_s: float = 5.0,
        prices: Mapping[str, PriceSpec] | None = None,
        http_client: Literal["aiohttp", "httpx"] = "aiohttp",
    ):
        super().__init__()
        if num_frames < 1 or concurrency < 1 or max_retries < 0:
            raise ValueError(
                f"need num_frames >= 1, concurrency >= 1, max_retries >= 0; got {num_frames}, "
                f"{concurrency}, {max_retries}"
            )
        endpoints = [base_url] if base_url is None or isinstance(base_url, str) else [*base_url]
        if (
            not endpoints
            or len(set(endpoints)) != len(endpoints)
            or (len(endpoints) > 1 and None in endpoints)
        ):
            raise ValueError(
                f"base_url must be one URL or a list of distinct server URLs, got {base_url!r}"
            )
        if endpoint_backoff_s <= 0:
            raise ValueError(f"endpoint_backoff_s must be > 0, got {endpoint_backoff_s}")
        self.model, self.base_url = model, base_url
        self.endpoints: list[str | None] = endpoints
        self.fleet_url_list = None if base_url is None or isinstance(base_url, str) else endpoints
        self.endpoint_backoff_s = endpoint_backoff_s
        self.api_key_env, self.require_api_key = api_key_env, require_api_key
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed
        self.extra_body = dict(extra_body or {})
        self.system_prompt, self.video_note = system_prompt, video_note
        self.num_frames, self.detail = num_frames, detail
        self.image_format, self.jpeg_quality = image_format, jpeg_quality
        self.concurrency = concurrency
        self.requests_per_minute, self.tokens_per_minute = requests_per_minute, tokens_per_minute
        self.max_retries = max_retries
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.timeout_s = timeout_s
        self.prices = PriceTable(prices)
        if http_client not in ("aiohttp", "httpx"):
            raise ValueError(f"http_client must be 'aiohttp' or 'httpx', got {http_client!r}")
        self.http_client = http_client
        self.retries = 0
        """Attempts that failed and were retried, over the backend's life."""
        self._loop: _LoopThread | None = None
        self._fleet: _Fleet | None = None
        self._finalizer: weakref.finalize | None = None
        self._limiters: _Limiters | None = None
        if self.prices.price(model) is None and not self._all_local():
            warnings.warn(
                f"no price for model {model!r}: its cost is recorded as $0 and a max_usd budget "
                f"never triggers; set `prices: {{{model}: {{prompt: …, completion: …}}}}`",
                stacklevel=2,
            )

    # ----------------------------------------------------------------------------- life cycle
    def prepare(self) -> None:
        """Check the API key and start the event-loop thread and the HTTP clients."""
        if self._loop is not None:
            return
        api_key = self._api_key()
        self._loop = _LoopThread()
        self._fleet = self._loop.call(self._make_fleet(api_key))
        # a backend dropped without close() still closes its clients and thread
        self._finalizer = weakref.finalize(self, self._loop.close, self._fleet.close)

    async def _make_fleet(self, api_key: str) -> _Fleet:
        # created on the backend's loop: a connection pool belongs to the loop that opened it
        clients = []
        for url in self.endpoints:
            transport = {}
            if self.http_client == "aiohttp":
                transport["http_client"] = openai.DefaultAioHttpClient()
            clients.append(openai.AsyncOpenAI(
                api_key=api_key, base_url=url, timeout=self.timeout_s, max_retries=0, **transport,
            ))  # fmt: skip
        names = [endpoint_name(url) for url in self.endpoints]
        return _Fleet(names, clients, self.concurrency, self.endpoint_backoff_s,
                      self.backoff_max_s)  # fmt: skip

    def _all_local(self) -> bool:
        return all(_is_local(url) for url in self.endpoints)

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        required = not self._all_local() if self.require_api_key is None else self.require_api_key
        if required:
            where = self.base_url or "OpenAI's API"
            raise RuntimeError(
                f"no API key for {where}: set the environment variable {self.api_key_env} "
                f"(keys are read from the environment only, never from config files), or set "
                f"require_api_key: false for a server without authentication"
            )
        return DUMMY_API_KEY

    def close(self) -> None:
        """Close the HTTP client and stop the event-loop thread (``prepare`` starts them again)."""
        if self._finalizer is not None:
            self._finalizer()  # closes the client, stops the loop, joins the thread
        self._loop = self._fleet = self._finalizer = self._limiters = None

    def __enter__(self) -> OpenAIChatMLLM:
        self.prepare()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # a thread, a loop and sockets do not pickle; a copy reconnects on first use
        state = dict(self.__dict__)
        state.update(_loop=None, _fleet=None, _finalizer=None, _limiters=None)
        return state

    def cache_identity(self) -> dict[str, object]:
        return {
            **super().cache_identity(),
            "model": self.model,
            # the same name on two servers may be two models. A fleet serves one model, and its
            # hosts change from one job's allocation to the next, so which endpoints it has (and
            # which one answered) is not part of the key: a rerun on other nodes hits the cache
            "base_url": self.base_url if self.fleet_url_list is None else "fleet",
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "extra_body": self.extra_body,
            "system_prompt": self.system_prompt,
            "num_frames": self.num_frames,
            "video_note": self.video_note,
            "image_format": self.image_format,
            "jpeg_quality": self.jpeg_quality if self.image_format == "jpeg" else None,
            "detail": self.detail,
        }

    # ----------------------------------------------------------------------------- answering
    def _answer(self, requests: list[Request]) -> list[Answer]:
        self.prepare()
        assert self._loop is not None
        if self._limiters is None:  # kept across batches: rate limits span training steps
            self._limiters = _Limiters(self.requests_per_minute, self.tokens_per_minute)
        # one future per request, so that each answer is counted and handed over (to the
        # cache's ledger) the moment it arrives: a crash loses only the requests in flight
        futures = {
            self._loop.submit(self._answer_one(request, self._limiters)): i
            for i, request in enumerate(requests)
        }
        answers: list[Answer | None] = [None] * len(requests)
        failures: dict[int, str] = {}
        try:
            for future in concurrent.futures.as_completed(futures):
                i, outcome = futures[future], future.result()
                answers[i] = self._book(outcome)
                if outcome.failure is not None:
                    failures[i] = outcome.failure
                elif answers[i] is not None:
                    self._deliver(i, answers[i])
        except BaseException:
            for future in futures:  # e.g. Ctrl-C: stop sending instead of finishing unseen
                future.cancel()
            raise
        if failures:
            raise BatchError(failures, answers)
        return [a for a in answers if a is not None]

    def _book(self, outcome: _Outcome) -> Answer | None:
        """Count one finished request (retries, tokens, dollars, endpoint figures); its answer
        carries its own tokens and dollars."""
        cost = self.prices.cost(self.model, outcome.prompt_tokens, outcome.completion_tokens)
        self.retries += outcome.retries
        self.stats.prompt_tokens += outcome.prompt_tokens
        self.stats.completion_tokens += outcome.completion_tokens
        self.stats.cost_usd += cost
        for name in outcome.errors:
            self._endpoint_stats(name)["errors"] += 1
        if outcome.answer is None:
            return None
        if outcome.endpoint is not None:
            figures = self._endpoint_stats(outcome.endpoint)
            figures["calls"] += 1
            figures["latency_s"] += outcome.latency_s
        return dataclasses.replace(
            outcome.answer,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            cost_usd=cost,
        )

    def _endpoint_stats(self, name: str) -> dict[str, float]:
        return self.stats.by_endpoint.setdefault(name, {"calls": 0, "errors": 0, "latency_s": 0.0})

    async def _answer_one(self, request: Request, limiters: _Limiters) -> _Outcome:
        """One request, retried until it is answered or out of attempts; never raises.

        A reply that is not a chat completion (a proxy's error page with status 200, a cut-off
        body) is retried like a transport error: the endpoint failed, not the request."""
        fleet = self._fleet
        assert fleet is not None
        outcome = _Outcome()
        body: dict[str, Any] | None = None
        estimate = self._estimate_tokens(request)
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            endpoint = await fleet.acquire()
            try:
                if body is None:  # encoded once a slot is free: overlaps the others' waiting
                    body = self._body(self.messages(request))
                await limiters.acquire(estimate)
                started = time.monotonic()
                try:
                    # the raw bytes, parsed here: the client's own parsing raises on a reply
                    # that is not valid UTF-8 and accepts one that is not a chat completion
                    data = await endpoint.client.post("/chat/completions", cast_to=bytes,
                                                      body=body)  # fmt: skip
                    text, overlong, prompt, generated = parse_completion(data)
                except openai.APIStatusError as error:
                    status = error.status_code
                    reason = f"HTTP {status} ({_error_message(error)})"
                    outcome.errors.append(endpoint.name)
                    if status not in RETRYABLE_STATUS and status < 500:
                        limiters.refund(estimate)
                        outcome.failure = f"{reason}, not retryable"
                        return outcome
                    retry_after = _retry_after(error.response.headers)
                    limiters.refund(estimate)
                except openai.APITimeoutError as error:
                    reason = _timeout_reason(error, self.timeout_s)
                    outcome.errors.append(endpoint.name)
                except openai.APIConnectionError as error:
                    cause = error.__cause__
                    reason = f"connection error ({type(cause).__name__}: {cause})"
                    outcome.errors.append(endpoint.name)
                except (openai.APIError, ValueError) as error:  # a malformed reply
                    reason = str(error)
                    outcome.errors.append(endpoint.name)
                else:
                    fleet.succeeded(endpoint)
                    outcome.endpoint, outcome.latency_s = endpoint.name, time.monotonic() - started
                    limiters.correct(estimate, prompt + generated)
                    outcome.answer = Answer(text, overlong=overlong)
                    outcome.prompt_tokens, outcome.completion_tokens = prompt, generated
                    return outcome
                fleet.failed(endpoint, retry_after)
            finally:
                fleet.release(endpoint)
            if len(self.endpoints) > 1:
                reason = f"{reason} from {endpoint.name}"
            if attempt == self.max_retries:
                break
            outcome.retries += 1
            if fleet.size == 1:  # a fleet retries at once elsewhere; one endpoint waits for itself
                await asyncio.sleep(self._backoff(attempt, retry_after))
        outcome.failure = f"gave up after {self.max_retries + 1} attempts, last: {reason}"
        return outcome

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The request's JSON. Sent with the client's generic ``post`` (its documented way to
        send any body) rather than ``chat.completions.create``, whose per-call walk of the typed
        parameters took ~10 ms per 8-frame request, as long as the HTTP round trip itself; the
        client still adds auth, applies the timeout and raises its typed errors, and
        :func:`parse_completion` reads the reply."""
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        return body | self.extra_body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
        delay *= 0.5 + 0.5 * random.random()  # jitter: retries of one burst spread out
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    # ----------------------------------------------------------------------------- encoding
    def messages(self, request: Request) -> list[dict[str, Any]]:
        """The chat messages of one request: frames as image parts, then the prompt."""
        frames = self.frames(request.visual)
        text = request.prompt
        if request.visual.dim() == 4 and self.video_note:
            text = f"{self.video_note.format(n=len(frames))}\n{text}"
        parts: list[dict[str, Any]] = []
        for url in self.encode(frames):
            image = {"url": url} if self.detail is None else {"url": url, "detail": self.detail}
            parts.append({"type": "image_url", "image_url": image})
        parts.append({"type": "text", "text": text})
        messages: list[dict[str, Any]] = [{"role": "user", "content": parts}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def frames(self, visual: Tensor) -> Tensor:
        """``visual`` as ``N × H × W × 3`` frames: an image is one frame, a video gives
        ``num_frames`` uniformly spaced ones (all of them when it is shorter)."""
        if visual.dim() == 3:
            return visual.unsqueeze(0)
        if visual.shape[0] <= self.num_frames:
            return visual
        index = torch.linspace(0, visual.shape[0] - 1, self.num_frames).round().long()
        return visual[index]

    def encode(self, frames: Tensor) -> list[str]:
        """Frames as ``data:image/…;base64,…`` URLs. OpenCV rather than torchvision's encoder:
        half the CPU time per frame, and this runs on the event loop between sends."""
        extension, flags = (
            (".jpg", [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if self.image_format == "jpeg"
            else (".png", [])
        )
        urls = []
        for frame in frames.cpu().numpy()[..., ::-1]:  # OpenCV takes BGR
            ok, data = cv2.imencode(extension, frame, flags)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode a {frame.shape} frame as {extension}")
            encoded = base64.b64encode(data.tobytes()).decode("ascii")
            urls.append(f"data:image/{self.image_format};base64,{encoded}")
        return urls

    def _estimate_tokens(self, request: Request) -> int:
        """Prompt + completion tokens before sending, for the tokens/min limiter."""
        n = 1 if request.visual.dim() == 3 else min(self.num_frames, request.visual.shape[0])
        height, width = request.visual.shape[-3], request.visual.shape[-2]
        text = len(request.prompt) + len(self.system_prompt or "") + len(self.video_note or "")
        return math.ceil(text / 4) + n * _image_tokens(height, width, self.detail) + self.max_tokens


def parse_completion(data: bytes) -> tuple[str, bool, int, int]:
    """The answer text of a chat-completions reply body, whether the generation was cut at its
    length limit, and its prompt and completion tokens. Invalid UTF-8 is decoded with
    replacement characters (the answer was paid for; the scorer can still use the rest), and
    the text is sanitised by the caller; a body that is not a chat completion raises
    ``ValueError``."""
    try:
        reply = json.loads(data.decode("utf-8", errors="replace"))
        choice = reply["choices"][0]
        message = choice["message"]
        text = message.get("content") or message.get("refusal") or ""
        if isinstance(text, list):  # content parts, as some servers answer
            text = "".join(part.get("text") or "" for part in text)
        if not isinstance(text, str):
            raise TypeError(f"message content is a {type(text).__name__}")
        usage = reply.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        generated = int(usage.get("completion_tokens") or 0)
        cut = choice.get("finish_reason") == "length"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(
            f"the server's reply is not a chat completion ({type(error).__name__}: {error})"
        ) from None
    return text, cut, prompt, generated


def endpoint_name(base_url: str | None) -> str:
    """How an endpoint is named in ``stats.by_endpoint`` and the logs: ``host:port`` (the path
    too where it is not the usual ``/v1``); OpenAI's API for None."""
    if base_url is None:
        return "api.openai.com"
    parsed = urlparse(base_url)
    path = parsed.path.rstrip("/")
    return parsed.netloc + ("" if path in ("", "/v1") else path)


@dataclass(eq=False)
class _Endpoint:
    name: str
    client: openai.AsyncOpenAI
    outstanding: int = 0
    failures: int = 0
    """Failed attempts in a row (0: healthy)."""
    down_until: float = 0.0
    """``time.monotonic()`` at which it rejoins the rotation."""


class _Fleet:
    """The endpoints of one backend and which of them takes the next request (on the backend's
    event loop): the least outstanding requests among the endpoints in rotation, ties in turn.

    An endpoint takes at most ``concurrency`` requests at once, one while it is recovering from
    a failure. :meth:`failed` takes it out of rotation for ``backoff_s``·2^(failures − 1) (at most
    ``backoff_max_s``, at least a server's ``Retry-After``); a lone endpoint is never taken out,
    as there is nowhere else to go (its requests back off themselves).
    """

    def __init__(
        self,
        names: list[str],
        clients: list[openai.AsyncOpenAI],
        concurrency: int,
        backoff_s: float,
        backoff_max_s: float,
    ):
        self.endpoints = [_Endpoint(n, c) for n, c in zip(names, clients, strict=True)]
        self.concurrency, self.backoff_s, self.backoff_max_s = concurrency, backoff_s, backoff_max_s
        self._turn = 0
        self._wakeup: asyncio.Future[None] | None = None

    @property
    def size(self) -> int:
        return len(self.endpoints)

    def _pick(self, now: float) -> _Endpoint | None:
        ready = [
            (e.outstanding, (i - self._turn) % self.size, i)
            for i, e in enumerate(self.endpoints)
            if e.down_until <= now and e.outstanding < (1 if e.failures else self.concurrency)
        ]
        if not ready:
            return None
        index = min(ready)[2]
        self._turn = index + 1
        return self.endpoints[index]

    async def acquire(self) -> _Endpoint:
        """An endpoint with a free slot, waiting for one to free up or come back into rotation."""
        while True:
            now = time.monotonic()
            endpoint = self._pick(now)
            if endpoint is not None:
                endpoint.outstanding += 1
                return endpoint
            if self._wakeup is None:
                self._wakeup = asyncio.get_running_loop().create_future()
            returns = [e.down_until - now for e in self.endpoints if e.down_until > now]
            try:  # shielded: one waiter's timeout must not cancel the others' wake-up
                await asyncio.wait_for(asyncio.shield(self._wakeup), min(returns, default=None))
            except TimeoutError:
                pass  # an endpoint's back-off ended

    def release(self, endpoint: _Endpoint) -> None:
        """A slot of ``endpoint`` is free again: every waiting request looks again."""
        endpoint.outstanding -= 1
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        self._wakeup = None

    def succeeded(self, endpoint: _Endpoint) -> None:
        endpoint.failures = 0

    def failed(self, endpoint: _Endpoint, retry_after: float | None) -> None:
        if self.size == 1:
            return
        endpoint.failures += 1
        pause = min(self.backoff_max_s, self.backoff_s * 2 ** (endpoint.failures - 1))
        pause = max(pause, min(retry_after or 0.0, self.backoff_max_s))
        endpoint.down_until = max(endpoint.down_until, time.monotonic() + pause)

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()


class _LoopThread:
    """An asyncio event loop in a daemon thread, for synchronous callers.

    Not anyio's blocking portal: its thread is not a daemon, so a backend that was never closed
    would keep the interpreter from exiting.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mllm-http", daemon=True)
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run ``coroutine`` on the loop; cancelling the returned future cancels it."""
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("answer() was called from the backend's own event loop")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.submit(coroutine).result()

    def close(self, last: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Await ``last()`` (e.g. closing the HTTP client), then stop the loop and its thread."""
        if self.loop.is_closed():
            return
        if last is not None and self.thread.is_alive():
            try:
                self.submit(_awaited(last)).result(timeout=5)
            except Exception:  # closing is best effort: the loop must stop anyway
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


async def _awaited(function: Callable[[], Awaitable[Any]]) -> Any:
    return await function()


class _TokenBucket:
    """``per_minute`` units a minute, with bursts of up to one second's worth. A request larger
    than the bucket waits for a full bucket instead of forever."""

    def __init__(self, per_minute: float):
        if per_minute <= 0:
            raise ValueError(f"rate limits must be > 0 per minute, got {per_minute}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()  # first come, first served

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:
            self._refill()
            while self.level < amount:
                await asyncio.sleep((amount - self.level) / self.rate)
                self._refill()
            self.level -= amount

    def give_back(self, amount: float) -> None:
        """Return (or, negative, take) units: a refused request, or a wrong estimate."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class _Limiters:
    """The requests/min and tokens/min buckets of one batch (either may be absent)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None):
        self.requests = None if requests_per_minute is None else _TokenBucket(requests_per_minute)
        self.tokens = None if tokens_per_minute is None else _TokenBucket(tokens_per_minute)

    async def acquire(self, estimate: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimate)

    def refund(self, estimate: int) -> None:
        """A request refused by the server used no tokens (it still counted as a request)."""
        if self.tokens is not None:
            self.tokens.give_back(estimate)

    def correct(self, estimate: int, actual: int) -> None:
        if self.tokens is not None:
            self.tokens.give_back(estimate - actual)


def _image_tokens(height: int, width: int, detail: str | None) -> int:
    """OpenAI's image token count: 85 at low detail; else 85 + 170 per 512-px tile after fitting
    the image in 2048² and its short side in 768 (``auto`` and other servers: the same bound)."""
    if detail == "low":
        return 85
    h, w = float(height), float(width)
    fit = min(1.0, 2048 / max(h, w))
    h, w = h * fit, w * fit
    short = min(1.0, 768 / min(h, w))
    h, w = h * short, w * short
    return 85 + 170 * math.ceil(h / 512) * math.ceil(w / 512)


def _timeout_reason(error: openai.APITimeoutError, timeout_s: float) -> str:
    """What an ``APITimeoutError`` really was. The client's aiohttp transport maps every
    ``aiohttp.ClientConnectionError`` (a server that hung up, a refused connection) to a connect
    *timeout*; the root of the ``__cause__`` chain tells them apart."""
    root: BaseException = error
    while root.__cause__ is not None:
        root = root.__cause__
    if root is error or isinstance(root, TimeoutError) or "Timeout" in type(root).__name__:
        return f"timed out after {timeout_s} s"
    return f"connection error ({type(root).__name__}: {root})"


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``), if any."""
    for name, unit in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) * unit
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None


def _error_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or body.get("error", {})
        if isinstance(message, dict):
            message = message.get("message")
        if message:
            return str(message)[:200]
    return error.message[:200]


def _is_local(base_url: str | None) -> bool:
    """Whether ``base_url`` is a server on this machine (where a dummy API key is fine)."""
    if base_url is None:
        return False
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
