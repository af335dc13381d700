"""Per-phone and global rate limits, quiet hours for reminders."""
import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

import pytest

from services.common.errors import InvalidInput
from services.notify.rate_limit import (
    InMemoryRateCounterStore,
    QuietHours,
    RateLimits,
    SmsRateLimiter,
)
from services.notify.sms_templates import TemplateCategory

SH = ZoneInfo("Asia/Shanghai")
CODE, NOTICE, REMINDER = TemplateCategory.CODE, TemplateCategory.NOTICE, TemplateCategory.REMINDER
PHONE = "13812345678"
MORNING = dt.datetime(2025, 3, 10, 10, 0, tzinfo=SH)


def limiter(**limits):
    return SmsRateLimiter(RateLimits(**limits), InMemoryRateCounterStore())


def test_burst_to_one_phone_lets_exactly_the_per_minute_limit_through():
    rl = limiter(per_phone_per_minute=3, per_phone_per_hour=10, per_phone_per_day=20, global_limit=1000)
    results = [rl.acquire(PHONE, NOTICE, MORNING) for _ in range(100)]
    assert sum(r.allowed for r in results) == 3
    denied = [r for r in results if not r.allowed]
    assert {r.reason for r in denied} == {"phone_per_minute"}
    assert {r.not_before for r in denied} == {MORNING + dt.timedelta(minutes=1)}


def test_a_slot_frees_exactly_one_period_after_the_send_that_filled_it():
    rl = limiter(per_phone_per_minute=1, global_limit=1000)
    assert rl.acquire(PHONE, NOTICE, MORNING).allowed
    assert not rl.acquire(PHONE, NOTICE, MORNING + dt.timedelta(seconds=59)).allowed
    assert rl.acquire(PHONE, NOTICE, MORNING + dt.timedelta(seconds=60)).allowed


def test_other_phones_are_not_affected_by_one_phones_limit():
    rl = limiter(per_phone_per_minute=1, global_limit=1000)
    assert rl.acquire(PHONE, NOTICE, MORNING).allowed
    assert not rl.acquire(PHONE, NOTICE, MORNING).allowed
    assert rl.acquire("13900001111", NOTICE, MORNING).allowed


def test_check_alone_counts_nothing():
    rl = limiter(per_phone_per_minute=1, global_limit=1000)
    for _ in range(5):
        assert rl.check(PHONE, NOTICE, MORNING).allowed
    assert rl.acquire(PHONE, NOTICE, MORNING).allowed


def _count_in(times, end, period):
    return sum(1 for t in times if end - period < t <= end)


def test_sustained_attempts_never_exceed_minute_hour_or_day_limits():
    rl = limiter(per_phone_per_minute=3, per_phone_per_hour=10, per_phone_per_day=20, global_limit=1000)
    start = dt.datetime(2025, 3, 10, 0, 0, tzinfo=dt.timezone.utc)
    allowed = []
    for step in range(2 * 24 * 60 * 6):  # an attempt every 10 s for two days
        now = start + dt.timedelta(seconds=10 * step)
        if rl.acquire(PHONE, NOTICE, now).allowed:
            allowed.append(now)
    for t in allowed:  # checked independently over every window ending at a send
        assert _count_in(allowed, t, dt.timedelta(minutes=1)) <= 3
        assert _count_in(allowed, t, dt.timedelta(hours=1)) <= 10
        assert _count_in(allowed, t, dt.timedelta(days=1)) <= 20
    # The limits are reached, not merely respected: first hour gives 10, first day 20.
    assert _count_in(allowed, start + dt.timedelta(minutes=59, seconds=59), dt.timedelta(hours=1)) == 10
    assert _count_in(allowed, start + dt.timedelta(hours=23, minutes=59), dt.timedelta(days=1)) == 20
    assert len(allowed) == 40


def test_hour_limit_reports_when_the_oldest_send_leaves_the_window():
    rl = limiter(per_phone_per_minute=100, per_phone_per_hour=2, global_limit=1000)
    assert rl.acquire(PHONE, NOTICE, MORNING).allowed
    assert rl.acquire(PHONE, NOTICE, MORNING + dt.timedelta(minutes=10)).allowed
    denied = rl.acquire(PHONE, NOTICE, MORNING + dt.timedelta(minutes=20))
    assert (denied.allowed, denied.reason) == (False, "phone_per_hour")
    assert denied.not_before == MORNING + dt.timedelta(hours=1)


def test_global_rate_holds_across_many_phones():
    rl = limiter(global_limit=10, global_period=dt.timedelta(seconds=1))
    results = [rl.acquire("1390000%04d" % i, CODE, MORNING) for i in range(50)]
    assert sum(r.allowed for r in results) == 10
    assert {r.reason for r in results if not r.allowed} == {"global"}
    assert {r.not_before for r in results if not r.allowed} == {MORNING + dt.timedelta(seconds=1)}
    assert rl.acquire("13999999999", CODE, MORNING + dt.timedelta(seconds=1)).allowed


