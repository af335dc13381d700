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
        from nameko.exceptions import IncorrectSignature, MethodNotFound, RemoteError, RpcTimeout, UnknownService

        try:
            return getattr(getattr(self._proxy(), service), method)(*args, **kwargs)
        except EsignError:
            raise
        except RpcTimeout:
            self._reset()  # a late reply must not be read as the next call's answer
            raise Unavailable(service, "timeout") from None
        except UnknownService:
            # no queue for the service on the broker: it has never run here, or its queue is gone
            raise Unavailable(service, "unknown_service") from None
        except MethodNotFound:
            raise InvalidInput("method", "unknown_method", f"{service} has no RPC method {method!r}") from None
        except IncorrectSignature as exc:
            raise InvalidInput("args", "signature", str(exc)) from None
        except RemoteError as exc:
            raise Unavailable(service, exc.exc_type or "remote error") from None
        except (OSError, ConnectionError) as exc:
            self._reset()
            raise Unavailable(service, type(exc).__name__) from None
        except Exception as exc:  # amqp/kombu connection errors have many types
            if type(exc).__module__.split(".")[0] in ("amqp", "kombu"):
                self._reset()
                raise Unavailable(service, type(exc).__name__) from None
            raise

    def close(self) -> None:
        with self._lock:
            contexts, self._all = self._all, []
        for context in contexts:
            try:
                context.stop()
            except Exception:
                pass
