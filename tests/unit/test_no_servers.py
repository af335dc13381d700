"""The guard of tests/unit/conftest.py: a unit test cannot reach RabbitMQ or
PostgreSQL, through the libraries the services use to reach them."""
from __future__ import annotations

import socket

import pytest
from kombu import Connection
from sqlalchemy import create_engine, text

from tests.unit.conftest import ServerInUnitTest


def test_a_connection_to_rabbitmqs_port_is_refused_by_name():
    with pytest.raises(ServerInUnitTest, match="127.0.0.1:5672"):
        socket.create_connection(("127.0.0.1", 5672), timeout=2)
    with pytest.raises(ServerInUnitTest), Connection("pyamqp://guest:guest@127.0.0.1:5672//",
                                                     connect_timeout=2) as connection:
        connection.ensure_connection(max_retries=1)


def test_postgresql_is_refused_over_tcp_and_over_its_socket():
    with pytest.raises(ServerInUnitTest, match="psycopg2"), \
            create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test").connect() as connection:
        connection.execute(text("SELECT 1"))
    unix = socket.socket(socket.AF_UNIX)
    with pytest.raises(ServerInUnitTest, match="PGSQL"):
        unix.connect("/var/run/postgresql/.s.PGSQL.5432")
    unix.close()


def test_other_ports_are_not_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()
