"""Two workers of one process writing the same SQLite file (the embedded
default). SQLite's busy handler waits in C, which under eventlet freezes the
whole process: the worker holding the write lock could never commit, and the
other failed with 'database is locked' after the busy timeout (seen in CI).
Writers now wait for each other cooperatively."""
from __future__ import annotations

import time

import eventlet
from sqlalchemy import text

from services.common.database import make_engine


def test_a_second_writer_waits_cooperatively_for_the_first(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    order: list[str] = []

    def slow_writer():
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM t")).scalar()
            conn.execute(text("INSERT INTO t VALUES (1)"))
            order.append("first wrote")
            eventlet.sleep(0.3)  # yields while it holds SQLite's write lock (a reply being sent, an RPC)
        order.append("first committed")

    def second_writer():
        eventlet.sleep(0.05)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0  # reads do not wait
            order.append("second read")
            conn.execute(text("INSERT INTO t VALUES (2)"))
        order.append("second committed")

    started = time.monotonic()
    workers = [eventlet.spawn(slow_writer), eventlet.spawn(second_writer)]
    for worker in workers:
        worker.wait()
    assert order == ["first wrote", "second read", "first committed", "second committed"]
    assert time.monotonic() - started < 5  # not the 30 s busy timeout
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2]
    engine.dispose()


def test_a_rolled_back_or_abandoned_writer_lets_the_next_one_in(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    conn = engine.connect()
    conn.execute(text("INSERT INTO t VALUES (1)"))
    conn.rollback()
    conn.execute(text("INSERT INTO t VALUES (2)"))
    conn.close()  # never committed: the pool's reset ends it
    done = []

    def writer():
        with engine.begin() as other:
            other.execute(text("INSERT INTO t VALUES (3)"))
        done.append(True)

    eventlet.spawn(writer).wait()
    assert done == [True]
    with engine.connect() as check:
        assert check.execute(text("SELECT n FROM t")).scalars().all() == [3]
    engine.dispose()
