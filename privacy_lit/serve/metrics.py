"""What the proxy counts: Prometheus metrics (``GET /metrics``) and a summary line per minute.

One set of numbers feeds both: the log line is the difference of two snapshots of the same
Prometheus registry, so the log and a scrape never disagree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ProxyMetrics:
    """The proxy's counters in their own registry (several proxies in one process, as in tests,
    do not share them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "privacy_proxy_requests", "Requests answered, by route and HTTP status",
            ["route", "status"], registry=self.registry,
        )  # fmt: skip
        self.rejected = Counter(
            "privacy_proxy_rejected_requests",
            "Requests refused before anything was forwarded, by reason",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.images = Counter(
            "privacy_proxy_images_anonymized", "Images (video frames included) anonymized",
            registry=self.registry,
        )  # fmt: skip
        self.anonymization = Histogram(
            "privacy_proxy_anonymization_seconds",
            "Per request with images: fetching, decoding, anonymizing and re-encoding them",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.upstream = Histogram(
            "privacy_proxy_upstream_seconds",
            "Per forwarded request: from sending it upstream to the end of the answer",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def totals(self) -> dict[str, float]:
        """Every sample summed over its labels, by sample name (``privacy_proxy_requests_total``,
        ``privacy_proxy_upstream_seconds_sum``, ...)."""
        totals: dict[str, float] = defaultdict(float)
        for metric in self.registry.collect():
            for sample in metric.samples:
                if not sample.name.endswith(("_bucket", "_created")):
                    totals[sample.name] += sample.value
        return dict(totals)


def summary(before: dict[str, float], after: dict[str, float], seconds: float) -> str | None:
    """One line for the activity between two :meth:`ProxyMetrics.totals`; None when idle."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests = delta("privacy_proxy_requests_total")
    if not requests:
        return None

    def mean_ms(histogram: str) -> str:
        count = delta(f"{histogram}_count")
        return f"{1000 * delta(f'{histogram}_sum') / count:.0f} ms" if count else "-"

    return (
        f"last {seconds:.0f} s: {requests:.0f} requests "
        f"({delta('privacy_proxy_rejected_requests_total'):.0f} rejected), "
        f"{delta('privacy_proxy_images_anonymized_total'):.0f} images anonymized; mean per "
        f"request: anonymization {mean_ms('privacy_proxy_anonymization_seconds')}, "
        f"upstream {mean_ms('privacy_proxy_upstream_seconds')}"
    )


async def log_periodically(metrics: ProxyMetrics, interval_s: float, logger: logging.Logger):
    """Log :func:`summary` every ``interval_s`` seconds until cancelled."""
    before, start = metrics.totals(), time.monotonic()
    while True:
        await asyncio.sleep(interval_s)
        after, now = metrics.totals(), time.monotonic()
        if (line := summary(before, after, now - start)) is not None:
            logger.info(line)
        before, start = after, now
