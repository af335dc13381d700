"""Prometheus metrics for every service process.

:class:`Metrics` is a nameko dependency: it counts every entrypoint call and
observes its latency, labelled by service, entrypoint, kind (rpc, event,
timer, probe) and outcome (``ok`` or the typed error's code), and serves
``/metrics`` on the process's own port (config ``METRICS.PORT``; 0 or empty
disables the server, as in tests that run several containers in one process).
The same port answers the probes: ``/healthz`` (liveness: the worker pools) and
``/readyz`` (readiness: the service's own ``health`` RPC answered through
RabbitMQ, services/common/readiness.py; ``METRICS.READY_TIMEOUT_SECONDS`` and
``METRICS.READY_CACHE_SECONDS`` tune it).

It also shows how full the process's nameko worker pool is:
``esign_service_workers_busy{service}`` (workers running now) against
``esign_service_workers_max{service}`` (the container's ``max_workers``); the
rate of ``esign_entrypoint_latency_seconds_sum`` over that maximum is the
average share of the pool in use.

Business counters (registrations, face checks, signatures, SMS ...) are made
with :func:`counter` / :func:`histogram`, which return the same collector when
called twice with the same name. A counter (or histogram) whose label values
are known in advance (an enum of outcomes, the templates, the configured
witnesses) is declared with :class:`Series` and shows at 0 from the start, so
a query or an alert on it has a series before its first event, and that event
counts in ``rate()``; so do every entrypoint's ``ok`` and ``internal_error``
counts and the latency of its ``ok`` calls. Label values are words from the code or
the configuration, never personal data.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from itertools import product
from typing import Any, Callable, Iterable, Mapping, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.timer import Timer
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from services.common.errors import EsignError, InvalidInput

log = logging.getLogger(__name__)

_lock = threading.Lock()
_collectors: dict[str, Any] = {}
_server_ports: set[int] = set()
#: port -> the readiness probe ``/readyz`` asks there (a nameko service's; the gateway has none)
_readiness: dict[int, Callable[[], Any]] = {}

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
WORKERS_BUSY = gauge("esign_service_workers_busy", "nameko workers of the process running an entrypoint now",
                     ("service",))
WORKERS_MAX = gauge("esign_service_workers_max", "The process's nameko worker pool size (max_workers)",
                    ("service",))
#: the outcomes of every entrypoint counted at 0 from the start (a typed error's code appears when it
#: happens); the latency of its ok calls is shown from the start too
DECLARED_OUTCOMES = ("ok", "internal_error")


@dataclass(frozen=True)
class Series:
    """A business counter (``esign_<name>_total``), or histogram (``esign_<name>``,
    ``histogram=True``), whose label values are known before its first event: every
    combination of ``labels`` is shown at 0 from the start (the ``service`` label is
    added, as :meth:`BusinessMetrics.inc` and ``observe`` do). A series that appears
    only with its first event hides that event from ``rate()`` and ``increase()``."""

    name: str
    documentation: str
    labels: Mapping[str, Sequence[str]]
    histogram: bool = False


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Start the process's server once per port: ``/metrics`` for Prometheus, and
    ``/healthz`` for the liveness probe (503 when one of the process's worker pools
    cannot work: its fresh workers keep dying)."""
    with _lock:
        if port in _server_ports:
            return
        server = make_server(addr, port, _probe_app(make_wsgi_app(), port), ThreadingWSGIServer,
                             handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name=f"metrics-{port}", daemon=True).start()
        _server_ports.add(port)
    log.info("metrics on http://%s:%d/metrics, liveness on /healthz, readiness on /readyz", addr, port)


def register_readiness(port: int, probe: Callable[[], Any]) -> None:
    """``/readyz`` on ``port`` answers what ``probe()`` (a :class:`~services.common.readiness.Readiness`) says."""
    with _lock:
        _readiness[port] = probe


def unregister_readiness(port: int, probe: Callable[[], Any]) -> None:
    with _lock:
        if _readiness.get(port) is probe:
            del _readiness[port]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
        pass


def _probe_app(metrics_app, port: int | None = None):
    def app(environ, start_response):
        path = environ.get("PATH_INFO")
        if path == "/readyz":
            return _readyz(port, start_response)
        if path != "/healthz":
            return metrics_app(environ, start_response)
        from services.common.offload import pools_health  # offload counts with this module's counters

        pools = pools_health()
        healthy = all(state["ok"] for state in pools.values())
        return _json(start_response, 200 if healthy else 503,
                     {"status": "ok" if healthy else "degraded", "worker_pools": pools})

    return app


