"""What one SQL statement costs a service in CPU, by the layer it goes through.

Under the full-flow load most of identity's, notify's and signing's CPU is SQL (bench/README.md), while
PostgreSQL executes a flow's statements in about 30 ms. This measures the client side: one read of
one row by its primary key (and one INSERT), on this machine's PostgreSQL, with eventlet monkey-patched and psycopg2
green as in the services, through each layer the platform's code uses:

- psycopg2's cursor, inside one transaction (the floor: one round trip, no SQLAlchemy);
- SQLAlchemy Core on a connection, the statement built once and bound per call, then built per call;
- the ORM in an open session: ``select(Entity)`` built once, then built per call (as the services
  write it);
- a unit of work as a read-only RPC has one: a session, BEGIN, ``Session.get``, ROLLBACK;
- an INSERT of one row (the outbox's, the processed mark's), built per call and built once.

CPU time (``time.process_time``) per call, the median of ``--repeats`` runs of ``--calls`` calls,
and each against the floor in the same run. The table lives in a schema of its own, dropped after.

    .venv/bin/python bench/sql_statement.py [--calls 2000] [--repeats 5] [--url postgresql://...]
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, select, text  # noqa: E402
from sqlalchemy.orm import DeclarativeBase, Session  # noqa: E402

from services.common.database import ensure_schema, make_engine  # noqa: E402

DEFAULT_URL = os.environ.get("ESIGN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def cpu_per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median CPU microseconds per call over ``repeats`` runs (after a warm-up)."""
    for _ in range(min(50, calls)):
        fn()
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        for _ in range(calls):
            fn()
        runs.append((time.process_time() - started) / calls * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--url", default=DEFAULT_URL, help="a PostgreSQL database to make a scratch schema in")
    args = parser.parse_args()

    schema = "bench_sql_" + secrets.token_hex(4)
    ensure_schema(args.url, schema)
    engine = make_engine(args.url, schema, pool_size=2)
    metadata = MetaData()
    people = Table("people", metadata, Column("id", String(36), primary_key=True), Column("name", String(100)),
                   Column("status", String(20)), Column("level", Integer))

    class Base(DeclarativeBase):
        pass

    class Person(Base):
        __table__ = people

    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(people.insert(), [{"id": f"p{i}", "name": "王小明" * 4, "status": "active", "level": i % 3}
                                           for i in range(100)])
        session = Session(engine)
        session.execute(text("SELECT 1"))  # a transaction open for the in-transaction rows
        connection = session.connection()
        raw = connection.connection.dbapi_connection
        core_prebuilt = select(people).where(people.c.id == bindparam("id"))
        orm_prebuilt = select(Person).where(Person.id == bindparam("id"))

        def raw_read():
            cursor = raw.cursor()
            cursor.execute("SELECT id, name, status, level FROM people WHERE id = %s", ("p5",))
            cursor.fetchall()
            cursor.close()

        def unit_of_work_get():
            with Session(engine) as own:
                own.get(Person, "p5")

        written = iter(range(10**9))
        insert_prebuilt = people.insert()

        def insert_built():
            connection.execute(people.insert().values(id=f"w{next(written)}", name="李四", status="active", level=1))

        def insert_bound():
            connection.execute(insert_prebuilt, {"id": f"w{next(written)}", "name": "李四", "status": "active",
                                                 "level": 1})

        rows = [
            ("psycopg2 cursor (the floor)", raw_read),
            ("Core, statement built once", lambda: connection.execute(core_prebuilt, {"id": "p5"}).one()),
            ("Core, statement built per call", lambda: connection.execute(
                select(people).where(people.c.id == "p5")).one()),
            ("ORM, select(Entity) built once", lambda: session.execute(orm_prebuilt, {"id": "p5"}).scalar_one()),
            ("ORM, select(Entity) built per call", lambda: session.execute(
                select(Person).where(Person.id == "p5")).scalar_one()),
            ("ORM, a unit of work: BEGIN, Session.get, ROLLBACK", unit_of_work_get),
            ("Core INSERT, built per call (.values)", insert_built),
            ("Core INSERT, built once, bound per call", insert_bound),
        ]
        figures = [(label, cpu_per_call(fn, args.calls, args.repeats)) for label, fn in rows]
        session.rollback()
        session.close()
    finally:
        engine.dispose()
        cleanup = make_engine(args.url)
        with cleanup.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        cleanup.dispose()

    floor = figures[0][1]
    print(f"CPU per statement (median of {args.repeats} x {args.calls} calls), {os.cpu_count()} cores")
    print(f"  {'':<52} {'us':>8} {'/ floor':>8}")
    for label, micros in figures:
        print(f"  {label:<52} {micros:8.1f} {micros / floor:8.2f}")
    built, prebuilt = figures[4][1], figures[3][1]
    print(f"ORM built per call / psycopg2 = {built / floor:.2f}; built per call / built once = {built / prebuilt:.2f}; "
          f"INSERT built per call / built once = {figures[6][1] / figures[7][1]:.2f}")


if __name__ == "__main__":
    main()
