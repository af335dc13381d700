"""Transactional outbox: an event is published if and only if the database
change that announced it committed.

A worker emits events into the ``outbox`` table inside its own transaction,
each row claimed for that worker (``WORKER_CLAIM_SECONDS``). After the commit
the unit of work publishes them at once, from memory, and marks them published
in one statement; a relay running in every replica publishes whatever is left
(the broker was down: the worker hands the rows back at once; the process died
between commit and publish: when its claim runs out). The relay claims a row
before it publishes it, so two replicas do not race for it; a claim that
outlives its holder expires.
Delivery is therefore at least once, and handlers are idempotent by
``event_id`` (the ``processed_events`` table).

Envelope of every event::

    {"event_id": uuid, "event_type": str, "source": service,
     "occurred_at": ISO-8601 UTC, "data": {...}}

``data`` is the event's payload (:mod:`services.common.events`). An emitter may add
members saying what it already did with the event (:meth:`UnitOfWork.emit_event`:
signing's ``logged_with_change``, a flow event whose evidence leaf its transaction
queued).

Events of one commit are published in the order they were emitted, but each event type
has its own handler queue, so a consumer must not rely on two events reaching it in order.
"""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import eventlet
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.common.clock import utcnow
from services.common.database import dialect_insert
from services.common.events import KNOWN_EVENTS, EventPayload, data_of

log = logging.getLogger(__name__)

CLAIM_SECONDS = 30
#: how long the worker that emitted an event has it to itself, from the emit: its transaction and the
#: publish after the commit (a longer transaction's event may go out twice, which handlers absorb);
#: also how late the relay publishes what a worker that died after its commit did not
WORKER_CLAIM_SECONDS = 10


def _outbox_columns() -> list:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("event_type", String(64), nullable=False),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("claimed_until", DateTime, nullable=True),
        Column("published_at", DateTime, nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("last_error", String(200), nullable=True),
    ]


def _processed_columns() -> list:
    return [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
        Column("handler", String(100), nullable=False),
        Column("processed_at", DateTime, nullable=False),
        UniqueConstraint("event_id", "handler", name="uq_processed_event_handler"),
    ]


def define_outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The ``outbox`` and ``processed_events`` tables on ``metadata``."""
    return (Table("outbox", metadata, *_outbox_columns()),
            Table("processed_events", metadata, *_processed_columns()))


def create_outbox_tables(op) -> None:
    """For a service's first Alembic migration."""
    op.create_table("outbox", *_outbox_columns())
    op.create_table("processed_events", *_processed_columns())
    op.create_index("ix_outbox_unpublished", "outbox", ["published_at", "id"])


# The same table definitions serve every service: each service's database
# (or PostgreSQL schema) has its own copy, created by its first migration.
OUTBOX, PROCESSED = define_outbox_tables(MetaData())


# Built once: a statement built for each call costs a service more CPU than its round trip to the
# database (bench/sql_statement.py), and these run for every event emitted and handled.
_EMIT = OUTBOX.insert()
_MARK = PROCESSED.insert()
_MARK_UNLESS_MARKED: dict[str, Any] = {}


def _mark_unless_marked(session: Session):
    """``INSERT INTO processed_events ... ON CONFLICT DO NOTHING`` in the session's dialect, built once each."""
    dialect = session.get_bind().dialect.name
    statement = _MARK_UNLESS_MARKED.get(dialect)
    if statement is None:
        statement = _MARK_UNLESS_MARKED[dialect] = dialect_insert(session)(PROCESSED).on_conflict_do_nothing(
            index_elements=["event_id", "handler"])
    return statement


def envelope(source: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "source": source,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "data": data,
    }


