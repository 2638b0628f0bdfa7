"""Prometheus metrics: request, queue-wait and execution-time histograms, pool gauges, jobs by state.
Each app has its own registry (several apps may live in one process, as in the tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engines.jobs import JobStatus
from engines.runner import Runner
from server.services import Services

#: Histogram buckets in seconds: from a few milliseconds (small calls) to hours (jobs).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    900,
    3600,
    float("inf"),
)


#: Most (method, route, status) label sets whose metric children are kept at hand.
MAX_LABEL_SETS = 4096


class Metrics:
    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pyqd_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "pyqd_http_request_duration_seconds",
            "HTTP request duration",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "pyqd_queue_wait_seconds",
            "Time a call waited for workers",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.execution = Histogram(
            "pyqd_execution_seconds",
            "Time a call ran on workers",
            ["verb", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(services))
        #: (method, route, status) → (request counter, request timer): labels() takes a lock and builds a key.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._execution_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_execution(self, execution: Runner, mode: str) -> None:
        """Record a finished call: how long it waited for workers and how long it ran."""
        key = (execution.call.request.kind, mode)
        children = self._execution_children.get(key)
        if children is None:  # a few kinds times two modes
            children = self._execution_children[key] = (self.queue_wait.labels(mode), self.execution.labels(*key))
        children[0].observe(execution.acquire_wait_s)
        children[1].observe(execution.run_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every request, labelled by route template (not raw path, to bound cardinality)."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, capture)
            finally:
                key = (scope["method"], route_template(scope), status)
                children = self._children.get(key)
                if children is None:
                    children = self._request_children(key)
                children[0].inc()
                children[1].observe(time.perf_counter() - start)

        return wrapped

    def _request_children(self, key: tuple[str, str, int]) -> tuple[Any, Any]:
        """The request counter and timer of one (method, route, status); kept, as their number is bounded by
        the routes (a template, never a raw path) times the methods and statuses."""
        method, route, status = key
        children = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(method, route))
        if len(self._children) < MAX_LABEL_SETS:
            self._children[key] = children
        return children


def route_template(scope: Scope) -> str:
    """The request path with its path parameters put back as `{name}` (bounded label cardinality)."""
    if scope.get("route") is None:
        return "unmatched"
    path: str = scope["path"]
    path_params = scope.get("path_params")
    if not path_params:
        return path
    params = [(k, str(v)) for k, v in path_params.items()]  # in path order
    parts = path.split("/")
    at = 0
    for i, segment in enumerate(parts):
        if segment == params[at][1]:
            parts[i] = f"{{{params[at][0]}}}"
            at += 1
            if at == len(params):
                break
    return "/".join(parts)


class _StateCollector(Collector):
    """Pool sizes and job counts, read when scraped."""

    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        svc = self._services()
        if svc is None:
            return
        if svc.pool is not None:
            stats = svc.pool.stats()
            yield GaugeMetricFamily("pyqd_pool_size", "Most worker processes", value=stats["size"])
            workers = GaugeMetricFamily("pyqd_pool_workers", "Worker processes by state", labels=["state"])
            for state in ("busy", "idle", "fresh", "starting"):
                workers.add_metric([state], stats[state])
            yield workers
            yield GaugeMetricFamily("pyqd_pool_waiting", "Calls waiting for a worker", value=stats["waiting"])
        if svc.execution is not None and svc.execution.scheduler is not None:
            counts = svc.execution.jobs.counts()
            jobs = GaugeMetricFamily("pyqd_jobs", "Async jobs by state", labels=["state"])
            for state in JobStatus:
                jobs.add_metric([state.value], counts.get(state.value, 0))
            yield jobs
