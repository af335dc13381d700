"""A nameko RPC client for code outside nameko (the HTTP gateway, the CLI).

nameko's standalone proxy must not be shared between threads ("Second
simultaneous read on fileno"), so each thread gets its own long-lived proxy.
Typed errors come back as the same classes; a timeout, a lost broker
connection or a service the broker has no queue for becomes
:class:`~services.common.errors.Unavailable`.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from services.common.errors import EsignError, InvalidInput, Unavailable

log = logging.getLogger(__name__)


class RpcClient:
    def __init__(self, amqp_uri: str, timeout: float = 30.0):
        self.config = {"AMQP_URI": amqp_uri}
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def _proxy(self):
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            from nameko.standalone.rpc import ClusterRpcProxy

            context = ClusterRpcProxy(self.config, timeout=self.timeout)
            proxy = context.start()
            self._local.context, self._local.proxy = context, proxy
            with self._lock:
                self._all.append(context)
        return proxy

    def _reset(self) -> None:
        context = getattr(self._local, "context", None)
        self._local.proxy = self._local.context = None
        if context is not None:
            try:
                context.stop()
            except Exception:  # the connection is already gone
                pass

    def call(self, service: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``service.method(*args, **kwargs)``; positional-only names, so an RPC
        argument may itself be called ``method`` or ``service``."""
        try:
            return getattr(getattr(self._proxy(), service), method)(*args, **kwargs)
        except Exception as exc:
            raise self._error(service, method, exc) from None

    def call_all(self, *calls: tuple[str, str, dict[str, Any]]) -> list[Any]:
        """Several RPCs ``(service, method, kwargs)`` at once: all sent, then
        each answer awaited, so they take as long as the slowest. The first
        failure (in the order given) is raised, as :meth:`call` would."""
        replies = []
        for service, method, kwargs in calls:
            try:
                replies.append(getattr(getattr(self._proxy(), service), method).call_async(**kwargs))
            except Exception as exc:
                raise self._error(service, method, exc) from None
        answers = []
        for (service, method, _), reply in zip(calls, replies, strict=True):
            try:
                answers.append(reply.result())
            except Exception as exc:
                raise self._error(service, method, exc) from None
        return answers

    def _error(self, service: str, method: str, exc: Exception) -> Exception:
        """What a failed call raises: a typed error as it came, anything else as
        :class:`~services.common.errors.Unavailable` or ``InvalidInput``."""
        from nameko.exceptions import IncorrectSignature, MethodNotFound, RemoteError, RpcTimeout, UnknownService

        if isinstance(exc, EsignError):
            return exc
        if isinstance(exc, RpcTimeout):
            self._reset()  # a late reply must not be read as the next call's answer
            return Unavailable(service, "timeout")
        if isinstance(exc, UnknownService):
            # no queue for the service on the broker: it has never run here, or its queue is gone
            return Unavailable(service, "unknown_service")
        if isinstance(exc, MethodNotFound):
            return InvalidInput("method", "unknown_method", f"{service} has no RPC method {method!r}")
        if isinstance(exc, IncorrectSignature):
            return InvalidInput("args", "signature", str(exc))
        if isinstance(exc, RemoteError):
            return Unavailable(service, exc.exc_type or "remote error")
        if isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.split(".")[0] in ("amqp", "kombu"):
            # amqp/kombu connection errors have many types
            self._reset()
            return Unavailable(service, type(exc).__name__)
        return exc

    def close(self) -> None:
        with self._lock:
            contexts, self._all = self._all, []
        for context in contexts:
            try:
                context.stop()
            except Exception:
                pass