def _readyz(port: int | None, start_response):
    with _lock:
        probe = _readiness.get(port)
    if probe is None:  # the gateway: its readiness is /healthz on its HTTP port
        return _json(start_response, 404, {"status": "unknown", "reason": "no_readiness_check"})
    readiness = probe()
    return _json(start_response, 200 if readiness.ready else 503, readiness.to_dict())


_STATUS_LINES = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


def _json(start_response, status: int, answer: dict) -> list[bytes]:
    body = json.dumps(answer).encode()
    start_response(_STATUS_LINES[status], [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                           ("Cache-Control", "no-store")])
    return [body]


#: how often gauges counted from a store (flows by state) are refreshed, unless METRICS.REFRESH_SECONDS says
DEFAULT_REFRESH_SECONDS = 15.0


class RefreshTimer(Timer):
    """A nameko timer for gauges counted from a store rather than kept by events
    (signing's flows by state): its interval is ``METRICS.REFRESH_SECONDS``, 15 s
    by default (a usual scrape interval); a bad value stops the service at start."""

    def __init__(self, **kwargs):
        super().__init__(interval=DEFAULT_REFRESH_SECONDS, **kwargs)

    def setup(self) -> None:
        value = (self.container.config.get("METRICS") or {}).get("REFRESH_SECONDS")
        self.interval = refresh_seconds(value)


def refresh_seconds(value: Any) -> float:
    if value in (None, ""):
        return DEFAULT_REFRESH_SECONDS
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise InvalidInput("METRICS.REFRESH_SECONDS", "range", f"expected seconds in (0, 3600], found {value!r}")
    return seconds


refreshes_gauges = RefreshTimer.decorator


def entrypoint_kind(entrypoint) -> str:
    kind = getattr(entrypoint, "metrics_kind", None)  # readiness checks: "probe", apart from callers' RPCs
    if isinstance(kind, str):
        return kind
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

    def declare(self, series: Series) -> None:
        """Show every label combination of ``series`` (at 0 until its first event)."""
        names = ("service",) + tuple(sorted(series.labels))
        metric = (histogram(f"esign_{series.name}", series.documentation or series.name, names) if series.histogram
                  else counter(f"esign_{series.name}_total", series.documentation or series.name, names))
        keys = tuple(sorted(series.labels))
        for values in product(*(series.labels[key] for key in keys)):
            metric.labels(service=self.service, **dict(zip(keys, values, strict=True)))

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
    """``known``: the :class:`Series` of the service's business counters whose label
    values are known at start, or a function of the container's config answering them
    (notify's templates and provider come from its config)."""

    def __init__(self, known: Sequence[Series] | Callable[[dict], Iterable[Series]] = ()):
        self.started: dict[Any, float] = {}
        self.port: int | None = None
        self.readiness = None
        self.known = known

    def setup(self) -> None:
        metrics_config = self.container.config.get("METRICS") or {}
        port = metrics_config.get("PORT")
        if port:
            from services.common import readiness

            self.port = int(port)
            serve_metrics(self.port, metrics_config.get("ADDRESS") or "127.0.0.1")
            self.readiness = readiness.probe_for(
                self.container,
                timeout=_seconds(metrics_config, "READY_TIMEOUT_SECONDS", readiness.READY_TIMEOUT_SECONDS),
                cache_seconds=_seconds(metrics_config, "READY_CACHE_SECONDS", readiness.READY_CACHE_SECONDS))
            register_readiness(self.port, self.readiness)
        service = self.container.service_name
        WORKERS_MAX.labels(service=service).set(self.container.max_workers)
        # read from the container's own green pool at each scrape: a worker that dies before its
        # teardown (its reply could not be published) is not counted busy for ever
        pool = self.container._worker_pool
        WORKERS_BUSY.labels(service=service).set_function(pool.running)
        for entrypoint in self.container.entrypoints:
            labels = dict(service=service, entrypoint=entrypoint.method_name, kind=entrypoint_kind(entrypoint))
            for outcome in DECLARED_OUTCOMES:
                ENTRYPOINT_CALLS.labels(outcome=outcome, **labels)
            ENTRYPOINT_LATENCY.labels(outcome="ok", **labels)
        business = BusinessMetrics(service)
        for series in self.known(self.container.config) if callable(self.known) else self.known:
            business.declare(series)

    def stop(self) -> None:
        # /readyz says "stopping" from here on (the port may serve a while longer)
        if self.readiness is not None:
            self.readiness.stop()

    def kill(self) -> None:
        self.stop()

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


def _seconds(config: dict, key: str, default: float) -> float:
    """A number of seconds from the METRICS config; a bad value stops the service at start."""
    value = config.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"METRICS.{key}", "number", f"expected seconds, found {value!r}") from None
