"""Readiness of a nameko service process: its own ``health`` RPC, answered through RabbitMQ.

Kubernetes asks ``/readyz`` on the process's metrics port (services/common/metrics.py).
A nameko service takes its work from RabbitMQ, not from a port: a process whose port
answers may still be deaf (its broker connection lost, its consumer cancelled, every
worker stuck). The proof that it consumes is a request that went through the broker
and came back answered by this very process.

The service's queue ``rpc-<service>`` is shared by every replica, so a health request
sent there may be answered by a sibling and prove nothing about this process. Each
process therefore also consumes a queue of its own, ``rpc-<service>-<instance>``
(``<instance>`` a UUID drawn at start), bound with ``<service>.<instance>.*``, on which
only ``health`` is served (:data:`instance_rpc`). The same queue consumer (one broker
connection) and the same worker pool serve it as serve ``rpc-<service>``: when this
queue's request is answered, so can the shared queue's be.

:class:`OwnHealthCall` publishes ``<service>.<instance>.health`` as the service's own
broker user (services/common/broker_access.py grants that key, and nothing else of
this kind) and waits for the answer on a reply queue named after the service, within a
short timeout; the wait is on eventlet's sockets and timer, so the hub keeps running.
:class:`ReadinessProbe` keeps an answer a few seconds, so probes cannot flood the
broker, and runs one check at a time.

Ready means: answered in time with ``status: ok``. A health answer that says
``degraded`` (the database, storage or a worker pool does not work) is not ready
either: such a process consumes requests it cannot serve.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable, Mapping, Protocol

import eventlet
from kombu import Queue
from nameko.rpc import get_rpc_exchange
from nameko.standalone.rpc import ServiceRpcProxy, StandaloneProxyBase

from services.common.entrypoints import EsignRpc, EsignRpcConsumer
from services.common.errors import EsignError, InvalidInput

log = logging.getLogger(__name__)

#: seconds the health RPC may take before the process counts as not ready
READY_TIMEOUT_SECONDS = 2.0
#: seconds an answer is served again before the broker is asked anew
READY_CACHE_SECONDS = 5.0
#: an instance queue left without consumer (its process died) is dropped after this (ms)
INSTANCE_QUEUE_EXPIRES_MS = 60_000


class ReadyReason(StrEnum):
    OK = "ok"
    STARTING = "starting"  # the service's consumers are not set up yet
    STOPPING = "stopping"  # the service is stopping
    TIMEOUT = "timeout"  # no answer in time: not consuming, disconnected, or no worker free
    NOT_CONSUMING = "not_consuming"  # the broker routed the request to no queue: this process's queue is gone
    BROKER_REFUSED = "broker_refused"  # the broker refused the request (the user's permissions)
    BROKER_UNREACHABLE = "broker_unreachable"  # no connection to the broker
    HEALTH_ERROR = "health_error"  # the health RPC answered with an error
    DEGRADED = "degraded"  # answered, but a dependency does not work (named in ``detail``)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: ReadyReason
    #: what failed, in a few words (failing checks, an error's type); never a message that could hold a secret
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        answer = {"status": "ready" if self.ready else "not_ready", "reason": str(self.reason)}
        if self.detail:
            answer["detail"] = self.detail
        return answer


READY = Readiness(True, ReadyReason.OK)


def not_ready(reason: ReadyReason, detail: str = "") -> Readiness:
    return Readiness(False, reason, detail)


# ----------------------------------------------------------------- the process's own queue


def instance_queue(service: str, instance: str) -> str:
    """The queue only this process consumes (broker_access grants ``rpc-<service>-<UUID>``)."""
    return f"rpc-{service}-{instance}"


def instance_routing_key(service: str, instance: str, method: str) -> str:
    """``<service>.<instance>.<method>``: three words, so the shared queue's binding
    ``<service>.*`` (exactly two) never matches it."""
    return f"{service}.{instance}.{method}"


class InstanceRpcConsumer(EsignRpcConsumer):
    """Consumes ``rpc-<service>-<instance>`` with the container's queue consumer (the
    one that consumes ``rpc-<service>`` and the event queues)."""

    def __init__(self):
        super().__init__()
        self.instance: str | None = None

    def setup(self):
        if self.queue is None:
            service = self.container.service_name
            instance = str(uuid.uuid4())
            # durable as nameko's reply queues (RabbitMQ 4 deprecates transient shared queues);
            # deleted with its consumer, or at the latest INSTANCE_QUEUE_EXPIRES_MS after it
            self.queue = Queue(instance_queue(service, instance), exchange=get_rpc_exchange(self.container.config),
                               routing_key=instance_routing_key(service, instance, "*"), auto_delete=True,
                               queue_arguments={"x-expires": INSTANCE_QUEUE_EXPIRES_MS})
            self.instance = instance
            self.queue_consumer.register_provider(self)
            self._registered = True

    def get_provider_for_method(self, routing_key):
        service = self.container.service_name
        for provider in self._providers:
            if routing_key == instance_routing_key(service, self.instance, provider.method_name):
                return provider
        method = routing_key.split(".")[-1]
        raise InvalidInput("method", "unknown_method", f"{service} serves no {method!r} on its instance queue")


class InstanceRpc(EsignRpc):
    """An RPC entrypoint on the process's own queue (``@instance_rpc`` beside ``@rpc``)."""

    rpc_consumer = InstanceRpcConsumer()
    #: services/common/metrics.py labels its calls kind="probe", apart from the RPCs callers make
    metrics_kind = "probe"