@pytest.mark.parametrize("local_time, quiet", [
    (dt.time(20, 59, 59), False),
    (dt.time(21, 0), True),
    (dt.time(23, 30), True),
    (dt.time(0, 0), True),
    (dt.time(7, 59, 59), True),
    (dt.time(8, 0), False),
    (dt.time(12, 0), False),
])
def test_quiet_hours_default_to_nine_pm_to_eight_am_shanghai(local_time, quiet):
    at = dt.datetime.combine(dt.date(2025, 3, 10), local_time, tzinfo=SH)
    assert QuietHours().contains(at) is quiet
    assert QuietHours().contains(at.astimezone(dt.timezone.utc)) is quiet


def test_reminder_at_night_waits_for_eight_am_but_codes_and_notices_go():
    rl = limiter()
    night = dt.datetime(2025, 3, 10, 22, 30, tzinfo=SH)
    reminder = rl.acquire(PHONE, REMINDER, night)
    assert (reminder.allowed, reminder.reason) == (False, "quiet_hours")
    assert reminder.not_before == dt.datetime(2025, 3, 11, 8, 0, tzinfo=SH)
    assert rl.acquire(PHONE, CODE, night).allowed
    assert rl.acquire(PHONE, NOTICE, night).allowed


def test_reminder_in_the_early_morning_waits_until_eight_the_same_day():
    early = dt.datetime(2025, 3, 11, 6, 15, tzinfo=SH)
    assert QuietHours().next_allowed(early) == dt.datetime(2025, 3, 11, 8, 0, tzinfo=SH)


def test_rate_limited_reminder_released_into_quiet_hours_waits_for_the_morning():
    rl = limiter(per_phone_per_minute=1, global_limit=1000)
    evening = dt.datetime(2025, 3, 10, 20, 59, 30, tzinfo=SH)
    assert rl.acquire(PHONE, NOTICE, evening).allowed
    denied = rl.acquire(PHONE, REMINDER, evening)
    assert denied.reason == "phone_per_minute"
    assert denied.not_before == dt.datetime(2025, 3, 11, 8, 0, tzinfo=SH)


def test_quiet_hours_within_one_day():
    lunch = QuietHours(start=dt.time(12, 0), end=dt.time(13, 30))
    assert lunch.contains(dt.datetime(2025, 3, 10, 12, 45, tzinfo=SH))
    assert not lunch.contains(dt.datetime(2025, 3, 10, 13, 30, tzinfo=SH))
    assert (lunch.next_allowed(dt.datetime(2025, 3, 10, 12, 45, tzinfo=SH))
            == dt.datetime(2025, 3, 10, 13, 30, tzinfo=SH))


def test_phone_key_keeps_numbers_out_of_the_store():
    store = InMemoryRateCounterStore()
    rl = SmsRateLimiter(RateLimits(), store, phone_key=lambda p: hashlib.sha256(b"pepper" + p.encode()).hexdigest())
    rl.acquire(PHONE, CODE, MORNING)
    assert store._events and not any(PHONE in key for key in store._events)


def test_naive_times_are_refused():
    with pytest.raises(InvalidInput) as err:
        limiter().acquire(PHONE, CODE, dt.datetime(2025, 3, 10, 10, 0))
    assert err.value.rule == "timezone_aware"


def test_bad_limits_are_refused():
    with pytest.raises(InvalidInput) as err:
        RateLimits(per_phone_per_minute=0)
    assert err.value.field == "rate_limits.per_phone_per_minute"


def test_codes_have_a_budget_of_their_own_that_notices_never_use_up():
    """Four documents waiting for a person fill their notices' budget; the willingness code for the
    fifth still goes (seen before: the code never came, and the confirm said the code was needed)."""
    rl = limiter(per_phone_per_minute=4, per_phone_per_hour=10, per_phone_per_day=20, global_limit=1000,
                 code_per_phone_per_minute=2, code_per_phone_per_hour=10, code_per_phone_per_day=20)
    notices = [rl.acquire(PHONE, NOTICE, MORNING) for _ in range(5)]
    assert [n.allowed for n in notices] == [True] * 4 + [False]
    assert notices[-1].reason == "phone_per_minute"
    assert rl.acquire(PHONE, CODE, MORNING).allowed  # not held back by the notices
    assert rl.acquire(PHONE, CODE, MORNING).allowed
    third = rl.acquire(PHONE, CODE, MORNING)  # codes are limited too, by their own budget
    assert (third.allowed, third.reason, third.not_before) == (False, "phone_per_minute",
                                                               MORNING + dt.timedelta(minutes=1))
    assert not rl.acquire(PHONE, REMINDER, MORNING).allowed  # reminders share the notices' budget


def test_the_global_limit_counts_codes_and_notices_together():
    rl = limiter(global_limit=3, global_period=dt.timedelta(seconds=1))
    assert rl.acquire(PHONE, NOTICE, MORNING).allowed
    assert rl.acquire(PHONE, CODE, MORNING).allowed
    assert rl.acquire("13900001111", NOTICE, MORNING).allowed
    denied = rl.acquire("13900002222", CODE, MORNING)
    assert (denied.allowed, denied.reason) == (False, "global")


def test_a_bad_code_budget_is_refused_naming_the_setting():
    with pytest.raises(InvalidInput) as err:
        RateLimits(code_per_phone_per_hour=0)
    assert err.value.field == "rate_limits.code_per_phone_per_hour"
