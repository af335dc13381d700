"""A signed IOU's life: repayments, extensions, and where the loan stands.

Pure functions over the IOU's terms (as its document says them, kept on its
flow, :mod:`.my_files`) and the statements made since, each its own signed
document and flow (a 还款确认书 signed by the lender, a 借款展期协议 signed by
both): :func:`position` replays them in order.

Money is ``Decimal`` throughout. Interest accrues on the outstanding
principal at the rate in force, day by day, with the IOU's day count
(actual/365 unless the template says otherwise); a rate agreed in an
extension applies from the repayment date it replaces (the extension's
period). A repayment pays the interest accrued to its date first and then
the principal (民法典 第五百六十一条: costs, then interest, then principal,
unless agreed otherwise); interest owed is rounded to the fen once, when a
repayment meets it. The loan is repaid when a repayment leaves neither
principal nor interest owed; after the repayment date it keeps accruing at
the same rate (overdue interest at the agreed rate).

Refusals name the field and the rule (``InvalidInput``) or the state
(``Conflict``); who may do what (only the lender confirms a repayment) is
the caller's check, :func:`check_lender`.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from services.common.errors import Conflict, Forbidden, InvalidInput
from services.common.reasons import Reason
from services.common.schedule import FEN, DayCount, RepaymentMethod, add_months

ZERO = Decimal("0.00")
#: how a repayment was made, as the 还款确认书 names it (services/documents/data/templates/iou_repayment.v1.yaml)
REPAYMENT_METHODS = ("银行转账", "微信转账", "支付宝转账", "现金", "其他")
ACTIVE, PART_REPAID, REPAID = "active", "part_repaid", "repaid"


@dataclass(frozen=True)
class Terms:
    principal: Decimal
    annual_rate: Decimal  # percent a year, as the document writes it: 3.65
    start: _dt.date
    due: _dt.date
    method: RepaymentMethod
    day_count: DayCount = DayCount.ACT_365

    @classmethod
    def from_summary(cls, loan: dict) -> "Terms":
        """The ``loan`` block of a document summary (services/documents/template.py ``Template.summary``)."""
        return cls(Decimal(loan["principal"]), Decimal(loan["annual_rate"]),
                   _dt.date.fromisoformat(loan["start_date"]), _dt.date.fromisoformat(loan["due_date"]),
                   RepaymentMethod(loan["method"]), DayCount(loan.get("day_count") or DayCount.ACT_365.value))

    def interest_dates(self, due: _dt.date | None = None) -> list[_dt.date]:
        """The dates interest falls due: each month from the start (按月付息) up to the
        repayment date ``due`` (default the agreed one); only that date for a lump sum."""
        due = due or self.due
        if self.method is RepaymentMethod.LUMP_SUM:
            return [due]
        dates, k = [], 1
        while (day := add_months(self.start, k)) < due:
            dates.append(day)
            k += 1
        return dates + [due]


@dataclass(frozen=True)
class Repayment:
    statement_flow_id: str
    amount: Decimal
    on: _dt.date
    method: str


@dataclass(frozen=True)
class Extension:
    statement_flow_id: str
    agreed_on: _dt.date
    new_due: _dt.date
    annual_rate: Decimal | None = None  # None: unchanged


@dataclass(frozen=True)
class Applied:
    """How one repayment was applied."""

    repayment: Repayment
    interest: Decimal
    principal: Decimal
    principal_after: Decimal


@dataclass(frozen=True)
class Position:
    """Where the loan stands on a day."""

    terms: Terms
    on: _dt.date
    due: _dt.date  # the repayment date in force (the last extension's)
    annual_rate: Decimal  # the rate in force
    principal_outstanding: Decimal
    interest_owed: Decimal  # accrued to ``on`` and not paid, to the fen
    repaid_total: Decimal
    applied: tuple[Applied, ...] = field(default=())
    extensions: tuple[Extension, ...] = field(default=())

    @property
    def outstanding(self) -> Decimal:
        return self.principal_outstanding + self.interest_owed

    @property
    def state(self) -> str:
        if self.principal_outstanding == 0 and self.interest_owed == 0 and self.applied:
            return REPAID
        return PART_REPAID if self.applied else ACTIVE

    @property
    def overdue(self) -> bool:
        return self.state != REPAID and self.on > self.due

    def to_dict(self) -> dict:
        return {
            "state": self.state, "overdue": self.overdue, "as_of": self.on.isoformat(),
            "principal": _money(self.terms.principal), "annual_rate": str(self.annual_rate),
            "start_date": self.terms.start.isoformat(), "repayment_date": self.due.isoformat(),
            "original_repayment_date": self.terms.due.isoformat(), "method": self.terms.method.value,
            "day_count": self.terms.day_count.value,
            "principal_outstanding": _money(self.principal_outstanding), "interest_owed": _money(self.interest_owed),
            "outstanding": _money(self.outstanding), "repaid_total": _money(self.repaid_total),
            "repayments": [{"statement_flow_id": a.repayment.statement_flow_id, "amount": _money(a.repayment.amount),
                            "date": a.repayment.on.isoformat(), "method": a.repayment.method,
                            "interest": _money(a.interest), "principal": _money(a.principal),
                            "principal_after": _money(a.principal_after)} for a in self.applied],
            "extensions": [{"statement_flow_id": e.statement_flow_id, "agreed_on": e.agreed_on.isoformat(),
                            "repayment_date": e.new_due.isoformat(),
                            "annual_rate": None if e.annual_rate is None else str(e.annual_rate)}
                           for e in self.extensions],
        }


def _money(value: Decimal) -> str:
    return f"{value.quantize(FEN):.2f}"


class _Accrual:
    """Interest accruing, exactly, on the outstanding principal at the rate in force."""

    def __init__(self, terms: Terms):
        self.terms = terms
        self.rates: list[tuple[_dt.date, Decimal]] = [(terms.start, terms.annual_rate)]  # (from, percent)
        self.principal = terms.principal
        self.since = terms.start
        self.exact = Decimal(0)  # accrued, not yet paid, unrounded

    def rate_on(self, day: _dt.date) -> Decimal:
        return [rate for since, rate in self.rates if since <= day][-1]

    def to(self, day: _dt.date) -> None:
        """Accrue up to ``day`` (exclusive of nothing: [since, day) days)."""
        if day <= self.since:
            return
        breaks = sorted({self.since, day, *(since for since, _ in self.rates if self.since < since < day)})
        for begin, end in zip(breaks, breaks[1:], strict=False):
            self.exact += (self.principal * self.rate_on(begin) / 100 * (end - begin).days
                           / self.terms.day_count.basis)
        self.since = day

    @property
    def owed(self) -> Decimal:
        return self.exact.quantize(FEN, rounding=ROUND_HALF_UP)


def position(terms: Terms, statements: list[Repayment | Extension], on: _dt.date) -> Position:
    """The loan on day ``on`` after ``statements`` (in the order they were signed)."""
    accrual = _Accrual(terms)
    due, rate = terms.due, terms.annual_rate
    applied: list[Applied] = []
    extensions: list[Extension] = []
    repaid = ZERO
    for statement in statements:
        if isinstance(statement, Extension):
            if statement.annual_rate is not None:
                accrual.rates.append((due, statement.annual_rate))
                rate = statement.annual_rate
            due = statement.new_due
            extensions.append(statement)
            continue
        accrual.to(statement.on)
        interest = min(statement.amount, accrual.owed)
        principal = min(statement.amount - interest, accrual.principal)
        accrual.exact -= interest
        accrual.principal -= principal
        repaid += statement.amount
        applied.append(Applied(statement, interest, principal, accrual.principal))
    accrual.to(on)
    return Position(terms, on, due, rate, accrual.principal, max(accrual.owed, ZERO), repaid, tuple(applied),
                    tuple(extensions))


# -- checks of a new statement --------------------------------------------------------------


def parse_amount(value: object, field_name: str = "amount") -> Decimal:
    try:
        amount = Decimal(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0 or amount != amount.quantize(FEN):
        raise InvalidInput(field_name, "money", "expected a positive amount in yuan, at most to the fen (0.01)")
    return amount


def parse_day(value: object, field_name: str) -> _dt.date:
    if isinstance(value, str) and len(value) == 10:
        try:
            return _dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidInput(field_name, "date", "expected YYYY-MM-DD")


def parse_rate(value: object, field_name: str = "annual_rate") -> Decimal | None:
    """An optional percentage a year (``"7.3"``), at most two decimals; the cap is the document's check."""
    if value is None or value == "":
        return None
    try:
        rate = Decimal(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    except InvalidOperation:
        rate = None
    if rate is None or not rate.is_finite() or rate < 0 or rate != rate.quantize(Decimal("0.01")):
        raise InvalidInput(field_name, "rate", "expected a percentage a year ≥ 0, at most two decimals")
    return rate


def check_repayment(current: Position, statements: list[Repayment | Extension], amount: Decimal,
                    on: _dt.date, method: str, today: _dt.date) -> Position:
    """A repayment the lender may confirm: answers the position right after it."""
    if current.state == REPAID:
        raise Conflict(Reason.LOAN_REPAID)
    if method not in REPAYMENT_METHODS:
        raise InvalidInput("method", "one_of", "expected one of " + "、".join(REPAYMENT_METHODS))
    if on > today:
        raise InvalidInput("date", "not_in_future", "a repayment is confirmed once received: not a future date")
    if on < current.terms.start:
        raise InvalidInput("date", "not_before_loan", f"the loan started on {current.terms.start.isoformat()}")
    last = max((a.repayment.on for a in current.applied), default=None)
    if last is not None and on < last:
        raise InvalidInput("date", "not_before_last_repayment",
                           f"the last repayment confirmed was on {last.isoformat()}")
    owed_then = position(current.terms, statements, on)
    if amount > owed_then.outstanding:
        raise InvalidInput("amount", "not_above_outstanding",
                           f"at most {_money(owed_then.outstanding)} is owed on {on.isoformat()} "
                           f"(principal {_money(owed_then.principal_outstanding)}, "
                           f"interest {_money(owed_then.interest_owed)})")
    return position(current.terms, [*statements, Repayment("", amount, on, method)], on)


def check_extension(current: Position, new_due: _dt.date, today: _dt.date) -> None:
    """An extension either party may propose (the rate's legal cap on ``today`` is the
    extension document's own check, in documents, with the LPR table)."""
    if current.state == REPAID:
        raise Conflict(Reason.LOAN_REPAID)
    if new_due <= today:
        raise InvalidInput("repayment_date", "after_today", "the new repayment date must be after today")
    if new_due <= current.due:
        raise InvalidInput("repayment_date", "after_current_date",
                           f"an extension moves the repayment date past {current.due.isoformat()}")


def check_lender(lender_person_id: str | None, person_id: str) -> None:
    if person_id != lender_person_id:
        raise Forbidden(Reason.LENDER_ONLY)
