"""Database tables of the documents service (SQLAlchemy 2 declarative). One
metadata per service; its Alembic migrations live in ``migrations/``."""
from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.object_intents import ObjectReference, ObjectReferences


class Base(DeclarativeBase):
    pass


class TemplateRecord(Base):
    """One template version as loaded from its YAML file: the definition (JSON)
    and its SHA-256, so a document names exactly what it was made from. A file
    whose content changes under the same version is refused at start."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(DateTime)


class Document(Base):
    """A document made from a template. Its field values are personal data
    and are stored sealed; once a signing flow starts it is locked."""

    __tablename__ = "documents"
    # 我的文件: a person's documents newest first (documents_0005)
    __table_args__ = (Index("ix_documents_owner_updated", "owner_person_id", "updated_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    template_id: Mapped[str] = mapped_column(String(64))
    template_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    content_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    pdf_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    locked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    locked_by_flow: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # added by documents_0002
    template_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    initiator_role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    owner_person_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    document_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    pdf_pages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # added by documents_0003: person fields (JSON list) whose ID number and phone the
    # PDF shows masked (the inviter of a receipt opened from a QR invite)
    masked_persons: Mapped[str | None] = mapped_column(Text, nullable=True)


class Attachment(Base):
    """An image attached to a document, listed by the SHA-256 of the stored
    (sanitised) bytes; the image and its thumbnail are in the documents bucket
    before this row exists."""

    __tablename__ = "attachments"
    __table_args__ = (UniqueConstraint("document_id", "sha256", name="uq_attachment_document_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(String(36), ForeignKey("documents.id"), index=True)
    field: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    mime: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(200))
    thumbnail_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)


#: every column naming objects of the documents bucket, for the object reconciler
#: (services/common/object_intents.py); the bucket keeps one object per key and locks none
STORED_OBJECTS = ObjectReferences((ObjectReference(Document.pdf_key), ObjectReference(Attachment.object_key),
                                   ObjectReference(Attachment.thumbnail_key)))
