"""Resident identity numbers (公民身份号码) as GB 11643-1999 defines them.

An 18-character number is: a 6-digit address code (GB/T 2260, of which the
first two digits name the province-level division), an 8-digit birth date
(YYYYMMDD), a 3-digit sequence code whose last digit is odd for men and even
for women, and one check character computed with ISO 7064 MOD 11-2 over the
first 17 digits (``X`` stands for 10).

Rules are checked in a fixed order and each failure raises
:class:`~services.common.errors.InvalidInput` with ``field="id_number"`` and
one of the rules ``length``, ``charset``, ``province``, ``birth_date``,
``check_digit``. Messages say what was expected and never echo the number.

The input is taken exactly as given: surrounding spaces count towards the
length (a form may trim before calling, this module does not guess). The old
15-digit numbers (before 1999) are rejected by the length rule.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Literal

from services.common.errors import InvalidInput

FIELD = "id_number"
LENGTH = 18

#: Province-level codes of GB/T 2260 that appear as the first two digits.
#: 11-15 North (京津冀晋蒙), 21-23 North-east (辽吉黑), 31-37 East
#: (沪苏浙皖闽赣鲁), 41-46 Centre-south (豫鄂湘粤桂琼; 46 Hainan since 1988),
#: 50-54 South-west (渝川贵云藏; 50 Chongqing since 1997), 61-65 North-west
#: (陕甘青宁新), 71 Taiwan, 81 Hong Kong, 82 Macao. 83 is the code that the
#: residence permits for Taiwan residents (台湾居民居住证, 2018) carry; the
#: permits of Hong Kong and Macao residents use 81 and 82. Codes starting
#: with 9 (the 2023 foreigners' permanent residence ID) are a different
#: scheme and are not resident ID numbers, so they are rejected here.
PROVINCE_CODES: dict[str, str] = {
    "11": "北京", "12": "天津", "13": "河北", "14": "山西", "15": "内蒙古",
    "21": "辽宁", "22": "吉林", "23": "黑龙江",
    "31": "上海", "32": "江苏", "33": "浙江", "34": "安徽", "35": "福建", "36": "江西", "37": "山东",
    "41": "河南", "42": "湖北", "43": "湖南", "44": "广东", "45": "广西", "46": "海南",
    "50": "重庆", "51": "四川", "52": "贵州", "53": "云南", "54": "西藏",
    "61": "陕西", "62": "甘肃", "63": "青海", "64": "宁夏", "65": "新疆",
    "71": "台湾", "81": "香港", "82": "澳门", "83": "台湾居民居住证",
}

# Birth dates on the card are calendar dates in China Standard Time; a
# server running on UTC would otherwise call a child born after midnight
# Beijing time "born in the future" for eight hours.
CHINA_STANDARD_TIME = _dt.timezone(_dt.timedelta(hours=8), "CST")

#: Earliest birth date accepted (the issue's "not before 1800").
EARLIEST_BIRTH_DATE = _dt.date(1800, 1, 1)

# ISO 7064 MOD 11-2 weights are 2**(17-i) mod 11 for i = 0..16; the table
# maps (sum mod 11) to the check character that makes the total ≡ 1 mod 11.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
# Explicit ASCII sets: str.isdigit() is also true for full-width and other
# Unicode digits (１, ١, ൧), which must be rejected.
_ASCII_DIGITS = frozenset("0123456789")

Sex = Literal["male", "female"]


@dataclass(frozen=True)
class ResidentId:
    """A validated resident ID number and what it encodes."""

    number: str  # normalised: 18 characters, check character upper-case
    province_code: str
    birth_date: _dt.date
    sex: Sex

    @property
    def province(self) -> str:
        return PROVINCE_CODES[self.province_code]


def check_character(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for 17 ASCII digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_id_number(value: object, today: _dt.date | None = None) -> ResidentId:
    """Validate ``value`` as an 18-character resident ID number.

    ``today`` is the reference date for "not in the future" (defaults to
    today in China Standard Time; tests inject one). Lower-case ``x`` is accepted and stored as
    ``X``.
    """
    if not isinstance(value, str):
        raise InvalidInput(FIELD, "charset", f"expected text, found {type(value).__name__}")
    if len(value) != LENGTH:
        raise InvalidInput(FIELD, "length", f"expected {LENGTH} characters, found {len(value)}")
    body, last = value[:17], value[17]
    if not all(ch in _ASCII_DIGITS for ch in body):
        raise InvalidInput(FIELD, "charset", "expected ASCII digits 0-9 in positions 1-17")
    if last not in _ASCII_DIGITS and last not in "Xx":
        raise InvalidInput(FIELD, "charset", "expected an ASCII digit or X in position 18")

    province_code = body[:2]
    if province_code not in PROVINCE_CODES:
        raise InvalidInput(FIELD, "province", "expected a GB/T 2260 province-level code in positions 1-2")

    birth_date = _birth_date(body[6:14], today or _dt.datetime.now(CHINA_STANDARD_TIME).date())

    expected = check_character(body)
    normalised_last = last.upper()
    if normalised_last != expected:
        raise InvalidInput(FIELD, "check_digit", "check character does not match ISO 7064 MOD 11-2")

    sex: Sex = "male" if int(body[16]) % 2 == 1 else "female"
    return ResidentId(number=body + normalised_last, province_code=province_code, birth_date=birth_date, sex=sex)


def _birth_date(yyyymmdd: str, today: _dt.date) -> _dt.date:
    try:
        birth = _dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        raise InvalidInput(FIELD, "birth_date", "expected a real calendar date in positions 7-14") from None
    if birth < EARLIEST_BIRTH_DATE:
        raise InvalidInput(FIELD, "birth_date", f"expected a birth date on or after {EARLIEST_BIRTH_DATE.isoformat()}")
    if birth > today:
        raise InvalidInput(FIELD, "birth_date", "expected a birth date not in the future")
    return birth
