"""Time as the platform stores it: UTC, naive in the database (SQLite has no
time zones; PostgreSQL columns are ``timestamp without time zone``), aware
everywhere else, ISO 8601 with an offset on the wire."""
from __future__ import annotations

from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

#: the day of a document, a repayment or a reminder is a day in China
CHINA = ZoneInfo("Asia/Shanghai")


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(timezone.utc)


def utcnow() -> datetime:
    """The current UTC time as stored: naive."""
    return now().replace(tzinfo=None)


def aware(value: datetime | None) -> datetime | None:
    """A stored (naive UTC) time as an aware one; aware values pass unchanged."""
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def naive(value: datetime | None) -> datetime | None:
    """Any aware time as stored: naive UTC."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value is not None else None


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, for RPC answers and events."""
    return aware(value).isoformat() if value is not None else None


def today_in_china(moment: datetime | None = None) -> date:
    """The calendar day in China at ``moment`` (default now)."""
    return (moment or now()).astimezone(CHINA).date()