instance_rpc = InstanceRpc.decorator


def container_instance(container) -> str | None:
    """The instance id of ``container``'s own queue, once its consumer is set up."""
    for extension in container.subextensions:
        if isinstance(extension, InstanceRpcConsumer):
            return extension.instance
    return None


# ----------------------------------------------------------------- the call


class HealthProxy(Protocol):
    def health(self) -> Any: ...

    def close(self) -> None: ...


class _ReplyQueueNamedAfter(ServiceRpcProxy):
    """nameko's standalone proxy, whose reply queue is ``rpc.reply-<service>-<uuid>``
    (the queues the service's broker user may declare) instead of
    ``rpc.reply-standalone_rpc_proxy-<uuid>``."""

    def __init__(self, service: str, target: str, config: Mapping[str, Any], timeout: float):
        class ServiceContainer(StandaloneProxyBase.ServiceContainer):
            service_name = service

        self.ServiceContainer = ServiceContainer  # read by StandaloneProxyBase.__init__
        super().__init__(target, dict(config), timeout=timeout)


class BrokerHealthProxy:
    """``<service>.<instance>.health`` through the broker, with the service's own config
    (AMQP_URI of its own user, serializer, exchange)."""

    def __init__(self, config: Mapping[str, Any], service: str, instance: str, timeout: float):
        self._context = _ReplyQueueNamedAfter(service, f"{service}.{instance}", config, timeout)
        self._proxy = self._context.start()

    def health(self) -> Any:
        return self._proxy.health()

    def close(self) -> None:
        self._context.stop()


