"""nameko entrypoints with the platform's error contract.

``rpc``: validates the call before a worker runs. An unknown method, a missing
or unexpected argument, an argument of the wrong type or with a NUL character
(in a string anywhere in it: no database text holds one) is answered with
:class:`~services.common.errors.InvalidInput` naming the field and the rule,
never with a traceback. Unexpected failures inside a worker reach the caller
as :class:`~services.common.errors.InternalError` carrying only a reference;
the details go to the service log under that reference.

A worker that finishes after the broker connection was lost (a broker restart)
cannot ack its message or send its answer on the dead channel. nameko lets that
error kill the whole container while the process stays up, deaf for good (seen
in tests/reliability). Here it is logged instead: the broker puts an unacked
message back on its queue when the connection drops, and the consumer, once
reconnected, delivers it again to a handler that is idempotent.

RPC answers are published without publisher confirms (events keep theirs, in
the outbox): an answer the broker loses is one its caller stops waiting for,
confirmed or not, since the caller's reply queue lives only as long as its
connection. A confirm costs the answering worker a round trip to the broker
on every call.

``handles_event``: an idempotent event handler. It records the event id in
``processed_events`` in the same transaction as the handler's own changes,
so a redelivered event changes nothing twice; a transient failure (database
or S3 away) puts the message back on the queue instead of losing it.
"""
from __future__ import annotations

import functools
import inspect
import logging
import typing
import uuid

import eventlet
from amqp.exceptions import ConnectionError as AmqpConnectionError
from amqp.exceptions import RecoverableConnectionError
from kombu.exceptions import OperationalError as KombuOperationalError
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    SERIALIZER_CONFIG_KEY,
)
from nameko.events import SERVICE_POOL, EventHandler
from nameko.messaging import QueueConsumer
from nameko.rpc import Responder, Rpc, RpcConsumer, RpcProxy, get_rpc_exchange
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from services.common.errors import EsignError, InternalError, InvalidInput, Unavailable

log = logging.getLogger(__name__)

_PASSTHROUGH = ("MalformedRequest", "ContainerBeingKilled")


#: what a lost broker connection raises on a message's channel
CONNECTION_LOST = (ConnectionError, OSError, AmqpConnectionError, RecoverableConnectionError, KombuOperationalError)


class SurvivingQueueConsumer(QueueConsumer):
    """Acks and requeues on a connection that is gone are logged, not raised: the
    broker has put the message back already (see the module's docstring)."""

    def ack_message(self, message):
        self._settle(super().ack_message, message, "ack")

    def requeue_message(self, message):
        self._settle(super().requeue_message, message, "requeue")

    @staticmethod
    def _settle(action, message, what: str) -> None:
        try:
            action(message)
        except CONNECTION_LOST as exc:
            log.warning("could not %s message %s (%s: broker connection lost); the broker delivers it again",
                        what, message.delivery_info.get("routing_key"), type(exc).__name__)


class _AnswerPublisher(Publisher):
    use_confirms = False  # see the module's docstring


class _Responder(Responder):
    publisher_cls = _AnswerPublisher


class EsignRpcConsumer(RpcConsumer):
    queue_consumer = SurvivingQueueConsumer()

    def handle_result(self, message, result, exc_info):
        try:
            return self._answer(message, result, exc_info)
        except CONNECTION_LOST as exc:  # the answer could not be sent: the request comes again
            log.warning("could not answer %s (%s: broker connection lost); the request is delivered again",
                        message.delivery_info.get("routing_key"), type(exc).__name__)
            return result, exc_info

    def _answer(self, message, result, exc_info):
        """nameko's RpcConsumer.handle_result, with an answer publisher that does not wait for confirms."""
        config = self.container.config
        responder = _Responder(config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config),
                               config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
                               ssl=config.get(AMQP_SSL_CONFIG_KEY), login_method=config.get(LOGIN_METHOD_CONFIG_KEY))
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def handle_message(self, body, message):
        # nameko answers to ``reply_to``: a request without one made its responder raise
        # KeyError in the consumer thread, which killed the whole service (any user allowed
        # to publish one routing key could stop a service). No one to answer: drop it.
        if not message.properties.get("reply_to"):
            log.warning("RPC request to %s without reply_to dropped", message.delivery_info.get("routing_key"))
            self.queue_consumer.ack_message(message)
            return
        super().handle_message(body, message)

    def get_provider_for_method(self, routing_key):
        service_name = self.container.service_name
        for provider in self._providers:
            if routing_key == f"{service_name}.{provider.method_name}":
                return provider
        method_name = routing_key.split(".")[-1]
        raise InvalidInput("method", "unknown_method", f"{service_name} has no RPC method {method_name!r}")