class OutboxPublisher:
    """Publishes event envelopes to the service's nameko event exchange, with
    publisher confirms so a failure raises instead of losing the message."""

    def __init__(self, config: dict[str, Any], service: str):
        from nameko.amqp.publish import Publisher
        from nameko.constants import AMQP_URI_CONFIG_KEY
        from nameko.events import get_event_exchange

        self.service = service
        self.exchange = get_event_exchange(service, config)
        self._publisher = Publisher(
            config[AMQP_URI_CONFIG_KEY],
            declare=[self.exchange],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    #: a publish whose broker vanished mid-confirm can wait for ever; then it fails and is retried
    TIMEOUT_SECONDS = 10

    def publish(self, event: dict[str, Any]) -> None:
        with eventlet.Timeout(self.TIMEOUT_SECONDS, TimeoutError("publish: no confirm from the broker")):
            self._publisher.publish(event, exchange=self.exchange, routing_key=event["event_type"])


class UnitOfWork:
    """What a worker gets from :class:`~services.common.database.DatabaseProvider`:
    a SQLAlchemy session (``.session``) and ``emit`` for events that must go
    out exactly when the session's changes commit."""

    def __init__(self, session: Session, publisher: OutboxPublisher, service: str,
                 background: Callable[..., Any] | None = None, sessions: Callable[[], Session] | None = None,
                 marks: "PublishedMarks | None" = None):
        self.session = session
        self.publisher = publisher
        self.service = service
        #: with ``background`` (e.g. ``eventlet.spawn_n``) and ``sessions``, what follows a commit
        #: (publishing its events, the after-commit steps) runs beside the caller, on a session of
        #: its own, so an RPC answers without waiting for the broker's confirms
        self._background = background if sessions is not None else None
        self._sessions = sessions
        #: with ``marks``, events published after a commit in the background are marked published by
        #: the process's batches (:class:`PublishedMarks`), not one transaction per commit
        self._marks = marks if self._background is not None else None
        self._pending: list[dict[str, Any]] = []  # the envelopes this transaction emitted
        self._before_commit: list[Callable[[Session], None]] = []
        self._after_commit: list[Callable[[], None]] = []

    def before_commit(self, hook: Callable[[Session], None]) -> None:
        """Run ``hook(session)`` as the last step of the next commit's transaction;
        if it raises, nothing commits."""
        self._before_commit.append(hook)

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` once the next commit succeeded: best effort (a failure is
        logged), so only for work that something else finishes when it is lost."""
        self._after_commit.append(hook)

    def new_session(self) -> Session:
        """A session of its own, for work beside this unit's (after its commit, say)."""
        return self._sessions() if self._sessions is not None else Session(bind=self.session.get_bind())

    def emit(self, event_type: str, payload: EventPayload) -> str:
        """Record an event in the current transaction; returns its event id. ``payload``
        is of the type the event declares (:data:`~services.common.events.PAYLOADS`), or
        :class:`~services.common.events.PayloadMismatch`: no member the type lacks goes out."""
        return self.emit_event(event_type, payload)["event_id"]

    def emit_event(self, event_type: str, payload: EventPayload, **marks: Any) -> dict[str, Any]:
        """:meth:`emit`, returning the envelope as it will be sent; ``marks``: members of the
        envelope beside its data (what the emitting service already did with the event)."""
        if event_type not in KNOWN_EVENTS.get(self.service, ()):
            raise ValueError(f"{self.service} does not emit {event_type!r}")
        event = {**envelope(self.service, event_type, data_of(event_type, payload)), **marks}
        moment = utcnow()
        self.session.execute(_EMIT, {
            "event_id": event["event_id"],
            "event_type": event_type,
            "payload": json.dumps(event, ensure_ascii=False, sort_keys=True),
            "created_at": moment,
            # claimed by this worker, which publishes it after the commit (publish_committed):
            # the relay takes it only if that has not happened when the claim runs out
            "claimed_until": moment + timedelta(seconds=WORKER_CLAIM_SECONDS),
            "attempts": 1,
        })
        self._pending.append(event)
        return event

    def commit(self) -> None:
        """Commit (with the :meth:`before_commit` steps), then publish the events
        this transaction emitted, then run the :meth:`after_commit` steps.

        A publish failure is logged and left to the relay: the change is
        committed, so the event must (and will) go out later.
        """
        before, self._before_commit = self._before_commit, []
        after, self._after_commit = self._after_commit, []
        for hook in before:
            hook(self.session)
        self.session.commit()
        pending, self._pending = self._pending, []
        if self._background is not None and (pending or after):
            self._background(self._follow_up, pending, after)
            return
        try:
            if pending:
                publish_committed(self.session, self.publisher, pending)
        finally:
            _run_after(after)

    def _follow_up(self, pending: list[dict[str, Any]], after: list[Callable[[], None]]) -> None:
        """Publish a committed transaction's events and run its after-commit steps, beside
        the worker that committed it. Anything not done here the relay (events) or the
        reconcilers (after-commit steps) finish: the commit is what made them owed."""
        try:
            if pending:
                session = self._sessions()
                try:
                    publish_committed(session, self.publisher, pending, self._marks)
                finally:
                    session.close()
        except Exception as exc:  # noqa: BLE001 - committed already; the relay publishes it
            log.warning("outbox: publishing after a commit failed (%s); the relay will", type(exc).__name__)
        finally:
            _run_after(after)

    def rollback(self) -> None:
        self.session.rollback()
        self._pending = []
        self._before_commit, self._after_commit = [], []

    # -- idempotent event handling -------------------------------------
    def already_processed(self, event_id: str, handler: str) -> bool:
        row = self.session.execute(
            select(PROCESSED.c.id).where(
                PROCESSED.c.event_id == event_id, PROCESSED.c.handler == handler
            )
        ).first()
        return row is not None

    def mark_processed(self, event_id: str, handler: str) -> None:
        self.session.execute(_MARK, {"event_id": event_id, "handler": handler, "processed_at": utcnow()})

    def mark_processed_first(self, event_id: str, handler: str) -> bool:
        """Mark the event processed by ``handler`` in the current transaction, unless a mark is
        there; whether this call made it. A second delivery handled at the same moment waits on the
        first's row until that commits, then finds it."""
        return self.session.execute(_mark_unless_marked(self.session), {
            "event_id": event_id, "handler": handler, "processed_at": utcnow()}).rowcount == 1

    def close(self) -> None:
        self.session.close()


def _run_after(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - committed already; what the hook did not do is finished later
            log.exception("after-commit step failed; its reconciler finishes it")


def publish_committed(session: Session, publisher: OutboxPublisher, events: list[dict[str, Any]],
                      marks: "PublishedMarks | None" = None) -> int:
    """The events a worker's transaction has just committed, published from memory in their
    order, then marked published in one statement, or handed to ``marks`` to be marked in its next
    batch; how many went out. They were claimed for this worker in the transaction itself
    (:meth:`UnitOfWork.emit`), so the relay keeps off them (a claim after the commit was a
    transaction, a read and another transaction per event). A failed publish hands it and the rest
    back to the relay at once, in order; a worker that dies before publishing leaves them to the
    relay when their claim runs out (``WORKER_CLAIM_SECONDS``)."""
    sent: list[str] = []
    for event in events:
        try:
            publisher.publish(event)
        except Exception as exc:  # noqa: BLE001 - broker down, connection reset: the relay retries
            log.warning("outbox: publishing %s failed (%s); the relay will retry", event["event_id"],
                        type(exc).__name__)
            break
        sent.append(event["event_id"])
    unsent = [event["event_id"] for event in events[len(sent):]]
    if sent and marks is not None and not unsent:
        marks.add(sent)
        return len(sent)
    if sent:
        mark_published(session, sent)
    if unsent:
        session.execute(update(OUTBOX).where(OUTBOX.c.event_id.in_(unsent), OUTBOX.c.published_at.is_(None))
                        .values(claimed_until=None, last_error="publish failed after commit"))
    if sent or unsent:
        session.commit()
    return len(sent)


def mark_published(session: Session, event_ids: list[str]) -> None:
    """Record that these events went out (not committed); a row the relay marked meanwhile keeps its time."""
    session.execute(update(OUTBOX).where(OUTBOX.c.event_id.in_(event_ids), OUTBOX.c.published_at.is_(None))
                    .values(published_at=utcnow(), claimed_until=None))


class PublishedMarks:
    """Marks the events a process published after its commits in batches: one transaction every
    ``interval`` for all of them, where each commit took a transaction of its own (a BEGIN, an
    UPDATE and a COMMIT for every commit that emitted an event: 40 statements of a complete IOU
    flow's 400, bench/full_flow.py --sql-trace).

    Nothing is lost by waiting: each row stays claimed for the worker that emitted it
    (``WORKER_CLAIM_SECONDS``, far longer than ``interval``), so the relay keeps off it meanwhile.
    If the process dies before the batch commits, the relay publishes those events again once their
    claims run out, which handlers absorb (at least once, idempotent by ``event_id``), as for a
    process that died between its commit and its publish. A batch the database refused is kept for
    the next (up to ``KEEP``; past that the oldest are left to the relay)."""

    KEEP = 10_000
    #: event ids per UPDATE
    CHUNK = 500

    def __init__(self, sessions: Callable[[], Session], interval: float = 0.5):
        self._sessions = sessions
        self.interval = interval
        self._ids: list[str] = []
        self._running = False

    def add(self, event_ids: list[str]) -> None:
        self._ids.extend(event_ids)

    def __len__(self) -> int:
        return len(self._ids)

    def flush(self) -> int:
        """Mark what is waiting, in one transaction; how many were marked."""
        ids, self._ids = self._ids, []
        if not ids:
            return 0
        session = self._sessions()
        try:
            for start in range(0, len(ids), self.CHUNK):
                mark_published(session, ids[start:start + self.CHUNK])
            session.commit()
        except Exception:
            session.rollback()
            self._ids = (ids + self._ids)[-self.KEEP:]
            raise
        finally:
            session.close()
        return len(ids)

    def run(self) -> None:
        self._running = True
        while self._running:
            eventlet.sleep(self.interval)
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the database briefly away: the next round
                log.warning("outbox: marking %d published events failed (%s); next round", len(self),
                            type(exc).__name__)

    def stop(self, flush: bool = True) -> None:
        """Stop the rounds and (``flush``) mark what is waiting."""
        self._running = False
        if not flush:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - stopping: the relay publishes them again
            log.warning("outbox: marking published events at stop failed (%s); the relay will publish them again",
                        type(exc).__name__)


def publish_one(session: Session, publisher: OutboxPublisher, event_id: str) -> bool:
    """Claim one outbox row, publish it, mark it published. Returns True when
    this call published it. Safe to race with the relay of another replica."""
    now = utcnow()
    claimed = session.execute(
        update(OUTBOX)
        .where(
            OUTBOX.c.event_id == event_id,
            OUTBOX.c.published_at.is_(None),
            or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now),
        )
        .values(claimed_until=now + timedelta(seconds=CLAIM_SECONDS), attempts=OUTBOX.c.attempts + 1)
    ).rowcount
    session.commit()
    if claimed != 1:
        return False
    payload = session.execute(select(OUTBOX.c.payload).where(OUTBOX.c.event_id == event_id)).scalar_one()
    try:
        publisher.publish(json.loads(payload))
    except Exception as exc:  # broker down, connection reset: keep for the relay
        log.warning("outbox: publishing %s failed (%s); the relay will retry", event_id, type(exc).__name__)
        session.execute(
            update(OUTBOX)
            .where(OUTBOX.c.event_id == event_id)
            .values(claimed_until=None, last_error=type(exc).__name__[:200])
        )
        session.commit()
        return False
    session.execute(
        update(OUTBOX).where(OUTBOX.c.event_id == event_id).values(published_at=utcnow(), claimed_until=None)
    )
    session.commit()
    return True


class OutboxRelay:
    """Publishes committed-but-unpublished events; runs in every replica."""

    def __init__(self, db, publisher: OutboxPublisher, interval: float = 1.0, grace_seconds: float = 2.0):
        self.db = db
        self.publisher = publisher
        self.interval = interval
        # Rows younger than this are left alone. A worker's own rows are kept from the relay by their
        # claim (emit_event) already; the grace still spaces the first retry of a row handed back
        # after a failed publish from its creation.
        self.grace = timedelta(seconds=grace_seconds)
        self._running = False

    def pending_ids(self, session: Session, limit: int = 100) -> list[str]:
        now = utcnow()
        rows = session.execute(
            select(OUTBOX.c.event_id)
            .where(
                and_(
                    OUTBOX.c.published_at.is_(None),
                    OUTBOX.c.created_at < now - self.grace,
                    or_(OUTBOX.c.claimed_until.is_(None), OUTBOX.c.claimed_until < now),
                )
            )
            .order_by(OUTBOX.c.id)
            .limit(limit)
        ).scalars()
        return list(rows)

    def run_once(self) -> int:
        published = 0
        with self.db.session() as session:
            for event_id in self.pending_ids(session):
                if publish_one(session, self.publisher, event_id):
                    published += 1
                else:
                    break  # broker still down: try again next round, in order
        return published

    def run(self) -> None:
        self._running = True
        while self._running:
            try:
                self.run_once()
            except Exception as exc:  # database briefly away: next round
                log.warning("outbox relay round failed: %s", type(exc).__name__)
            eventlet.sleep(self.interval)

    def stop(self) -> None:
        self._running = False