class OwnHealthCall:
    """One readiness check: this process's own ``health`` through the broker, judged.

    Not for several greenthreads at once (nameko's standalone proxy is not):
    :class:`ReadinessProbe` runs one check at a time. The proxy is kept between
    checks, and dropped after any failure, so a late answer is never read as the
    next one's."""

    def __init__(self, config: Mapping[str, Any], service: str, instance: Callable[[], str | None],
                 timeout: float = READY_TIMEOUT_SECONDS,
                 connect: Callable[[str], HealthProxy] | None = None):
        if not timeout > 0:
            raise InvalidInput("METRICS.READY_TIMEOUT_SECONDS", "positive", f"expected seconds > 0, found {timeout!r}")
        self.service = service
        self.timeout = timeout
        self._instance = instance
        self._connect = connect or (lambda instance: BrokerHealthProxy(config, service, instance, timeout))
        self._proxy: HealthProxy | None = None
        self._proxy_instance: str | None = None

    def __call__(self) -> Readiness:
        instance = self._instance()
        if instance is None:
            return not_ready(ReadyReason.STARTING)
        deadline = eventlet.Timeout(self.timeout)
        try:
            if self._proxy is None or self._proxy_instance != instance:
                self._drop()
                self._proxy, self._proxy_instance = self._connect(instance), instance
            answer = self._proxy.health()
        except eventlet.Timeout as exc:
            if exc is not deadline:
                raise
            self._drop()
            return not_ready(ReadyReason.TIMEOUT, f"no answer in {self.timeout:g} s")
        except Exception as exc:  # judged by its type; its text may name the broker URL
            self._drop()
            return not_ready(*_failure(exc))
        finally:
            deadline.cancel()
        return judge(answer)

    def _drop(self) -> None:
        proxy, self._proxy, self._proxy_instance = self._proxy, None, None
        if proxy is not None:
            eventlet.spawn_n(_close_quietly, proxy, self.timeout)

    def close(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            _close_quietly(proxy, self.timeout)


def _close_quietly(proxy: HealthProxy, timeout: float) -> None:
    with eventlet.Timeout(timeout, False):
        try:
            proxy.close()
        except Exception:  # a broken connection: nothing left to close
            pass


def _failure(exc: Exception) -> tuple[ReadyReason, str]:
    from nameko.exceptions import RemoteError, RpcTimeout, UnknownService

    name = type(exc).__name__
    if isinstance(exc, RpcTimeout):
        return ReadyReason.TIMEOUT, name
    if isinstance(exc, UnknownService):
        return ReadyReason.NOT_CONSUMING, "no queue bound for the request"
    if name in ("AccessRefused", "NotAllowed"):  # amqp's refusals
        return ReadyReason.BROKER_REFUSED, name
    if isinstance(exc, (EsignError, RemoteError)):
        return ReadyReason.HEALTH_ERROR, getattr(exc, "code", None) or getattr(exc, "exc_type", None) or name
    if isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.split(".")[0] in ("amqp", "kombu"):
        return ReadyReason.BROKER_UNREACHABLE, name
    return ReadyReason.HEALTH_ERROR, name


def judge(answer: Any) -> Readiness:
    """Ready when ``health`` said ``status: ok``; otherwise which of its checks failed."""
    if not isinstance(answer, dict):
        return not_ready(ReadyReason.HEALTH_ERROR, f"unexpected answer of type {type(answer).__name__}")
    if answer.get("status") == "ok":
        return READY
    checks = answer.get("checks") if isinstance(answer.get("checks"), dict) else {}
    failing = sorted(str(name) for name, check in checks.items() if not (isinstance(check, dict) and check.get("ok")))
    return not_ready(ReadyReason.DEGRADED, ",".join(failing) or str(answer.get("status")))


# ----------------------------------------------------------------- the probe


class ReadinessProbe:
    """What ``/readyz`` asks: the last check's answer while it is fresher than
    ``cache_seconds``, otherwise a new check. One check at a time: probes that
    arrive meanwhile wait for it and share its answer."""

    def __init__(self, check: Callable[[], Readiness], name: str, cache_seconds: float = READY_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        if not cache_seconds >= 0:
            raise InvalidInput("METRICS.READY_CACHE_SECONDS", "not_negative",
                               f"expected seconds >= 0, found {cache_seconds!r}")
        self.name = name
        self.cache_seconds = cache_seconds
        self._check = check
        self._clock = clock
        self._lock = threading.Lock()  # green under eventlet's monkey patching
        self._last: Readiness | None = None
        self._checked_at = 0.0
        self._stopping = False

    def __call__(self) -> Readiness:
        with self._lock:
            if self._stopping:
                return not_ready(ReadyReason.STOPPING)
            if self._last is not None and self._clock() - self._checked_at < self.cache_seconds:
                return self._last
            answer = self._check()
            self._checked_at = self._clock()
            if self._last is None or (answer.ready, answer.reason) != (self._last.ready, self._last.reason):
                if answer.ready:
                    log.info("%s is ready", self.name)
                else:
                    log.warning("%s is not ready: %s %s", self.name, answer.reason, answer.detail)
            self._last = answer
            return answer

    def stop(self) -> None:
        """From now on: not ready (stopping), without asking the broker. Waits for a
        check under way (at most its timeout), then closes the check's connection."""
        self._stopping = True
        with self._lock:
            close = getattr(self._check, "close", None)
            if close is not None:
                close()


def probe_for(container, timeout: float = READY_TIMEOUT_SECONDS,
              cache_seconds: float = READY_CACHE_SECONDS) -> ReadinessProbe:
    """The readiness probe of a running nameko ``container``."""
    check = OwnHealthCall(container.config, container.service_name, lambda: container_instance(container), timeout)
    return ReadinessProbe(check, container.service_name, cache_seconds)
