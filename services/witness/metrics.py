"""Prometheus metrics of a witness, in the text exposition format:

* ``esign_witness_requests_total{outcome}`` — add-checkpoint requests by
  outcome (``cosigned``, ``malformed``, ``old_size_too_large``, ``unknown_log``,
  ``forbidden``, ``conflict``, ``inconsistent``, ``too_large``, ``error``);
* ``esign_witness_cosigned_size{origin}`` — size of the latest cosigned
  checkpoint, read from the state at each scrape, so it is right after a restart;
* ``esign_witness_misbehaviour_total{origin,kind}`` — times a validly signed
  checkpoint contradicted the cosigned state (kinds in services.witness.state),
  also read from the state: it survives restarts.

Each witness has its own registry (not prometheus_client's global one), so
several can live in one process, as in tests.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from services.witness.state import WitnessState

OUTCOMES = (
    "cosigned", "malformed", "old_size_too_large", "unknown_log", "forbidden", "conflict", "inconsistent",
    "too_large", "error",
)


class _StateCollector:
    def __init__(self, state: WitnessState):
        self._state = state

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
        for (origin, kind), count in sorted(self._state.misbehaviour_counts().items()):
            misbehaviour.add_metric([origin, kind], count)
        yield misbehaviour


class WitnessMetrics:
    def __init__(self, state: WitnessState):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "esign_witness_requests", "add-checkpoint requests by outcome", ["outcome"], registry=self.registry
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)  # every outcome shows, at 0, from the start
        self.registry.register(_StateCollector(state))

    def request(self, outcome: str) -> None:
        self.requests.labels(outcome).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
