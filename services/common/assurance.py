"""Identity assurance levels: how sure the platform is that a person is who
their certificate names, and how a certificate says so.

Levels, weakest first (each includes what the ones before it check):

``self_declared``
    The person typed a name and ID number and confirmed a phone; any face
    check compared two images the person supplied. Development only: a
    platform allows it only with ``ALLOW_SELF_DECLARED: true``.
``authority_two_element``
    An authority (the resident-identity registry behind Tencent Cloud FaceID's
    IdCardVerification, or the configured local registry) confirmed that the
    name and ID number belong together. It says nothing about who typed them.
``authority_face``
    A selfie matched the authority's ID photo for that name and ID number
    (FaceID ImageRecognitionV2, Sim at or above its threshold; or the local
    registry's reference photo, face distance under the threshold).
``authority_face_liveness``
    As ``authority_face``, and the face compared came from a live capture
    that passed an active liveness challenge (head turns) first.

A person certificate carries its level as a certificate policy (RFC 5280
§4.2.1.4), one OID per level under the platform's private arc. The arc is a
UUID OID (ITU-T X.667 / RFC 4122: ``2.25.<UUID as an integer>``), which
needs no registration and cannot collide with another organisation's:

====================================  ======================================
policy OID                            level
====================================  ======================================
``<ARC>.1.1``                         self_declared
``<ARC>.1.2``                         authority_two_element
``<ARC>.1.3``                         authority_face
``<ARC>.1.4``                         authority_face_liveness
====================================  ======================================

Anyone holding a signed PDF reads the level back from the signer's
certificate with :func:`level_of_certificate` (``esign verify`` does).
"""
from __future__ import annotations

from enum import Enum

from cryptography import x509

from services.common.errors import InvalidInput

#: UUID 6b1ba2a1-5c1e-4f57-9c56-1e0a7a8d2f3b as an integer (X.667): the platform's own arc
ARC = "2.25.142370886098765658475081001727062519611"
POLICY_ARC = f"{ARC}.1"


class AssuranceLevel(str, Enum):
    SELF_DECLARED = "self_declared"
    AUTHORITY_TWO_ELEMENT = "authority_two_element"
    AUTHORITY_FACE = "authority_face"
    AUTHORITY_FACE_LIVENESS = "authority_face_liveness"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    @property
    def policy_oid(self) -> x509.ObjectIdentifier:
        return x509.ObjectIdentifier(f"{POLICY_ARC}.{self.rank + 1}")

    @property
    def authority_checked(self) -> bool:
        """True for every level an authority vouched for."""
        return self is not AssuranceLevel.SELF_DECLARED

    def at_least(self, other: "AssuranceLevel | str") -> bool:
        return self.rank >= parse_level(other).rank

    @property
    def label(self) -> str:
        """How the level reads in Chinese pages and reports."""
        return LABELS[self]


_ORDER = (AssuranceLevel.SELF_DECLARED, AssuranceLevel.AUTHORITY_TWO_ELEMENT,
          AssuranceLevel.AUTHORITY_FACE, AssuranceLevel.AUTHORITY_FACE_LIVENESS)
LEVELS = tuple(level.value for level in _ORDER)

LABELS = {
    AssuranceLevel.SELF_DECLARED: "自行声明（未经权威核验，仅限开发）",
    AssuranceLevel.AUTHORITY_TWO_ELEMENT: "权威库姓名与身份证号一致",
    AssuranceLevel.AUTHORITY_FACE: "权威库证件照人脸比对通过",
    AssuranceLevel.AUTHORITY_FACE_LIVENESS: "活体检测及权威库证件照人脸比对通过",
}


def parse_level(value: "AssuranceLevel | str", field: str = "assurance_level") -> AssuranceLevel:
    """A level from its name; ``InvalidInput(field, "allowed_values")`` otherwise."""
    if isinstance(value, AssuranceLevel):
        return value
    try:
        return AssuranceLevel(value)
    except ValueError:
        raise InvalidInput(field, "allowed_values", f"expected one of {', '.join(LEVELS)}") from None


def level_of_policy(oid: x509.ObjectIdentifier | str) -> AssuranceLevel | None:
    """The level a certificate-policy OID names, or None for any other policy."""
    dotted = oid.dotted_string if isinstance(oid, x509.ObjectIdentifier) else str(oid)
    for level in _ORDER:
        if level.policy_oid.dotted_string == dotted:
            return level
    return None


def policy_extension(level: AssuranceLevel) -> x509.CertificatePolicies:
    """The CertificatePolicies extension stating ``level`` (non-critical), with a
    user notice in plain words, so a person reading the certificate sees it."""
    notice = x509.UserNotice(None, f"esign identity assurance: {level.value}")
    return x509.CertificatePolicies([x509.PolicyInformation(level.policy_oid, [notice])])


def level_of_certificate(certificate: x509.Certificate) -> AssuranceLevel | None:
    """The assurance level a person certificate states, or None when it states
    none (a certificate from before levels existed, or not a person's)."""
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return None
    found = [level for level in (level_of_policy(p.policy_identifier) for p in policies) if level is not None]
    # a certificate stating two levels is malformed: believe the weaker
    return min(found, key=lambda level: level.rank) if found else None
