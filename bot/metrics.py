"""Prometheus metrics: a few counters and gauges served as text on an optional port.

The exposition format is a handful of lines, so no client library is needed. Rates (images/s)
come from Prometheus' `rate()` over the counters.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from aiohttp import web

log = logging.getLogger(__name__)


class Metrics:
    """What the service, the worker and the Discord side count."""

    def __init__(self, queue_depth: Callable[[], int], speed: Callable[[], float]) -> None:
        self._queue_depth = queue_depth
        self._speed = speed
        self.jobs: Counter[str] = Counter()
        self.images = 0
        self.wait_seconds = 0.0
        self.waits = 0
        self.oom_retries = 0
        self.discord_errors: Counter[str] = Counter()

    def job_finished(self, state: str, images: int = 0, wait_s: float | None = None) -> None:
        self.jobs[state] += 1
        self.images += images
        if wait_s is not None:
            self.wait_seconds += wait_s
            self.waits += 1

    def render(self) -> str:
        lines = [
            *_metric("dreamcord_queue_depth", "gauge", "jobs waiting", self._queue_depth()),
            *_metric("dreamcord_pixel_steps_per_second", "gauge", "measured speed", self._speed()),
            *_metric("dreamcord_images_total", "counter", "images made", self.images),
            *_metric(
                "dreamcord_wait_seconds_sum",
                "counter",
                "queue wait of started jobs",
                self.wait_seconds,
            ),
            *_metric("dreamcord_wait_seconds_count", "counter", "jobs waited for", self.waits),
            *_metric("dreamcord_oom_retries_total", "counter", "batches split", self.oom_retries),
        ]
        lines += _labelled("dreamcord_jobs_total", "jobs by final state", "state", self.jobs)
        lines += _labelled(
            "dreamcord_discord_errors_total", "Discord errors by code", "code", self.discord_errors
        )
        return "\n".join(lines) + "\n"


def _metric(name: str, kind: str, help_text: str, value: float) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]


def _labelled(name: str, help_text: str, label: str, values: Counter[str]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    lines += [f'{name}{{{label}="{key}"}} {count}' for key, count in sorted(values.items())]
    return lines


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics; the caller cleans the runner up on shutdown."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("metrics on http://%s:%s/metrics", host, port)
    return runner
