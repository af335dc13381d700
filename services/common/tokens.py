"""Signed, expiring tokens (sessions, invites): ``base64url(payload) "."
base64url(HMAC-SHA256(key, context || payload))`` (RFC 2104, RFC 4648 §5
without padding). The payload is compact JSON with an ``exp`` in Unix
seconds. The context string keeps a token made for one purpose from passing
as another even under the same key. Tokens carry ids only, never personal data.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from services.common.errors import Forbidden, InvalidInput
from services.common.reasons import Reason

MIN_KEY_BYTES = 32
MAX_TOKEN_LENGTH = 1024


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise InvalidInput("key", "min_length", f"expected an HMAC key of at least {MIN_KEY_BYTES} bytes")


def sign_token(payload: dict[str, Any], expires_at: datetime, key: bytes, context: bytes) -> str:
    _check_key(key)
    if expires_at.tzinfo is None:
        raise InvalidInput("expires_at", "timezone", "expected a timezone-aware datetime")
    body = json.dumps(dict(payload, exp=int(expires_at.timestamp())), separators=(",", ":"),
                      sort_keys=True).encode()
    mac = hmac.new(key, context + body, hashlib.sha256).digest()
    return f"{_b64encode(body)}.{_b64encode(mac)}"


def read_token(token: str, key: bytes, context: bytes, now: datetime | None = None) -> dict[str, Any]:
    """The payload of a genuine, unexpired token; Forbidden otherwise."""
    _check_key(key)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise Forbidden(Reason.TOKEN_MALFORMED)
    body_text, mac_text = token.split(".")
    try:
        body, mac = _b64decode(body_text), _b64decode(mac_text)
    except (binascii.Error, ValueError):
        raise Forbidden(Reason.TOKEN_MALFORMED) from None
    if not hmac.compare_digest(mac, hmac.new(key, context + body, hashlib.sha256).digest()):
        raise Forbidden(Reason.TOKEN_BAD_SIGNATURE)
    try:
        payload = json.loads(body)
        expires = int(payload["exp"])
    except (ValueError, KeyError, TypeError):
        raise Forbidden(Reason.TOKEN_MALFORMED) from None
    if (now or datetime.now(timezone.utc)).timestamp() >= expires:
        raise Forbidden(Reason.TOKEN_EXPIRED)
    return payload
