"""Field violations of a document, and the checks of a person's identifiers.

Validation collects every violation of a document (so a form can mark all
bad fields at once) and raises one ``ValidationFailed``. It *is* an
``InvalidInput`` naming the first violation, so callers that only know the
common error type still see field, rule and message; ``violations`` holds the
full list. Across nameko RPC it is rebuilt from its args (field, rule,
message, violations as plain dicts) when this module is imported on the
caller's side; otherwise nameko raises ``RemoteError``, so the gateway should
import this module (or catch InvalidInput by its JSON ``code``).

ID numbers (GB 11643-1999) and mobile numbers are checked by the platform's
one implementation in ``services.common.idnumber`` / ``services.common.phone``
(identity uses the same); ``PersonCheckers`` lets a caller swap them.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nameko.exceptions import deserialize_to_instance

from services.common.errors import InvalidInput
from services.common.idnumber import parse_id_number
from services.common.phone import normalise_phone


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


def check_resident_id(value: object, today: _dt.date) -> str:
    """GB 11643-1999 resident ID number, normalised (lower-case x becomes X)."""
    return parse_id_number(value, today).number


def check_mobile_phone(value: object, today: _dt.date) -> str:
    """Mainland mobile number, normalised to 11 digits."""
    return normalise_phone(value)
