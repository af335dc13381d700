"""Assurance levels: their order, and the certificate policy that states them
(RFC 5280 §4.2.1.4) under the platform's UUID arc (ITU-T X.667)."""
from __future__ import annotations

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from services.common.assurance import (
    ARC,
    LEVELS,
    AssuranceLevel,
    level_of_certificate,
    level_of_policy,
    parse_level,
    policy_extension,
)
from services.common.errors import InvalidInput


def _certificate(*extensions) -> x509.Certificate:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256())


def test_levels_are_ordered_weakest_first():
    assert LEVELS == ("self_declared", "authority_two_element", "authority_face", "authority_face_liveness")
    assert AssuranceLevel.AUTHORITY_FACE_LIVENESS.at_least("authority_face")
    assert not AssuranceLevel.AUTHORITY_TWO_ELEMENT.at_least(AssuranceLevel.AUTHORITY_FACE)
    assert not AssuranceLevel.SELF_DECLARED.authority_checked and AssuranceLevel.AUTHORITY_FACE.authority_checked
    with pytest.raises(InvalidInput) as unknown:
        parse_level("verified", "required_assurance")
    assert (unknown.value.field, unknown.value.rule) == ("required_assurance", "allowed_values")


def test_the_arc_is_a_uuid_oid():
    prefix, _, number = ARC.rpartition(".")
    assert prefix == "2.25" and 0 < int(number) < 2 ** 128
    assert str(uuid.UUID(int=int(number))) == "6b1ba2a1-5c1e-4f57-9c56-1e0a7a8d2f3b"


@pytest.mark.parametrize("level", list(AssuranceLevel))
def test_a_certificate_states_its_level_and_it_reads_back(level):
    certificate = _certificate(policy_extension(level))
    assert level_of_certificate(certificate) is level
    policy = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value[0]
    assert policy.policy_identifier.dotted_string == f"{ARC}.1.{level.rank + 1}"
    assert level.value in policy.policy_qualifiers[0].explicit_text


def test_certificates_without_a_level_or_with_two_levels():
    assert level_of_certificate(_certificate()) is None
    other = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.5.29.32.0"), None)])
    assert level_of_certificate(_certificate(other)) is None
    assert level_of_policy("1.2.3") is None
    both = x509.CertificatePolicies([
        x509.PolicyInformation(AssuranceLevel.AUTHORITY_FACE_LIVENESS.policy_oid, None),
        x509.PolicyInformation(AssuranceLevel.SELF_DECLARED.policy_oid, None)])
    assert level_of_certificate(_certificate(both)) is AssuranceLevel.SELF_DECLARED  # the weaker is believed
