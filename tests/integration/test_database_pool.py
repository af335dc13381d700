"""services/common/database.py on a real PostgreSQL: a pooled connection is pinged before
use only after it sat idle; a dead one found so is replaced unseen, and one that died
within the idle window fails one statement, after which the pool is fresh."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from services.common import database
from tests.conftest import PG_URL


@pytest.fixture
def pings(monkeypatch) -> list[float]:
    """When each ping ran."""
    seen: list[float] = []
    real = database._ping

    def counted(dbapi_conn) -> None:
        seen.append(time.monotonic())
        real(dbapi_conn)

    monkeypatch.setattr(database, "_ping", counted)
    return seen


def _engine(monkeypatch, idle_seconds: float):
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", idle_seconds)
    return database.make_engine(PG_URL, pool_size=1, max_overflow=0)


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pid: int) -> None:
    """What a database restart does to one connection: its server process ends."""
    other = database.make_engine(PG_URL, pool_size=1, max_overflow=0)
    try:
        with other.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        other.dispose()


def test_a_connection_back_in_use_at_once_is_not_pinged(monkeypatch, pings):
    engine = _engine(monkeypatch, 5.0)
    dialect_pings = []  # SQLAlchemy's own pre-ping (pool_pre_ping=True) would ping through here
    monkeypatch.setattr(engine.dialect, "do_ping", lambda dbapi_conn: dialect_pings.append(1) or True)
    try:
        pids = {_backend_pid(engine) for _ in range(20)}
        assert len(pids) == 1  # one pooled connection, reused
        assert pings == [] and dialect_pings == []  # made just now, then back within the window each time
    finally:
        engine.dispose()


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced_unseen(monkeypatch, pings):
    engine = _engine(monkeypatch, 0.2)
    try:
        first = _backend_pid(engine)
        time.sleep(0.3)
        assert _backend_pid(engine) == first and len(pings) == 1  # idle: pinged, alive, kept
        _terminate(first)
        time.sleep(0.3)
        second = _backend_pid(engine)  # the ping found it dead: the pool made another, no error
        assert second != first and len(pings) == 2
    finally:
        engine.dispose()


def test_a_connection_dead_within_the_window_fails_one_statement_then_the_pool_is_fresh(monkeypatch, pings):
    engine = _engine(monkeypatch, 60.0)
    try:
        first = _backend_pid(engine)
        _terminate(first)
        with pytest.raises(OperationalError) as failed:
            _backend_pid(engine)
        assert failed.value.connection_invalidated  # SQLAlchemy saw a disconnect, not a failed statement
        assert _backend_pid(engine) != first
        assert pings == []
    finally:
        engine.dispose()


def test_a_service_keeps_as_many_connections_as_its_workers_use_at_once():
    """Twelve checkouts at once, as a busy service's workers and its after-commit publishes make,
    then twelve again: the second round opens no server process (SQLAlchemy's default pool of 5
    closed seven of them on return and opened seven new ones next time)."""
    from sqlalchemy import event

    from services.common.database import POOL_HEADROOM, Database

    db = Database(PG_URL, None, "pool_test", pool_size=10 + POOL_HEADROOM)  # max_workers 10
    opened = []
    event.listen(db.engine, "connect", lambda *_: opened.append(1))
    try:
        for _ in range(2):
            held = [db.engine.connect() for _ in range(12)]
            pids = {c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in held}
            for connection in held:
                connection.close()
        assert len(pids) == 12 and len(opened) == 12
    finally:
        db.dispose()


def test_the_pool_size_is_a_setting_and_a_bad_one_names_itself():
    from services.common.database import Database
    from services.common.errors import InvalidInput

    db = Database.from_config({"DATABASE": {"URL": PG_URL, "POOL_SIZE": "7"}}, "pool_test", pool_size=15)
    try:
        assert db.engine.pool.size() == 7
    finally:
        db.dispose()
    db = Database.from_config({"DATABASE": {"URL": PG_URL, "POOL_SIZE": ""}}, "pool_test", pool_size=15)
    try:
        assert db.engine.pool.size() == 15  # empty: the service's own (max_workers + 5)
    finally:
        db.dispose()
    with pytest.raises(InvalidInput) as refused:
        Database.from_config({"DATABASE": {"URL": PG_URL, "POOL_SIZE": "many"}}, "pool_test")
    assert refused.value.field == "database.pool_size"
    cleanup = database.make_engine(PG_URL)
    try:
        with cleanup.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS pool_test CASCADE"))
    finally:
        cleanup.dispose()
