"""大写 amounts against the PBoC rules (《正确填写票据和结算凭证的基本规定》)."""
from decimal import Decimal

import pytest

from services.documents.amount_words import amount_in_words


@pytest.mark.parametrize(
    "amount, words",
    [
        # The examples of the issue, which are the PBoC's own examples.
        ("10005", "壹万零伍元整"),
        ("1409.50", "壹仟肆佰零玖元伍角"),
        ("6007.14", "陆仟零柒元壹角肆分"),
        ("107000.53", "壹拾万柒仟元零伍角叁分"),
    ],
)
def test_pboc_examples(amount, words):
    assert amount_in_words(Decimal(amount)) == words


@pytest.mark.parametrize(
    "amount, words",
    [
        # Below one yuan: start at the first non-zero unit, no 零元 and no 整.
        ("0.05", "伍分"),
        ("0.50", "伍角"),
        ("0.52", "伍角贰分"),
        # A whole 亿 with empty 万 and units groups: nothing between, then 元整.
        ("100000000", "壹亿元整"),
        # Ten is written 壹拾 (PBoC writes 壹拾万), and .00 is still 元整.
        ("10.00", "壹拾元整"),
        ("10", "壹拾元整"),
        ("110000", "壹拾壹万元整"),
        # Zeros between 万 and 拾 are one 零; 元 digit 0 and 角 0 before 分: one 零 after 元.
        ("1000010.01", "壹佰万零壹拾元零壹分"),
        # PBoC: 角 zero, 分 non-zero → 零 after 元 (its examples ¥16409.02, ¥325.04).
        ("16409.02", "壹万陆仟肆佰零玖元零贰分"),
        ("325.04", "叁佰贰拾伍元零肆分"),
        # PBoC: ¥1680.32 may be written with 零 after 元; we always write it, like 107000.53.
        ("1680.32", "壹仟陆佰捌拾元零叁角贰分"),
        # A zero thousands digit in the lower group is a zero between non-zero digits.
        ("100500", "壹拾万零伍佰元整"),
        # Empty 万 group between 亿 and units: one 零.
        ("100000001", "壹亿零壹元整"),
        ("100010000", "壹亿零壹万元整"),
        ("1010", "壹仟零壹拾元整"),
        ("0", "零元整"),
        # 万亿: the 亿 count itself has a 万.
        ("1000000000000", "壹万亿元整"),
    ],
)
def test_edge_cases(amount, words):
    assert amount_in_words(Decimal(amount)) == words


def test_accepts_int_and_string():
    assert amount_in_words(10005) == "壹万零伍元整"
    assert amount_in_words("6007.14") == "陆仟零柒元壹角肆分"


@pytest.mark.parametrize("bad", [Decimal("-1"), Decimal("1.005"), "abc", Decimal("NaN"), 1.5])
def test_refuses_what_it_cannot_write_exactly(bad):
    with pytest.raises(ValueError):
        amount_in_words(bad)
