"""The platform's messaging contract, on real RabbitMQ and real databases
(PostgreSQL and SQLite): an event goes out if and only if its change
committed, it is handled exactly once even when delivered twice, and a
publish that fails after the commit is made good by the outbox relay."""
from __future__ import annotations

import uuid
from pathlib import Path

import eventlet
import pytest
from nameko.extensions import DependencyProvider
from sqlalchemy import text

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.errors import Conflict, InternalError, InvalidInput
from services.common.outbox import OUTBOX, envelope
from services.common.reasons import Reason
from services.common.service_base import ServiceBase
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MIGRATIONS = str(Path(__file__).parent / "wiring_migrations")


class ThingMade(events.EventPayload):
    thing_id: str
    value: int


events.register_events("wiring_producer", {"thing_made": ThingMade})


class Producer(ServiceBase):
    name = "wiring_producer"

    @rpc
    def make(self, value: int, fail_after_emit: bool = False) -> str:
        thing_id = str(uuid.uuid4())
        self.db.session.execute(text("INSERT INTO things (id, value) VALUES (:id, :v)"), {"id": thing_id, "v": value})
        self.db.emit("thing_made", ThingMade(thing_id=thing_id, value=value))
        if fail_after_emit:
            raise Conflict(Reason.DOCUMENT_CHANGED, "refused after the event was emitted")
        self.db.commit()
        return thing_id

    @rpc
    def typed(self, name: str, count: int, tags: list[str] | None = None) -> dict:
        return {"name": name, "count": count, "tags": tags or []}

    @rpc
    def crash(self) -> None:
        raise RuntimeError("secret detail 11010519491231002X must not reach the caller")


#: values whose handling collides with a row of the same key (a unique violation, as a concurrent
#: worker's insert causes): value -> how many more times; and how often each value was handled
COLLIDE: dict[int, int] = {}
HANDLED: dict[int, int] = {}


#: (entrypoint, value) of every worker the consumer's container ran for an event
SPAWNED: list[tuple[str, int]] = []


class WorkerCount(DependencyProvider):
    def worker_setup(self, worker_ctx):
        if worker_ctx.entrypoint.method_name == "on_even_thing":
            SPAWNED.append(("on_even_thing", worker_ctx.args[0]["data"]["value"]))


def _even(event: dict) -> bool:
    return event["data"]["value"] % 2 == 0


class Consumer(ServiceBase):
    name = "wiring_consumer"
    spawned = WorkerCount()

    @handles_event("wiring_producer", "thing_made", wanted=_even)
    def on_even_thing(self, event: dict) -> None:
        """Only even values are this handler's business."""

    @handles_event("wiring_producer", "thing_made")
    def on_thing_made(self, event: dict) -> None:
        value = events.parse("thing_made", event["data"]).value
        HANDLED[value] = HANDLED.get(value, 0) + 1
        self.db.session.execute(text("INSERT INTO received (event_id, value) VALUES (:e, :v)"),
                                {"e": event["event_id"], "v": value})
        if COLLIDE.get(value, 0) > 0:
            COLLIDE[value] -= 1
            for _ in range(2):  # the second insert violates things.value's unique key
                self.db.session.execute(text("INSERT INTO things (id, value) VALUES (:id, :v)"),
                                        {"id": str(uuid.uuid4()), "v": value})

    @rpc
    def received(self) -> list[list]:
        rows = self.db.session.execute(text("SELECT event_id, value FROM received ORDER BY id")).all()
        return [[r[0], r[1]] for r in rows]


@pytest.fixture
def pair(service_config, run_container, db_backend):
    producer_config = service_config("wiring_producer", db_backend)
    consumer_config = service_config("wiring_consumer", db_backend)
    producer_config["DATABASE"]["MIGRATIONS"] = MIGRATIONS
    consumer_config["DATABASE"]["MIGRATIONS"] = MIGRATIONS
    consumer = run_container(Consumer, consumer_config)
    producer = run_container(Producer, producer_config)
    return producer, consumer


def test_committed_event_is_handled_exactly_once(pair, rpc_proxy):
    rpc_proxy.wiring_producer.make(value=1)
    received = wait_for(lambda: rpc_proxy.wiring_consumer.received())
    assert [value for _, value in received] == [1]
    eventlet.sleep(1.0)  # a second (wrong) delivery would have arrived by now
    assert len(rpc_proxy.wiring_consumer.received()) == 1


def test_rolled_back_change_sends_no_event(pair, rpc_proxy):
    with pytest.raises(Conflict):
        rpc_proxy.wiring_producer.make(value=2, fail_after_emit=True)
    rpc_proxy.wiring_producer.make(value=3)  # a later committed change is the marker
    received = wait_for(lambda: rpc_proxy.wiring_consumer.received())
    eventlet.sleep(0.5)
    assert [value for _, value in rpc_proxy.wiring_consumer.received()] == [3]
    producer, _ = pair
    db = producer.config["DATABASE"]
    # the failed call left neither the row nor its outbox entry behind
    from services.common.database import Database

    database = Database(db["URL"], db["SCHEMA"], "wiring_producer")
    with database.session() as session:
        assert session.execute(text("SELECT count(*) FROM things WHERE value = 2")).scalar() == 0
        assert session.execute(OUTBOX.select()).all().__len__() == 1
    database.dispose()
    assert received


def test_database_commit_failure_sends_no_event(pair, rpc_proxy, db_backend):
    """Break the database: a unique violation makes the commit fail."""
    rpc_proxy.wiring_producer.make(value=4)
    with pytest.raises(InternalError):
        rpc_proxy.wiring_producer.make(value=4)  # duplicate value: commit refused
    eventlet.sleep(1.0)
    assert [value for _, value in rpc_proxy.wiring_consumer.received()] == [4]


