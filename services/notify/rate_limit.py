"""Rate limits and quiet hours for outgoing SMS.

Two protections, both pure logic over injected state:

* **Rate limits** (sliding windows): per phone number at most N messages in
  any minute, any hour and any 24 hours, and at most M messages overall in
  any ``global_period``. They stop a bug or an attacker (SMS pumping) from
  flooding a phone or running up the vendor bill. They apply to every
  category, one-time codes included. A window counts the sends with time
  ``t > now - period``, so a slot frees exactly ``period`` after the send
  that filled it; that moment is returned as ``not_before``.
* **Quiet hours** (default 21:00-08:00 Asia/Shanghai): messages of the quiet
  categories (reminders by default) wait until the quiet period ends. Codes
  and notices (answers to something the person just did) are exempt.

The send history lives behind :class:`RateCounterStore`. The in-memory store
serves tests and the embedded single-process mode; the service backs it
with its database. With several replicas, ``acquire`` must run check and
record for one phone under one lock (a row lock or advisory lock keyed by the
phone, plus one for the global key), or two replicas could each see the last
free slot. Keys are built with an injectable ``phone_key`` so a database
store can hold a keyed hash instead of the number.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence
from zoneinfo import ZoneInfo

from services.common.errors import InvalidInput
from services.notify.sms_templates import TemplateCategory

CHINA_TZ = "Asia/Shanghai"


class RateCounterStore(Protocol):
    """Timestamps of past sends per key."""

    def events_since(self, key: str, since: dt.datetime) -> Sequence[dt.datetime]:
        """Sends for ``key`` with time strictly after ``since``, oldest first."""

    def record(self, key: str, at: dt.datetime) -> None:
        ...

    def forget_before(self, key: str, before: dt.datetime) -> None:
        """Drop sends older than any window still needs (housekeeping)."""


class InMemoryRateCounterStore:
    def __init__(self) -> None:
        self._events: dict[str, list[dt.datetime]] = defaultdict(list)

    def events_since(self, key: str, since: dt.datetime) -> Sequence[dt.datetime]:
        return [t for t in self._events.get(key, ()) if t > since]

    def record(self, key: str, at: dt.datetime) -> None:
        events = self._events[key]
        events.append(at)
        events.sort()

    def forget_before(self, key: str, before: dt.datetime) -> None:
        if key in self._events:
            self._events[key] = [t for t in self._events[key] if t >= before]


@dataclass(frozen=True)
class RateLimits:
    per_phone_per_minute: int = 3
    per_phone_per_hour: int = 10
    per_phone_per_day: int = 20
    global_limit: int = 50
    global_period: dt.timedelta = dt.timedelta(seconds=1)

    def __post_init__(self) -> None:
        for name in ("per_phone_per_minute", "per_phone_per_hour", "per_phone_per_day", "global_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(f"rate_limits.{name}", "positive_integer", f"expected an integer >= 1, found {value!r}")
        if self.global_period <= dt.timedelta(0):
            raise InvalidInput("rate_limits.global_period", "positive", "expected a positive period")


@dataclass(frozen=True)
class QuietHours:
    """A daily local-time interval ``[start, end)``; may wrap past midnight."""

    start: dt.time = dt.time(21, 0)
    end: dt.time = dt.time(8, 0)
    timezone: str = CHINA_TZ

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise InvalidInput("quiet_hours", "non_empty", "start and end must differ")
        ZoneInfo(self.timezone)  # fails early on an unknown zone name

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, at: dt.datetime) -> bool:
        local = _aware(at, "at").astimezone(self.zone).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, at: dt.datetime) -> dt.datetime:
        """``at`` itself outside quiet hours, else the end of the current quiet period."""
        at = _aware(at, "at")
        if not self.contains(at):
            return at
        local = at.astimezone(self.zone)
        end_today = dt.datetime.combine(local.date(), self.end, tzinfo=self.zone)
        end = end_today if local < end_today else end_today + dt.timedelta(days=1)
        # Re-anchor through the zone so a wall-clock end time stays right across offset changes.
        return dt.datetime.combine(end.date(), self.end, tzinfo=self.zone).astimezone(at.tzinfo)


@dataclass(frozen=True)
class SendPermission:
    allowed: bool
    reason: str                       # "allowed", "quiet_hours", "phone_per_minute", ..., "global"
    not_before: dt.datetime | None = None  # earliest time a retry can be allowed


@dataclass(frozen=True)
class _Window:
    reason: str
    key: str
    limit: int
    period: dt.timedelta


@dataclass
class SmsRateLimiter:
    limits: RateLimits
    store: RateCounterStore
    quiet_hours: QuietHours = field(default_factory=QuietHours)
    quiet_categories: frozenset[TemplateCategory] = frozenset({TemplateCategory.REMINDER})
    phone_key: Callable[[str], str] = lambda phone: phone

    def check(self, phone: str, category: TemplateCategory, now: dt.datetime) -> SendPermission:
        """Whether a message may go now; records nothing."""
        now = _aware(now, "now")
        if category in self.quiet_categories and self.quiet_hours.contains(now):
            return SendPermission(False, "quiet_hours", self.quiet_hours.next_allowed(now))

        windows = self._windows(phone)
        # one read per key, over its longest window; the shorter windows are counted from it
        history = {key: self.store.events_since(key, now - period) for key, period in _longest(windows).items()}
        blocked: list[tuple[str, dt.datetime]] = []
        for window in windows:
            since = now - window.period
            events = [at for at in history[window.key] if at > since]
            if len(events) >= window.limit:
                # The send that must leave the window before one more fits.
                release = events[len(events) - window.limit] + window.period
                blocked.append((window.reason, release))
        if not blocked:
            return SendPermission(True, "allowed")
        reason = blocked[0][0]
        not_before = max(release for _, release in blocked)
        if category in self.quiet_categories:
            not_before = self.quiet_hours.next_allowed(not_before)
        return SendPermission(False, reason, not_before)

    def acquire(self, phone: str, category: TemplateCategory, now: dt.datetime) -> SendPermission:
        """Check, and if allowed count the send (see the module note on locking)."""
        permission = self.check(phone, category, now)
        if permission.allowed:
            now = _aware(now, "now")
            for key, period in _longest(self._windows(phone)).items():
                self.store.forget_before(key, now - period)
                self.store.record(key, now)
        return permission

    def _windows(self, phone: str) -> list[_Window]:
        phone_key = "phone:" + self.phone_key(phone)
        limits = self.limits
        return [
            _Window("phone_per_minute", phone_key, limits.per_phone_per_minute, dt.timedelta(minutes=1)),
            _Window("phone_per_hour", phone_key, limits.per_phone_per_hour, dt.timedelta(hours=1)),
            _Window("phone_per_day", phone_key, limits.per_phone_per_day, dt.timedelta(days=1)),
            _Window("global", "global", limits.global_limit, limits.global_period),
        ]


def _longest(windows: list[_Window]) -> dict[str, dt.timedelta]:
    """The longest period any window of each key looks back."""
    longest: dict[str, dt.timedelta] = {}
    for window in windows:
        longest[window.key] = max(longest.get(window.key, dt.timedelta(0)), window.period)
    return longest


def _aware(value: dt.datetime, name: str) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(name, "timezone_aware", "expected a timezone-aware datetime, found a naive one")
    return value
