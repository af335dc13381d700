"""Mainland China mobile numbers (E.164 country code +86, MIIT numbering plan).

A mainland mobile number has 11 digits and starts with ``1`` followed by
``3``-``9`` (13x … 19x). People write it with a country prefix (``+86``,
``0086`` or bare ``86``) and group it with spaces or hyphens; all of that is
accepted and the number is stored as its 11 national digits.

Only ASCII digits, ASCII space, ASCII hyphen and a leading ``+`` are
accepted: full-width digits or other separators are rejected rather than
guessed at. Failures raise :class:`~services.common.errors.InvalidInput` with
``field="phone"`` and one of the rules ``charset``, ``country_code``,
``length``, ``prefix``; messages never echo the number.
"""
from __future__ import annotations

import re

from services.common.errors import InvalidInput

FIELD = "phone"
NATIONAL_LENGTH = 11

_SEPARATORS = re.compile(r"[ \-]")
# re's \d matches every Unicode digit, so the class is spelled out.
_ASCII_DIGITS = re.compile(r"[0-9]+\Z")
_MOBILE = re.compile(r"1[3-9][0-9]{9}\Z")


def normalise_phone(value: object) -> str:
    """Return the 11 national digits of a mainland mobile number."""
    if not isinstance(value, str):
        raise InvalidInput(FIELD, "charset", f"expected text, found {type(value).__name__}")
    compact = _SEPARATORS.sub("", value)
    has_plus = compact.startswith("+")
    digits = compact[1:] if has_plus else compact
    if not digits or not _ASCII_DIGITS.match(digits):
        raise InvalidInput(FIELD, "charset", "expected ASCII digits with optional +86 prefix, spaces or hyphens")

    if has_plus:
        if not digits.startswith("86"):
            raise InvalidInput(FIELD, "country_code", "expected country code +86")
        national = digits[2:]
    elif digits.startswith("0086"):
        national = digits[4:]
    elif len(digits) == NATIONAL_LENGTH + 2 and digits.startswith("86"):
        # A bare "86" is only a prefix when 11 digits follow; 86x is not a
        # valid start of a mobile number so the two readings cannot clash.
        national = digits[2:]
    elif digits.startswith("00"):
        raise InvalidInput(FIELD, "country_code", "expected country code 0086")
    else:
        national = digits

    if len(national) != NATIONAL_LENGTH:
        raise InvalidInput(FIELD, "length", f"expected {NATIONAL_LENGTH} digits, found {len(national)}")
    if not _MOBILE.match(national):
        raise InvalidInput(FIELD, "prefix", "expected a mobile number starting with 13-19")
    return national
