"""Repayment schedules. Numbers are chosen so the expectations are easy to check
by hand: ¥10,000 at 3.65 % a year on actual/365 is exactly ¥1.00 a day."""
import datetime as dt
from decimal import Decimal

import pytest

from services.common.schedule import (
    DayCount,
    RepaymentMethod,
    add_months,
    build_schedule,
    monthly_periods,
)

D = dt.date
TEN_K = Decimal("10000")
RATE_365 = Decimal("0.0365")  # ¥1.00 a day on ¥10,000


@pytest.mark.parametrize(
    "anchor, months, expected",
    [
        (D(2024, 1, 31), 1, D(2024, 2, 29)),  # leap February
        (D(2024, 1, 31), 2, D(2024, 3, 31)),  # anchored to the 31st, not to 29 Feb
        (D(2024, 1, 31), 3, D(2024, 4, 30)),
        (D(2025, 1, 31), 1, D(2025, 2, 28)),
        (D(2024, 2, 29), 12, D(2025, 2, 28)),
        (D(2024, 11, 30), 3, D(2025, 2, 28)),
        (D(2025, 12, 15), 1, D(2026, 1, 15)),  # across the year end
    ],
)
def test_add_months_clamps_to_month_end(anchor, months, expected):
    assert add_months(anchor, months) == expected


def test_lump_sum_counts_the_leap_day():
    # 2024-01-01 → 2025-01-01 is 366 days; actual/365 does not shrink the day rate.
    s = build_schedule(TEN_K, RATE_365, D(2024, 1, 1), D(2025, 1, 1), RepaymentMethod.LUMP_SUM)
    assert len(s.payments) == 1
    p = s.payments[0]
    assert (p.days, p.interest, p.amount, p.due_date) == (366, Decimal("366.00"), Decimal("10366.00"), D(2025, 1, 1))
    assert s.total_interest == Decimal("366.00")


def test_monthly_from_the_31st_with_short_final_period():
    s = build_schedule(TEN_K, RATE_365, D(2024, 1, 31), D(2024, 5, 15), RepaymentMethod.MONTHLY_INTEREST)
    rows = [(p.period_start, p.period_end, p.days, p.principal, p.amount) for p in s.payments]
    assert rows == [
        (D(2024, 1, 31), D(2024, 2, 29), 29, Decimal("0"), Decimal("29.00")),
        (D(2024, 2, 29), D(2024, 3, 31), 31, Decimal("0"), Decimal("31.00")),
        (D(2024, 3, 31), D(2024, 4, 30), 30, Decimal("0"), Decimal("30.00")),
        (D(2024, 4, 30), D(2024, 5, 15), 15, Decimal("10000"), Decimal("10015.00")),
    ]
    assert s.total_interest == Decimal("105.00")
    assert s.total_payment == Decimal("10105.00")


def test_maturity_on_an_anchor_day_adds_no_empty_period():
    periods = monthly_periods(D(2025, 1, 31), D(2025, 3, 31))
    assert periods == [(D(2025, 1, 31), D(2025, 2, 28)), (D(2025, 2, 28), D(2025, 3, 31))]


def test_maturity_before_the_first_month_end_is_one_short_period():
    s = build_schedule(TEN_K, RATE_365, D(2025, 1, 15), D(2025, 2, 1), RepaymentMethod.MONTHLY_INTEREST)
    assert [(p.days, p.amount) for p in s.payments] == [(17, Decimal("10017.00"))]


def test_one_day_loan_rounds_half_up_once():
    # 1000 × 12 % ÷ 365 = 0.3287… → 0.33
    s = build_schedule(Decimal("1000"), Decimal("0.12"), D(2026, 3, 1), D(2026, 3, 2), "lump_sum")
    assert s.payments[0].amount == Decimal("1000.33")
    assert s.total_interest == Decimal("0.33")


def test_exact_half_fen_rounds_up():
    # 18.25 × 10 % ÷ 365 = 0.005 exactly: ROUND_HALF_UP gives 0.01 (half-even would give 0.00).
    s = build_schedule(Decimal("18.25"), Decimal("0.10"), D(2026, 3, 1), D(2026, 3, 2), "lump_sum")
    assert s.payments[0].amount == Decimal("18.26")
    assert s.total_interest == Decimal("0.01")


def test_each_payment_rounded_and_totals_add_up_to_the_fen():
    # 1000 × 12 % × 31 ÷ 365 = 10.1917… → 10.19; × 28 ÷ 365 = 9.2054… → 9.21, paid with the principal.
    s = build_schedule(Decimal("1000"), Decimal("0.12"), D(2025, 1, 1), D(2025, 3, 1), "monthly_interest")
    assert [p.amount for p in s.payments] == [Decimal("10.19"), Decimal("1009.21")]
    assert s.total_interest == Decimal("19.40")
    assert s.total_interest == sum(p.amount for p in s.payments) - s.principal


def test_zero_interest():
    s = build_schedule(Decimal("5000.50"), Decimal("0"), D(2024, 2, 29), D(2024, 5, 29), "monthly_interest")
    assert [p.amount for p in s.payments] == [Decimal("0.00"), Decimal("0.00"), Decimal("5000.50")]
    assert s.total_interest == Decimal("0.00")


def test_actual_360_is_available():
    # 10000 × 3.6 % ÷ 360 = ¥1.00 a day.
    s = build_schedule(TEN_K, Decimal("0.036"), D(2025, 1, 1), D(2025, 1, 31), "lump_sum", DayCount.ACT_360)
    assert s.payments[0].amount == Decimal("10030.00")
    assert "360" in s.convention


def test_convention_is_stated_in_chinese():
    s = build_schedule(TEN_K, RATE_365, D(2025, 1, 31), D(2025, 6, 30), "monthly_interest")
    assert "365" in s.convention and "实际天数" in s.convention and "四舍五入" in s.convention
    assert "最后一日" in s.convention  # the month-end clamp is stated for monthly schedules


@pytest.mark.parametrize(
    "principal, rate, start, end",
    [
        (TEN_K, RATE_365, D(2025, 1, 1), D(2025, 1, 1)),  # no term
        (TEN_K, RATE_365, D(2025, 1, 2), D(2025, 1, 1)),  # maturity first
        (Decimal("0"), RATE_365, D(2025, 1, 1), D(2025, 2, 1)),
        (Decimal("1.001"), RATE_365, D(2025, 1, 1), D(2025, 2, 1)),
        (TEN_K, Decimal("-0.01"), D(2025, 1, 1), D(2025, 2, 1)),
    ],
)
def test_refuses_impossible_loans(principal, rate, start, end):
    with pytest.raises(ValueError):
        build_schedule(principal, rate, start, end, "lump_sum")
