"""When to send repayment reminders for a completed IOU.

Given the repayment date, the loan's terms (``loan`` of signing's events:
lump sum, or monthly interest with its interest dates), the policy (how many
days before to send the "due soon" and "interest due" reminders, at what
local time, in which time zone) and the moment of scheduling,
:func:`plan_reminders` returns the reminders to store, each at ``send_time``
local:

* ``interest_due`` on ``interest_date - interest_due_days`` for every
  interest date of a monthly-interest IOU that falls strictly before the
  repayment date (the last interest is paid with the principal, and
  ``due_soon`` speaks for that day);
* ``due_soon`` on ``repayment_date - due_soon_days``;
* ``due_today`` on the repayment date;
* ``overdue`` on the day after the repayment date, then weekly for four
  weeks (:data:`OVERDUE_DAYS_AFTER`). They are planned whatever happens
  later: signing's ``loan_repaid`` cancels them once the principal is
  settled, and ``loan_extended`` cancels them and plans anew.

A reminder whose time has already passed when the plan is made is not
planned, with one exception: on the repayment day itself ``due_today`` still
goes out at once, unless it is already quiet hours (by then the day is over
as far as an SMS is concerned). So a plan made after the repayment date
holds only the overdue reminders still ahead.

Each reminder also carries ``expires_at``, the end (local midnight) of the
day it speaks about. A scheduler catching up after downtime sends a stored
reminder when ``send_at <= now < expires_at`` and drops it after that, so a
"还有3天" message never arrives two days late. ``expires_at`` also tells
one reminder of a kind from another (the reminder book keys on it): it
depends only on the day, never on how late the plan was made. Pure: ``now``
is an argument.
"""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping
from zoneinfo import ZoneInfo

from services.common.errors import InvalidInput
from services.notify.rate_limit import CHINA_TZ, QuietHours


class ReminderKind(str, enum.Enum):
    """Also the SMS template id of the reminder."""

    INTEREST_DUE = "interest_due"
    DUE_SOON = "due_soon"
    DUE_TODAY = "due_today"
    OVERDUE = "overdue"


class RepaymentMethod(str, enum.Enum):
    LUMP_SUM = "lump_sum"                  # 到期一次性还本付息
    MONTHLY_INTEREST = "monthly_interest"  # 按月付息，到期还本


@dataclass(frozen=True)
class LoanTerms:
    """How an IOU is repaid: signing's ``loan`` member of ``flow_completed`` and ``loan_extended``."""

    method: RepaymentMethod
    interest_dates: tuple[dt.date, ...] = ()  # when interest falls due (monthly interest only)


#: days after the repayment date on which an overdue reminder goes: the next day, then weekly for four weeks
OVERDUE_DAYS_AFTER = (1, 8, 15, 22, 29)


@dataclass(frozen=True)
class ReminderPolicy:
    due_soon_days: int = 3
    interest_due_days: int = 3
    send_time: dt.time = dt.time(9, 0)
    timezone: str = CHINA_TZ
    quiet_hours: QuietHours = field(default_factory=QuietHours)

    def __post_init__(self) -> None:
        for name in ("due_soon_days", "interest_due_days"):
            days = getattr(self, name)
            if not isinstance(days, int) or not 1 <= days <= 30:
                raise InvalidInput(f"reminders.{name}", "range", f"expected 1-30 days, found {days!r}")
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


def plan_reminders(repayment_date: dt.date, now: dt.datetime, policy: ReminderPolicy,
                   loan: LoanTerms | None = None) -> tuple[PlannedReminder, ...]:
    """The reminders still worth sending for an IOU planned at ``now``, in the order they go."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput("now", "timezone_aware", "expected a timezone-aware datetime, found a naive one")
    if isinstance(repayment_date, dt.datetime) or not isinstance(repayment_date, dt.date):
        raise InvalidInput("repayment_date", "type", "expected a calendar date")
    zone = ZoneInfo(policy.timezone)
    today = now.astimezone(zone).date()
    due = {"due_date": repayment_date.isoformat()}

    def on(day: dt.date, kind: ReminderKind, params: Mapping[str, str]) -> PlannedReminder:
        send_at = dt.datetime.combine(day, policy.send_time, tzinfo=zone)
        end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
        return PlannedReminder(kind, send_at.astimezone(dt.timezone.utc), end_of_day.astimezone(dt.timezone.utc),
                               MappingProxyType(dict(params)))

    candidates = []
    if loan is not None and loan.method is RepaymentMethod.MONTHLY_INTEREST:
        for interest_date in sorted(set(loan.interest_dates)):
            if interest_date < repayment_date:
                candidates.append(on(interest_date - dt.timedelta(days=policy.interest_due_days),
                                     ReminderKind.INTEREST_DUE,
                                     {"due_date": interest_date.isoformat(), "days": str(policy.interest_due_days)}))
    candidates.append(on(repayment_date - dt.timedelta(days=policy.due_soon_days), ReminderKind.DUE_SOON,
                         {**due, "days": str(policy.due_soon_days)}))
    candidates.append(on(repayment_date, ReminderKind.DUE_TODAY, due))
    candidates.extend(on(repayment_date + dt.timedelta(days=after), ReminderKind.OVERDUE, due)
                      for after in OVERDUE_DAYS_AFTER)

    planned = []
    for reminder in candidates:
        if reminder.send_at >= now:
            planned.append(reminder)
        elif (reminder.kind is ReminderKind.DUE_TODAY and repayment_date == today
              and not policy.quiet_hours.contains(now)):
            # Only the repayment day itself may still send late, and not into the night.
            planned.append(replace(reminder, send_at=now.astimezone(dt.timezone.utc)))
    return tuple(sorted(planned, key=lambda r: r.send_at))
