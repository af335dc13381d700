"""One-year LPR table and the min(12 %, 4 × LPR) cap."""
import datetime as dt
from decimal import Decimal

import pytest

from services.documents.lpr import LprPublication, LprTable, load_lpr_table

D = dt.date


@pytest.fixture(scope="module")
def table():
    return load_lpr_table()


def test_table_starts_with_the_reform_and_ends_at_three_percent(table):
    first, last = table.publications[0], table.publications[-1]
    assert (first.date, first.rate) == (D(2019, 8, 20), Decimal("4.25"))
    assert (last.date, last.rate) == (D(2025, 5, 20), Decimal("3.00"))


def test_every_listed_publication_lowered_the_rate(table):
    rates = [p.rate for p in table.publications]
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))


@pytest.mark.parametrize(
    "day, rate",
    [
        (D(2019, 8, 20), "4.25"),
        (D(2019, 9, 19), "4.25"),
        (D(2019, 9, 20), "4.20"),
        (D(2021, 6, 1), "3.85"),
        (D(2024, 10, 20), "3.35"),  # the day before a change
        (D(2024, 10, 21), "3.10"),
        (D(2026, 11, 28), "3.00"),  # after the last listed publication
    ],
)
def test_rate_on_a_day_is_the_latest_publication_on_or_before_it(table, day, rate):
    assert table.rate_on(day).rate == Decimal(rate)


def test_no_lpr_before_the_reform(table):
    with pytest.raises(LookupError):
        table.rate_on(D(2019, 8, 19))


def test_cap_is_twelve_percent_while_four_times_lpr_is_higher(table):
    cap = table.rate_cap(D(2024, 8, 1))  # LPR 3.35 → 13.4 %
    assert cap.limit == Decimal("12")
    assert cap.binding == "platform_max"
    assert cap.lpr == LprPublication(D(2024, 7, 22), Decimal("3.35"))
    assert cap.allows(Decimal("12")) and not cap.allows(Decimal("12.01"))


def test_cap_at_three_percent_lpr_is_exactly_twelve(table):
    cap = table.rate_cap(D(2025, 6, 1))
    assert cap.limit == Decimal("12") and cap.lpr_multiple_limit == Decimal("12.00")


def test_four_times_lpr_binds_when_lpr_falls_below_three_percent():
    low = LprTable(
        [LprPublication(D(2025, 5, 20), Decimal("3.00")), LprPublication(D(2027, 1, 20), Decimal("2.80"))],
        known_through=D(2027, 1, 20),
    )
    cap = low.rate_cap(D(2027, 2, 1))
    assert (cap.limit, cap.binding) == (Decimal("11.20"), "lpr_multiple")
    assert cap.allows(Decimal("11.2")) and not cap.allows(Decimal("11.21"))
    assert low.rate_cap(D(2027, 1, 19)).limit == Decimal("12")


def test_duplicate_dates_refused():
    with pytest.raises(ValueError):
        LprTable([LprPublication(D(2025, 1, 1), Decimal("3")), LprPublication(D(2025, 1, 1), Decimal("2"))],
                 D(2025, 1, 1))
