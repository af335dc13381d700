"""The readiness probe (services/common/readiness.py) and ``/readyz`` on the metrics port,
with the health RPC stubbed: answered, degraded, timed out, failed, cached; and the wait
never holds up the eventlet hub. tests/integration/test_readiness.py runs it on RabbitMQ."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import eventlet
import pytest
from amqp.exceptions import AccessRefused
from nameko.exceptions import RemoteError, UnknownService

from services.common import metrics
from services.common.errors import InvalidInput, Unavailable
from services.common.readiness import (
    READY,
    InstanceRpc,
    OwnHealthCall,
    Readiness,
    ReadinessProbe,
    ReadyReason,
    instance_queue,
    instance_routing_key,
    judge,
    not_ready,
)
from services.common.s3server import free_port

INSTANCE = "9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
OK = {"service": "identity", "status": "ok", "checks": {"database": {"ok": True, "ms": 0.4}}}


class StubProxy:
    """Stands in for the broker round trip: answers, waits, or raises as told."""

    def __init__(self, answer=OK, wait: float = 0.0, error: Exception | None = None):
        self.answer, self.wait, self.error = answer, wait, error
        self.calls = 0
        self.closed = False

    def health(self):
        self.calls += 1
        if self.wait:
            eventlet.sleep(self.wait)
        if self.error is not None:
            raise self.error
        return self.answer

    def close(self):
        self.closed = True


class Connector:
    def __init__(self, *proxies: StubProxy):
        self.proxies = list(proxies)
        self.made: list[tuple[str, StubProxy]] = []

    def __call__(self, instance: str) -> StubProxy:
        proxy = self.proxies.pop(0) if len(self.proxies) > 1 else self.proxies[0]
        self.made.append((instance, proxy))
        return proxy


def own_call(connector: Connector, instance=lambda: INSTANCE, timeout: float = 1.0) -> OwnHealthCall:
    return OwnHealthCall({}, "identity", instance, timeout=timeout, connect=connector)


# ------------------------------------------------------------------ the check


def test_an_answered_health_is_ready_and_the_connection_is_kept():
    connector = Connector(StubProxy())
    check = own_call(connector)
    assert check() == READY
    assert check() == READY
    assert len(connector.made) == 1 and connector.made[0][0] == INSTANCE
    assert connector.made[0][1].calls == 2


def test_a_degraded_answer_is_not_ready_and_names_the_failing_checks():
    answer = {"status": "degraded", "checks": {"database": {"ok": False, "error": "OperationalError"},
                                               "storage": {"ok": True}, "workers.faces": {"ok": False}}}
    readiness = own_call(Connector(StubProxy(answer)))()
    assert readiness == Readiness(False, ReadyReason.DEGRADED, "database,workers.faces")
    assert judge(None).reason is ReadyReason.HEALTH_ERROR
    assert judge({"status": "ok"}) == READY


def test_no_answer_within_the_timeout_is_not_ready_and_the_proxy_is_replaced():
    slow, fresh = StubProxy(wait=5.0), StubProxy()
    connector = Connector(slow, fresh)
    check = own_call(connector, timeout=0.2)
    started = time.monotonic()
    readiness = check()
    assert time.monotonic() - started < 1.0
    assert readiness.reason is ReadyReason.TIMEOUT and not readiness.ready
    eventlet.sleep(0)  # the slow proxy is closed in a greenthread of its own
    assert slow.closed, "a late answer must not be read as the next check's"
    assert check() == READY and connector.made[-1][1] is fresh


@pytest.mark.parametrize("error, reason", [
    (UnknownService("identity.x"), ReadyReason.NOT_CONSUMING),
    (AccessRefused("ACCESS_REFUSED - access to topic refused"), ReadyReason.BROKER_REFUSED),
    (ConnectionRefusedError(111, "Connection refused"), ReadyReason.BROKER_UNREACHABLE),
    (RemoteError("OperationalError", "db gone"), ReadyReason.HEALTH_ERROR),
    (Unavailable("database", "unreachable"), ReadyReason.HEALTH_ERROR),
    (RuntimeError("anything else"), ReadyReason.HEALTH_ERROR),
])
def test_a_failed_call_is_not_ready_with_its_reason(error, reason):
    proxy = StubProxy(error=error)
    readiness = own_call(Connector(proxy))()
    assert (readiness.ready, readiness.reason) == (False, reason)
    eventlet.sleep(0)  # closed in a greenthread of its own
    assert proxy.closed


def test_the_answer_names_the_error_type_never_its_text():
    """A connection error's text may carry the broker URL with its password."""
    error = ConnectionError("cannot connect to amqp://esign-identity:s3cret@rabbitmq:5672//")
    body = json.dumps(own_call(Connector(StubProxy(error=error)))().to_dict())
    assert "s3cret" not in body and "ConnectionError" in body


def test_before_the_consumer_is_set_up_it_is_starting_and_asks_nobody():
    connector = Connector(StubProxy())
    readiness = own_call(connector, instance=lambda: None)()
    assert readiness.reason is ReadyReason.STARTING and connector.made == []


def test_a_new_instance_gets_a_new_proxy():
    instances = iter([INSTANCE, INSTANCE, "0f0e0d0c-0b0a-4909-8807-060504030201"])
    connector = Connector(StubProxy(), StubProxy())
    check = own_call(connector, instance=lambda: next(instances))
    check(), check(), check()
    assert [instance for instance, _ in connector.made] == [INSTANCE, "0f0e0d0c-0b0a-4909-8807-060504030201"]


