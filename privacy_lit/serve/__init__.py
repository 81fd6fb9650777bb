"""``python -m privacy_lit serve``: the trained anonymizer in front of a cloud MLLM, as an
OpenAI-compatible HTTP proxy. An application that speaks the OpenAI API needs no change:

    python -m privacy_lit serve --ckpt RUN/checkpoints/last.ckpt --upstream https://api.openai.com/v1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python my_app.py

For every ``POST /v1/chat/completions`` the proxy anonymizes every image of the messages (base64
data URLs; http(s) image URLs are fetched with a size and time limit, then anonymized), the
frames of a multi-image (video) request in batches, leaves text and every other field as they
are, and forwards the request; the upstream's answer, a stream included, goes back unchanged.
``GET /v1/models`` is passed through. ``GET /metrics`` is Prometheus' text format; a summary line
is logged per minute of activity.

It fails closed: an image that cannot be fetched, decoded (corrupt, truncated), is too large or
cannot be anonymized, and any content part that is neither text nor an image, get a 4xx error
naming ``messages[i].content[j]``, and nothing is forwarded. The client's ``Authorization`` is
passed upstream and never logged; ``--upstream-key-env VAR`` makes the proxy send its own key
instead. Longer notes (limits, security, measurements): ``docs/serve.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys

import torch
from aiohttp import web

from privacy_lit.deploy import AnonymizerPipeline, InputError
from privacy_lit.serve.app import IMAGE_FORMATS, ProxyConfig, create_app

__all__ = ["ProxyConfig", "create_app", "main"]

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf s'
"""Address, request line, status, size, time: no header (no credential) is ever logged."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m privacy_lit serve",
        description="An OpenAI-compatible proxy that anonymizes every image before forwarding.",
    )
    add = parser.add_argument
    add("--ckpt", required=True, help="a PrivacySystem Lightning checkpoint")
    add("--upstream", required=True, help="upstream base URL, e.g. https://api.openai.com/v1")
    add("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    add("--port", type=int, default=8000, help="0: any free port (printed on the first line)")
    add("--device", default="cpu", help="where the anonymizer runs: cpu, cuda, cuda:1, ...")
    add("--batch-size", type=int, default=16, help="frames per anonymizer forward pass")
    add("--upstream-key-env", metavar="VAR", help="send the key in $VAR upstream instead of "
        "the client's Authorization")  # fmt: skip
    defaults = ProxyConfig("http://upstream")
    add("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, width × height")
    add("--max-image-mb", type=float, default=defaults.max_image_mb, help="largest image file")
    add("--max-request-mb", type=float, default=defaults.max_request_mb, help="largest body")
    add("--no-fetch", action="store_true", help="refuse http(s) image URLs instead of fetching")
    add("--fetch-timeout-s", type=float, default=defaults.fetch_timeout_s)
    add("--upstream-timeout-s", type=float, default=defaults.upstream_timeout_s)
    add("--image-format", choices=IMAGE_FORMATS, default=defaults.image_format,
        help="auto: JPEG stays JPEG, others become PNG")  # fmt: skip
    add("--log-interval-s", type=float, default=defaults.log_interval_s)
    add("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    key = None
    if args.upstream_key_env:
        key = os.environ.get(args.upstream_key_env)
        if not key:
            parser.error(f"--upstream-key-env: ${args.upstream_key_env} is not set or empty")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device is available")
    try:
        config = ProxyConfig(
            args.upstream, key, args.max_pixels, args.max_image_mb, args.max_request_mb,
            not args.no_fetch, args.fetch_timeout_s, args.upstream_timeout_s, args.image_format,
            log_interval_s=args.log_interval_s,
        )  # fmt: skip
        pipeline = AnonymizerPipeline.from_checkpoint(args.ckpt, args.device, args.batch_size)
    except (ValueError, FileNotFoundError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if key is not None and not _is_loopback(args.host):
        logging.getLogger("privacy_lit.serve").warning(
            "the proxy holds an upstream key and listens on %s: whoever reaches this port spends "
            "it", args.host,
        )  # fmt: skip
    asyncio.run(_serve(create_app(pipeline, config), args.host, args.port, config.upstream))
    return 0


async def _serve(app: web.Application, host: str, port: int, upstream: str) -> None:
    """Serve until SIGINT or SIGTERM; the first stdout line is the proxy's base URL."""
    runner = web.AppRunner(app, access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    print(f"http://{bound_host}:{bound_port}/v1", flush=True)
    logging.getLogger("privacy_lit.serve").info(
        "privacy proxy on http://%s:%s/v1, forwarding to %s", bound_host, bound_port, upstream
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
