"""The notify service's clock: what "now" is for reminders, retries and rate limits.

Business time (when a reminder is due, when a retry may run, which rate-limit
window a send falls in) comes from a :class:`ClockSource` chosen by
configuration:

* :class:`SystemClock` (the default): the host's UTC time;
* :class:`OffsetFileClock` (``CLOCK.OFFSET_FILE``): the host's time plus a
  number of seconds read from a file at every reading, so a demo or a test
  can move every replica's notion of "now" forward (e.g. to a repayment day)
  without touching the code path. An absent or empty file means no offset.

Leases and per-message claims deliberately use the host clock
(:func:`services.common.clock.utcnow`): they measure whether a process is
still alive, which moving business time must not change.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol

from nameko.extensions import DependencyProvider

from services.common.config import REPO_ROOT
from services.common.errors import InvalidInput


class ClockSource(Protocol):
    def now(self) -> dt.datetime:
        """Timezone-aware UTC."""


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)


class OffsetFileClock:
    """System time plus the seconds written in ``path`` (re-read on every call)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def offset(self) -> dt.timedelta:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return dt.timedelta(0)
        if not text:
            return dt.timedelta(0)
        try:
            return dt.timedelta(seconds=float(text))
        except ValueError:
            raise InvalidInput("clock.offset_file", "number", "expected seconds as a decimal number") from None

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset()

    def set_offset(self, seconds: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(f"{seconds}\n", encoding="ascii")
        temporary.replace(self.path)  # readers see the old or the new value, never half


def clock_from_config(config: dict) -> ClockSource:
    path = (config.get("CLOCK") or {}).get("OFFSET_FILE")
    if not path:
        return SystemClock()
    path = Path(str(path))
    return OffsetFileClock(path if path.is_absolute() else REPO_ROOT / path)


class Clock(DependencyProvider):
    """nameko dependency: the configured :class:`ClockSource`."""

    def setup(self) -> None:
        self.source = clock_from_config(self.container.config)

    def get_dependency(self, worker_ctx) -> ClockSource:
        return self.source