def test_waiting_for_the_answer_leaves_the_hub_free():
    """Other greenthreads (the service's workers, its AMQP heartbeats) run during the wait."""
    ticks = []

    def ticker():
        for _ in range(20):
            ticks.append(time.monotonic())
            eventlet.sleep(0.01)

    thread = eventlet.spawn(ticker)
    assert own_call(Connector(StubProxy(wait=0.15)))() == READY
    assert len(ticks) >= 5, ticks
    thread.kill()


def test_a_bad_timeout_stops_the_service_at_start():
    with pytest.raises(InvalidInput) as refused:
        OwnHealthCall({}, "identity", lambda: INSTANCE, timeout=0)
    assert refused.value.field == "METRICS.READY_TIMEOUT_SECONDS"
    with pytest.raises(InvalidInput):
        ReadinessProbe(lambda: READY, "identity", cache_seconds=-1)


# ------------------------------------------------------------------ the cache


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingCheck:
    def __init__(self, *answers: Readiness, wait: float = 0.0):
        self.answers = list(answers)
        self.calls = 0
        self.wait = wait
        self.closed = False

    def __call__(self) -> Readiness:
        self.calls += 1
        if self.wait:
            eventlet.sleep(self.wait)
        return self.answers[min(self.calls, len(self.answers)) - 1]

    def close(self):
        self.closed = True


def test_an_answer_is_served_again_until_it_is_older_than_the_cache():
    clock = Clock()
    check = CountingCheck(READY, not_ready(ReadyReason.TIMEOUT))
    probe = ReadinessProbe(check, "identity", cache_seconds=5, clock=clock)
    assert probe() == READY
    clock.now += 4.9
    assert probe() == READY and check.calls == 1
    clock.now += 0.2
    assert probe().reason is ReadyReason.TIMEOUT and check.calls == 2
    clock.now += 1
    assert probe().reason is ReadyReason.TIMEOUT and check.calls == 2  # failures are cached too


def test_probes_arriving_together_share_one_check():
    check = CountingCheck(READY, wait=0.1)
    probe = ReadinessProbe(check, "identity", cache_seconds=5)
    threads = [eventlet.spawn(probe) for _ in range(10)]
    assert [thread.wait() for thread in threads] == [READY] * 10
    assert check.calls == 1


def test_a_stopping_service_is_not_ready_without_asking_the_broker():
    check = CountingCheck(READY)
    probe = ReadinessProbe(check, "identity", cache_seconds=0)
    assert probe() == READY
    probe.stop()
    assert probe().reason is ReadyReason.STOPPING and check.calls == 1 and check.closed


# ------------------------------------------------------------------ /readyz


def get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), json.loads(refused.read())


@pytest.fixture
def metrics_port():
    port = free_port()
    metrics.serve_metrics(port)
    yield port
    metrics._readiness.pop(port, None)


def test_readyz_answers_200_when_ready_and_503_with_a_short_reason_when_not(metrics_port):
    answers = iter([READY, not_ready(ReadyReason.DEGRADED, "database")])
    probe = lambda: next(answers)  # noqa: E731
    metrics.register_readiness(metrics_port, probe)
    status, headers, body = get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body) == (200, {"status": "ready", "reason": "ok"})
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    status, _, body = get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body) == (503, {"status": "not_ready", "reason": "degraded", "detail": "database"})
    # liveness is untouched: the worker pools only
    status, _, body = get(f"http://127.0.0.1:{metrics_port}/healthz")
    assert status == 200 and body["status"] == "ok" and "worker_pools" in body
    metrics.unregister_readiness(metrics_port, probe)
    status, _, body = get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body["reason"]) == (404, "no_readiness_check")


def test_readyz_through_the_real_probe_times_out_and_caches(metrics_port):
    """The whole path: HTTP server (green threads), probe cache, the check's deadline."""
    connector = Connector(StubProxy(wait=5.0), StubProxy())
    probe = ReadinessProbe(own_call(connector, timeout=0.3), "identity", cache_seconds=30)
    metrics.register_readiness(metrics_port, probe)
    started = time.monotonic()
    status, _, body = get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body["reason"]) == (503, "timeout") and time.monotonic() - started < 2.0
    status, _, body = get(f"http://127.0.0.1:{metrics_port}/readyz")
    assert (status, body["reason"]) == (503, "timeout") and len(connector.made) == 1  # cached, not asked again


# ------------------------------------------------------------------ names and metrics


def test_the_instance_queue_and_key_are_the_ones_the_broker_grants():
    from services.common import broker_access as B

    grants = B.grants("identity")
    write, read = grants.topics[B.RPC_EXCHANGE]
    queue = instance_queue("identity", INSTANCE)
    assert all(re.search(pattern, queue) for pattern in (grants.configure, grants.write, grants.read))
    assert re.search(write, instance_routing_key("identity", INSTANCE, "health"))
    assert re.search(read, instance_routing_key("identity", INSTANCE, "*"))
    # only health, only its own, and no other service's user may touch it
    assert not re.search(write, instance_routing_key("identity", INSTANCE, "sign_digest"))
    assert not re.search(write, instance_routing_key("signing", INSTANCE, "health"))
    for other in ("signing", "gateway"):
        assert not re.search(B.grants(other).read, queue)
        assert not re.search(B.grants(other).topics[B.RPC_EXCHANGE][0], instance_routing_key("identity", INSTANCE,
                                                                                               "health"))


def test_readiness_checks_are_counted_apart_from_the_rpcs_callers_make():
    assert metrics.entrypoint_kind(InstanceRpc("health")) == "probe"
    from nameko.rpc import Rpc

    assert metrics.entrypoint_kind(Rpc("health")) == "rpc"


def test_every_service_serves_health_on_its_own_queue():
    from services.common.service_base import ServiceBase

    kinds = {type(entrypoint).__name__ for entrypoint in ServiceBase.health.nameko_entrypoints}
    assert kinds == {"EsignRpc", "InstanceRpc"}
