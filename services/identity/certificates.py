"""Person certificates: issue, look up status, revoke.

A person's ECDSA P-256 key is made here, inside the identity service, by
:class:`~services.identity.person_keys.PersonKeys`: on the PKCS#11 token
(the row records its ref) or sealed under the KEK (the row holds it, bound by
associated data to the certificate serial, the KEK's id beside it so the KEK
can be rotated). No RPC returns it; revoking the certificate destroys it.

Serials travel as lower-case hex strings (RFC 5280 serials are up to 20
octets; JSON numbers are not that wide).
"""
from __future__ import annotations

import datetime as _dt
from typing import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.clock import naive, utcnow
from services.common.errors import InvalidInput, NotFound
from services.common.metrics import Series
from services.identity import audit, ca
from services.identity.ca_store import CaMaterial, build_delegated_ocsp_response
from services.identity.models import Certificate, CrlNumber
from services.identity.person_keys import ACTIVE, PersonKeys

REVOKED = "revoked"
#: revocation reasons a caller may give (RFC 5280 §5.3.1 names); ``superseded``
#: is also what a re-verification that issues a new certificate records
REVOCATION_REASONS = tuple(reason.value for reason in ca.RevocationReason)
#: issuance by level and revocation by reason, shown at 0 from the start
CERTIFICATE_SERIES = (
    Series("certificates_issued", "Person certificates issued",
           {"level": tuple(level.value for level in AssuranceLevel)}),
    Series("certificates_revoked", "Person certificates revoked", {"reason": REVOCATION_REASONS}),
)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def serial_int(text: str, field: str = "serial") -> int:
    try:
        value = int(text, 16)
    except (TypeError, ValueError):
        raise InvalidInput(field, "format", "expected a certificate serial as hex digits") from None
    if value <= 0 or len(text) > 40:
        raise InvalidInput(field, "format", "expected a positive serial of at most 20 octets")
    return value


def active_certificate(session: Session, person_id: str) -> Certificate | None:
    return session.execute(
        select(Certificate).where(Certificate.person_id == person_id, Certificate.status == ACTIVE)
        .order_by(Certificate.issued_at.desc())
    ).scalars().first()


def latest_certificate(session: Session, person_id: str) -> Certificate | None:
    return session.execute(
        select(Certificate).where(Certificate.person_id == person_id).order_by(Certificate.issued_at.desc())
    ).scalars().first()


def revocation_of(row: Certificate) -> ca.Revocation:
    return ca.Revocation(serial=serial_int(row.serial), revoked_at=row.revoked_at.replace(tzinfo=_dt.timezone.utc),
                         reason=ca.RevocationReason(row.revocation_reason or "unspecified"))


def status_lookup(session: Session, material: CaMaterial) -> ca.StatusLookup:
    """For the OCSP responder: person certificates from the table, the
    platform's own certificates from the CA material, anything else unknown."""

    def lookup(serial: int) -> ca.CertificateStatus | None:
        row = session.get(Certificate, serial_hex(serial))
        if row is None:
            return material.platform_status(serial)
        if row.status == REVOKED:
            return ca.CertificateStatus(revocation_of(row))
        return ca.GOOD

    return lookup


#: most certificates one ``revocation_data`` call answers for (a flow's parties and its TSA)
MAX_REVOCATION_SERIALS = 16


def revocation_data(session: Session, material: CaMaterial, serials: list) -> dict[str, list[bytes]]:
    """What a PAdES B-LTA finalisation fetches over HTTP, in one answer: an RFC 6960 OCSP
    response for each listed certificate of the issuing CA (hex ``serials``: the parties'
    certificates; the platform TSA's, which stamps every signature, is always added), as the
    delegated responder answers a SHA-1 CertID request (RFC 5019) for it, and the root's CRL,
    which covers the issuing CA itself. A serial of no certificate the issuing CA made here is
    NotFound."""
    if not isinstance(serials, list) or not 1 <= len(serials) <= MAX_REVOCATION_SERIALS:
        raise InvalidInput("serials", "length", f"expected 1 to {MAX_REVOCATION_SERIALS} certificate serials")
    wanted = {serial_int(s.lower() if isinstance(s, str) else s, f"serials.{n}") for n, s in enumerate(serials)}
    wanted.add(material.tsa.serial_number)
    lookup = status_lookup(session, material)
    responses = []
    for serial in sorted(wanted):
        certificate = material.tsa if serial == material.tsa.serial_number else None
        if certificate is None:
            row = session.get(Certificate, serial_hex(serial))
            if row is None:
                raise NotFound("certificate", serial_hex(serial))
            certificate = ca.certificate_from_pem(row.certificate_pem.encode("ascii"))
        request = (ocsp.OCSPRequestBuilder()
                   .add_certificate(certificate, material.issuing.certificate, hashes.SHA1())  # noqa: S303 - RFC 5019
                   .build().public_bytes(serialization.Encoding.DER))
        responses.append(build_delegated_ocsp_response(material, request, lookup))
    return {"ocsp": responses, "crls": [material.root_crl_der] if material.root_crl_der is not None else []}


