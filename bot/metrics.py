"""Prometheus metrics: a few counters and gauges served as text on an optional port.

The exposition format is a handful of lines, so no client library is needed. Rates (images/s)
come from Prometheus' `rate()` over the counters.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from aiohttp import web

from bot.fleet import WorkerRow
from pipeline.health import WorkerHealth

log = logging.getLogger(__name__)


class Metrics:
    """What the service, the worker and the Discord side count."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        speed: Callable[[], float],
        worker: Callable[[], WorkerHealth],
        remote_workers: Callable[[], Sequence[WorkerRow]] = tuple,
    ) -> None:
        self._queue_depth = queue_depth
        self._speed = speed
        self._worker = worker
        self._remote_workers = remote_workers
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
            *self._worker_lines(),
            *self._remote_lines(),
        ]
        lines += _labelled("dreamcord_jobs_total", "jobs by final state", "state", self.jobs)
        lines += _labelled(
            "dreamcord_discord_errors_total", "Discord errors by code", "code", self.discord_errors
        )
        return "\n".join(lines) + "\n"

    def _worker_lines(self) -> list[str]:
        """Alert on `dreamcord_worker_up == 0` or `dreamcord_worker_stuck == 1`."""
        health, now = self._worker(), time.time()
        stalled = health.stalled_for(now) or 0.0
        return [
            *_metric("dreamcord_worker_up", "gauge", "1 while the worker loop runs", health.alive),
            *_metric(
                "dreamcord_worker_stuck",
                "gauge",
                "1 while a batch makes no progress",
                health.stuck(now),
            ),
            *_metric(
                "dreamcord_worker_seconds_since_progress",
                "gauge",
                "seconds since the running batch's last step (0 when idle)",
                stalled,
            ),
            *_metric(
                "dreamcord_worker_restarts_total",
                "counter",
                "worker loop restarts after a bug",
                health.restarts,
            ),
        ]

    def _remote_lines(self) -> list[str]:
        """Per remote worker (label `worker`); alert on a heartbeat age near WORKER_LEASE_S."""
        rows = self._remote_workers()
        lines = _metric("dreamcord_remote_workers", "gauge", "live remote workers", len(rows))
        for name, help_text, value in (
            ("busy", "1 while the worker runs a batch", lambda row: row.state == "busy"),
            ("images_per_second", "the worker's measured speed", lambda row: row.images_per_s),
            (
                "heartbeat_age_seconds",
                "seconds since its heartbeat",
                lambda row: row.heartbeat_age_s,
            ),
        ):
            metric = f"dreamcord_remote_worker_{name}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f'{metric}{{worker="{row.name}"}} {value(row):g}' for row in rows]
        return lines


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
