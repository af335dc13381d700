"""TencentCloud API 3.0 request signing, TC3-HMAC-SHA256 ("Signature v3").

Follows Tencent's published algorithm step by step:

1. CanonicalRequest = method \\n URI \\n query \\n canonical headers \\n
   signed headers \\n lowercase hex SHA-256 of the payload. Header names are
   lower-cased, values trimmed (and lower-cased, as the documentation
   specifies), sorted by name, each line ``name:value\\n``.
2. StringToSign = ``TC3-HMAC-SHA256`` \\n timestamp \\n credential scope
   (``<UTC date>/<service>/tc3_request``) \\n hex SHA-256 of step 1. The date
   is the UTC date of the timestamp, never the local one.
3. Derived keys: SecretDate = HMAC("TC3" + SecretKey, date), SecretService =
   HMAC(SecretDate, service), SecretSigning = HMAC(SecretService,
   "tc3_request"); Signature = hex HMAC(SecretSigning, StringToSign).
4. Authorization = ``TC3-HMAC-SHA256 Credential=<SecretId>/<scope>,
   SignedHeaders=<names>, Signature=<hex>``.

Pure functions; the secret key never leaves this module's arguments.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping

ALGORITHM = "TC3-HMAC-SHA256"
TERMINATOR = "tc3_request"


@dataclass(frozen=True)
class SignedRequest:
    """The values a signed request sends, plus the intermediate strings (for tests)."""

    authorization: str
    canonical_request: str
    string_to_sign: str
    signature: str


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def credential_date(timestamp: int) -> str:
    """UTC date of a Unix timestamp (YYYY-MM-DD), as the credential scope needs."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d")


def canonical_request(
    method: str, uri: str, query: str, headers: Mapping[str, str], signed_headers: list[str], payload: bytes
) -> str:
    lowered = {name.lower(): value for name, value in headers.items()}
    names = sorted(name.lower() for name in signed_headers)
    canonical_headers = "".join(f"{name}:{lowered[name].strip().lower()}\n" for name in names)
    return "\n".join([method.upper(), uri, query, canonical_headers, ";".join(names), _sha256_hex(payload)])


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    scope = f"{credential_date(timestamp)}/{service}/{TERMINATOR}"
    return "\n".join([ALGORITHM, str(timestamp), scope, _sha256_hex(canonical.encode("utf-8"))])


def signing_key(secret_key: str, date: str, service: str) -> bytes:
    secret_date = _hmac(("TC3" + secret_key).encode("utf-8"), date)
    secret_service = _hmac(secret_date, service)
    return _hmac(secret_service, TERMINATOR)


def sign_request(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload: bytes,
    method: str = "POST",
    uri: str = "/",
    query: str = "",
) -> SignedRequest:
    """Sign one request; ``headers`` must contain every name in ``signed_headers``."""
    canonical = canonical_request(method, uri, query, headers, signed_headers, payload)
    to_sign = string_to_sign(timestamp, service, canonical)
    key = signing_key(secret_key, credential_date(timestamp), service)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    scope = f"{credential_date(timestamp)}/{service}/{TERMINATOR}"
    names = ";".join(sorted(name.lower() for name in signed_headers))
    authorization = f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={names}, Signature={signature}"
    return SignedRequest(authorization, canonical, to_sign, signature)
