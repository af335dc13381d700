"""One-year Loan Prime Rate (LPR) table and the private-lending interest cap.

The cap follows 最高人民法院关于审理民间借贷案件适用法律若干问题的规定
(2020 revision) art. 25: a rate above four times the one-year LPR in force
when the contract is formed is not enforced. This platform also never offers
more than 12 % a year (the product's own ceiling), so the limit applied is
min(12 %, 4 × LPR on the contract date), and the document names the LPR
publication that applied. The table is data (``data/lpr.yaml``) so a new
publication is a one-line change.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import yaml

DEFAULT_TABLE_PATH = Path(__file__).with_name("data") / "lpr.yaml"
PLATFORM_MAX_RATE = Decimal("12")  # percent a year
LPR_MULTIPLE = 4


@dataclass(frozen=True)
class LprPublication:
    """One published one-year LPR value (percent a year) and its publication date."""

    date: _dt.date
    rate: Decimal


@dataclass(frozen=True)
class RateCap:
    """The highest annual rate (percent) allowed for a contract date, and why."""

    contract_date: _dt.date
    lpr: LprPublication
    limit: Decimal  # percent a year
    binding: str  # "platform_max" (12 %) or "lpr_multiple" (4 × LPR)
    table_known_through: _dt.date

    def allows(self, annual_rate_percent: Decimal) -> bool:
        return Decimal(annual_rate_percent) <= self.limit

    @property
    def lpr_multiple_limit(self) -> Decimal:
        return self.lpr.rate * LPR_MULTIPLE


class LprTable:
    """Publications in date order; the value in force on a day is the latest one on or before it."""

    def __init__(self, publications: list[LprPublication], known_through: _dt.date):
        if not publications:
            raise ValueError("LPR table is empty")
        ordered = sorted(publications, key=lambda p: p.date)
        if len({p.date for p in ordered}) != len(ordered):
            raise ValueError("LPR table has two values for one date")
        self.publications: tuple[LprPublication, ...] = tuple(ordered)
        self.known_through = known_through

    @property
    def first_date(self) -> _dt.date:
        return self.publications[0].date

    def rate_on(self, day: _dt.date) -> LprPublication:
        """The publication in force on ``day``. Raises ``LookupError`` before the first one."""
        if day < self.first_date:
            raise LookupError(f"no one-year LPR published before {self.first_date.isoformat()}")
        applying = self.publications[0]
        for publication in self.publications:
            if publication.date > day:
                break
            applying = publication
        return applying

    def rate_cap(self, contract_date: _dt.date) -> RateCap:
        """min(12 %, 4 × LPR in force on ``contract_date``), with the LPR that applied."""
        lpr = self.rate_on(contract_date)
        multiple = lpr.rate * LPR_MULTIPLE
        if multiple < PLATFORM_MAX_RATE:
            limit, binding = multiple, "lpr_multiple"
        else:
            limit, binding = PLATFORM_MAX_RATE, "platform_max"
        return RateCap(
            contract_date=contract_date,
            lpr=lpr,
            limit=limit,
            binding=binding,
            table_known_through=self.known_through,
        )


def load_lpr_table(path: Path = DEFAULT_TABLE_PATH) -> LprTable:
    """Read the table from YAML (``known_through`` and ``one_year: [{date, rate}]``)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    try:
        publications = [
            LprPublication(date=_as_date(row["date"]), rate=Decimal(str(row["rate"])))
            for row in data["one_year"]
        ]
        known_through = _as_date(data["known_through"])
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"{path}: malformed LPR table: {exc}") from None
    return LprTable(publications, known_through)


def _as_date(value: object) -> _dt.date:
    if isinstance(value, _dt.date):
        return value
    return _dt.date.fromisoformat(str(value))
