"""Repayment reminder planning (Asia/Shanghai, 09:00 local by default): before, on and after the
repayment date, and before each interest date of a monthly-interest IOU."""
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from services.common.errors import InvalidInput
from services.notify.rate_limit import InMemoryRateCounterStore, QuietHours, RateLimits, SmsRateLimiter
from services.notify.reminders import LoanTerms, ReminderKind, ReminderPolicy, RepaymentMethod, plan_reminders
from services.notify.settings import NotifySettings
from services.notify.sms_templates import SmsTemplateCatalog

SH = ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc
DUE = dt.date(2025, 3, 10)
POLICY = ReminderPolicy(due_soon_days=3)
#: what every plan made before the repayment date ends with
OVERDUE_SERIES = [ReminderKind.OVERDUE] * 5


def at(day, hour, minute=0):
    return dt.datetime(2025, 3, day, hour, minute, tzinfo=SH)


def test_completed_well_ahead_plans_due_soon_and_due_today_at_nine_local():
    plan = plan_reminders(DUE, at(1, 15), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    soon, today, *_ = plan
    # 09:00 in UTC+8 is 01:00 UTC.
    assert soon.send_at == dt.datetime(2025, 3, 7, 1, 0, tzinfo=UTC)
    assert today.send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)
    assert soon.template_id == "due_soon" and today.template_id == "due_today"
    assert dict(soon.params) == {"due_date": "2025-03-10", "days": "3"}
    assert dict(today.params) == {"due_date": "2025-03-10"}


def test_reminders_expire_at_local_midnight_ending_their_day():
    soon, today, *_ = plan_reminders(DUE, at(1, 15), POLICY)
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
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY, *OVERDUE_SERIES]


def test_due_soon_day_before_nine_keeps_both():
    plan = plan_reminders(DUE, at(7, 8, 59), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY, *OVERDUE_SERIES]


def test_repayment_date_inside_the_due_soon_window_gets_only_due_today():
    plan = plan_reminders(DUE, at(9, 11), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    assert plan[0].send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)


