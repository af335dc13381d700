"""Repayment reminder planning (Asia/Shanghai, 09:00 local by default)."""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.common.errors import InvalidInput
from services.notify.rate_limit import QuietHours
from services.notify.reminders import ReminderKind, ReminderPolicy, plan_reminders

SH = ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc
DUE = dt.date(2025, 3, 10)
POLICY = ReminderPolicy(due_soon_days=3)


def at(day, hour, minute=0):
    return dt.datetime(2025, 3, day, hour, minute, tzinfo=SH)


def test_completed_well_ahead_plans_due_soon_and_due_today_at_nine_local():
    plan = plan_reminders(DUE, at(1, 15), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY]
    soon, today = plan
    # 09:00 in UTC+8 is 01:00 UTC.
    assert soon.send_at == dt.datetime(2025, 3, 7, 1, 0, tzinfo=UTC)
    assert today.send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
    assert soon.template_id == "due_soon" and today.template_id == "due_today"
    assert dict(soon.params) == {"due_date": "2025-03-10", "days": "3"}
    assert dict(today.params) == {"due_date": "2025-03-10"}


def test_reminders_expire_at_local_midnight_ending_their_day():
    soon, today = plan_reminders(DUE, at(1, 15), POLICY)
    assert soon.expires_at == dt.datetime(2025, 3, 8, 0, 0, tzinfo=SH)
    assert today.expires_at == dt.datetime(2025, 3, 11, 0, 0, tzinfo=SH)
    # A scheduler back from downtime on the 8th sends due_today later but not the stale due_soon.
    back = at(8, 10)
    assert soon.is_expired(back) and not soon.is_due(back)
    assert not today.is_due(back)
    assert today.is_due(at(10, 9)) and today.is_due(at(10, 20, 59))
    assert today.is_expired(at(11, 0))


def test_due_soon_day_after_nine_skips_due_soon_only():
    plan = plan_reminders(DUE, at(7, 9, 1), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY]


def test_due_soon_day_before_nine_keeps_both():
    plan = plan_reminders(DUE, at(7, 8, 59), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY]


def test_repayment_date_inside_the_due_soon_window_gets_only_due_today():
    plan = plan_reminders(DUE, at(9, 11), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY]
    assert plan[0].send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)


def test_on_the_repayment_day_after_nine_due_today_goes_at_once():
    now = at(10, 15, 30)
    plan = plan_reminders(DUE, now, POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY]
    assert plan[0].send_at == now


def test_on_the_repayment_day_in_quiet_hours_nothing_is_planned():
    assert plan_reminders(DUE, at(10, 21, 30), POLICY) == ()


def test_on_the_repayment_day_before_nine_due_today_waits_for_nine():
    plan = plan_reminders(DUE, at(10, 7), POLICY)
    assert [r.send_at for r in plan] == [dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)]


def test_past_repayment_date_plans_nothing():
    assert plan_reminders(DUE, at(11, 9), POLICY) == ()


def test_beijing_date_not_utc_date_decides_the_day():
    # 2025-03-09 17:00 UTC is already 01:00 on the 10th in Shanghai: the repayment day.
    plan = plan_reminders(DUE, dt.datetime(2025, 3, 9, 17, 0, tzinfo=UTC), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY]
    assert plan[0].send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)


def test_due_soon_offset_and_send_time_are_configurable():
    policy = ReminderPolicy(due_soon_days=7, send_time=dt.time(10, 30))
    soon, today = plan_reminders(DUE, at(1, 8), policy)
    assert soon.send_at == dt.datetime(2025, 3, 3, 2, 30, tzinfo=UTC)
    assert soon.params["days"] == "7"
    assert today.send_at == dt.datetime(2025, 3, 10, 2, 30, tzinfo=UTC)


def test_send_time_inside_quiet_hours_is_refused():
    with pytest.raises(InvalidInput) as err:
        ReminderPolicy(send_time=dt.time(7, 0))
    assert err.value.rule == "outside_quiet_hours"
    ReminderPolicy(send_time=dt.time(7, 0), quiet_hours=QuietHours(start=dt.time(22), end=dt.time(7)))


@pytest.mark.parametrize("days", [0, -1, 31])
def test_due_soon_days_out_of_range_are_refused(days):
    with pytest.raises(InvalidInput) as err:
        ReminderPolicy(due_soon_days=days)
    assert err.value.field == "reminders.due_soon_days"


def test_naive_now_is_refused():
    with pytest.raises(InvalidInput):
        plan_reminders(DUE, dt.datetime(2025, 3, 1, 9), POLICY)
