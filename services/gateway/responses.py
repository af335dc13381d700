"""What the gateway's OpenAPI says a route answers besides its success.

Every refusal has one body, ``{"error": {...}}`` (:class:`ErrorResponse`):
the ``to_dict()`` of a typed error (services/common/errors.py), the
RequestValidationError handler's ``invalid_input``, or the edge middleware's
413 and 429 (services/gateway/limits.py). A route declares the statuses it
can answer with :func:`errors`; the groups below name the usual reasons, so
a route lists what is particular to it::

    @router.post("/flows/{flow_id}/decline", responses=errors(SESSION, BODY, 404, 409))

Every route that calls a service can answer 500 (``internal_error``: a bug,
or ``integrity_error``: stored data failed its hash or signature check) and
503 (``unavailable``: a service or an outside system did not answer):
:func:`errors` always adds those two. Answers that are not JSON (a PDF, a
CRL ...) are declared with :func:`binary` and ``response_class=Response``, so
their success is not also documented as JSON.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
)

#: every ``code`` an error body can carry, each with the HTTP status it is answered with
ERROR_CLASSES = (InvalidInput, PayloadTooLarge, NotFound, Forbidden, RateLimited, Conflict, Unavailable,
                 IntegrityError, InternalError)
ErrorCode = Literal[tuple(cls.code for cls in ERROR_CLASSES)]  # type: ignore[valid-type]


class ErrorViolation(BaseModel):
    """One broken rule of a form (``ValidationFailed``)."""

    model_config = ConfigDict(extra="forbid")
    field: str = Field(..., description="dotted path of the input: remark, lender.phone, furnishings.2.count")
    rule: str = Field(..., description="stable rule id: required, max_chars, min, max, enum, type, ...")
    message: str = Field(..., description="what was expected and what was found, never a personal value")


class ErrorDetail(BaseModel):
    """A typed error: ``code`` says which, ``message`` says why; the other
    members come with the codes that have them."""

    model_config = ConfigDict(extra="forbid")
    code: ErrorCode = Field(..., description="stable, machine-readable: which typed error")
    message: str = Field(..., description="the reason (forbidden, conflict, rate_limited: a short stable id "
                                          "such as session_required or otp_resend_too_soon)")
    detail: str | None = Field(None, description="forbidden, conflict: English detail of the reason, when there "
                                                 "is some (the states a flow had to be in, the signature field)")
    field: str | None = Field(None, description="invalid_input, payload_too_large: the input that broke a rule")
    rule: str | None = Field(None, description="invalid_input, payload_too_large: the rule it broke")
    violations: list[ErrorViolation] | None = Field(None, description="invalid_input from a form: every rule broken")
    entity: str | None = Field(None, description="not_found: what was not found (document, flow, ...)")
    id: str | None = Field(None, description="not_found: the id asked for")
    retry_after: int | None = Field(None, description="rate_limited, unavailable: seconds until a new try may "
                                                      "succeed, when known (also the Retry-After header)")


class ErrorResponse(BaseModel):
    """The body of every refusal."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


_RETRY_AFTER = {"Retry-After": {"description": "seconds until a new try may succeed (when known)",
                                "schema": {"type": "integer"}}}

