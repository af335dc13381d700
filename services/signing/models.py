"""Database tables of this service (SQLAlchemy 2 declarative). One metadata
per service; its Alembic migrations live in ``migrations/`` beside this file."""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# --- evidence log (services/signing/evidence_log.py): an RFC 9162 Merkle tree ---


class LogHead(Base):
    """One row per log. Appenders lock it (SELECT ... FOR UPDATE) so leaves get
    consecutive indices even with many replicas appending at once."""

    __tablename__ = "log_head"

    log_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class LogLeaf(Base):
    """A leaf: the canonical JSON record exactly as hashed (RFC 9162 leaf input)."""

    __tablename__ = "log_leaves"
    __table_args__ = (Index("ix_log_leaves_flow", "flow_id", "leaf_index"),)

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    flow_id: Mapped[str] = mapped_column(String(64), nullable=False)
    leaf_data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class LogNode(Base):
    """Hash of the perfect subtree of 2**level leaves starting at leaf index * 2**level
    (level 0 repeats the leaf hashes, so proofs read one table)."""

    __tablename__ = "log_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    node_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP signed note), one per tree size it was made at."""

    __tablename__ = "log_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RevokedCertificate(Base):
    """A certificate identity announced as revoked (``certificate_revoked``)."""

    __tablename__ = "revoked_certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime)


EVIDENCE_LOG_TABLES = (LogHead.__table__, LogLeaf.__table__, LogNode.__table__, LogCheckpoint.__table__)
