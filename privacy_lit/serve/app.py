"""The privacy proxy's aiohttp application: anonymize every image of a chat-completions request,
then forward it; pass the upstream's answer back as it came (streams included)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from privacy_lit.deploy import AnonymizerPipeline
from privacy_lit.serve.images import (
    ImagePart,
    Rejected,
    data_url_bytes,
    decode_image,
    encode_image,
    fetch_bytes,
    find_images,
)
from privacy_lit.serve.metrics import ProxyMetrics, log_periodically

log = logging.getLogger("privacy_lit.serve")
T = TypeVar("T")

IMAGE_FORMATS = ("auto", "png", "jpeg")
PASSED_HEADERS = ("OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "Idempotency-Key")
"""Client headers forwarded upstream besides the credentials (``Authorization``, ``api-key``)."""
DROPPED_ANSWER_HEADERS = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive",
     "server", "date"}
)  # fmt: skip
"""Upstream answer headers that describe the upstream's connection, not the answer."""
UNCOUNTED_ROUTES = frozenset({"/metrics", "/health"})
"""The proxy's own routes: scrapes and health checks are not requests it proxies."""


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy forwards to and what it accepts.

    Args:
        upstream: the upstream API's base URL, as an OpenAI client's ``base_url`` (``…/v1``).
        upstream_key: if set, sent upstream as ``Authorization: Bearer …`` instead of the
            client's credentials (never printed: not in the repr).
        max_pixels: the largest image (width × height) accepted; larger ones are refused (413).
        max_image_mb: the largest image file accepted, inline or fetched (MiB).
        max_request_mb: the largest request body accepted (MiB).
        fetch_images: fetch http(s) image URLs (False: refuse them; the proxy then makes no
            request but the upstream's).
        fetch_timeout_s: time allowed to fetch one image URL.
        upstream_timeout_s: time allowed for the upstream's whole answer.
        image_format: how anonymized images are sent: ``auto`` (JPEG stays JPEG, anything
            else becomes PNG), ``png`` (lossless) or ``jpeg``.
        jpeg_quality: quality of re-encoded JPEGs.
        log_interval_s: seconds between two activity summaries in the log.
    """

    upstream: str
    upstream_key: str | None = field(default=None, repr=False)
    max_pixels: int = 4096 * 4096
    max_image_mb: float = 20.0
    max_request_mb: float = 256.0
    fetch_images: bool = True
    fetch_timeout_s: float = 10.0
    upstream_timeout_s: float = 600.0
    image_format: str = "auto"
    jpeg_quality: int = 95
    log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"the upstream must be an http(s) base URL, got {self.upstream!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(
                f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}"
            )
        for name in ("max_pixels", "max_image_mb", "max_request_mb", "fetch_timeout_s",
                     "upstream_timeout_s", "log_interval_s"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    @property
    def max_image_bytes(self) -> int:
        return int(self.max_image_mb * 2**20)


class PrivacyProxy:
    """The request handlers and what they share: the anonymizer, the HTTP sessions, metrics.

    The anonymizer runs in one dedicated thread (it uses every core on its own; a GPU queue is
    one stream), decoding and encoding in the default thread pool, the HTTP in the event loop.
    """

    def __init__(self, pipeline: AnonymizerPipeline, config: ProxyConfig) -> None:
        self.pipeline, self.config = pipeline, config
        self.metrics = ProxyMetrics()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="anonymizer")
        self._upstream: aiohttp.ClientSession | None = None
        self._fetcher: aiohttp.ClientSession | None = None
        self._logger: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------- lifecycle
    async def start(self, app: web.Application) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.upstream_timeout_s)
        connector = aiohttp.TCPConnector(limit=0)  # clients' concurrency is the upstream's
        self._upstream = aiohttp.ClientSession(
            timeout=timeout, connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )
        # A separate session for image URLs: no credential or cookie can travel to image hosts.
        self._fetcher = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self._logger = asyncio.create_task(
            log_periodically(self.metrics, self.config.log_interval_s, log)
        )

    async def stop(self, app: web.Application) -> None:
        if self._logger is not None:
            self._logger.cancel()
        for session in (self._upstream, self._fetcher):
            if session is not None:
                await session.close()
        self._model_thread.shutdown(wait=True)

    # ----------------------------------------------------------------------------- routes
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._json(request)
            images = find_images(body)
            if images:
                start = time.perf_counter()
                produced = await self._anonymize(images)
                self.metrics.anonymization.observe(time.perf_counter() - start)
                self.metrics.images.inc(len(images))
            else:
                produced = set()
            data = _forwardable(body, produced)
        except Rejected as error:
            self.metrics.rejected.labels(error.code).inc()
            log.info("refused a request (%s): %s", error.code, error.message)
            return web.json_response(error.payload(), status=error.status)
        return await self._forward(request, "POST", "/chat/completions", data)

    async def models(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.removeprefix("/v1")  # a model id keeps its %-escapes
        return await self._forward(request, "GET", path, None)

    async def metrics_text(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "device": str(self.pipeline.device)})

    async def refuse(self, request: web.Request) -> web.Response:
        """Every other route: not forwarded, as other endpoints (files, responses, ...) could
        carry images this proxy does not look for."""
        error = Rejected(
            404, f"{request.method} {request.path} is not forwarded: the privacy proxy serves "
            "POST /v1/chat/completions and GET /v1/models", "unsupported_endpoint",
        )  # fmt: skip
        self.metrics.rejected.labels(error.code).inc()
        return web.json_response(error.payload(), status=404)

    # ----------------------------------------------------------------------------- anonymizing
    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as error:
            raise Rejected(400, f"the body is not JSON: {error}", "bad_request") from error

    async def _anonymize(self, images: list[ImagePart]) -> set[str]:
        """Replace every image's URL by a data URL of the anonymizer's output; returns those URLs.
        Any failure raises :class:`Rejected` before anything is replaced."""
        loop = asyncio.get_running_loop()
        raw = await _all(self._bytes(part) for part in images)
        decoded = await _all(
            loop.run_in_executor(None, decode_image, data, part, self.config.max_pixels)
            for data, part in zip(raw, images, strict=True)
        )
        for part, (pixels, _) in zip(images, decoded, strict=True):
            if min(pixels.shape[:2]) < self.pipeline.min_side:
                raise Rejected(
                    422, f"{part.where}: the image is {pixels.shape[1]}×{pixels.shape[0]} px; "
                    f"the anonymizer needs at least {self.pipeline.min_side} px a side",
                    "image_too_small", part.where,
                )  # fmt: skip
        try:
            anonymized = await loop.run_in_executor(
                self._model_thread, self.pipeline.many, [pixels for pixels, _ in decoded]
            )
        except Exception as error:  # noqa: BLE001 - whatever failed, nothing is forwarded
            log.exception("the anonymizer failed")
            where = ", ".join(part.where for part in images)
            raise Rejected(
                422, f"the images of {where} could not be anonymized ({type(error).__name__}: "
                f"{error}); nothing was forwarded", "anonymization_failed",
            ) from error  # fmt: skip
        quality = self.config.jpeg_quality
        urls = await _all(
            loop.run_in_executor(None, encode_image, out, self._format(fmt), quality)
            for out, (_, fmt) in zip(anonymized, decoded, strict=True)
        )
        for part, url in zip(images, urls, strict=True):
            part.slot["url"] = url
        return set(urls)

    async def _bytes(self, part: ImagePart) -> bytes:
        scheme = part.url[: part.url.find(":")].lower()
        if scheme in ("http", "https"):
            if not self.config.fetch_images:
                raise Rejected(
                    400, f"{part.where}: image URLs are not fetched by this proxy (--no-fetch); "
                    "send the image inline as a base64 data URL", "image_fetch_disabled",
                    part.where,
                )  # fmt: skip
            assert self._fetcher is not None
            return await fetch_bytes(
                self._fetcher, part, self.config.max_image_bytes, self.config.fetch_timeout_s
            )
        return data_url_bytes(part, self.config.max_image_bytes)

    def _format(self, decoded_format: str) -> str:
        return (
            decoded_format
            if self.config.image_format == "auto"
            else self.config.image_format.upper()
        )

    # ----------------------------------------------------------------------------- forwarding
    def _upstream_headers(self, request: web.Request, has_body: bool) -> dict[str, str]:
        headers = {
            name: request.headers[name] for name in PASSED_HEADERS if name in request.headers
        }
        if self.config.upstream_key is not None:
            headers["Authorization"] = f"Bearer {self.config.upstream_key}"
        else:
            for name in ("Authorization", "api-key"):
                if name in request.headers:
                    headers[name] = request.headers[name]
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _forward(
        self, request: web.Request, method: str, path: str, data: bytes | None
    ) -> web.StreamResponse:
        """Send upstream and pass the answer back: status, headers and body as they came; a
        server-sent-event stream is relayed chunk by chunk as it arrives."""
        assert self._upstream is not None
        url = self.config.upstream.rstrip("/") + path
        headers = self._upstream_headers(request, data is not None)
        start = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            async with self._upstream.request(method, url, data=data, headers=headers) as answer:
                passed = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() not in DROPPED_ANSWER_HEADERS
                }
                if answer.content_type == "text/event-stream":
                    response = web.StreamResponse(status=answer.status, headers=passed)
                    await response.prepare(request)
                    async for chunk in answer.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                else:
                    response = web.Response(
                        status=answer.status, body=await answer.read(), headers=passed
                    )
        except (TimeoutError, aiohttp.ClientError) as error:
            if response is not None and response.prepared:
                log.warning("the upstream's stream broke off: %s", type(error).__name__)
                return response
            timed_out = isinstance(error, TimeoutError)
            status = 504 if timed_out else 502
            message = (
                f"the upstream did not answer within {self.config.upstream_timeout_s:g} s"
                if timed_out
                else f"the upstream cannot be reached ({type(error).__name__}: {error})"
            )
            log.warning("%s %s: %s", method, path, message)
            return web.json_response(
                Rejected(status, message, "upstream_error").payload(), status=status
            )
        finally:
            self.metrics.upstream.observe(time.perf_counter() - start)
        return response


async def _all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, but the first failure cancels the rest (one bad image of a video
    stops the fetching and decoding of the others)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _forwardable(body: dict[str, Any], produced: set[str]) -> bytes:
    """The request body to send upstream, after checking (again, on what is about to leave)
    that every image in it is one the anonymizer produced. This is the only way a body reaches
    :meth:`PrivacyProxy._forward`: no path sends an original image."""
    for part in find_images(body):
        if part.url not in produced:
            raise Rejected(
                500, f"{part.where} was not anonymized; nothing was forwarded", "not_anonymized",
                part.where,
            )  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


PROXY = web.AppKey("proxy", PrivacyProxy)
"""``app[PROXY]``: the application's :class:`PrivacyProxy` (its config and metrics)."""


def create_app(pipeline: AnonymizerPipeline, config: ProxyConfig) -> web.Application:
    """The proxy as an aiohttp application (``web.run_app(create_app(...))`` serves it)."""
    proxy = PrivacyProxy(pipeline, config)
    app = web.Application(
        client_max_size=int(config.max_request_mb * 2**20), middlewares=[_counted(proxy)]
    )
    app[PROXY] = proxy
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.stop)
    app.router.add_post("/v1/chat/completions", proxy.chat_completions)
    app.router.add_get("/v1/models", proxy.models)
    app.router.add_get("/v1/models/{model:.+}", proxy.models)
    app.router.add_get("/metrics", proxy.metrics_text)
    app.router.add_get("/health", proxy.health)
    app.router.add_route("*", "/{path:.*}", proxy.refuse)
    return app


def _counted(proxy: PrivacyProxy) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def count(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "other"
        if name in UNCOUNTED_ROUTES:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as error:  # e.g. 413 for a body over max_request_mb
            proxy.metrics.requests.labels(name, str(error.status)).inc()
            raise
        proxy.metrics.requests.labels(name, str(response.status)).inc()
        return response

    return count
