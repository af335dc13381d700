"""The notify service's settings, read once from its nameko config.

Each section of ``config.yaml`` becomes a frozen value of the domain module
that uses it: :class:`~services.notify.retry.RetryPolicy`,
:class:`~services.notify.rate_limit.RateLimits` and
:class:`~services.notify.rate_limit.QuietHours`,
:class:`~services.notify.reminders.ReminderPolicy`, plus the scheduler's
interval and lease. A bad value raises
:class:`~services.common.errors.InvalidInput` naming the setting, so a
misconfigured replica stops at start-up instead of mis-sending later.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from services.common.config import REPO_ROOT, data_dir
from services.common.errors import InvalidInput
from services.notify.rate_limit import CHINA_TZ, QuietHours, RateLimits
from services.notify.reminders import ReminderPolicy
from services.notify.retry import RetryPolicy


def sms_provider_name(config: Mapping[str, Any]) -> str:
    """``SMS.PROVIDER``: console (the embedded default) or tencent."""
    return str((config.get("SMS") or {}).get("PROVIDER") or "console")


def console_outbox(config: Mapping[str, Any]) -> Path | None:
    """The file the console SMS provider writes (``SMS.OUTBOX_FILE``, default
    ``<DATA_DIR>/sms-outbox.jsonl``, so it moves with the data directory); None
    with a real vendor. ``esign up`` tells ``esign demo`` where it is."""
    if sms_provider_name(config) != "console":
        return None
    configured = (config.get("SMS") or {}).get("OUTBOX_FILE")
    path = Path(str(configured)) if configured else data_dir(dict(config)) / "sms-outbox.jsonl"
    return path if path.is_absolute() else REPO_ROOT / path


@dataclass(frozen=True)
class SchedulerSettings:
    interval: float = 1.0        # seconds between ticks of the retry/reminder job
    lease_seconds: float = 15.0  # a holder that stops renewing loses the job after this
    batch: int = 50              # messages and reminders handled per tick
    claim_seconds: float = 60.0  # one attempt may take this long before another may retry it
    in_flight_recheck_seconds: float = 30.0  # a handover in doubt is checked with the vendor this often
    in_flight_limit_seconds: float = 600.0   # ... until this long after its attempt (then WHEN_UNKNOWN)

    def require_outlasting(self, vendor_call_seconds: float) -> None:
        """A claim must outlast the longest vendor call twice over: one that ran
        out while its call could still be answered would be checked too soon."""
        if self.claim_seconds < 2 * vendor_call_seconds:
            raise InvalidInput("retry.claim_seconds", "longer_than_vendor_calls",
                               f"expected at least twice the vendor's timeouts ({2 * vendor_call_seconds:.0f} s)")


@dataclass(frozen=True)
class NotifySettings:
    retry: RetryPolicy
    rate_limits: RateLimits
    quiet_hours: QuietHours
    reminders: ReminderPolicy
    scheduler: SchedulerSettings
    identity_timeout: float = 10.0  # seconds to wait for identity's answer

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "NotifySettings":
        retry = _section(config, "RETRY")
        limits = _section(config, "RATE_LIMITS")
        quiet = _section(config, "QUIET_HOURS")
        reminders = _section(config, "REMINDERS")
        scheduler = _section(config, "SCHEDULER")
        identity = _section(config, "IDENTITY")
        quiet_hours = QuietHours(
            start=_time(quiet, "START", dt.time(21, 0), "quiet_hours.start"),
            end=_time(quiet, "END", dt.time(8, 0), "quiet_hours.end"),
            timezone=str(quiet.get("TIMEZONE") or CHINA_TZ),
        )
        return cls(
            retry=RetryPolicy(
                base_delay=_number(retry, "BASE_DELAY", 2.0, "retry.base_delay"),
                max_delay=_number(retry, "MAX_DELAY", 300.0, "retry.max_delay"),
                max_attempts=int(_number(retry, "MAX_ATTEMPTS", 6, "retry.max_attempts")),
            ),
            rate_limits=RateLimits(
                per_phone_per_minute=int(_number(limits, "PER_PHONE_PER_MINUTE", 5,
                                                 "rate_limits.per_phone_per_minute")),
                per_phone_per_hour=int(_number(limits, "PER_PHONE_PER_HOUR", 10, "rate_limits.per_phone_per_hour")),
                per_phone_per_day=int(_number(limits, "PER_PHONE_PER_DAY", 20, "rate_limits.per_phone_per_day")),
                global_limit=int(_number(limits, "GLOBAL_LIMIT", 50, "rate_limits.global_limit")),
                global_period=dt.timedelta(seconds=_number(limits, "GLOBAL_PERIOD_SECONDS", 1.0,
                                                           "rate_limits.global_period_seconds")),
                **{f"code_per_phone_per_{window}": int(_number(limits, f"CODE_PER_PHONE_PER_{window.upper()}", default,
                                                               f"rate_limits.code_per_phone_per_{window}"))
                   for window, default in (("minute", 5), ("hour", 10), ("day", 20))},
            ),
            quiet_hours=quiet_hours,
            reminders=ReminderPolicy(
                due_soon_days=int(_number(reminders, "DUE_SOON_DAYS", 3, "reminders.due_soon_days")),
                interest_due_days=int(_number(reminders, "INTEREST_DUE_DAYS", 3, "reminders.interest_due_days")),
                send_time=_time(reminders, "SEND_TIME", dt.time(9, 0), "reminders.send_time"),
                timezone=str(reminders.get("TIMEZONE") or quiet_hours.timezone),
                quiet_hours=quiet_hours,
            ),
            scheduler=SchedulerSettings(
                interval=_number(scheduler, "INTERVAL", 1.0, "scheduler.interval"),
                lease_seconds=_number(scheduler, "LEASE_SECONDS", 15.0, "scheduler.lease_seconds"),
                batch=int(_number(scheduler, "BATCH", 50, "scheduler.batch")),
                claim_seconds=_number(retry, "CLAIM_SECONDS", 60.0, "retry.claim_seconds"),
                in_flight_recheck_seconds=_number(retry, "IN_FLIGHT_RECHECK_SECONDS", 30.0,
                                                  "retry.in_flight_recheck_seconds"),
                in_flight_limit_seconds=_number(retry, "IN_FLIGHT_LIMIT_SECONDS", 600.0,
                                                "retry.in_flight_limit_seconds"),
            ),
            identity_timeout=_number(identity, "RPC_TIMEOUT", 10.0, "identity.rpc_timeout"),
        )


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(name.lower(), "type", "expected a mapping")
    return value


def _number(section: Mapping[str, Any], key: str, default: float, field: str) -> float:
    value = section.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(field, "number", f"expected a number, found {value!r}") from None
    if number <= 0:
        raise InvalidInput(field, "positive", f"expected > 0, found {number}")
    return number


def _time(section: Mapping[str, Any], key: str, default: dt.time, field: str) -> dt.time:
    """``"HH:MM"``; an int is what YAML 1.1 makes of an unquoted 21:00 (minutes, base 60)."""
    value = section.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return dt.time(value // 60, value % 60)
    try:
        return dt.time.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(field, "time_format", f"expected HH:MM, found {value!r}") from None