class EsignRpc(Rpc):
    rpc_consumer = EsignRpcConsumer()

    def setup(self):
        super().setup()
        method = getattr(self.container.service_cls, self.method_name)
        params = list(inspect.signature(method).parameters.values())[1:]  # drop self
        hints = typing.get_type_hints(method)
        self._params = params
        self._adapters = {p.name: TypeAdapter(hints[p.name]) for p in params if p.name in hints}

    def check_signature(self, args, kwargs):
        named = {}
        positional = [p for p in self._params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(args) > len(positional):
            raise InvalidInput("args", "too_many_arguments",
                               f"{self.method_name} takes {len(positional)} positional arguments, got {len(args)}")
        for param, value in zip(positional, args, strict=False):
            named[param.name] = value
        known = {p.name for p in self._params}
        for key, value in kwargs.items():
            if key not in known:
                raise InvalidInput(str(key), "unexpected", f"{self.method_name} has no argument {key!r}")
            if key in named:
                raise InvalidInput(str(key), "duplicate", f"argument {key!r} given twice")
            named[key] = value
        for param in self._params:
            if param.name not in named and param.default is inspect.Parameter.empty:
                raise InvalidInput(param.name, "required", f"{param.name} is required")
        for name, value in named.items():
            nul = _nul_at(value, name)
            if nul is not None:
                raise InvalidInput(nul, "nul_character", "expected text without NUL characters")
            adapter = self._adapters.get(name)
            if adapter is None:
                continue
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as exc:
                raise InvalidInput.first_of(exc.errors(), name) from None

    def handle_result(self, message, worker_ctx, result, exc_info):
        exc_info = to_typed_error(exc_info, f"{self.container.service_name}.{self.method_name}")
        return super().handle_result(message, worker_ctx, result, exc_info)


#: PostgreSQL's lock_not_available and query_canceled: a lock wait ran out (LOCK_TIMEOUT)
_BUSY_SQLSTATES = ("55P03", "57014")


def _nul_at(value, path: str) -> str | None:
    """Where a NUL character is in an argument (a string, or a key or string in
    its dicts and lists), or None. PostgreSQL cannot store one in text (psycopg2
    raises ValueError, which became an InternalError) and no input has one:
    binary data travels as base64."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                return path
            found = _nul_at(item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


#: the server went away or is starting: 57P01-57P03 (shut down, crashed, not accepting yet), 08xxx
_AWAY_SQLSTATE_PREFIXES = ("57P01", "57P02", "57P03", "08")


def _database_unreachable(exc: BaseException) -> bool:
    """A connection lost or refused (a PostgreSQL restart): the caller may try again."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "pgcode", None)
    if code:
        return code.startswith(_AWAY_SQLSTATE_PREFIXES)
    # psycopg2 gives no code when there is no server to give one: closed, reset, refused
    return isinstance(exc, OperationalError)


def to_typed_error(exc_info, where: str):
    """Replace an unexpected exception by an InternalError with a reference; a
    database lock wait that ran out is ``Unavailable`` (busy, retry shortly)."""
    if exc_info is None:
        return None
    exc = exc_info[1]
    if isinstance(exc, EsignError) or type(exc).__name__ in _PASSTHROUGH:
        return exc_info
    if isinstance(exc, OperationalError) and getattr(getattr(exc, "orig", None), "pgcode", None) in _BUSY_SQLSTATES:
        log.warning("%s: a database lock wait ran out", where)
        busy = Unavailable("database", "busy: a lock wait ran out", retry_after=1)
        return (Unavailable, busy, exc_info[2])
    if _database_unreachable(exc):
        log.warning("%s: the database is unreachable (%s)", where, type(getattr(exc, "orig", exc)).__name__)
        away = Unavailable("database", "unreachable: try again shortly", retry_after=2)
        return (Unavailable, away, exc_info[2])
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected %s in %s (reference %s)", type(exc).__name__, where, reference,
              exc_info=exc_info)
    error = InternalError(reference)
    return (InternalError, error, exc_info[2])


rpc = EsignRpc.decorator


TRANSIENT_ERRORS = (Unavailable, OperationalError, ConnectionError, TimeoutError)
#: failures worth one more delivery: a row another worker inserted between this handler's read and
#: its insert (seen: identity_disputed and certificate_revoked of one serial, handled at once). Run
#: again, the handler reads that row; a second failure is the handler's own and is not retried again
RACE_ERRORS = (SqlIntegrityError,)


