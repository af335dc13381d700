"""Person certificates and their keys: issue, seal, look up status.

A person's ECDSA P-256 key is generated here, inside the identity service,
and leaves memory only sealed (AES-256-GCM envelope under the active KEK,
:func:`services.identity.ca.seal_private_key`), bound by associated data to
the certificate serial; the KEK's id is stored beside it so the KEK can be
rotated. No RPC returns it.

Serials travel as lower-case hex strings (RFC 5280 serials are up to 20
octets; JSON numbers are not that wide).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.clock import naive, utcnow
from services.common.errors import InvalidInput
from services.common.metrics import Series
from services.common.sealing import Keyring, associated_data, from_text, to_text
from services.identity import audit, ca
from services.identity.ca_store import CaMaterial
from services.identity.models import Certificate, CrlNumber

ACTIVE = "active"
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


def key_aad(serial: str) -> bytes:
    return associated_data("person_key", serial)


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str
    certificate: x509.Certificate
    private_key_sealed: str
    key_id: str


def issue(material: CaMaterial, points: ca.PublicationPoints, keyring: Keyring, name: str,
          subject_serial: str, validity: _dt.timedelta, now: _dt.datetime,
          assurance: AssuranceLevel) -> IssuedCertificate:
    """Generate the person's key, certify it with the issuing CA (stating the
    person's assurance level as its policy), seal the key."""
    key = ca.generate_key()
    cert = ca.issue_person_certificate(material.issuing, key.public_key(), name, subject_serial, points,
                                       now=now, validity=validity, assurance=assurance)
    serial = serial_hex(cert.serial_number)
    sealed = ca.seal_private_key(keyring, key, key_aad(serial))
    return IssuedCertificate(serial, cert, to_text(sealed), keyring.active_key_id)


def private_key(keyring: Keyring, row: Certificate) -> ec.EllipticCurvePrivateKey:
    return ca.unseal_private_key(keyring, from_text(row.private_key_sealed), key_aad(row.serial))


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
    ``certificate_revoked``) in the same commit."""

    def __init__(self, session: Session, keyring: Keyring, material: CaMaterial, points: ca.PublicationPoints,
                 emit, metrics):
        self.session = session
        self.keyring = keyring
        self.material = material
        self.points = points
        self.emit = emit
        self.metrics = metrics

    def issue(self, person_id: str, name: str, subject_serial: str, level: AssuranceLevel, proof_id: str | None,
              validity: _dt.timedelta) -> Certificate:
        """A new certificate stating ``level``; the active one, if any, is revoked as superseded."""
        current = active_certificate(self.session, person_id)
        issued = issue(self.material, self.points, self.keyring, name, subject_serial, validity,
                       _dt.datetime.now(_dt.timezone.utc), level)
        if current is not None:
            self.revoke(current, "superseded", "service")
        row = Certificate(
            serial=issued.serial, person_id=person_id,
            certificate_pem=ca.certificate_to_pem(issued.certificate).decode(),
            private_key_sealed=issued.private_key_sealed, key_id=issued.key_id, status=ACTIVE,
            assurance_level=level.value, proof_id=proof_id,
            not_before=naive(issued.certificate.not_valid_before_utc),
            not_after=naive(issued.certificate.not_valid_after_utc), issued_at=utcnow(),
        )
        self.session.add(row)
        audit.record(self.session, "certificate_issued", "ok", person_id=person_id, serial=issued.serial,
                     key_id=issued.key_id, replaces=current.serial if current else None, level=level.value,
                     proof_id=proof_id)
        self.emit(events.CERTIFICATE_ISSUED, events.CertificateIssued(person_id=person_id, serial=issued.serial))
        self.metrics.inc("certificates_issued", "Person certificates issued", level=level.value)
        return row

    def revoke(self, row: Certificate, reason: str, actor: str) -> None:
        row.status = REVOKED
        row.revoked_at = utcnow()
        row.revocation_reason = reason
        audit.record(self.session, "certificate_revoked", reason, person_id=row.person_id, actor=actor,
                     serial=row.serial)
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
