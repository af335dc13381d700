"""Prometheus metrics for every service process.

:class:`Metrics` is a nameko dependency: it counts every entrypoint call and
observes its latency, labelled by service, entrypoint, kind (rpc, event,
timer) and outcome (``ok`` or the typed error's code), and serves
``/metrics`` on the process's own port (config ``METRICS.PORT``; 0 or empty
disables the server, as in tests that run several containers in one process).

Business counters (registrations, face checks, signatures, SMS ...) are made
with :func:`counter` / :func:`histogram`, which return the same collector when
called twice with the same name.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from nameko.extensions import DependencyProvider
from nameko.events import EventHandler
from nameko.rpc import Rpc
from nameko.timer import Timer
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from services.common.errors import EsignError

log = logging.getLogger(__name__)

_lock = threading.Lock()
_collectors: dict[str, Any] = {}
_server_ports: set[int] = set()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def counter(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Counter:
    with _lock:
        if name not in _collectors:
            _collectors[name] = Counter(name, documentation, list(labelnames), registry=REGISTRY)
        return _collectors[name]


def gauge(name: str, documentation: str, labelnames: Sequence[str] = ()) -> Gauge:
    with _lock:
        if name not in _collectors:
            _collectors[name] = Gauge(name, documentation, list(labelnames), registry=REGISTRY)
        return _collectors[name]


def histogram(name: str, documentation: str, labelnames: Sequence[str] = (),
              buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
    with _lock:
        if name not in _collectors:
            _collectors[name] = Histogram(name, documentation, list(labelnames), buckets=buckets,
                                          registry=REGISTRY)
        return _collectors[name]


ENTRYPOINT_CALLS = counter(
    "esign_entrypoint_calls_total", "Entrypoint calls by outcome",
    ("service", "entrypoint", "kind", "outcome"),
)
ENTRYPOINT_LATENCY = histogram(
    "esign_entrypoint_latency_seconds", "Entrypoint latency by outcome",
    ("service", "entrypoint", "kind", "outcome"),
)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Start the process's /metrics server once per port."""
    with _lock:
        if port in _server_ports:
            return
        start_http_server(port, addr=addr)
        _server_ports.add(port)
    log.info("metrics on http://%s:%d/metrics", addr, port)


def entrypoint_kind(entrypoint) -> str:
    if isinstance(entrypoint, Rpc):
        return "rpc"
    if isinstance(entrypoint, EventHandler):
        return "event"
    if isinstance(entrypoint, Timer):
        return "timer"
    return type(entrypoint).__name__.lower()


def outcome_of(exc_info) -> str:
    if exc_info is None:
        return "ok"
    exc = exc_info[1]
    return exc.code if isinstance(exc, EsignError) else "internal_error"


class BusinessMetrics:
    """What a worker gets: shortcuts to business counters labelled by service."""

    def __init__(self, service: str):
        self.service = service

    def inc(self, name: str, documentation: str = "", amount: float = 1, **labels: str) -> None:
        names = ("service",) + tuple(sorted(labels))
        metric = counter(f"esign_{name}_total", documentation or name, names)
        metric.labels(service=self.service, **labels).inc(amount)

    def set(self, name: str, value: float, documentation: str = "", **labels: str) -> None:
        """A gauge's current value (``esign_<name>``)."""
        names = ("service",) + tuple(sorted(labels))
        gauge(f"esign_{name}", documentation or name, names).labels(service=self.service, **labels).set(value)

    def observe(self, name: str, value: float, documentation: str = "",
                buckets: Sequence[float] = LATENCY_BUCKETS, **labels: str) -> None:
        names = ("service",) + tuple(sorted(labels))
        metric = histogram(f"esign_{name}", documentation or name, names, buckets)
        metric.labels(service=self.service, **labels).observe(value)


class Metrics(DependencyProvider):
    def __init__(self):
        self.started: dict[Any, float] = {}

    def setup(self) -> None:
        metrics_config = self.container.config.get("METRICS") or {}
        port = metrics_config.get("PORT")
        if port:
            serve_metrics(int(port), metrics_config.get("ADDRESS") or "127.0.0.1")

    def get_dependency(self, worker_ctx) -> BusinessMetrics:
        return BusinessMetrics(self.container.service_name)

    def worker_setup(self, worker_ctx) -> None:
        self.started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None) -> None:
        started = self.started.pop(worker_ctx, None)
        entrypoint = worker_ctx.entrypoint
        labels = dict(
            service=self.container.service_name,
            entrypoint=entrypoint.method_name,
            kind=entrypoint_kind(entrypoint),
            outcome=outcome_of(exc_info),
        )
        ENTRYPOINT_CALLS.labels(**labels).inc()
        if started is not None:
            ENTRYPOINT_LATENCY.labels(**labels).observe(time.perf_counter() - started)
