"""Typed errors that cross RPC and HTTP.

Every error a caller can act on is one of these classes. They are registered
with nameko's ``deserialize_to_instance`` so a caller of an RPC gets the same
class back (not a ``RemoteError``) and can tell them apart with ``except``.

Their constructor arguments are plain strings, because nameko rebuilds the
exception on the caller's side from ``exc.args``. Messages never carry
secrets or personal data: callers pass field names and rules, not values.
A refusal (``Forbidden``, ``RateLimited``, ``Conflict``) names a listed
:class:`~services.common.reasons.Reason`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nameko.exceptions import deserialize_to_instance

from services.common.reasons import Reason, listed


class EsignError(Exception):
    """Base of the platform's typed errors."""

    #: stable machine-readable code, also the HTTP error ``code``
    code = "error"
    #: HTTP status the gateway answers with
    http_status = 500

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self)}


@deserialize_to_instance
class InvalidInput(EsignError):
    """Input broke a rule. ``field`` names the input, ``rule`` names the rule
    (a short stable identifier such as ``required``, ``max_length``,
    ``check_digit``) and ``message`` says what was expected and what was found,
    without echoing personal data."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, field: str, rule: str, message: str = ""):
        super().__init__(field, rule, message)
        self.field = field
        self.rule = rule
        self.message = message or f"{field}: violates rule {rule}"

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}: {self.message}" if self.message else f"{self.field}: {self.rule}"

    def to_dict(self) -> dict:
        return {"code": self.code, "field": self.field, "rule": self.rule, "message": self.message}

    @classmethod
    def first_of(cls, errors: list[dict], field: str) -> "InvalidInput":
        """The first of pydantic's ``ValidationError.errors()`` for the value ``field``:
        the field is ``field.<location>`` (``data.parties.0.role``), the rule pydantic's
        error type (``missing``, ``string_type``, ``extra_forbidden``)."""
        first = errors[0]
        location = ".".join(str(part) for part in first.get("loc", ()))
        return cls(f"{field}.{location}" if location else field, str(first.get("type", "type")),
                   str(first.get("msg", "wrong type")))


@deserialize_to_instance
class PayloadTooLarge(InvalidInput):
    """A request body over its route's limit (HTTP 413), refused before it is read whole."""

    code = "payload_too_large"
    http_status = 413


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


@deserialize_to_instance
class NotFound(EsignError):
    """The named entity does not exist (or is not visible to the caller)."""

    code = "not_found"
    http_status = 404

    def __init__(self, entity: str, ident: str = ""):
        super().__init__(entity, ident)
        self.entity = entity
        self.ident = ident

    def __str__(self) -> str:
        return f"{self.entity} not found" + (f": {self.ident}" if self.ident else "")

    def to_dict(self) -> dict:
        return {"code": self.code, "entity": self.entity, "id": self.ident, "message": str(self)}


class _ReasonError(EsignError):
    """A refusal: ``reason`` is a listed :class:`Reason` (``otp_locked``),
    the same on every service and in the web pages; ``message`` is optional
    English detail for logs and API clients (the states a flow was expected
    to be in), never personal data."""

    def __init__(self, reason: Reason | str, message: str = ""):
        super().__init__(reason, message)
        self.reason = listed(reason)
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason

    def to_dict(self) -> dict:
        # ``message`` answers the reason, as it always has: pages and API clients tell refusals apart by it
        return {"code": self.code, "message": str(self.reason), **({"detail": self.message} if self.message else {})}


@deserialize_to_instance
class Forbidden(_ReasonError):
    """The caller may not do this (wrong party, used grant, revoked certificate)."""

    code = "forbidden"
    http_status = 403


@deserialize_to_instance
class RateLimited(Forbidden):
    """Too many sends or tries in a window (phone codes, wrong codes):
    ``retry_after`` says in how many seconds the next one may come (HTTP 429
    with a Retry-After header). A kind of Forbidden, so callers that only
    tell refusals apart by reason keep working."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, reason: Reason | str, retry_after: int | str | None = None):
        # nameko sends exception arguments as strings: "60", or "None"
        seconds = int(retry_after) if retry_after not in (None, "None", "") else None
        super().__init__(reason)
        self.args = (reason, seconds)  # what nameko sends to rebuild it
        self.retry_after = seconds

    def to_dict(self) -> dict:
        return dict(super().to_dict(), retry_after=self.retry_after)


@deserialize_to_instance
class Conflict(_ReasonError):
    """The request clashes with the current state (duplicate, wrong flow state)."""

    code = "conflict"
    http_status = 409


@deserialize_to_instance
class Unavailable(EsignError):
    """An outside system (S3, time-stamp authority, SMS vendor, identity
    authority) did not answer after bounded retries. Nothing half-done is left
    referenced. ``retry_after``, when the system says or we know, is in how
    many seconds a new try may succeed (HTTP 503 with a Retry-After header)."""

    code = "unavailable"
    http_status = 503

    def __init__(self, system: str, reason: str = "", retry_after: int | str | None = None):
        # nameko sends exception arguments as strings: "60", or "None"
        seconds = int(retry_after) if retry_after not in (None, "None", "") else None
        super().__init__(system, reason, seconds)
        self.system = system
        self.reason = reason
        self.retry_after = seconds

    def __str__(self) -> str:
        return f"{self.system} unavailable" + (f": {self.reason}" if self.reason else "")

    def to_dict(self) -> dict:
        return {"code": self.code, "message": str(self), "retry_after": self.retry_after}


@deserialize_to_instance
class IntegrityError(EsignError):
    """Stored data does not match its recorded hash or signature."""

    code = "integrity_error"
    http_status = 500

    def __init__(self, what: str, reason: str = ""):
        super().__init__(what, reason)
        self.what = what
        self.reason = reason

    def __str__(self) -> str:
        return f"integrity check failed for {self.what}" + (f": {self.reason}" if self.reason else "")


@deserialize_to_instance
class InternalError(EsignError):
    """An unexpected failure. The caller gets only a reference; the details
    are in the service's log under that reference."""

    code = "internal_error"
    http_status = 500

    def __init__(self, reference: str):
        super().__init__(reference)
        self.reference = reference

    def __str__(self) -> str:
        return f"internal error (reference {self.reference})"


ERROR_TYPES = (InvalidInput, NotFound, Forbidden, Conflict, Unavailable, IntegrityError, InternalError)
