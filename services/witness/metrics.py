"""Prometheus metrics of a witness, in the text exposition format:

* ``esign_witness_requests_total{outcome}`` — add-checkpoint requests by
  outcome (``cosigned``, ``malformed``, ``old_size_too_large``, ``unknown_log``,
  ``forbidden``, ``conflict``, ``inconsistent``, ``too_large``, ``error``);
* ``esign_witness_cosigned_size{origin}`` — size of the latest cosigned
  checkpoint, read from the state at each scrape, so it is right after a restart;
* ``esign_witness_misbehaviour_total{origin,kind}`` — times a validly signed
  checkpoint contradicted the cosigned state (kinds in services.witness.state),
  also read from the state: it survives restarts. Every kind of every log the
  witness is configured for shows, at 0 until it happens, so an alert on it
  has a series to watch.

Each witness has its own registry (not prometheus_client's global one), so
several can live in one process, as in tests.
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.witness.state import MISBEHAVIOUR_KINDS, WitnessState

OUTCOMES = (
    "cosigned", "malformed", "old_size_too_large", "unknown_log", "forbidden", "conflict", "inconsistent",
    "too_large", "error",
)


class _StateCollector:
    def __init__(self, state: WitnessState, origins: Callable[[], Iterable[str]]):
        self._state = state
        self._origins = origins

    def collect(self):
        sizes = GaugeMetricFamily(
            "esign_witness_cosigned_size", "Size of the latest checkpoint cosigned for the log", labels=["origin"]
        )
        for latest in self._state.all_latest():
            sizes.add_metric([latest.origin], latest.size)
        yield sizes
        misbehaviour = CounterMetricFamily(
            "esign_witness_misbehaviour",
            "Validly signed checkpoints that contradict the cosigned state, by kind",
            labels=["origin", "kind"],
        )
        counts = self._state.misbehaviour_counts()
        for origin in self._origins():
            for kind in MISBEHAVIOUR_KINDS:
                counts.setdefault((origin, kind), 0)
        for (origin, kind), count in sorted(counts.items()):
            misbehaviour.add_metric([origin, kind], count)
        yield misbehaviour


class WitnessMetrics:
    """``origins``: the logs the witness is configured for, asked at each scrape."""

    def __init__(self, state: WitnessState, origins: Callable[[], Iterable[str]] = tuple):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "esign_witness_requests", "add-checkpoint requests by outcome", ["outcome"], registry=self.registry
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)  # every outcome shows, at 0, from the start
        self.registry.register(_StateCollector(state, origins))

    def request(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
