"""Willingness grants: single use, one digest, one person, short-lived; and
signing a prehashed SHA-256 digest."""
import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from services.common.errors import Forbidden, InvalidInput
from services.identity.grants import check_grant, new_grant, sign_digest, token_hash

T0 = datetime(2024, 6, 15, 8, 0, tzinfo=timezone.utc)
DOC = hashlib.sha256(b"IOU: 10000 yuan").hexdigest()
OTHER_DOC = hashlib.sha256(b"IOU: 100000 yuan").hexdigest()
SERIAL = 0x1234567890ABCDEF


def issue(method="sms", now=T0, **kw):
    return new_grant("person-1", SERIAL, DOC, method, now, **kw)


def reason_of(fn, *args, **kw) -> str:
    with pytest.raises(Forbidden) as info:
        fn(*args, **kw)
    return info.value.reason


def test_a_fresh_grant_is_accepted_and_marked_used():
    issued = issue()
    used = check_grant(issued.grant, issued.token, "person-1", DOC, T0 + timedelta(seconds=30))
    assert used.used_at == T0 + timedelta(seconds=30)
    assert dataclasses.replace(used, used_at=None) == issued.grant


def test_only_the_hash_of_the_token_is_stored():
    issued = issue()
    assert issued.grant.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert issued.token not in repr(issued.grant)
    assert token_hash(issued.token) == issued.grant.token_hash
    assert len(issued.token) >= 40  # 32 random bytes, URL-safe base64


def test_tokens_are_random():
    assert len({issue().token for _ in range(20)}) == 20


def test_cannot_be_used_twice():
    issued = issue()
    used = check_grant(issued.grant, issued.token, "person-1", DOC, T0)
    assert reason_of(check_grant, used, issued.token, "person-1", DOC, T0 + timedelta(seconds=1)) == "grant_replayed"


def test_cannot_be_used_for_another_digest():
    issued = issue()
    assert reason_of(check_grant, issued.grant, issued.token, "person-1", OTHER_DOC, T0) == "grant_digest_mismatch"
    assert reason_of(check_grant, issued.grant, issued.token, "person-1", "not-a-digest", T0) == "grant_digest_mismatch"


def test_digest_comparison_ignores_hex_case():
    issued = new_grant("person-1", SERIAL, DOC.upper(), "face", T0)
    assert issued.grant.document_digest == DOC
    assert check_grant(issued.grant, issued.token, "person-1", DOC.upper(), T0).used_at == T0


def test_cannot_be_used_after_expiry():
    issued = issue()
    assert issued.grant.expires_at - issued.grant.issued_at == timedelta(seconds=120)
    check_grant(issued.grant, issued.token, "person-1", DOC, T0 + timedelta(seconds=119))
    assert reason_of(check_grant, issued.grant, issued.token, "person-1", DOC,
                     T0 + timedelta(seconds=120)) == "grant_expired"
    short = issue(ttl=timedelta(seconds=10))
    assert reason_of(check_grant, short.grant, short.token, "person-1", DOC, T0 + timedelta(seconds=11)) == \
        "grant_expired"


def test_cannot_be_used_by_another_person():
    issued = issue()
    assert reason_of(check_grant, issued.grant, issued.token, "person-2", DOC, T0) == "grant_foreign_person"


def test_unknown_or_wrong_token():
    issued = issue()
    assert reason_of(check_grant, None, issued.token, "person-1", DOC, T0) == "grant_unknown"
    other = issue()
    assert reason_of(check_grant, issued.grant, other.token, "person-1", DOC, T0) == "grant_unknown"
    assert reason_of(check_grant, issued.grant, "", "person-1", DOC, T0) == "grant_unknown"
    assert reason_of(check_grant, issued.grant, None, "person-1", DOC, T0) == "grant_unknown"


def test_certificate_binding_when_given():
    issued = issue()
    assert reason_of(check_grant, issued.grant, issued.token, "person-1", DOC, T0,
                     certificate_serial=SERIAL + 1) == "grant_certificate_mismatch"
    assert check_grant(issued.grant, issued.token, "person-1", DOC, T0, certificate_serial=SERIAL).used_at == T0


def test_reasons_are_distinct():
    issued = issue()
    used = check_grant(issued.grant, issued.token, "person-1", DOC, T0)
    reasons = {
        reason_of(check_grant, used, issued.token, "person-1", DOC, T0),
        reason_of(check_grant, issued.grant, issued.token, "person-1", DOC, T0 + timedelta(hours=1)),
        reason_of(check_grant, issued.grant, issued.token, "person-2", DOC, T0),
        reason_of(check_grant, issued.grant, issued.token, "person-1", OTHER_DOC, T0),
        reason_of(check_grant, None, issued.token, "person-1", DOC, T0),
    }
    assert len(reasons) == 5


@pytest.mark.parametrize("kwargs,field", [
    (dict(method="password"), "method"),
    (dict(document_digest="abc"), "document_digest"),
    (dict(document_digest=DOC + "00"), "document_digest"),
    (dict(document_digest="g" * 64), "document_digest"),
    (dict(person_id=""), "person_id"),
    (dict(certificate_serial=0), "certificate_serial"),
])
def test_new_grant_validates_inputs(kwargs, field):
    args = dict(person_id="person-1", certificate_serial=SERIAL, document_digest=DOC, method="sms", now=T0)
    args.update(kwargs)
    with pytest.raises(InvalidInput) as info:
        new_grant(**args)
    assert info.value.field == field


def test_sign_digest_produces_a_der_ecdsa_signature_over_the_digest():
    key = ec.generate_private_key(ec.SECP256R1())
    message = b"signed attributes of a PAdES signature"
    digest = hashlib.sha256(message).digest()
    signature = sign_digest(key, digest)
    r, s = decode_dss_signature(signature)  # DER Ecdsa-Sig-Value
    assert r > 0 and s > 0
    # Verifies as an ordinary ECDSA-SHA256 signature over the message itself.
    key.public_key().verify(signature, message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, b"another message", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("digest", [b"", b"\x00" * 31, b"\x00" * 33, DOC])
def test_sign_digest_wants_32_bytes(digest):
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidInput):
        sign_digest(key, digest)
