"""Field violations of a document, and the checks of a person's identifiers.

Validation collects every violation of a document (so a form can mark all
bad fields at once) and raises one ``ValidationFailed``. It *is* an
``InvalidInput`` naming the first violation, so callers that only know the
common error type still see field, rule and message; ``violations`` holds the
full list. Across nameko RPC it is rebuilt from its args (field, rule,
message, violations as plain dicts) when this module is imported on the
caller's side; otherwise nameko raises ``RemoteError``, so the gateway should
import this module (or catch InvalidInput by its JSON ``code``).

The checks of ID numbers (GB 11643-1999) and mobile numbers belong to the
identity service. Documents does not import identity: ``PersonCheckers`` is a
small registry the service wiring points at identity's functions. The
built-in fallbacks here are minimal (format, birth date, ISO 7064 MOD 11-2
check character; mainland mobile format) and exist so documents is testable
alone.
"""
from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nameko.exceptions import deserialize_to_instance

from services.common.errors import InvalidInput


@dataclass(frozen=True)
class Violation:
    field: str  # dotted path: "remark", "lender.phone", "furnishings.2.count"
    rule: str  # stable id: required, max_chars, min, max, enum, type, after, rate_cap, ...
    message: str  # expected vs found, never the value of a personal field

    def to_dict(self) -> dict:
        return {"field": self.field, "rule": self.rule, "message": self.message}


@deserialize_to_instance
class ValidationFailed(InvalidInput):
    """One or more field rules were broken; ``field``/``rule``/``message`` name the first."""

    def __init__(self, field: str, rule: str, message: str = "", violations: Iterable = ()):
        rebuilt = tuple(v if isinstance(v, Violation) else Violation(**v) for v in violations)
        super().__init__(field, rule, message)
        # Plain dicts in args, so nameko can serialise and rebuild the exception.
        self.args = (field, rule, self.message, [v.to_dict() for v in rebuilt])
        self.violations: tuple[Violation, ...] = rebuilt or (Violation(field, rule, self.message),)

    @classmethod
    def from_violations(cls, violations: list[Violation]) -> "ValidationFailed":
        first = violations[0]
        message = first.message
        if len(violations) > 1:
            message += f" (and {len(violations) - 1} more)"
        return cls(first.field, first.rule, message, violations)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["violations"] = [v.to_dict() for v in self.violations]
        return data


# A checker takes the raw value and the reference date and returns the
# normalised value, or raises InvalidInput (its ``field`` is replaced by the
# dotted path of the person field; its rule and message are kept).
Checker = Callable[[object, _dt.date], str]


@dataclass(frozen=True)
class PersonCheckers:
    """Where a person field's ID number and phone are checked."""

    id_number: Checker = field(default_factory=lambda: check_resident_id)
    phone: Checker = field(default_factory=lambda: check_mobile_phone)


_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)


def check_resident_id(value: object, today: _dt.date) -> str:
    """Minimal GB 11643-1999 check: shape, birth date, MOD 11-2 check character.

    Fallback only; identity's ``parse_id_number`` also checks the region code.
    """
    if not isinstance(value, str):
        raise InvalidInput("id_number", "type", f"expected text, found {type(value).__name__}")
    number = value.strip().upper()
    if len(number) != 18:
        raise InvalidInput("id_number", "length", f"expected 18 characters, found {len(number)}")
    if not _ID_SHAPE.fullmatch(number):
        raise InvalidInput("id_number", "charset", "expected 17 ASCII digits then a digit or X")
    try:
        birth = _dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidInput("id_number", "birth_date", "expected a real calendar date in positions 7-14") from None
    if birth > today or birth.year < 1900:
        raise InvalidInput("id_number", "birth_date", "expected a birth date between 1900 and today")
    expected = _CHECK_CHARS[sum(int(d) * w for d, w in zip(number, _WEIGHTS)) % 11]
    if number[17] != expected:
        raise InvalidInput("id_number", "check_digit", "check character does not match ISO 7064 MOD 11-2")
    return number


_MOBILE = re.compile(r"1[3-9][0-9]{9}", re.ASCII)


def check_mobile_phone(value: object, today: _dt.date) -> str:
    """Mainland China mobile number, 11 digits starting 13–19; +86, spaces and dashes dropped."""
    if not isinstance(value, str):
        raise InvalidInput("phone", "type", f"expected text, found {type(value).__name__}")
    digits = re.sub(r"[\s-]", "", value)
    if digits.startswith("+86"):
        digits = digits[3:]
    if not _MOBILE.fullmatch(digits):
        raise InvalidInput("phone", "format", "expected an 11-digit mainland mobile number starting 13-19")
    return digits
