"""A signed IOU's life in numbers (services/signing/loan.py): part and full
repayments applied interest first, extensions that move the date and the
rate, and the refusals each names by field and rule. Figures are chosen so
they can be checked by hand: 10,000 at 3.65 % a year, actual/365, is
exactly 1.00 of interest a day."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from services.common.errors import Conflict, Forbidden, InvalidInput
from services.common.schedule import RepaymentMethod
from services.signing import loan

D = dt.date
TERMS = loan.Terms(Decimal("10000.00"), Decimal("3.65"), D(2027, 1, 1), D(2027, 2, 1), RepaymentMethod.LUMP_SUM)
FREE = loan.Terms(Decimal("2000.00"), Decimal("0"), D(2027, 1, 1), D(2027, 2, 1), RepaymentMethod.LUMP_SUM)


def repay(amount: str, day: dt.date, flow: str = "r") -> loan.Repayment:
    return loan.Repayment(flow, Decimal(amount), day, "银行转账")


def test_an_interest_free_loan_repaid_in_two_parts():
    first = loan.position(FREE, [repay("500", D(2027, 1, 10))], D(2027, 1, 20))
    assert (first.state, first.principal_outstanding, first.interest_owed) == ("part_repaid", Decimal("1500.00"), 0)
    done = loan.position(FREE, [repay("500", D(2027, 1, 10)), repay("1500", D(2027, 1, 30))], D(2027, 3, 1))
    assert done.state == "repaid" and done.outstanding == 0 and done.repaid_total == Decimal("2000")
    assert not done.overdue  # repaid: never overdue, even after the date


def test_interest_accrues_on_what_is_outstanding_and_is_paid_first():
    ten_days = loan.position(TERMS, [], D(2027, 1, 11))
    assert ten_days.interest_owed == Decimal("10.00") and ten_days.state == "active"
    after = loan.position(TERMS, [repay("1000", D(2027, 1, 11))], D(2027, 1, 21))
    [applied] = after.applied
    assert (applied.interest, applied.principal, applied.principal_after) == (
        Decimal("10.00"), Decimal("990.00"), Decimal("9010.00"))
    # ten more days on 9,010: 9.01
    assert after.interest_owed == Decimal("9.01") and after.outstanding == Decimal("9019.01")
    settled = loan.position(TERMS, [repay("1000", D(2027, 1, 11)), repay("9019.01", D(2027, 1, 21))], D(2027, 5, 1))
    assert settled.state == "repaid" and settled.outstanding == 0


def test_past_the_date_the_loan_is_overdue_and_keeps_accruing():
    late = loan.position(TERMS, [], D(2027, 2, 11))
    assert late.overdue and late.interest_owed == Decimal("41.00")
    assert not loan.position(TERMS, [], D(2027, 2, 1)).overdue  # the repayment day itself is not late


def test_an_extension_moves_the_date_and_its_rate_runs_from_the_old_date():
    extension = loan.Extension("e", D(2027, 1, 20), D(2027, 3, 1), Decimal("7.30"))
    moved = loan.position(TERMS, [extension], D(2027, 3, 1))
    # 31 days at 1.00, then 28 days at 2.00
    assert moved.interest_owed == Decimal("87.00") and moved.due == D(2027, 3, 1)
    assert not moved.overdue and moved.annual_rate == Decimal("7.30")
    same_rate = loan.position(TERMS, [loan.Extension("e", D(2027, 1, 20), D(2027, 3, 1))], D(2027, 3, 1))
    assert (same_rate.interest_owed == Decimal("59.00")
            and same_rate.to_dict()["original_repayment_date"] == "2027-02-01")


def test_monthly_interest_dates_are_month_days_from_the_start_clamped():
    terms = loan.Terms(Decimal("1000"), Decimal("6"), D(2027, 1, 31), D(2027, 5, 15), RepaymentMethod.MONTHLY_INTEREST)
    assert terms.interest_dates() == [D(2027, 2, 28), D(2027, 3, 31), D(2027, 4, 30), D(2027, 5, 15)]
    assert terms.interest_dates(D(2027, 6, 30))[-2:] == [D(2027, 5, 31), D(2027, 6, 30)]
    assert TERMS.interest_dates() == [D(2027, 2, 1)]


TODAY = D(2027, 1, 25)


@pytest.mark.parametrize("amount, day, method, field, rule", [
    ("10024.01", D(2027, 1, 25), "现金", "amount", "not_above_outstanding"),  # owed: 10,000 + 24.00
    ("100", D(2027, 1, 26), "现金", "date", "not_in_future"),
    ("100", D(2026, 12, 31), "现金", "date", "not_before_loan"),
    ("100", D(2027, 1, 25), "比特币", "method", "one_of"),
])
def test_a_repayment_is_refused_by_field_and_rule(amount, day, method, field, rule):
    with pytest.raises(InvalidInput) as refused:
        loan.check_repayment(loan.position(TERMS, [], TODAY), [], Decimal(amount), day, method, TODAY)
    assert (refused.value.field, refused.value.rule) == (field, rule)


def test_a_repayment_up_to_the_outstanding_is_taken_and_not_before_the_last():
    after = loan.check_repayment(loan.position(TERMS, [], TODAY), [], Decimal("10024.00"), TODAY, "现金", TODAY)
    assert after.state == "repaid"
    earlier = [repay("100", D(2027, 1, 20))]
    with pytest.raises(InvalidInput) as refused:
        loan.check_repayment(loan.position(TERMS, earlier, TODAY), earlier, Decimal("1"), D(2027, 1, 19), "现金", TODAY)
    assert refused.value.rule == "not_before_last_repayment"
    repaid = [repay("10024.00", TODAY)]
    with pytest.raises(Conflict, match="loan_repaid"):
        loan.check_repayment(loan.position(TERMS, repaid, TODAY), repaid, Decimal("1"), TODAY, "现金", TODAY)


@pytest.mark.parametrize("new_due, rule", [(TODAY, "after_today"), (D(2027, 1, 30), "after_current_date")])
def test_an_extension_must_move_the_date_forward_past_today(new_due, rule):
    with pytest.raises(InvalidInput) as refused:
        loan.check_extension(loan.position(TERMS, [], TODAY), new_due, TODAY)
    assert (refused.value.field, refused.value.rule) == ("repayment_date", rule)
    loan.check_extension(loan.position(TERMS, [], TODAY), D(2027, 2, 2), TODAY)


@pytest.mark.parametrize("value, field, rule", [
    ("-1", "amount", "money"), ("0", "amount", "money"), ("1.001", "amount", "money"), ("NaN", "amount", "money"),
    (True, "amount", "money"), ("abc", "amount", "money"),
])
def test_amounts_are_positive_fen(value, field, rule):
    with pytest.raises(InvalidInput) as refused:
        loan.parse_amount(value)
    assert (refused.value.field, refused.value.rule) == (field, rule)
    assert loan.parse_amount("12.5") == Decimal("12.5") and loan.parse_rate("7.3") == Decimal("7.3")
    assert loan.parse_rate(None) is None
    with pytest.raises(InvalidInput):
        loan.parse_rate("-2")
    with pytest.raises(InvalidInput):
        loan.parse_day("2027-02-30", "date")


def test_only_the_lender_confirms_a_repayment():
    loan.check_lender("lender", "lender")
    with pytest.raises(Forbidden, match="lender_only"):
        loan.check_lender("lender", "borrower")
