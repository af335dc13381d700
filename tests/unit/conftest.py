"""Unit tests need no server: ``./dev test tests/unit`` runs on a machine with
neither RabbitMQ nor PostgreSQL (the inner loop). Two guards keep it so:

- a unit test that asks for a fixture of tests/conftest.py that starts or
  reaches a server (a vhost, a schema, SeaweedFS, a running container) fails
  and names the fixture;
- a unit test that connects to RabbitMQ's or PostgreSQL's port, or calls
  psycopg2 at all, fails and names the address.

Tests of code that talks to those servers belong in tests/integration/."""
from __future__ import annotations

import socket

import pytest

#: fixtures of tests/conftest.py that need RabbitMQ, PostgreSQL or S3
SERVER_FIXTURES = frozenset({"amqp_uri", "amqp_users", "dispatch_as", "pg_schemas", "db_url_for", "db_backend",
                             "s3", "service_config", "run_container", "rpc_proxy"})
#: AMQP, AMQPS, PostgreSQL
SERVER_PORTS = frozenset({5672, 5671, 5432})


class ServerInUnitTest(AssertionError):
    """A unit test reached for a server."""


def pytest_runtest_setup(item):
    wanted = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if wanted:
        raise ServerInUnitTest(f"{item.nodeid} uses {sorted(wanted)}, which need a server: "
                               "move it to tests/integration/ or stub the neighbour")


def _refuse_servers(connect):
    def guarded(self, address, *args, **kwargs):
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in SERVER_PORTS:
            raise ServerInUnitTest(f"a unit test connected to {address[0]}:{address[1]}: "
                                   "RabbitMQ and PostgreSQL are for tests/integration/")
        if isinstance(address, (str, bytes)) and b".s.PGSQL." in (address if isinstance(address, bytes)
                                                                 else address.encode()):
            raise ServerInUnitTest(f"a unit test connected to PostgreSQL's socket {address!r}")
        return connect(self, address, *args, **kwargs)

    return guarded


@pytest.fixture(autouse=True)
def _no_servers(monkeypatch):
    # eventlet has patched the standard library by now (tests/conftest.py): socket.socket is its green
    # socket, which kombu, amqp and urllib use; psycopg2 connects in C, so it is refused at its door
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _refuse_servers(getattr(socket.socket, name)))
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - psycopg2 is in the lock
        return

    def refused(*args, **kwargs):
        raise ServerInUnitTest("a unit test called psycopg2.connect: PostgreSQL is for tests/integration/")

    monkeypatch.setattr(psycopg2, "connect", refused)