#: status -> (description, extra members of the OpenAPI response object)
ERROR_STATUSES: dict[int, tuple[str, dict[str, Any]]] = {
    403: ("Refused (`forbidden`); `message` is the reason. A route that needs a session answers this, never 401, "
          "without an `Authorization: Bearer` token (or the web pages' session cookie) or with one that is no "
          "longer valid (`session_required`, `session_invalid`, `session_expired`, `session_revoked`, "
          "`account_frozen`); a state change that the cookie authenticates, from a page of another origin "
          "(`csrf_origin`); otherwise the person may not do this (`not_a_party`, `step_up_required`, "
          "`otp_wrong`, ...).", {}),
    404: ("Not found (`not_found`): `entity` and `id` say what; someone else's document or flow is not found "
          "either.", {}),
    409: ("Conflicts with the current state (`conflict`): `message` is the reason (`document_locked`, "
          "`phone_registered`, `flow_expired`, ...; a flow in another state than the action needs: "
          "`flow_<state>`, with the states it needs in `detail`).", {}),
    413: ("Body over the route's limit (`payload_too_large`), refused at the edge before it is read.", {}),
    422: ("Invalid input (`invalid_input`): `field` and `rule` name the input and the rule it broke, `message` "
          "what was expected; `violations` lists every broken rule of a form. A body that is not JSON (in UTF-8) "
          "is `json_invalid`; text with a NUL character, anywhere, is `nul_character`.", {}),
    429: ("Too many requests (`rate_limited`): from this client to an anonymous route "
          "(`too_many_requests_<group>`), or too many codes or failed checks for this person or phone "
          "(`otp_resend_too_soon`, `face_proofing_locked`, ...); `retry_after` and the Retry-After header say when "
          "to try again.", {"headers": _RETRY_AFTER}),
    500: ("A bug (`internal_error`, with a reference to the service log) or stored data that failed its hash or "
          "signature check (`integrity_error`).", {}),
    503: ("A service or an outside system (S3, the time-stamp authority, the identity authority ...) did not "
          "answer (`unavailable`); `retry_after` when known.", {"headers": _RETRY_AFTER}),
}

#: a route behind a session (services/gateway/api.py current_session): 403 without a valid one
SESSION = (403,)
#: a route that takes a body: over its limit (413), or not of its shape (422)
BODY = (413, 422)
#: a service behind every route can fail (500) or be away (503): :func:`errors` always declares them
SERVICE = (500, 503)


def errors(*statuses: int | tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for the error statuses a route can answer, each
    with the :class:`ErrorResponse` body; ``statuses`` are statuses or groups
    (:data:`SESSION`, :data:`BODY`); :data:`SERVICE` is always added."""
    wanted: set[int] = set(SERVICE)
    for status in statuses:
        wanted.update(status if isinstance(status, tuple) else (status,))
    unknown = wanted - set(ERROR_STATUSES)
    if unknown:
        raise ValueError(f"no error answer is defined for status {sorted(unknown)}")
    return {status: {"model": ErrorResponse, "description": ERROR_STATUSES[status][0], **ERROR_STATUSES[status][1]}
            for status in sorted(wanted)}


def binary(media_type: str, description: str, headers: dict[str, str] | None = None,
           text: bool = False) -> dict[int | str, dict]:
    """``responses=`` for a 200 that is ``media_type``, not JSON (with
    ``response_class=Response`` on the route): bytes, or ``text`` (PEM);
    ``headers``: name -> description."""
    schema = {"type": "string"} if text else {"type": "string", "format": "binary"}
    answer: dict[str, Any] = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                             for name, text in headers.items()}
    return {200: answer}


def raw_body(media_type: str, description: str) -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its body itself (``await
    request.body()``), so the schema still says what it takes."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}}


class ServiceHealth(BaseModel):
    """One service's ``health`` answer (``checks``: its database, store and
    worker pools), or ``unavailable`` with the error code when it did not answer."""

    model_config = ConfigDict(extra="allow")
    status: Literal["ok", "degraded", "unavailable"]
    ms: float = Field(..., description="how long the service took to answer")
    service: str | None = None
    checks: dict[str, dict[str, Any]] | None = None
    error: str | None = Field(None, description="unavailable: the error code")


class HealthReport(BaseModel):
    """``/healthz``: every service's health; ``degraded`` (503) when one is not ok."""

    status: Literal["ok", "degraded"]
    services: dict[str, ServiceHealth]


def without_default_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 of its own (``HTTPValidationError``) on every
    route with a parameter that declares none. The gateway never answers that
    body (its handler answers :class:`ErrorResponse`), and a route whose
    parameters cannot fail validation (only the optional Authorization
    header) does not answer 422 at all; every route that can declares it with
    :func:`errors`. Drops those, and their schemas, in place."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            answer = operation.get("responses", {}).get("422")
            if answer and "HTTPValidationError" in str(answer.get("content")):
                del operation["responses"]["422"]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
