"""Waiting for something another process or greenthread does (an event
handled, an SMS written), cooperatively under eventlet."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import eventlet

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """``predicate()`` once it is truthy, or its last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        eventlet.sleep(interval)
    return predicate()
