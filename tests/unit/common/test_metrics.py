"""Series known at start show at 0 before their first event; each entrypoint's ok and
internal_error counts too; a service's nameko worker pool is read at each scrape; the
refresh interval of gauges counted from a store is checked at start."""
from __future__ import annotations

import eventlet
import pytest
from eventlet.greenpool import GreenPool
from nameko.rpc import Rpc
from nameko.timer import Timer
from prometheus_client import REGISTRY

from services.common.errors import InvalidInput
from services.common.metrics import BusinessMetrics, Metrics, Series, refresh_seconds


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_declared_counter_shows_every_label_combination_at_zero_then_counts():
    business = BusinessMetrics("unit-declare")
    business.declare(Series("unit_outcomes", "Test outcomes", {"outcome": ("ok", "failed"), "kind": ("a", "b")}))
    for outcome in ("ok", "failed"):
        for kind in ("a", "b"):
            assert sample("esign_unit_outcomes_total", service="unit-declare", outcome=outcome, kind=kind) == 0
    business.inc("unit_outcomes", outcome="failed", kind="b")  # the same labels as the declaration
    assert sample("esign_unit_outcomes_total", service="unit-declare", outcome="failed", kind="b") == 1
    assert sample("esign_unit_outcomes_total", service="unit-declare", outcome="other", kind="b") is None


def test_a_declared_histogram_shows_zero_counts_so_its_first_observation_is_a_rise():
    business = BusinessMetrics("unit-declare")
    business.declare(Series("unit_step_seconds", "Test steps", {"stage": ("one", "two")}, histogram=True))
    assert sample("esign_unit_step_seconds_count", service="unit-declare", stage="two") == 0
    assert sample("esign_unit_step_seconds_bucket", service="unit-declare", stage="two", le="+Inf") == 0
    business.observe("unit_step_seconds", 0.2, stage="two")
    assert sample("esign_unit_step_seconds_count", service="unit-declare", stage="two") == 1


class _Container:
    """What Metrics.setup reads of a nameko container."""

    def __init__(self, service_name: str, entrypoints, config: dict, max_workers: int = 4):
        self.service_name = service_name
        self.entrypoints = entrypoints
        self.config = config
        self.max_workers = max_workers
        self._worker_pool = GreenPool(size=max_workers)


def _entrypoint(cls, method_name: str, **kwargs):
    entrypoint = cls(**kwargs)
    entrypoint.method_name = method_name
    return entrypoint


def test_setup_declares_entrypoint_outcomes_worker_pool_and_known_series():
    container = _Container("unit-svc", [_entrypoint(Rpc, "health"), _entrypoint(Timer, "tick", interval=1)],
                           {"METRICS": {"PORT": 0}, "TEMPLATES": ("a", "b")})
    metrics = Metrics(known=lambda config: [Series("unit_sent", "Sent", {"template": config["TEMPLATES"]})])
    metrics.container = container
    metrics.setup()
    for entrypoint, kind in (("health", "rpc"), ("tick", "timer")):
        for outcome in ("ok", "internal_error"):
            assert sample("esign_entrypoint_calls_total", service="unit-svc", entrypoint=entrypoint, kind=kind,
                          outcome=outcome) == 0
    assert sample("esign_entrypoint_latency_seconds_count", service="unit-svc", entrypoint="health", kind="rpc",
                  outcome="ok") == 0
    assert sample("esign_unit_sent_total", service="unit-svc", template="b") == 0
    assert sample("esign_service_workers_max", service="unit-svc") == 4
    assert sample("esign_service_workers_busy", service="unit-svc") == 0
    done = eventlet.event.Event()
    busy = [container._worker_pool.spawn(done.wait) for _ in range(3)]
    eventlet.sleep(0)
    assert sample("esign_service_workers_busy", service="unit-svc") == 3  # read from the pool at the scrape
    done.send(None)
    for thread in busy:
        thread.wait()
    assert sample("esign_service_workers_busy", service="unit-svc") == 0


@pytest.mark.parametrize("value", ["0", "-1", "soon", "3601"])
def test_a_bad_refresh_interval_stops_the_service_at_start(value):
    with pytest.raises(InvalidInput) as refused:
        refresh_seconds(value)
    assert refused.value.args[:2] == ("METRICS.REFRESH_SECONDS", "range")


def test_the_refresh_interval_defaults_to_a_usual_scrape_interval():
    assert refresh_seconds(None) == refresh_seconds("") == 15.0
    assert refresh_seconds("1") == 1.0
