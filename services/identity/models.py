"""Database tables of the identity service (SQLAlchemy 2 declarative). One
metadata per service; its Alembic migrations live in ``migrations/``."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: account states: ``pending_takeover`` holds an ID number another, weaker account has;
#: it becomes ``active`` (and that account ``frozen``) when an authority face proof wins
ACTIVE, PENDING_TAKEOVER, FROZEN = "active", "pending_takeover", "frozen"
_ACTIVE_ONLY = text("status = 'active'")


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
    phone are found by blind index, each unique among *active* accounts (a
    frozen account keeps its records). ``phone_challenge_id`` is the confirmed
    phone code the registration used (unique: one use).

    ``assurance_level`` (services.common.assurance) and the ``proofing_*``
    columns say who vouched for the person, from the newest proof that raised
    it. ``face_failures*`` count failed face willingness checks per person."""

    __tablename__ = "persons"
    __table_args__ = (
        Index("uq_persons_active_id_number", "id_number_index", unique=True,
              sqlite_where=_ACTIVE_ONLY, postgresql_where=_ACTIVE_ONLY),
        Index("uq_persons_active_phone", "phone_index", unique=True,
              sqlite_where=_ACTIVE_ONLY, postgresql_where=_ACTIVE_ONLY),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default=ACTIVE)
    name_sealed: Mapped[str] = mapped_column(Text)
    name_masked: Mapped[str] = mapped_column(String(64))
    id_number_index: Mapped[str] = mapped_column(String(64), index=True)
    id_number_sealed: Mapped[str] = mapped_column(Text)
    id_masked: Mapped[str] = mapped_column(String(32))
    phone_index: Mapped[str] = mapped_column(String(64), index=True)
    phone_sealed: Mapped[str] = mapped_column(Text)
    phone_masked: Mapped[str] = mapped_column(String(16))
    phone_challenge_id: Mapped[str] = mapped_column(String(36), unique=True, index=True)
    #: encoding of the proofed face (sealed): the live face an authority matched; None until then
    face_encoding_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    face_verified_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    liveness_passed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    assurance_level: Mapped[str] = mapped_column(String(32), default="self_declared")
    proofing_provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    proofing_request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    proofed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    frozen_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    frozen_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    face_failures: Mapped[int] = mapped_column(Integer, default=0)
    face_failures_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    face_locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class IdentityProof(Base):
    """One comparison of a person's face with the authority's photo (or, for
    ``self_declared``, with a portrait they uploaded): who answered, their
    request id, the score, the level a match proves. A matched proof unlocks
    one step-up (certificate, phone change) within STEP_UP.WINDOW_SECONDS:
    ``consumed_for`` says which."""

    __tablename__ = "identity_proofs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    level: Mapped[str] = mapped_column(String(32))
    matched: Mapped[bool] = mapped_column(Boolean)
    live: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    liveness_challenge_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    consumed_for: Mapped[str | None] = mapped_column(String(32), nullable=True)


class SessionRow(Base):
    """A web or API session: an opaque random token, of which only the SHA-256
    is stored. Ends when revoked (logout, revoke-all, account frozen), idle
    for SESSIONS.IDLE_SECONDS, or at ``expires_at`` (SESSIONS.ABSOLUTE_SECONDS)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    user_agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_used_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Certificate(Base):
    """A person certificate and where its private key is (services/identity/person_keys.py):
    on a PKCS#11 token, named by ``key_ref`` (a KeyRef's JSON: no key material), or sealed
    in ``private_key_sealed`` under the KEK named by ``key_id`` (AES-GCM envelope; the
    associated data binds it to the serial). A revoked certificate's key is destroyed:
    its ``key_ref`` stays to say which key it was, its sealed copy is gone once migrated."""

    __tablename__ = "certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)  # lower-case hex
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    private_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the KEK of private_key_sealed
    key_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    #: the level the certificate's policy states, and the proof that unlocked its issue
    assurance_level: Mapped[str] = mapped_column(String(32), default="self_declared")
    proof_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
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
    #: the CRL itself, served until a revocation or its next_update draws near
    der: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    next_update: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    #: how many revoked certificates it lists: another revocation makes it stale
    revoked_count: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LivenessChallenge(Base):
    """A head-turn challenge issued to a person for proofing or for one face
    willingness check (``willingness_id``); single use, expiring."""

    __tablename__ = "liveness_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(String(36), index=True)
    purpose: Mapped[str] = mapped_column(String(16), default="proofing")  # proofing | willingness
    willingness_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
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
    liveness_challenge_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
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
