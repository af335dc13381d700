"""Database tables of the notify service (SQLAlchemy 2 declarative). One
metadata per service; its Alembic migrations live in ``migrations/``.

Times are naive UTC, as everywhere in the platform."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SmsMessage(Base):
    """One SMS in the delivery log. ``dedupe_key`` (the triggering event and
    template) makes a redelivered event find its earlier message instead of
    sending a second one.

    The recipient is shown masked (``phone_masked``); the number itself, and
    the template values a retry needs, are kept only SEALED
    (``recipient_sealed``, AES-256-GCM under notify's KEK, bound to the message
    id) while the message may still be attempted, and wiped once it is sent,
    failed, rate limited or given up. One-time codes are never stored: a retry
    asks identity for the code again.

    Status: ``queued`` (waiting for an attempt at ``next_attempt_at``),
    ``sending`` (handed to the vendor since ``in_flight_since``; if it stays
    so past its claim, the handover is in doubt and is checked with the
    vendor, see :mod:`services.notify.delivery`), ``sent``, ``failed`` (permanent vendor error, not retried),
    ``rate_limited`` (refused by a per-phone limit, not sent), ``given_up``
    (transient errors used up every attempt), ``outcome_unknown`` (the vendor
    could never say whether it had it; not sent again). ``claimed_until`` marks
    an attempt in progress, so two workers never attempt one message at once.
    ``recovery`` says how a handover in doubt was settled.
    """

    __tablename__ = "sms_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(120), unique=True)
    template_id: Mapped[str] = mapped_column(String(40))
    template_version: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(20))
    phone_masked: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16), index=True)
    vendor_message_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # 0002: retries
    ref_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    ref_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipient_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # 0003: handovers in doubt
    in_flight_since: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    recovery: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Reminder(Base):
    """A scheduled repayment reminder of one flow to one party.

    Status: ``scheduled`` -> ``sent`` (its message is in the delivery log,
    ``message_id``), or ``cancelled`` (flow voided, loan repaid or extended;
    an extension may set it back to ``scheduled``), ``expired`` (the day it
    speaks about ended before it could go) or ``failed`` (identity knows no
    such person). ``params`` holds the template values (JSON: document title,
    due date, days), never a phone number: the number is asked of identity
    when the reminder is due.

    One reminder of a kind per flow, person and day (0004): a flow has several
    ``overdue`` and ``interest_due`` reminders. ``expires_at``, the end of the
    day a reminder speaks about, names that day; ``send_at`` could not, as a
    ``due_today`` planned on the day goes at once, at a different moment each
    time it is planned."""

    __tablename__ = "reminders"
    __table_args__ = (UniqueConstraint("flow_id", "person_id", "kind", "expires_at",
                                       name="uq_reminders_flow_person_kind_day"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(64), index=True)
    person_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    send_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class RateKey(Base):
    """One row per rate-limit key (a keyed hash of a phone, or ``global``):
    the row a check-and-record locks (see :mod:`services.notify.rate_store`)."""

    __tablename__ = "sms_rate_keys"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class RateEvent(Base):
    """One counted send for a rate-limit key, at business time ``at``."""

    __tablename__ = "sms_rate_events"
    __table_args__ = (Index("ix_sms_rate_events_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime)
