"""Database tables of the notify service (SQLAlchemy 2 declarative). One
metadata per service; its Alembic migrations live in ``migrations/``."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class SmsMessage(Base):
    """One SMS in the delivery log. ``dedupe_key`` (the triggering event and
    template) makes a redelivered event find its earlier message instead of
    sending a second one. The recipient is stored masked only."""

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
