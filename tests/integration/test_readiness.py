"""Readiness on real RabbitMQ: ``/readyz`` on a service's metrics port is 200 while the
process answers its own ``health`` RPC through the broker (as its own broker user, with
the permissions services/common/broker_access.py grants), and 503 when that RPC cannot
be answered: the process's own queue has no consumer (a sibling consuming the shared
``rpc-<service>`` queue does not count), or the service stopped."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from services.common import metrics
from services.common.readiness import OwnHealthCall, ReadyReason, container_instance
from services.common.s3server import free_port
from services.identity.service import IdentityService
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def probe_calls(service: str) -> float:
    counted = metrics.ENTRYPOINT_CALLS.labels(service=service, entrypoint="health", kind="probe", outcome="ok")
    return counted._value.get()


@pytest.fixture
def identity_config(service_config, tmp_path):
    from tests.support.registry import write_registry

    registry = write_registry(tmp_path / "registry", [("张三", "11010519491231002X", None)])
    port = free_port()
    config = service_config("identity", PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)},
                            METRICS={"PORT": port, "READY_TIMEOUT_SECONDS": 3, "READY_CACHE_SECONDS": 0})
    return config, port


def test_ready_while_the_process_answers_its_own_health_and_not_when_it_cannot(identity_config, run_container):
    config, port = identity_config
    container = run_container(IdentityService, config)
    before = probe_calls("identity")

    def answered_ready():
        status, body = readyz(port)
        return (status, body) if status == 200 else None

    assert (wait_for(answered_ready, timeout=30) or readyz(port)) == (200, {"status": "ready", "reason": "ok"})
    # the answer came through this process's own queue, counted apart from callers' RPCs
    assert probe_calls("identity") >= before + 1
    assert container_instance(container) is not None

    # a process whose own queue has no consumer is not ready, although the service's shared
    # queue rpc-identity is consumed (here by this very container: a sibling would be the same)
    deaf = OwnHealthCall(container.config, "identity", lambda: str(uuid.uuid4()), timeout=3)
    answer = deaf()
    deaf.close()
    assert (answer.ready, answer.reason) == (False, ReadyReason.NOT_CONSUMING), answer

    # stopped: /readyz says so at once; and a check of its queue finds no one consuming it
    check = OwnHealthCall(container.config, "identity", lambda: container_instance(container), timeout=3)
    container.stop()
    assert readyz(port) == (503, {"status": "not_ready", "reason": "stopping"})
    answer = check()
    check.close()
    assert not answer.ready and answer.reason in (ReadyReason.NOT_CONSUMING, ReadyReason.TIMEOUT), answer
