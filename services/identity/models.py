"""Database tables of the identity service (SQLAlchemy 2 declarative). One
metadata per service; its Alembic migrations live in ``migrations/``."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OtpChallenge(Base):
    """A one-time code sent to a phone (phone confirmation or willingness).
    The phone is sealed (envelope encryption) and found by its blind index;
    the code is kept only as a keyed hash, plus a sealed copy until the SMS
    vendor has it."""

    __tablename__ = "otp_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32))
    phone_index: Mapped[str] = mapped_column(String(64), index=True)
    phone_sealed: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(128))
    code_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    wrong_attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Person(Base):
    """A real-name registered person. Name, ID number and phone are sealed
    (envelope encryption, bound to the person id); the ID number and the
    phone are found by blind index, each unique. ``phone_challenge_id`` is the
    confirmed phone code the registration used (unique: one use)."""

    __tablename__ = "persons"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name_sealed: Mapped[str] = mapped_column(Text)
    name_masked: Mapped[str] = mapped_column(String(64))
    id_number_index: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    id_number_sealed: Mapped[str] = mapped_column(Text)
    id_masked: Mapped[str] = mapped_column(String(32))
    phone_index: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    phone_sealed: Mapped[str] = mapped_column(Text)
    phone_masked: Mapped[str] = mapped_column(String(16))
    phone_challenge_id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    #: encoding of the ID-card portrait's face (sealed); None until matched or after deletion
    face_encoding_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    face_verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    liveness_passed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class Certificate(Base):
    """A person certificate and its private key, sealed under the KEK named
    by ``key_id`` (AES-GCM envelope; the associated data binds it to the serial)."""

    __tablename__ = "certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # lower-case hex
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    not_before: Mapped[datetime] = mapped_column(DateTime)
    not_after: Mapped[datetime] = mapped_column(DateTime)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class CrlNumber(Base):
    """One row per CRL issued: the id is its CRLNumber (RFC 5280 §5.2.3,
    increasing across replicas because the database hands it out)."""

    __tablename__ = "crl_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime)


class LivenessChallenge(Base):
    """A head-turn challenge issued to a person; single use, expiring."""

    __tablename__ = "liveness_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    actions: Mapped[str] = mapped_column(String(64))  # comma-separated, in order
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)


class WillingnessCheck(Base):
    """意愿认证 for one document digest by SMS code or face; on success it
    yields one signing grant."""

    __tablename__ = "willingness_checks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    certificate_serial: Mapped[str] = mapped_column(String(64))
    document_digest: Mapped[str] = mapped_column(String(64))
    document_title: Mapped[str | None] = mapped_column(String(64), nullable=True)
    method: Mapped[str] = mapped_column(String(8))
    otp_challenge_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | confirmed | failed
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class SigningGrantRow(Base):
    """A single-use signing grant (grants.SigningGrant); only the token's
    SHA-256 is stored. ``used_at`` is set by the claim that signs."""

    __tablename__ = "signing_grants"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    willingness_id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    certificate_serial: Mapped[str] = mapped_column(String(64))
    document_digest: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class AuditRecord(Base):
    """Append-only audit trail (who, what, when, method, score, outcome, refs)
    that the signing report cites. ``refs`` is JSON of ids and masked values
    only. On PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    actor: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(String(64))
    refs: Mapped[str] = mapped_column(Text)