def test_on_the_repayment_day_after_nine_due_today_goes_at_once():
    now = at(10, 15, 30)
    plan = plan_reminders(DUE, now, POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    assert plan[0].send_at == now


def test_on_the_repayment_day_in_quiet_hours_only_the_overdue_reminders_are_planned():
    assert [r.kind for r in plan_reminders(DUE, at(10, 21, 30), POLICY)] == OVERDUE_SERIES


def test_on_the_repayment_day_before_nine_due_today_waits_for_nine():
    plan = plan_reminders(DUE, at(10, 7), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    assert plan[0].send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)


def test_beijing_date_not_utc_date_decides_the_day():
    # 2025-03-09 17:00 UTC is already 01:00 on the 10th in Shanghai: the repayment day.
    plan = plan_reminders(DUE, dt.datetime(2025, 3, 9, 17, 0, tzinfo=UTC), POLICY)
    assert [r.kind for r in plan] == [ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    assert plan[0].send_at == dt.datetime(2025, 3, 10, 1, 0, tzinfo=UTC)


def test_due_soon_offset_and_send_time_are_configurable():
    policy = ReminderPolicy(due_soon_days=7, send_time=dt.time(10, 30))
    soon, today, *_ = plan_reminders(DUE, at(1, 8), policy)
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


# --- overdue -------------------------------------------------------------------------------

def test_overdue_reminders_go_the_day_after_then_weekly_for_four_weeks_each_expiring_with_its_day():
    overdue = [r for r in plan_reminders(DUE, at(1, 15), POLICY) if r.kind is ReminderKind.OVERDUE]
    days = [dt.date(2025, 3, 11), dt.date(2025, 3, 18), dt.date(2025, 3, 25), dt.date(2025, 4, 1),
            dt.date(2025, 4, 8)]
    assert [r.send_at for r in overdue] == [dt.datetime.combine(d, dt.time(9), tzinfo=SH) for d in days]
    assert [r.expires_at for r in overdue] == [dt.datetime.combine(d + dt.timedelta(days=1), dt.time(0), tzinfo=SH)
                                               for d in days]
    assert {r.template_id for r in overdue} == {"overdue"}
    assert {tuple(r.params.items()) for r in overdue} == {(("due_date", "2025-03-10"),)}
    # a scheduler back from downtime late on the 18th still sends that week's; the next morning it is stale
    second = overdue[1]
    assert second.is_due(dt.datetime(2025, 3, 18, 20, 59, tzinfo=SH))
    assert second.is_expired(dt.datetime(2025, 3, 19, 0, 0, tzinfo=SH))


@pytest.mark.parametrize("now, first_day", [
    (at(11, 9), dt.date(2025, 3, 11)),        # the first one's moment itself: still planned
    (at(11, 9, 1), dt.date(2025, 3, 18)),     # unlike due_today, an overdue reminder does not go late
    (at(19, 10), dt.date(2025, 3, 25)),
    (dt.datetime(2025, 4, 8, 8, 0, tzinfo=SH), dt.date(2025, 4, 8)),
])
def test_a_plan_made_after_the_repayment_date_holds_only_the_overdue_reminders_still_ahead(now, first_day):
    plan = plan_reminders(DUE, now, POLICY)
    assert {r.kind for r in plan} == {ReminderKind.OVERDUE}
    assert plan[0].send_at == dt.datetime.combine(first_day, dt.time(9), tzinfo=SH)
    assert plan[-1].send_at == dt.datetime(2025, 4, 8, 9, 0, tzinfo=SH)


def test_after_the_last_overdue_week_nothing_is_planned():
    assert plan_reminders(DUE, dt.datetime(2025, 4, 8, 9, 1, tzinfo=SH), POLICY) == ()


def test_reminders_are_held_back_in_quiet_hours_by_their_category_and_loan_notices_are_not():
    """The scheduler hands reminders to the delivery log, whose rate limiter holds the reminder
    category back at night; the notices of a loan's life answer what a person just did and go."""
    catalog = SmsTemplateCatalog.load()
    limiter = SmsRateLimiter(RateLimits(), InMemoryRateCounterStore(), quiet_hours=POLICY.quiet_hours)
    night = at(18, 22, 30)
    for kind in ReminderKind:
        held = limiter.acquire("13812345678", catalog.get(kind.value).category, night)
        assert (held.allowed, held.reason, held.not_before) == (False, "quiet_hours", at(19, 8)), kind
    for notice in ("loan_extended", "repayment_recorded", "loan_repaid"):
        assert limiter.acquire("13812345678", catalog.get(notice).category, night).allowed, notice


# --- interest of a monthly-interest IOU ----------------------------------------------------

MONTHLY_DUE = dt.date(2027, 6, 15)
INTEREST_DATES = tuple(dt.date(2027, month, 15) for month in range(2, 7))  # 02-15 ... 06-15, the last = due
SIGNED = dt.datetime(2027, 1, 15, 10, 0, tzinfo=SH)


def test_interest_reminders_go_three_days_before_each_interest_date_but_the_last():
    plan = plan_reminders(MONTHLY_DUE, SIGNED, POLICY, LoanTerms(RepaymentMethod.MONTHLY_INTEREST, INTEREST_DATES))
    assert [r.kind for r in plan] == [ReminderKind.INTEREST_DUE] * 4 + [
        ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY, *OVERDUE_SERIES]
    interest = plan[:4]
    assert [r.send_at for r in interest] == [dt.datetime(2027, month, 12, 9, 0, tzinfo=SH) for month in range(2, 6)]
    assert [r.expires_at for r in interest] == [dt.datetime(2027, month, 13, 0, 0, tzinfo=SH) for month in range(2, 6)]
    assert [dict(r.params) for r in interest] == [{"due_date": f"2027-0{month}-15", "days": "3"}
                                                  for month in range(2, 6)]
    assert plan[4].send_at == dt.datetime(2027, 6, 12, 9, 0, tzinfo=SH)  # due_soon speaks for June's interest


def test_interest_reminders_already_past_are_not_planned_and_the_offset_is_a_policy():
    loan = LoanTerms(RepaymentMethod.MONTHLY_INTEREST, INTEREST_DATES)
    plan = plan_reminders(MONTHLY_DUE, dt.datetime(2027, 3, 12, 9, 1, tzinfo=SH), POLICY, loan)
    assert [r.params["due_date"] for r in plan if r.kind is ReminderKind.INTEREST_DUE] == ["2027-04-15", "2027-05-15"]
    plan = plan_reminders(MONTHLY_DUE, SIGNED, ReminderPolicy(interest_due_days=5), loan)
    interest = [r for r in plan if r.kind is ReminderKind.INTEREST_DUE]
    assert interest[0].send_at == dt.datetime(2027, 2, 10, 9, 0, tzinfo=SH) and interest[0].params["days"] == "5"


@pytest.mark.parametrize("loan", [None, LoanTerms(RepaymentMethod.LUMP_SUM),
                                  LoanTerms(RepaymentMethod.LUMP_SUM, INTEREST_DATES)])
def test_a_lump_sum_iou_has_no_interest_reminders(loan):
    plan = plan_reminders(MONTHLY_DUE, SIGNED, POLICY, loan)
    assert [r.kind for r in plan] == [ReminderKind.DUE_SOON, ReminderKind.DUE_TODAY, *OVERDUE_SERIES]


@pytest.mark.parametrize("days", [0, -1, 31, "3"])
def test_interest_due_days_out_of_range_are_refused(days):
    with pytest.raises(InvalidInput) as err:
        ReminderPolicy(interest_due_days=days)
    assert (err.value.field, err.value.rule) == ("reminders.interest_due_days", "range")


@pytest.mark.parametrize("value, rule", [(0, "positive"), ("soon", "number"), (45, "range")])
def test_a_bad_interest_due_days_setting_stops_the_service_naming_it(value, rule):
    with pytest.raises(InvalidInput) as err:
        NotifySettings.from_config({"REMINDERS": {"INTEREST_DUE_DAYS": value}})
    assert (err.value.field, err.value.rule) == ("reminders.interest_due_days", rule)
    assert NotifySettings.from_config({"REMINDERS": {"INTEREST_DUE_DAYS": 5}}).reminders.interest_due_days == 5
