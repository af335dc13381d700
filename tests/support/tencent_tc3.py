"""The checking side of TencentCloud API 3.0 signing, TC3-HMAC-SHA256, for the fake vendors.

Written from Tencent Cloud's "Signature v3" document (API 3.0, "签名方法 v3"),
not from any SDK, so that a fake vendor built on it tests the real clients'
signing independently:

1. CanonicalRequest = HTTPRequestMethod \\n CanonicalURI \\n CanonicalQueryString
   \\n CanonicalHeaders \\n SignedHeaders \\n lowercase hex SHA-256 of the payload;
   CanonicalHeaders are the signed headers, name and value lower-cased and
   trimmed, sorted by name, one ``name:value\\n`` each.
2. StringToSign = ``TC3-HMAC-SHA256`` \\n RequestTimestamp \\n CredentialScope
   (``<UTC date>/<service>/tc3_request``) \\n hex SHA-256 of the canonical request.
3. SecretDate = HMAC("TC3" + SecretKey, date), SecretService = HMAC(SecretDate,
   service), SecretSigning = HMAC(SecretService, "tc3_request"); Signature =
   hex HMAC(SecretSigning, StringToSign).
4. Authorization = ``TC3-HMAC-SHA256 Credential=<SecretId>/<scope>,
   SignedHeaders=<names>, Signature=<hex>``.

:func:`verify_request` refuses a request the way the vendor does, with its
error codes: ``AuthFailure.InvalidAuthorization`` (malformed header),
``AuthFailure.SecretIdNotFound``, ``AuthFailure.SignatureExpire`` (timestamp
more than five minutes off) and ``AuthFailure.SignatureFailure``.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Mapping

SIGNATURE_FAILURE_MESSAGE = (
    "The provided credentials could not be validated. Please check your signature is correct."
)
MAX_SKEW_SECONDS = 300

_AUTH = re.compile(
    r"TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[a-z]+)/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9\-;]+), Signature=(?P<sig>[0-9a-f]{64})\Z"
)


@dataclass(frozen=True)
class Refusal:
    """Why the vendor would not accept a request's signature."""

    code: str
    message: str


def utc_day(timestamp: str | int) -> str:
    """The credential scope's date: the UTC date of the timestamp, never Beijing's."""
    return datetime.datetime.fromtimestamp(int(timestamp), tz=datetime.timezone.utc).date().isoformat()


def tc3_expected_signature(
    *,
    secret_key: str,
    http_method: str,
    canonical_uri: str,
    canonical_query: str,
    header_lines: list[tuple[str, str]],
    request_payload: bytes,
    timestamp: str,
    service: str,
) -> str:
    """The hex signature the document's four steps produce.

    ``header_lines`` are the (name, value) pairs listed in SignedHeaders, as
    received. Step 1 lower-cases and trims both, sorts by name, and writes
    "name:value\\n" for each; step 2 scopes the credential to the UTC date of
    the timestamp; step 3 derives the key by HMAC chaining from "TC3"+key."""
    hexsha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731 - mirrors the doc's pseudocode
    mac = lambda k, m: hmac.new(k, m.encode("utf-8"), hashlib.sha256)  # noqa: E731

    entries = sorted((n.strip().lower(), v.strip().lower()) for n, v in header_lines)
    canonical_headers = "".join(n + ":" + v + "\n" for n, v in entries)
    signed_headers = ";".join(n for n, _ in entries)
    canonical = (
        http_method + "\n" + canonical_uri + "\n" + canonical_query + "\n"
        + canonical_headers + "\n" + signed_headers + "\n" + hexsha(request_payload)
    )

    day = utc_day(timestamp)
    scope = day + "/" + service + "/tc3_request"
    to_sign = "TC3-HMAC-SHA256\n" + timestamp + "\n" + scope + "\n" + hexsha(canonical.encode("utf-8"))

    secret_date = mac(("TC3" + secret_key).encode("utf-8"), day).digest()
    secret_service = mac(secret_date, service).digest()
    secret_signing = mac(secret_service, "tc3_request").digest()
    return mac(secret_signing, to_sign).hexdigest()


def verify_request(
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    service: str,
    secret_id: str,
    secret_key: str,
    now: float,
    max_skew_seconds: int = MAX_SKEW_SECONDS,
) -> Refusal | None:
    """None when the request is signed as the document says for ``service``
    with this key pair at about ``now``; otherwise the vendor's refusal.
    ``headers`` are the request's headers with lower-cased names."""
    match = _AUTH.match(headers.get("authorization", ""))
    if not match:
        return Refusal("AuthFailure.InvalidAuthorization", "Authorization is not in the TC3-HMAC-SHA256 format.")
    if match["id"] != secret_id:
        return Refusal("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
    timestamp = headers.get("x-tc-timestamp", "")
    if not timestamp.isdigit():
        return Refusal("AuthFailure.InvalidAuthorization", "X-TC-Timestamp is missing.")
    if abs(int(timestamp) - now) > max_skew_seconds:
        return Refusal("AuthFailure.SignatureExpire", "Signature expired.")
    names = match["headers"].split(";")
    if "content-type" not in names or "host" not in names or any(n not in headers for n in names):
        return Refusal("AuthFailure.InvalidAuthorization", "SignedHeaders must name content-type and host, as sent.")
    if match["date"] != utc_day(timestamp) or match["service"] != service:
        return Refusal("AuthFailure.SignatureFailure", SIGNATURE_FAILURE_MESSAGE)
    uri, _, query = path.partition("?")
    expected = tc3_expected_signature(
        secret_key=secret_key,
        http_method=method,
        canonical_uri=uri,
        canonical_query=query,
        header_lines=[(n, headers[n]) for n in names],
        request_payload=body,
        timestamp=timestamp,
        service=service,
    )
    if not hmac.compare_digest(expected, match["sig"]):
        return Refusal("AuthFailure.SignatureFailure", SIGNATURE_FAILURE_MESSAGE)
    return None
