"""CNY amounts in Chinese financial capitals (中文大写金额).

Implements the writing rules of the People's Bank of China for bills and
settlement vouchers (《支付结算办法》附件一《正确填写票据和结算凭证的基本规定》):

* digits 零壹贰叁肆伍陆柒捌玖, units 拾佰仟万亿, currency units 元角分;
* an amount that ends at 元 is followed by 整; after 角 we write nothing
  (the rules allow omitting 整 there) and after 分 never 整;
* a zero (or a run of zeros) between non-zero digits is written as one 零
  (¥1409.50 → 壹仟肆佰零玖元伍角, ¥6007.14 → 陆仟零柒元壹角肆分);
* when the 元 digit is zero but the amount goes on into 角/分, 零 follows 元
  (¥107000.53 → 壹拾万柒仟元零伍角叁分); the rules allow either this or
  omitting it, and we always write it because the PBoC's own first example
  does and it leaves no room to insert a digit;
* when the 角 digit is zero and 分 is not, 零 follows 元
  (¥16409.02 → 壹万陆仟肆佰零玖元零贰分);
* a 万 or 亿 group that ends in zeros before a group starting with a non-zero
  thousand digit takes no 零 (壹拾万柒仟, the PBoC's first form).

A leading ten is written 壹拾 (¥10 → 壹拾元整, ¥100000 → 壹拾万元整): the PBoC
examples write 壹拾万, and a bare 拾 at the start is an alteration risk.
Amounts below one yuan start at the first non-zero unit (¥0.05 → 伍分), as
bank practice does; zero is 零元整.
"""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

DIGITS = "零壹贰叁肆伍陆柒捌玖"
_PLACES = ("", "拾", "佰", "仟")  # within a group of four digits
_FEN = Decimal("0.01")


def amount_in_words(amount: Decimal | int | str) -> str:
    """Write a non-negative CNY amount with at most two decimals in 大写.

    The result has no 人民币 prefix; documents add it. Raises ``ValueError``
    for negative amounts or amounts finer than one fen (never rounds: an
    amount someone signs must be the amount they typed).
    """
    fen_total = _to_fen(amount)
    yuan, rest = divmod(fen_total, 100)
    jiao, fen = divmod(rest, 10)

    if fen_total == 0:
        return "零元整"

    words = ""
    if yuan:
        words = _integer_words(yuan) + "元"
        if jiao == 0 and fen == 0:
            return words + "整"
        # 元 digit zero, or 角 digit zero before 分: one 零 after 元.
        if yuan % 10 == 0 or jiao == 0:
            words += "零"
    if jiao:
        words += DIGITS[jiao] + "角"
    if fen:
        words += DIGITS[fen] + "分"
    return words


def _to_fen(amount: Decimal | int | str) -> int:
    if isinstance(amount, float):
        # Binary floats cannot hold most fen amounts exactly; make callers decide.
        raise ValueError("amount must be a Decimal, int or decimal string, not float")
    try:
        value = Decimal(amount)
    except (InvalidOperation, ValueError, TypeError):
        raise ValueError(f"amount is not a number: {amount!r}") from None
    if not value.is_finite():
        raise ValueError("amount must be finite")
    if value < 0:
        raise ValueError("amount must not be negative")
    try:
        fen = value.quantize(_FEN)
    except InvalidOperation:  # past the 28 digits of the decimal context
        raise ValueError("amount has too many digits to write exactly") from None
    if value != fen:
        raise ValueError("amount must have at most two decimal places (fen)")
    return int(fen * 100)


def _integer_words(n: int) -> str:
    """Words for a positive integer of yuan, grouped by 亿 and 万."""
    return _split(n, 10**8, "亿", _below_yi)


def _below_yi(n: int) -> str:
    return _split(n, 10**4, "万", _group_words)


def _split(n: int, base: int, unit: str, lower: Callable[[int], str]) -> str:
    high, low = divmod(n, base)
    if not high:
        return lower(low)
    # The high part may itself exceed the base (壹万亿): recurse on it.
    words = _integer_words(high) + unit
    if low:
        # Leading zeros of the lower part sit between non-zero digits: one 零.
        if low < base // 10:
            words += "零"
        words += lower(low)
    return words


def _group_words(n: int) -> str:
    """Words for 1..9999: inner zero runs become one 零, trailing zeros nothing."""
    digits = [int(d) for d in f"{n:04d}"]
    words = ""
    pending_zero = False
    for position, digit in enumerate(digits):
        place = _PLACES[3 - position]
        if digit == 0:
            pending_zero = bool(words)
            continue
        if pending_zero:
            words += "零"
            pending_zero = False
        words += DIGITS[digit] + place
    return words
