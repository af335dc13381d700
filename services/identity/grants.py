"""Willingness grants (意愿认证): single-use authorisation to sign one digest.

This is the signature-activation idea of the Cloud Signature Consortium API
(SAD: signature activation data bound to the hash to be signed) and how the
platform meets 电子签名法 第十三条 (signature creation data under the
signer's sole control): after the person passes an SMS code or a face check
for exactly one document digest, the service issues a grant that

* names the person, the certificate (by serial) and the SHA-256 digest,
* records how willingness was shown (``sms`` or ``face``),
* expires quickly (120 s by default) and can be used once.

The grant's token is a random opaque string handed to the person's session;
only its SHA-256 is stored (a 256-bit random token needs no key or salt:
the hash cannot be inverted by guessing).

:func:`check_grant` refuses with :class:`~services.common.errors.Forbidden`
and a distinct reason for each way of failing, so the audit record can say
which: ``grant_unknown``, ``grant_foreign_person``, ``grant_certificate_mismatch``,
``grant_replayed``, ``grant_expired``, ``grant_digest_mismatch``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from services.common.errors import Forbidden, InvalidInput
from services.common.reasons import Reason

DEFAULT_TTL = timedelta(seconds=120)
METHODS = ("sms", "face")
DIGEST_BYTES = 32

Method = Literal["sms", "face"]
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True)
class SigningGrant:
    """The stored form of a grant (the token itself is never stored)."""

    token_hash: str  # hex SHA-256 of the token; the lookup key
    person_id: str
    certificate_serial: int
    document_digest: str  # lower-case hex SHA-256 of the document
    method: Method
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True)
class IssuedGrant:
    token: str  # give to the person's session; do not log
    grant: SigningGrant


def token_hash(token: str) -> str:
    """The stored lookup key of a presented token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_digest(digest: str) -> str:
    """A SHA-256 digest as 64 lower-case hex characters."""
    if not isinstance(digest, str) or not _HEX_DIGEST.match(digest):
        raise InvalidInput("document_digest", "format", "expected a SHA-256 digest as 64 hex characters")
    return digest.lower()


def new_grant(
    person_id: str,
    certificate_serial: int,
    document_digest: str,
    method: str,
    now: datetime,
    ttl: timedelta = DEFAULT_TTL,
) -> IssuedGrant:
    """Issue a grant after a successful willingness check."""
    if not person_id:
        raise InvalidInput("person_id", "required", "expected a person id")
    if method not in METHODS:
        raise InvalidInput("method", "allowed_values", f"expected one of {', '.join(METHODS)}")
    if not isinstance(certificate_serial, int) or certificate_serial <= 0:
        raise InvalidInput("certificate_serial", "format", "expected a positive certificate serial number")
    token = secrets.token_urlsafe(32)
    grant = SigningGrant(
        token_hash=token_hash(token),
        person_id=person_id,
        certificate_serial=certificate_serial,
        document_digest=normalise_digest(document_digest),
        method=method,  # type: ignore[arg-type]
        issued_at=now,
        expires_at=now + ttl,
    )
    return IssuedGrant(token=token, grant=grant)


def check_grant(
    stored: SigningGrant | None,
    presented_token: str,
    person_id: str,
    digest: str,
    now: datetime,
    certificate_serial: int | None = None,
) -> SigningGrant:
    """Check a presented grant and return it marked used (persist that before
    signing, in the same transaction that claims it, so two concurrent
    requests cannot both sign). ``stored`` is what the caller found under
    ``token_hash(presented_token)``, or ``None``."""
    if stored is None or not isinstance(presented_token, str) or not hmac.compare_digest(
        stored.token_hash.encode("ascii"), token_hash(presented_token).encode("ascii")
    ):
        raise Forbidden(Reason.GRANT_UNKNOWN)
    if stored.person_id != person_id:
        raise Forbidden(Reason.GRANT_FOREIGN_PERSON)
    if certificate_serial is not None and stored.certificate_serial != certificate_serial:
        raise Forbidden(Reason.GRANT_CERTIFICATE_MISMATCH)
    if stored.used_at is not None:
        raise Forbidden(Reason.GRANT_REPLAYED)
    if now >= stored.expires_at:
        raise Forbidden(Reason.GRANT_EXPIRED)
    try:
        presented_digest = normalise_digest(digest)
    except InvalidInput:
        raise Forbidden(Reason.GRANT_DIGEST_MISMATCH) from None
    if not hmac.compare_digest(stored.document_digest, presented_digest):
        raise Forbidden(Reason.GRANT_DIGEST_MISMATCH)
    return replace(stored, used_at=now)


def sign_digest(private_key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """ECDSA signature (DER, RFC 3279 Ecdsa-Sig-Value) over a SHA-256 digest
    computed elsewhere, e.g. the signed attributes of a PAdES signature."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_BYTES:
        raise InvalidInput("digest", "length", f"expected {DIGEST_BYTES} bytes of SHA-256")
    return private_key.sign(bytes(digest), ec.ECDSA(Prehashed(hashes.SHA256())))
