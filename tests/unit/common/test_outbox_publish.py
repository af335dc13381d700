"""What follows a commit: the events the transaction emitted go out from memory, in order, and are
marked published in one statement; one the broker refused stays, with those after it, for the relay
(services/common/outbox.py ``publish_committed``). SQLite, a recording publisher."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session

from services.common import events
from services.common.outbox import OUTBOX, OutboxRelay, PublishedMarks, UnitOfWork


class Broker:
    def __init__(self, refuse: set[str] = frozenset()):
        self.refuse = set(refuse)
        self.published: list[str] = []

    def publish(self, envelope: dict) -> None:
        if envelope["event_id"] in self.refuse:
            raise ConnectionResetError("the broker went away")
        self.published.append(envelope["event_id"])


@pytest.fixture
def engine(tmp_path):
    made = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    OUTBOX.metadata.create_all(made)
    yield made
    made.dispose()


def emit_three(unit: UnitOfWork) -> list[str]:
    return [unit.emit(events.DOCUMENT_CREATED, events.DocumentCreated(document_id=f"d{i}", template_id="iou"))
            for i in range(3)]


def published(engine) -> dict[str, bool]:
    with engine.connect() as conn:
        return {row.event_id: row.published_at is not None for row in conn.execute(select(OUTBOX))}


def test_a_commits_events_go_out_in_order_and_are_marked_in_one_statement(engine):
    broker = Broker()
    unit = UnitOfWork(Session(bind=engine), broker, "documents")
    ids = emit_three(unit)
    statements: list[str] = []
    record = lambda conn, cursor, statement, *rest: statements.append(statement.split()[0])  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        unit.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert broker.published == ids
    assert published(engine) == {event_id: True for event_id in ids}
    assert statements.count("UPDATE") == 1 and "SELECT" not in statements, statements
    unit.close()


def test_a_refused_publish_leaves_it_and_the_rest_to_the_relay_in_order(engine):
    first = Broker()
    unit = UnitOfWork(Session(bind=engine), first, "documents")
    ids = emit_three(unit)
    first.refuse = {ids[1]}
    unit.commit()
    unit.close()
    assert first.published == ids[:1]
    assert published(engine) == {ids[0]: True, ids[1]: False, ids[2]: False}

    class Db:
        def session(self):
            return Session(bind=engine)

    relay = OutboxRelay(Db(), Broker(), grace_seconds=0)
    assert relay.run_once() == 2 and relay.publisher.published == ids[1:]
    assert published(engine) == {event_id: True for event_id in ids}


def test_a_row_the_relay_published_meanwhile_keeps_its_time(engine):
    broker = Broker()
    unit = UnitOfWork(Session(bind=engine), broker, "documents")
    [event_id, *_] = emit_three(unit)
    unit.session.flush()
    earlier = dt.datetime(2026, 1, 1)
    unit.session.execute(OUTBOX.update().where(OUTBOX.c.event_id == event_id).values(published_at=earlier))
    unit.commit()
    unit.close()
    with engine.connect() as conn:
        assert conn.execute(select(OUTBOX.c.published_at).where(OUTBOX.c.event_id == event_id)).scalar_one() == earlier


def test_the_relay_keeps_off_a_workers_events_until_its_claim_runs_out(engine):
    """A worker that died between its commit and its publish: its events wait out the claim it took
    in the transaction (WORKER_CLAIM_SECONDS), then the relay publishes them; never both at once."""
    dead = UnitOfWork(Session(bind=engine), Broker(), "documents", background=lambda *args: None,
                      sessions=lambda: Session(bind=engine))  # the follow-up never runs
    ids = emit_three(dead)
    dead.commit()
    dead.close()

    class Db:
        def session(self):
            return Session(bind=engine)

    relay = OutboxRelay(Db(), Broker(), grace_seconds=0)
    assert relay.run_once() == 0 and relay.publisher.published == []  # claimed by the worker
    with engine.begin() as conn:  # WORKER_CLAIM_SECONDS later
        conn.execute(OUTBOX.update().values(claimed_until=dt.datetime(2000, 1, 1)))
    assert relay.run_once() == 3 and relay.publisher.published == ids
    assert published(engine) == {event_id: True for event_id in ids}


def counting(engine) -> list[str]:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: statements.append(statement.split()[0]))
    return statements


def test_events_published_after_commits_are_marked_in_one_batch_for_all_of_them(engine):
    """Five commits' events, published beside their workers, are marked by one transaction of the
    process's PublishedMarks, not one each; until then each row stays claimed, so the relay keeps off."""
    broker = Broker()
    marks = PublishedMarks(lambda: Session(bind=engine))
    ids = []
    for _ in range(5):
        unit = UnitOfWork(Session(bind=engine), broker, "documents", background=lambda f, *a: f(*a),
                          sessions=lambda: Session(bind=engine), marks=marks)
        ids += emit_three(unit)
        unit.commit()
        unit.close()
    assert broker.published == ids and len(marks) == 15
    assert published(engine) == {event_id: False for event_id in ids}

    class Db:
        def session(self):
            return Session(bind=engine)

    relay = OutboxRelay(Db(), Broker(), grace_seconds=0)
    assert relay.run_once() == 0  # claimed still: not published twice

    statements = counting(engine)
    assert marks.flush() == 15
    assert statements.count("UPDATE") == 1, statements
    assert published(engine) == {event_id: True for event_id in ids}
    assert marks.flush() == 0 and len(marks) == 0


def test_a_batch_the_database_refused_is_kept_for_the_next(engine):
    broker = Broker()
    marks = PublishedMarks(lambda: Session(bind=engine))
    unit = UnitOfWork(Session(bind=engine), broker, "documents", background=lambda f, *a: f(*a),
                      sessions=lambda: Session(bind=engine), marks=marks)
    ids = emit_three(unit)
    unit.commit()
    unit.close()

    def refuse(conn, cursor, statement, *rest):
        if statement.startswith("UPDATE"):
            raise ConnectionResetError("the database went away")

    event.listen(engine, "before_cursor_execute", refuse)
    with pytest.raises(ConnectionResetError):
        marks.flush()
    event.remove(engine, "before_cursor_execute", refuse)
    assert len(marks) == 3 and published(engine) == {event_id: False for event_id in ids}
    marks.stop()  # stopping marks what waits
    assert published(engine) == {event_id: True for event_id in ids}


def test_a_refused_publish_is_handed_back_at_once_even_with_batched_marks(engine):
    """What went out before the refusal is marked, what did not is handed back, in the follow-up's own
    transaction: the relay must not wait out the claim for those."""
    broker = Broker()
    marks = PublishedMarks(lambda: Session(bind=engine))
    unit = UnitOfWork(Session(bind=engine), broker, "documents", background=lambda f, *a: f(*a),
                      sessions=lambda: Session(bind=engine), marks=marks)
    ids = emit_three(unit)
    broker.refuse = {ids[2]}
    unit.commit()
    unit.close()
    assert len(marks) == 0
    assert published(engine) == {ids[0]: True, ids[1]: True, ids[2]: False}
    with engine.connect() as conn:
        assert conn.execute(select(OUTBOX.c.claimed_until).where(OUTBOX.c.event_id == ids[2])).scalar_one() is None
