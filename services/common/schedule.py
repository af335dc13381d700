"""Repayment schedules of personal loans, in exact decimal arithmetic.

Two methods, as named on Chinese IOUs:

* 一次性还本付息 (lump sum): one payment at maturity, principal plus the
  interest of the whole term;
* 按月付息、到期还本 (monthly interest, principal at maturity): interest at
  the end of each monthly period, the principal with the last payment.

Conventions (stated on the document through ``RepaymentSchedule.convention``):

* day count actual/365 (fixed) by default: interest of a period is
  principal × annual rate × actual days ÷ 365, also in leap years;
  actual/360 is available for templates that ask for it;
* monthly periods run date to date from the start date, anchored to the start
  day and clamped to the month end (31 Jan → 28/29 Feb → 31 Mar → 30 Apr);
  the final period ends at maturity and may be shorter than a month;
* each payment is rounded once to the fen, ROUND_HALF_UP, and total interest
  is defined as the sum of payments minus principal, so the totals add up to
  the fen by construction.
"""
from __future__ import annotations

import calendar
import datetime as _dt
import enum
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

FEN = Decimal("0.01")


class RepaymentMethod(str, enum.Enum):
    LUMP_SUM = "lump_sum"  # 一次性还本付息
    MONTHLY_INTEREST = "monthly_interest"  # 按月付息、到期还本

    @property
    def label(self) -> str:
        return _METHOD_LABELS[self]


_METHOD_LABELS = {
    RepaymentMethod.LUMP_SUM: "一次性还本付息",
    RepaymentMethod.MONTHLY_INTEREST: "按月付息、到期还本",
}


class DayCount(str, enum.Enum):
    ACT_365 = "actual/365"
    ACT_360 = "actual/360"

    @property
    def basis(self) -> int:
        return 365 if self is DayCount.ACT_365 else 360


@dataclass(frozen=True)
class Payment:
    """One row of the schedule: interest of [period_start, period_end) paid on period_end."""

    number: int
    period_start: _dt.date
    period_end: _dt.date  # also the due date
    days: int
    principal: Decimal
    interest: Decimal
    amount: Decimal  # principal + interest, the figure the borrower pays

    @property
    def due_date(self) -> _dt.date:
        return self.period_end


@dataclass(frozen=True)
class RepaymentSchedule:
    principal: Decimal
    annual_rate: Decimal  # a fraction: 0.12 is 12 % a year
    start: _dt.date
    maturity: _dt.date
    method: RepaymentMethod
    day_count: DayCount
    payments: tuple[Payment, ...]

    @property
    def total_payment(self) -> Decimal:
        return sum((p.amount for p in self.payments), Decimal("0.00"))

    @property
    def total_interest(self) -> Decimal:
        # Defined from the rounded payments, so it is exact to the fen.
        return self.total_payment - self.principal

    @property
    def convention(self) -> str:
        """The day-count and rounding convention in words, for the document."""
        text = (
            f"按实际天数计息，日利率＝年利率÷{self.day_count.basis}"
            f"（{self.day_count.value}），每期利息＝本金×日利率×该期实际天数"
        )
        if self.method is RepaymentMethod.MONTHLY_INTEREST:
            text += "；每期自起息日起按月对日，当月无对应日的以该月最后一日为准，末期至到期日止，可不足一个月"
        return text + "；每期应付金额四舍五入至分。"


def build_schedule(
    principal: Decimal,
    annual_rate: Decimal,
    start: _dt.date,
    maturity: _dt.date,
    method: RepaymentMethod | str,
    day_count: DayCount | str = DayCount.ACT_365,
) -> RepaymentSchedule:
    """Compute the schedule. ``annual_rate`` is a fraction (Decimal('0.12')).

    Raises ``ValueError`` when maturity is not after start, the principal is
    not positive fen money, or the rate is negative; the template layer checks
    these first and reports them as field violations.
    """
    method = RepaymentMethod(method)
    day_count = DayCount(day_count)
    principal = Decimal(principal)
    annual_rate = Decimal(annual_rate)
    if principal <= 0 or principal != principal.quantize(FEN):
        raise ValueError("principal must be a positive amount in fen")
    if annual_rate < 0:
        raise ValueError("annual rate must not be negative")
    if maturity <= start:
        raise ValueError("maturity must be after start")
    principal = principal.quantize(FEN)

    if method is RepaymentMethod.LUMP_SUM:
        periods = [(start, maturity)]
    else:
        periods = monthly_periods(start, maturity)

    payments = []
    last = len(periods)
    for number, (begin, end) in enumerate(periods, start=1):
        days = (end - begin).days
        # One division, one rounding per payment: interest is never rounded
        # separately from the principal it is paid with.
        interest_exact = principal * annual_rate * days / day_count.basis
        principal_part = principal if number == last else Decimal("0.00")
        amount = (principal_part + interest_exact).quantize(FEN, rounding=ROUND_HALF_UP)
        payments.append(
            Payment(
                number=number,
                period_start=begin,
                period_end=end,
                days=days,
                principal=principal_part,
                interest=amount - principal_part,
                amount=amount,
            )
        )
    return RepaymentSchedule(
        principal=principal,
        annual_rate=annual_rate,
        start=start,
        maturity=maturity,
        method=method,
        day_count=day_count,
        payments=tuple(payments),
    )


def add_months(anchor: _dt.date, months: int) -> _dt.date:
    """``anchor`` moved by ``months`` calendar months, clamped to the month end.

    Always computed from the anchor, never from the previous result, so
    31 Jan → 29 Feb 2024 → 31 Mar 2024 (not 29 Mar).
    """
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    last_day = calendar.monthrange(year, month0 + 1)[1]
    return _dt.date(year, month0 + 1, min(anchor.day, last_day))


def monthly_periods(start: _dt.date, maturity: _dt.date) -> list[tuple[_dt.date, _dt.date]]:
    """Date-to-date monthly periods from ``start``; the last one ends at ``maturity``."""
    periods = []
    begin = start
    k = 1
    while True:
        end = add_months(start, k)
        if end >= maturity:
            periods.append((begin, maturity))
            return periods
        periods.append((begin, end))
        begin = end
        k += 1
