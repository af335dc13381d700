"""Field violations of a document, and the checks of a person's identifiers.

Validation collects every violation of a document (so a form can mark all
bad fields at once) and raises one ``ValidationFailed`` (in
services/common/errors.py, so every caller of an RPC gets it back as itself):
an ``InvalidInput`` naming the first violation, with ``violations`` holding
the full list.

ID numbers (GB 11643-1999) and mobile numbers are checked by the platform's
one implementation in ``services.common.idnumber`` / ``services.common.phone``
(identity uses the same); ``PersonCheckers`` lets a caller swap them.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import InvalidInput, ValidationFailed, Violation  # re-exported: see __all__
from services.common.idnumber import parse_id_number
from services.common.phone import normalise_phone

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


__all__ = [
    "Checker",
    "PersonCheckers",
    "check_resident_id",
    "check_mobile_phone",
    # where the documents service's code has always found them (defined in services/common/errors.py)
    "InvalidInput",
    "ValidationFailed",
    "Violation",
]
