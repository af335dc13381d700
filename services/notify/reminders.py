"""When to send repayment reminders for a completed IOU.

Given the repayment date, the policy (how many days before to send the
"due soon" reminder, at what local time, in which time zone) and the moment
of scheduling, :func:`plan_reminders` returns the reminders to store:

* ``due_soon`` on ``repayment_date - due_soon_days`` at ``send_time`` local;
* ``due_today`` on the repayment date at ``send_time`` local.

A reminder whose time has already passed when the flow completes is not
planned, with one exception: on the repayment day itself ``due_today`` still
goes out at once, unless it is already quiet hours (by then the day is over
as far as an SMS is concerned).

Each reminder also carries ``expires_at``, the end (local midnight) of the
day it speaks about. A scheduler catching up after downtime sends a stored
reminder when ``send_at <= now < expires_at`` and drops it after that, so a
"还有3天" message never arrives two days late. Pure: ``now`` is an argument.
"""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping
from zoneinfo import ZoneInfo

from services.common.errors import InvalidInput
from services.notify.rate_limit import CHINA_TZ, QuietHours


class ReminderKind(str, enum.Enum):
    """Also the SMS template id of the reminder."""

    DUE_SOON = "due_soon"
    DUE_TODAY = "due_today"


@dataclass(frozen=True)
class ReminderPolicy:
    due_soon_days: int = 3
    send_time: dt.time = dt.time(9, 0)
    timezone: str = CHINA_TZ
    quiet_hours: QuietHours = field(default_factory=QuietHours)

    def __post_init__(self) -> None:
        if not isinstance(self.due_soon_days, int) or not 1 <= self.due_soon_days <= 30:
            raise InvalidInput("reminders.due_soon_days", "range", f"expected 1-30 days, found {self.due_soon_days!r}")
        probe = dt.datetime.combine(dt.date(2000, 1, 3), self.send_time, tzinfo=ZoneInfo(self.timezone))
        if self.quiet_hours.contains(probe):
            raise InvalidInput("reminders.send_time", "outside_quiet_hours",
                               f"send time {self.send_time.isoformat()} falls in quiet hours")


@dataclass(frozen=True)
class PlannedReminder:
    kind: ReminderKind
    send_at: dt.datetime        # aware, UTC
    expires_at: dt.datetime     # aware, UTC; do not send at or after this
    params: Mapping[str, str] = field(hash=False)  # template values besides document_title

    @property
    def template_id(self) -> str:
        return self.kind.value

    def is_due(self, now: dt.datetime) -> bool:
        return self.send_at <= now < self.expires_at

    def is_expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


def plan_reminders(repayment_date: dt.date, now: dt.datetime, policy: ReminderPolicy) -> tuple[PlannedReminder, ...]:
    """The reminders still worth sending for a flow completed at ``now``."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("now", "timezone_aware", "expected a timezone-aware datetime, found a naive one")
    if isinstance(repayment_date, dt.datetime) or not isinstance(repayment_date, dt.date):
        raise InvalidInput("repayment_date", "type", "expected a calendar date")
    zone = ZoneInfo(policy.timezone)
    today = now.astimezone(zone).date()
    if repayment_date < today:
        return ()

    def local(day: dt.date, at: dt.time) -> dt.datetime:
        return dt.datetime.combine(day, at, tzinfo=zone)

    def end_of(day: dt.date) -> dt.datetime:
        return local(day + dt.timedelta(days=1), dt.time(0)).astimezone(dt.timezone.utc)

    planned: list[PlannedReminder] = []
    soon_day = repayment_date - dt.timedelta(days=policy.due_soon_days)
    soon_at = local(soon_day, policy.send_time)
    if soon_at >= now:
        planned.append(PlannedReminder(
            ReminderKind.DUE_SOON,
            soon_at.astimezone(dt.timezone.utc),
            end_of(soon_day),
            MappingProxyType({"due_date": repayment_date.isoformat(), "days": str(policy.due_soon_days)}),
        ))

    today_at = local(repayment_date, policy.send_time)
    if today_at < now:
        # Only the repayment day itself may still send late, and not into the night.
        late_ok = repayment_date == today and not policy.quiet_hours.contains(now)
        today_at = now if late_ok else None
    if today_at is not None:
        planned.append(PlannedReminder(
            ReminderKind.DUE_TODAY,
            today_at.astimezone(dt.timezone.utc),
            end_of(repayment_date),
            MappingProxyType({"due_date": repayment_date.isoformat()}),
        ))
    return tuple(planned)