def revoked(session: Session) -> list[ca.Revocation]:
    rows = session.execute(select(Certificate).where(Certificate.status == REVOKED)).scalars()
    return [revocation_of(row) for row in rows]


#: how long an issued CRL is valid (its nextUpdate), and how long before that a new one is made
CRL_VALIDITY = _dt.timedelta(days=1)
CRL_REFRESH_BEFORE = _dt.timedelta(hours=6)


def current_crl(session: Session, material: CaMaterial) -> bytes:
    """The issuing CA's CRL (DER): the last one issued while it lists every revocation
    and its nextUpdate is more than ``CRL_REFRESH_BEFORE`` away; otherwise a new one,
    numbered by the database and kept. Not committed."""
    moment = utcnow()
    count = session.execute(select(func.count()).select_from(Certificate)
                            .where(Certificate.status == REVOKED)).scalar_one()
    latest = session.execute(select(CrlNumber).where(CrlNumber.der.is_not(None))
                             .order_by(CrlNumber.id.desc()).limit(1)).scalars().first()
    if (latest is not None and latest.revoked_count == count and latest.next_update is not None
            and moment < latest.next_update - CRL_REFRESH_BEFORE):
        return latest.der
    number = CrlNumber(issued_at=moment)
    session.add(number)
    session.flush()
    entries = revoked(session)
    crl = ca.build_crl(material.issuing, entries, crl_number=number.id, next_update_in=CRL_VALIDITY)
    number.der = ca.crl_to_der(crl)
    number.next_update = naive(crl.next_update_utc)
    number.revoked_count = len(entries)
    return number.der


class PersonCertificates:
    """Issuing and revoking person certificates within a worker's transaction:
    each issue and revocation is audited and announced (``certificate_issued``,
    ``certificate_revoked``) in the same commit. A revoked certificate's key on
    the token is destroyed once the revocation commits (``after_commit``)."""

    def __init__(self, session: Session, keys: PersonKeys, material: CaMaterial, points: ca.PublicationPoints,
                 emit, metrics, after_commit: Callable[[Callable[[], None]], None]):
        self.session = session
        self.keys = keys
        self.material = material
        self.points = points
        self.emit = emit
        self.metrics = metrics
        self.after_commit = after_commit

    def issue(self, person_id: str, name: str, subject_serial: str, level: AssuranceLevel, proof_id: str | None,
              validity: _dt.timedelta) -> Certificate:
        """A new certificate stating ``level``, with a new key; the active one, if any, is revoked
        as superseded. Not committed: a caller whose commit fails calls
        ``keys.discard_unrecorded()`` (the key made here is no one's)."""
        current = active_certificate(self.session, person_id)
        serial = ca.random_serial()
        key = self.keys.generate(serial_hex(serial))
        certificate = ca.issue_person_certificate(self.material.issuing, key.public_key, name, subject_serial,
                                                  self.points, now=_dt.datetime.now(_dt.timezone.utc),
                                                  validity=validity, assurance=level, serial=serial)
        if current is not None:
            self.revoke(current, "superseded", "service")
        row = Certificate(
            serial=key.serial, person_id=person_id,
            certificate_pem=ca.certificate_to_pem(certificate).decode(),
            private_key_sealed=key.sealed, key_id=key.kek_id, key_ref=key.key_ref_text, status=ACTIVE,
            assurance_level=level.value, proof_id=proof_id,
            not_before=naive(certificate.not_valid_before_utc),
            not_after=naive(certificate.not_valid_after_utc), issued_at=utcnow(),
        )
        self.session.add(row)
        audit.record(self.session, "certificate_issued", "ok", person_id=person_id, serial=key.serial,
                     replaces=current.serial if current else None, level=level.value, proof_id=proof_id,
                     **key.audit_refs())
        self.emit(events.CERTIFICATE_ISSUED, events.CertificateIssued(person_id=person_id, serial=key.serial))
        self.metrics.inc("certificates_issued", "Person certificates issued", level=level.value)
        return row

    def revoke(self, row: Certificate, reason: str, actor: str) -> None:
        row.status = REVOKED
        row.revoked_at = utcnow()
        row.revocation_reason = reason
        audit.record(self.session, "certificate_revoked", reason, person_id=row.person_id, actor=actor,
                     serial=row.serial)
        self.keys.destroy_after_commit(row, self.after_commit)
        self.emit(events.CERTIFICATE_REVOKED,
                  events.CertificateRevoked(serial=row.serial, person_id=row.person_id, reason=reason))
        self.metrics.inc("certificates_revoked", "Person certificates revoked", reason=reason)

    def revoke_all(self, person_id: str, reason: str, actor: str) -> list[str]:
        rows = self.session.execute(select(Certificate).where(Certificate.person_id == person_id,
                                                              Certificate.status == ACTIVE)).scalars().all()
        for row in rows:
            self.revoke(row, reason, actor)
        return [row.serial for row in rows]

    def answer(self, row: Certificate) -> dict:
        """The public part: serial, PEM, chain and the level it states."""
        return {"serial": row.serial, "certificate_pem": row.certificate_pem,
                "chain_pem": [ca.certificate_to_pem(self.material.issuing.certificate).decode()],
                "assurance_level": row.assurance_level}
