"""What every adapter on Tencent Cloud's Python SDK (tencentcloud-sdk-python-*)
needs to know about the SDK itself, whichever product it calls (FaceID, SMS).

* At DEBUG, the SDK's logger writes whole requests and answers, with names,
  ID numbers, phone numbers and images in them, and builds that string on
  every request even when DEBUG is off: :func:`quiet_sdk_request_dumps`
  drops those records.
* The SDK has no timeout error of its own: requests' Timeout arrives wrapped
  in ``ClientNetworkError`` (the original kept as the context), a body read
  that times out as a ConnectionError around urllib3's ReadTimeoutError:
  :func:`caused_by_timeout` looks through the chain.
* Failures of the SDK itself (``ClientNetworkError``, ``ServerNetworkError``)
  carry no RequestId; the vendor's own ``Response.Error`` does
  (:func:`is_vendor_answer`).
"""
from __future__ import annotations

import logging

import requests
import urllib3

SDK_LOGGER = "tencentcloud_sdk_common"
SDK_FAILURES = frozenset({"ClientNetworkError", "ServerNetworkError"})
_TIMEOUTS = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
_CONNECT_TIMEOUTS = (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError)


class _NoRequestDumps(logging.Filter):
    """Drops the SDK's DEBUG records, which print whole requests and answers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def quiet_sdk_request_dumps() -> None:
    sdk_logger = logging.getLogger(SDK_LOGGER)
    if not any(isinstance(f, _NoRequestDumps) for f in sdk_logger.filters):
        sdk_logger.addFilter(_NoRequestDumps())


def _causes(exc: BaseException):
    """``exc`` and everything under it: causes, contexts and wrapped exceptions in its args."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(a for a in current.args if isinstance(a, BaseException))


def caused_by_timeout(exc: BaseException) -> bool:
    """Whether a timeout lies anywhere under the SDK's wrapper."""
    return any(isinstance(e, _TIMEOUTS) for e in _causes(exc))


def caused_by_connect_timeout(exc: BaseException) -> bool:
    """Whether that timeout came while connecting (then the request never went out)."""
    return any(isinstance(e, _CONNECT_TIMEOUTS) for e in _causes(exc))


def is_vendor_answer(exc) -> bool:
    """A ``Response.Error`` from the vendor (it carries a RequestId), not the SDK's own failure."""
    return bool(exc.requestId) and bool(exc.code) and exc.code not in SDK_FAILURES