def test_redelivered_event_is_not_processed_twice(pair, rpc_proxy):
    producer, _ = pair
    from nameko.standalone.events import event_dispatcher

    dispatch = event_dispatcher(producer.config)
    event = envelope("wiring_producer", "thing_made", {"thing_id": "x", "value": 5})
    dispatch("wiring_producer", "thing_made", event)
    dispatch("wiring_producer", "thing_made", event)  # the broker delivers it again
    wait_for(lambda: rpc_proxy.wiring_consumer.received())
    eventlet.sleep(1.0)
    assert rpc_proxy.wiring_consumer.received() == [[event["event_id"], 5]]


def test_publish_failure_after_commit_is_relayed_later(pair, rpc_proxy):
    """Break the broker connection for the producer's publisher: the change
    commits, the immediate publish fails, and the relay publishes it once
    the broker is reachable again."""
    producer, _ = pair
    provider = next(d for d in producer.dependencies if d.attr_name == "db")
    publisher = provider.publisher._publisher
    good_uri = publisher.amqp_uri
    publisher.amqp_uri = "pyamqp://guest:guest@127.0.0.1:1/"  # nothing listens there
    publisher.retry = False
    try:
        rpc_proxy.wiring_producer.make(value=6)
        eventlet.sleep(1.0)
        assert rpc_proxy.wiring_consumer.received() == []  # not published yet
    finally:
        publisher.amqp_uri = good_uri
    received = wait_for(lambda: rpc_proxy.wiring_consumer.received(), timeout=15)
    assert [value for _, value in received] == [6]


def test_rpc_input_errors_are_typed(pair, rpc_proxy):
    proxy = rpc_proxy.wiring_producer
    assert proxy.typed(name="a", count=2) == {"name": "a", "count": 2, "tags": []}
    with pytest.raises(InvalidInput) as missing:
        proxy.typed(name="a")
    assert (missing.value.field, missing.value.rule) == ("count", "required")
    with pytest.raises(InvalidInput) as wrong_type:
        proxy.typed(name="a", count="2")
    assert wrong_type.value.field == "count" and wrong_type.value.rule == "int_type"
    with pytest.raises(InvalidInput) as nested:
        proxy.typed(name="a", count=1, tags=["ok", 3])
    assert nested.value.field == "tags.1"
    with pytest.raises(InvalidInput) as unexpected:
        proxy.typed(name="a", count=1, colour="red")
    assert (unexpected.value.field, unexpected.value.rule) == ("colour", "unexpected")
    with pytest.raises(InvalidInput) as unknown:
        proxy.no_such_method()
    assert (unknown.value.field, unknown.value.rule) == ("method", "unknown_method")


def test_unexpected_failure_reaches_caller_as_reference_only(pair, rpc_proxy):
    with pytest.raises(InternalError) as error:
        rpc_proxy.wiring_producer.crash()
    assert "11010519491231002X" not in str(error.value)
    assert "Traceback" not in str(error.value)
    assert len(error.value.reference) == 12


def test_health_reports_database(pair, rpc_proxy):
    answer = rpc_proxy.wiring_producer.health()
    assert answer["status"] == "ok"
    assert answer["checks"]["database"]["ok"] is True


def test_a_handler_that_lost_a_race_is_run_once_more_and_its_work_kept(pair, rpc_proxy):
    """A unique violation (another worker inserted the same key between this handler's read and its
    insert) rolls the handler back; the event is delivered once more and the handler's work is done
    then. Acknowledged at once, as before, the event's work was lost."""
    COLLIDE[21], HANDLED[21] = 1, 0
    rpc_proxy.wiring_producer.make(value=21)
    received = wait_for(lambda: rpc_proxy.wiring_consumer.received(), timeout=15)
    assert [value for _, value in received] == [21]  # the failed attempt's insert was rolled back
    assert HANDLED[21] == 2


def test_an_event_its_handler_does_not_want_is_acknowledged_without_a_worker(pair, rpc_proxy, amqp_uri):
    """``wanted`` is asked as the message arrives: an odd value gets no worker (no dependencies, no
    database session), an even one does, and neither is left on the queue."""
    from kombu import Connection

    producer, consumer = pair
    SPAWNED.clear()
    for value in (41, 42, 43):
        rpc_proxy.wiring_producer.make(value=value)
    wait_for(lambda: [v for _, v in rpc_proxy.wiring_consumer.received()] == [41, 42, 43] or None, timeout=15)
    eventlet.sleep(0.5)
    assert SPAWNED == [("on_even_thing", 42)]
    consumer.stop()  # a message held unacknowledged would now be ready on the queue again
    with Connection(amqp_uri) as connection:
        queue = "evt-wiring_producer-thing_made--wiring_consumer.on_even_thing"
        _, ready, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
    assert ready == 0


def test_a_handler_that_always_violates_a_key_is_not_retried_for_ever(pair, rpc_proxy):
    COLLIDE[22], HANDLED[22] = 100, 0
    rpc_proxy.wiring_producer.make(value=22)
    wait_for(lambda: HANDLED.get(22, 0) >= 2, timeout=15)
    rpc_proxy.wiring_producer.make(value=23)  # a later event is handled: the queue is not stuck
    received = wait_for(lambda: rpc_proxy.wiring_consumer.received(), timeout=15)
    eventlet.sleep(1.5)  # a third delivery would have come by now (requeued after 1 s)
    assert HANDLED[22] == 2 and [value for _, value in received] == [23]