class EsignEventHandler(EventHandler):
    """Requeues a message whose handler failed for a transient reason, so the
    event is retried instead of lost; a unique or foreign-key violation (a race
    with another worker) gets one more delivery; other failures are acked and logged."""

    requeue_delay = 1.0
    queue_consumer = SurvivingQueueConsumer()

    def __init__(self, source_service, event_type, wanted: typing.Callable[[dict], bool] | None = None, **kwargs):
        self.wanted = wanted
        super().__init__(source_service, event_type, **kwargs)

    def handle_message(self, body, message):
        """An event the handler does not want (``handles_event(wanted=...)``) is acknowledged as it
        arrives: no worker is spawned for it (its dependencies, a database session, a trace)."""
        if self.wanted is not None and isinstance(body, dict) and body.get("event_id"):
            try:
                unwanted = not self.wanted(body)
            except Exception:  # noqa: BLE001 - in the consumer's thread an error would end the container
                unwanted = False  # the worker runs the same check and the handler logs what it finds
            if unwanted:
                self.queue_consumer.ack_message(message)
                return
        super().handle_message(body, message)

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        if exc_info is not None and self._retry(message, exc_info[1]):
            eventlet.sleep(self.requeue_delay)
            self.queue_consumer.requeue_message(message)
            return result, exc_info
        if exc_info is not None:
            to_typed_error(exc_info, f"{self.container.service_name} event {self.source_service}.{self.event_type}")
        self.queue_consumer.ack_message(message)
        return result, exc_info

    def _retry(self, message, error: BaseException) -> bool:
        if isinstance(error, TRANSIENT_ERRORS):
            log.warning("event %s: transient %s, requeued", self.event_type, type(error).__name__)
            return True
        if isinstance(error, RACE_ERRORS) and not (getattr(message, "delivery_info", None) or {}).get("redelivered"):
            log.warning("event %s: %s (a concurrent write?), delivered once more", self.event_type,
                        type(error).__name__)
            return True
        return False


def handles_event(source: str, event_type: str, db_attr: str = "db",
                  wanted: typing.Callable[[dict], bool] | None = None, mark_first: bool = False):
    """Decorate a service method as an idempotent handler of ``source``'s
    ``event_type`` events. The method receives the event envelope; its
    database changes are committed by this wrapper together with the
    processed-event mark. Side effects outside the database must be made
    after a commit of their own intent (see the notify service).

    ``wanted(envelope)``: whether this handler has anything to do with the
    event; one it does not want is acknowledged as it arrives, with no worker,
    no database work and no mark (identity wants only the ``sms_sent`` of its
    codes, 2 of a flow's 5; the evidence log's handlers only events whose leaf
    was not queued with their change). It reads the envelope as sent: it must not raise.

    ``mark_first``: the processed-event mark is written before the handler runs (one insert that
    finds a mark already there: no read first) and commits with the handler's first commit, not in
    a transaction of its own after its last. For a handler whose first commit records everything it
    owes (notify's delivery log: a message recorded is sent by the scheduler if the handler dies
    after that commit), so a redelivery after that commit has nothing left to do. Not for a handler
    that writes through another connection meanwhile: on SQLite it would wait for this one's lock."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(self, payload):
            event_id = payload.get("event_id") if isinstance(payload, dict) else None
            if not event_id:
                log.error("event %s.%s without event_id ignored", source, event_type)
                return None
            if wanted is not None and not wanted(payload):
                return None
            unit = getattr(self, db_attr)
            handler = f"{source}.{event_type}:{fn.__name__}"
            if mark_first:
                if not unit.mark_processed_first(event_id, handler):
                    log.info("event %s already processed by %s", event_id, handler)
                    unit.rollback()
                    return None
                result = fn(self, payload)
                unit.commit()  # the mark, if the handler committed nothing
                return result
            if unit.already_processed(event_id, handler):
                log.info("event %s already processed by %s", event_id, handler)
                return None
            result = fn(self, payload)
            # marked after the handler ran, in the same transaction as its own
            # changes: a handler that writes through another connection (the
            # evidence log) must not wait on this one's lock (SQLite has one writer)
            unit.mark_processed(event_id, handler)
            unit.commit()
            return result

        return EsignEventHandler.decorator(source, event_type, handler_type=SERVICE_POOL,
                                           reliable_delivery=True, wanted=wanted)(wrapper)

    return decorator


class BoundedRpcProxy(RpcProxy):
    """nameko's ``RpcProxy`` waits for an answer for ever: a service that hangs
    would hold its caller's worker (and any row lock it holds) as long. Calls
    through this one wait at most ``RPC_TIMEOUT`` seconds (the caller's config,
    default 30), then raise ``Unavailable(service, "timeout …")``; a late answer
    is dropped by nameko's reply listener."""

    def get_dependency(self, worker_ctx):
        timeout = float(self.container.config.get("RPC_TIMEOUT") or 30)
        return _BoundedServiceProxy(super().get_dependency(worker_ctx), self.target_service, timeout)


class _BoundedServiceProxy:
    def __init__(self, proxy, service: str, timeout: float):
        self._proxy, self._service, self._timeout = proxy, service, timeout

    def __getattr__(self, method: str):
        method_proxy = getattr(self._proxy, method)

        def call(*args, **kwargs):
            with eventlet.Timeout(self._timeout, False):
                return method_proxy(*args, **kwargs)
            raise Unavailable(self._service, f"timeout: no answer to {method} in {self._timeout:g} s")

        return call
