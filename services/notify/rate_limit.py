"""Rate limits and quiet hours for outgoing SMS.

Two protections, both pure logic over injected state:

* **Rate limits** (sliding windows): per phone number at most N messages in
  any minute, any hour and any 24 hours, and at most M messages overall in
  any ``global_period``. They stop a bug or an attacker (SMS pumping) from
  flooding a phone or running up the vendor bill. One-time codes (login,
  willingness) have a per-phone budget of their own (``code_per_phone_*``),
  so notices and reminders, however many documents wait for a person, never
  use up the code that person needs to sign; the global limit counts both.
  A window counts the sends with time ``t > now - period``, so a slot frees
  exactly ``period`` after the send that filled it; that moment is returned
  as ``not_before``.
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
from typing import Callable, Mapping, Protocol, Sequence
from zoneinfo import ZoneInfo

from services.common.errors import InvalidInput
from services.notify.sms_templates import TemplateCategory

CHINA_TZ = "Asia/Shanghai"
#: the key every send counts under, and the prefix of each phone's (the phone itself, or its keyed hash)
GLOBAL_KEY = "global"
PHONE_KEY_PREFIX = "phone:"
#: a phone's one-time codes count under a key of their own
CODE_KEY_SUFFIX = ":code"


class RateCounterStore(Protocol):
    """Timestamps of past sends per key. One admission reads and writes once each."""

    def history(self, since_by_key: Mapping[str, dt.datetime]) -> dict[str, Sequence[dt.datetime]]:
        """For each key, its sends with time strictly after its ``since``, oldest first."""

    def count(self, keys: Sequence[str], at: dt.datetime) -> None:
        """One send at ``at`` under each of ``keys``."""

    def forget(self, global_before: dt.datetime, phones_before: dt.datetime) -> int:
        """Housekeeping: drop sends no window can see any more (the global key's older than
        ``global_before``, every other key's older than ``phones_before``); how many."""


class InMemoryRateCounterStore:
    def __init__(self) -> None:
        self._events: dict[str, list[dt.datetime]] = defaultdict(list)

    def history(self, since_by_key: Mapping[str, dt.datetime]) -> dict[str, Sequence[dt.datetime]]:
        return {key: [t for t in self._events.get(key, ()) if t > since] for key, since in since_by_key.items()}

    def count(self, keys: Sequence[str], at: dt.datetime) -> None:
        for key in keys:
            events = self._events[key]
            events.append(at)
            events.sort()

    def forget(self, global_before: dt.datetime, phones_before: dt.datetime) -> int:
        dropped = 0
        for key in list(self._events):
            before = global_before if key == GLOBAL_KEY else phones_before
            kept = [t for t in self._events[key] if t >= before]
            dropped += len(self._events[key]) - len(kept)
            self._events[key] = kept
        return dropped


@dataclass(frozen=True)
class RateLimits:
    #: notices and reminders to one phone
    per_phone_per_minute: int = 3
    per_phone_per_hour: int = 10
    per_phone_per_day: int = 20
    global_limit: int = 50
    global_period: dt.timedelta = dt.timedelta(seconds=1)
    #: one-time codes to one phone, a budget of their own
    code_per_phone_per_minute: int = 3
    code_per_phone_per_hour: int = 10
    code_per_phone_per_day: int = 20

    def __post_init__(self) -> None:
        for name in ("per_phone_per_minute", "per_phone_per_hour", "per_phone_per_day", "global_limit",
                     "code_per_phone_per_minute", "code_per_phone_per_hour", "code_per_phone_per_day"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidInput(f"rate_limits.{name}", "positive_integer",
                                   f"expected an integer >= 1, found {value!r}")
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

        windows = self._windows(phone, category)
        # one read for every key, each over its longest window; the shorter windows are counted from it
        history = self.store.history({key: now - period for key, period in _longest(windows).items()})
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
            self.store.count(self.keys(phone, category), _aware(now, "now"))
        return permission

    def forget_expired(self, now: dt.datetime) -> int:
        """Drop the sends no window looks back to any more (run now and then, not per send)."""
        now = _aware(now, "now")
        longest_phone_window = dt.timedelta(days=1)  # phone_per_day, the longest per-phone window
        return self.store.forget(now - self.limits.global_period, now - longest_phone_window)

    def keys(self, phone: str, category: TemplateCategory) -> list[str]:
        """The keys a send of ``category`` to ``phone`` counts under (and is locked by)."""
        return list(_longest(self._windows(phone, category)))

    def _windows(self, phone: str, category: TemplateCategory) -> list[_Window]:
        limits = self.limits
        phone_key = PHONE_KEY_PREFIX + self.phone_key(phone)
        if category is TemplateCategory.CODE:
            phone_key += CODE_KEY_SUFFIX
            per_minute, per_hour, per_day = (limits.code_per_phone_per_minute, limits.code_per_phone_per_hour,
                                             limits.code_per_phone_per_day)
        else:
            per_minute, per_hour, per_day = (limits.per_phone_per_minute, limits.per_phone_per_hour,
                                             limits.per_phone_per_day)
        return [
            _Window("phone_per_minute", phone_key, per_minute, dt.timedelta(minutes=1)),
            _Window("phone_per_hour", phone_key, per_hour, dt.timedelta(hours=1)),
            _Window("phone_per_day", phone_key, per_day, dt.timedelta(days=1)),
            _Window("global", GLOBAL_KEY, limits.global_limit, limits.global_period),
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
