"""``/metrics`` in Prometheus text format (prometheus-client).

Two kinds of figure: what the database knows, read at scrape time (so every process's work
counts: workers, delivery threads, other services on the database) and cached for a few
seconds, so that scrapes cost the database at most one round of aggregate queries per
``CACHE_S``; and what this process sees itself (HTTP requests by route, the ingest's bytes).
No task, room or stream id is ever a label.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from cloudrec.db.metrics import Aggregates, aggregates

CACHE_S = 5.0
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class DatabaseCollector(Collector):
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Aggregates] | None = None
        self.cache_s = CACHE_S

    def snapshot(self) -> Aggregates:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                self._cached = (now, aggregates(self._engine))
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        a = self.snapshot()
        tasks = GaugeMetricFamily("cloudrec_tasks", "Recording tasks by state", labels=["state"])
        for state, n in sorted(a.tasks_by_state.items()):
            tasks.add_metric([state], n)
        yield tasks
        ended = CounterMetricFamily(
            "cloudrec_tasks_ended",
            "Tasks ended, by outcome and end reason",
            labels=["outcome", "reason"],
        )
        for (state, reason), n in sorted(a.ended_by_reason.items()):
            ended.add_metric([state, reason], n)
        yield ended
        yield CounterMetricFamily(
            "cloudrec_recorded_seconds", "Media time in finished files", value=a.recorded_seconds
        )
        files = GaugeMetricFamily("cloudrec_files", "Recording files by status", labels=["status"])
        size = GaugeMetricFamily(
            "cloudrec_file_bytes", "Bytes of recording files by status", labels=["status"]
        )
        for status in sorted(a.files_by_status):
            files.add_metric([status], a.files_by_status[status])
            size.add_metric([status], a.bytes_by_status[status])
        yield files
        yield size
        uploads = CounterMetricFamily(
            "cloudrec_upload_attempts",
            "Tries to put a file into the app's bucket or the backup store",
            labels=["target", "result", "error_kind"],
        )
        for (target, ok, kind), n in sorted(a.upload_attempts.items()):
            uploads.add_metric([target, "ok" if ok else "failed", kind], n)
        yield uploads
        callbacks = CounterMetricFamily(
            "cloudrec_callback_attempts",
            "Tries to deliver a callback, by result and HTTP status class",
            labels=["result", "status"],
        )
        for (delivered, status), n in sorted(a.callback_attempts.items()):
            callbacks.add_metric(["delivered" if delivered else "failed", status], n)
        yield callbacks
        events = CounterMetricFamily(
            "cloudrec_worker_events",
            "Workers that died, were restarted, or gave their task up (SIGTERM)",
            labels=["event"],
        )
        for kind in ("worker_died", "worker_restarted", "worker_released"):
            events.add_metric([kind.removeprefix("worker_")], a.task_events.get(kind, 0))
        yield events
        yield GaugeMetricFamily(
            "cloudrec_live_streams", "Streams live in every room", value=a.live_streams
        )


class IngestCollector(Collector):
    """The embedded RTMP ingest (anything whose ``stats()`` gives its bytes received and open
    connections, or None when it cannot tell: then nothing is reported)."""

    def __init__(self, ingest: Any) -> None:
        self._ingest = ingest

    def collect(self) -> Iterator[Metric]:
        stats = self._ingest.stats()
        if stats is None:
            return
        received, connections = stats
        yield CounterMetricFamily(
            "cloudrec_ingest_received_bytes",
            "Bytes the embedded RTMP ingest has read",
            value=received,
        )
        yield GaugeMetricFamily(
            "cloudrec_ingest_connections", "Open RTMP connections", value=connections
        )


class Metrics:
    """One registry per app (tests build several apps in one process)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.database = DatabaseCollector(engine)
        self.registry.register(self.database)
        self.http_requests = Counter(
            "cloudrec_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )

    def watch_ingest(self, ingest: Any) -> None:
        self.registry.register(IngestCollector(ingest))


class CountRequests:
    """ASGI middleware: every answered request counted by its route's template (the path as
    declared, ``/v1/apps/{appid}/tasks/{task_id}``: no ids), or ``unmatched``."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            if method not in METHODS:  # any token is a method to HTTP: never a label as sent
                method = "other"
            self.metrics.http_requests.labels(template, method, str(status)).inc()
