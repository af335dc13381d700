"""What a service does when the broker or the database goes away under a worker
(tests/reliability injects those faults into running processes; these pin the rules)."""
from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from services.common.entrypoints import SurvivingQueueConsumer, to_typed_error
from services.common.errors import InternalError, Unavailable


def _raised(exc: BaseException):
    """The exc_info a worker hands over."""
    import sys

    try:
        raise exc
    except BaseException:
        return sys.exc_info()


class _Message:
    delivery_info = {"routing_key": "signing.sign"}

    def __init__(self, error: BaseException | None):
        self.error = error
        self.acked = False

    def ack(self):
        if self.error:
            raise self.error
        self.acked = True


@pytest.mark.parametrize("orig", [psycopg2.OperationalError("server closed the connection unexpectedly"),
                                  psycopg2.OperationalError("connection refused")])
def test_a_database_that_went_away_is_unavailable_not_an_internal_error(orig):
    typed = to_typed_error(_raised(OperationalError("SELECT 1", {}, orig)), "signing.sign")
    assert typed[0] is Unavailable and typed[1].system == "database"
    assert typed[1].retry_after


def test_an_invalidated_connection_is_unavailable():
    error = OperationalError("SELECT 1", {}, psycopg2.OperationalError("reset"), connection_invalidated=True)
    assert to_typed_error(_raised(error), "signing.sign")[0] is Unavailable


def test_a_broken_query_is_still_an_internal_error():
    error = ProgrammingError("SELECT nonsense", {}, psycopg2.ProgrammingError("syntax error"))
    typed = to_typed_error(_raised(error), "signing.sign")
    assert typed[0] is InternalError


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError()])
def test_an_ack_on_a_lost_connection_is_logged_not_raised(error, caplog):
    """nameko let this kill the whole container while the process stayed up, deaf."""
    message = _Message(error)
    SurvivingQueueConsumer._settle(lambda m: m.ack(), message, "ack")
    assert "broker connection lost" in caplog.text


def test_other_ack_errors_still_raise():
    with pytest.raises(ValueError):
        SurvivingQueueConsumer._settle(lambda m: m.ack(), _Message(ValueError("bug")), "ack")


def test_a_session_that_cannot_close_does_not_end_the_service(caplog):
    """Seen in tests/reliability: PostgreSQL restarted, a worker's session rolled back on the dropped
    connection in its teardown, and nameko ended the signing container over it."""
    from types import SimpleNamespace

    from services.common.database import DatabaseProvider

    class DeadSession:
        invalidated = False

        def invalidate(self):
            self.invalidated = True

    class Unit:
        session = DeadSession()

        def close(self):
            raise OperationalError("ROLLBACK", {}, psycopg2.OperationalError("server closed the connection"))

    provider = DatabaseProvider()
    provider.container = SimpleNamespace(service_name="signing")
    provider.units["worker"] = Unit()
    provider.worker_teardown("worker")
    assert Unit.session.invalidated and "closing a worker's session failed" in caplog.text
    assert provider.units == {}


def test_an_rpc_answer_is_published_without_waiting_for_a_confirm(monkeypatch):
    """The answer's publisher asks for no confirms (its caller's reply queue dies with its connection,
    so a confirm guards nothing); the answer still goes to reply_to with the correlation id, then the
    request is acked."""
    import contextlib
    from types import SimpleNamespace

    import nameko.amqp.publish as publish

    from services.common.entrypoints import EsignRpcConsumer

    producers, published, acked = [], [], []

    class Producer:
        def publish(self, payload, **kwargs):
            published.append((payload, kwargs))

    @contextlib.contextmanager
    def get_producer(amqp_uri, confirms=True, ssl=None, login_method=None, transport_options=None):
        producers.append(confirms)
        yield Producer()

    monkeypatch.setattr(publish, "get_producer", get_producer)
    consumer = EsignRpcConsumer()
    consumer.container = SimpleNamespace(config={"AMQP_URI": "amqp://guest:guest@127.0.0.1:5672/"})
    monkeypatch.setattr(EsignRpcConsumer, "queue_consumer", SimpleNamespace(ack_message=acked.append))
    message = SimpleNamespace(properties={"content_type": "application/json", "reply_to": "rpc.reply-abc",
                                          "correlation_id": "c-1"}, delivery_info={"routing_key": "identity.health"})
    consumer.handle_result(message, {"ok": True}, None)
    assert producers == [False]
    [(payload, kwargs)] = published
    assert payload == {"result": {"ok": True}, "error": None}
    assert (kwargs["routing_key"], kwargs["correlation_id"]) == ("rpc.reply-abc", "c-1")
    assert acked == [message]
