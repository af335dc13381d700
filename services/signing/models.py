"""Database tables of this service (SQLAlchemy 2 declarative). One metadata
per service; its Alembic migrations live in ``migrations/`` beside this file."""
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, LargeBinary, SmallInteger, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.object_intents import LockRecord, ObjectReference, ObjectReferences


class Base(DeclarativeBase):
    pass


# --- evidence log (services/signing/evidence_log.py): an RFC 9162 Merkle tree ---


class LogHead(Base):
    """One row per log. Whoever adds leaves (the integrator, a synchronous
    append) locks it (SELECT ... FOR UPDATE) so leaves get consecutive indices
    even with many replicas at once."""

    __tablename__ = "log_head"

    log_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class LogSequenced(Base):
    """A record appended but not yet in the tree: sequencing is one short
    INSERT that takes no lock on the head, and the integrator moves rows from
    here into ``log_leaves`` in batches, in ``seq`` order, under the head lock.

    ``record`` is the caller's record as canonical JSON without the log's own
    fields (``prev_index`` is only known at integration). ``event_id`` is unique
    so a redelivered flow event is sequenced once."""

    __tablename__ = "log_sequenced"
    __table_args__ = (Index("ux_log_sequenced_event", "event_id", unique=True),)

    # INTEGER on SQLite, where only that type of primary key autoincrements
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    flow_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    record: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class LogLeaf(Base):
    """A leaf: the canonical JSON record exactly as hashed (RFC 9162 leaf input).
    ``event_id`` repeats the record's, when it has one, so integration can
    refuse a second leaf for one flow event."""

    __tablename__ = "log_leaves"
    __table_args__ = (Index("ix_log_leaves_flow", "flow_id", "leaf_index"),
                      Index("ix_log_leaves_event", "event_id"))

    leaf_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    flow_id: Mapped[str] = mapped_column(String(64), nullable=False)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
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


class LogCosignature(Base):
    """A witness's cosignature (c2sp.org/tlog-cosignature, cosignature/v1) on the
    checkpoint of one tree size, as the signature line it returned, verified
    against the witness's configured key before it was kept."""

    __tablename__ = "log_cosignatures"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(200), primary_key=True)
    line: Mapped[str] = mapped_column(Text, nullable=False)
    cosigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class LogWitnessHead(Base):
    """What the log knows of each witness: the size it last cosigned (the old
    size of the next add-checkpoint), and how the last request went."""

    __tablename__ = "log_witness_heads"

    witness: Mapped[str] = mapped_column(String(200), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cosigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RevokedCertificate(Base):
    """A certificate identity announced as revoked (``certificate_revoked``)."""

    __tablename__ = "revoked_certificates"

    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_at: Mapped[datetime] = mapped_column(DateTime)


EVIDENCE_LOG_TABLES = (LogHead.__table__, LogSequenced.__table__, LogLeaf.__table__, LogNode.__table__,
                       LogCheckpoint.__table__)


# --- signing flows ---------------------------------------------------------


LIVE_FLOW = "state NOT IN ('declined', 'expired', 'voided', 'cancelled')"


class FlowRow(Base):
    """A signing flow (services/signing/flow.py is its state machine). The
    PDF it is about, and each signed version, are objects in the signing
    bucket; ``current_*`` names the newest one."""

    __tablename__ = "flows"
    # one live (not declined, expired, voided or cancelled) flow per document, even for concurrent starts
    __table_args__ = (Index("uq_flows_live_document", "document_id", unique=True,
                            postgresql_where=text(LIVE_FLOW), sqlite_where=text(LIVE_FLOW)),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    document_id: Mapped[str] = mapped_column(String(36), index=True)
    document_sha256: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), index=True)
    current_index: Mapped[int] = mapped_column(Integer, default=0)
    initiator_person_id: Mapped[str] = mapped_column(String(36))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    repayment_date: Mapped[str | None] = mapped_column(String(10), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    void_requested_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    void_confirmed_by: Mapped[str] = mapped_column(Text, default="[]")
    current_pdf_key: Mapped[str] = mapped_column(String(200))
    current_pdf_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # the last 催签 (a reminder to the party whose turn it is), at most one a day
    last_reminded_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # an assurance level (services/common/assurance.py); flows from before levels required none
    required_assurance: Mapped[str] = mapped_column(String(32), server_default="self_declared")
    # set once, when identity announced that a party's identity was disputed (identity_disputed)
    disputed_person_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    disputed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    dispute_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # what 我的文件 shows of the flow, as the document said when the flow started (signing_0012; None before)
    template_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the amount, due date and parties' names (services/signing/my_files.py), sealed: personal data
    summary_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    # a signed IOU's life (services/signing/loans.py, signing_0012): a statement about a signed flow (a
    # 还款确认书, a 借款展期协议) is a flow of its own, naming that flow and what it states
    parent_flow_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    statement: Mapped[str | None] = mapped_column(String(16), nullable=True)  # repayment | extension
    #: a completed loan's standing: active, part_repaid or repaid (None: not a loan, or not completed)
    loan_state: Mapped[str | None] = mapped_column(String(16), nullable=True)


class FlowParty(Base):
    __tablename__ = "flow_parties"

    flow_id: Mapped[str] = mapped_column(String(36), ForeignKey("flows.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # None until the person the document names for this role registers and joins
    person_id: Mapped[str | None] = mapped_column(String(36), index=True, nullable=True)
    role: Mapped[str] = mapped_column(String(40))
    signature_field: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    certificate_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    willingness_method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # the level the signing certificate stated (none stated: self_declared); None until signed
    assurance_level: Mapped[str | None] = mapped_column(String(32), nullable=True)


class PartyIndexRow(Base):
    """我的文件's index of flows by party: one row for each person bound to a
    flow, with the flow's status as that person sees it (待我签署 or 待对方签署
    …), kept in the transaction of every change of the flow
    (:meth:`services.signing.flow_store.FlowStore.apply`). A person's page is
    one range of ``ix_party_index_person``, newest first."""

    __tablename__ = "party_index"
    __table_args__ = (Index("ix_party_index_person", "person_id", "updated_at", "flow_id"),)

    person_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(36), ForeignKey("flows.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20))
    #: the flow's updated_at: the list's order
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class PendingAction(Base):
    """A signature or void consent waiting for the person's willingness
    check: ``digest`` is what identity will sign once the grant exists."""

    __tablename__ = "pending_actions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(36), ForeignKey("flows.id"), index=True)
    person_id: Mapped[str] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(20))  # sign | request_void | confirm_void
    digest: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    willingness_id: Mapped[str] = mapped_column(String(36))
    reason: Mapped[str | None] = mapped_column(String(400), nullable=True)
    prepared: Mapped[str | None] = mapped_column(Text, nullable=True)  # PreparedSignature JSON for 'sign'
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class StoredObjectRow(Base):
    """Every object a flow stored in S3, with the version id and hash to read it back by."""

    __tablename__ = "stored_objects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flow_id: Mapped[str] = mapped_column(String(36), ForeignKey("flows.id"), index=True)
    # original | signed | final | report_pdf | report_json | evidence_package
    kind: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    #: the state of the flow a report was made for (FlowStore.state_key): served again while it holds
    state_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    #: until when S3 Object Lock (COMPLIANCE) keeps this version; None: not locked yet (just committed,
    #: or the lock after the commit failed and the reconciler has not locked it yet)
    retained_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


#: every column naming objects of the signing bucket (flows.current_pdf_key names one of these rows too),
#: for the object reconciler (services/common/object_intents.py)
STORED_OBJECTS = ObjectReferences(
    (ObjectReference(StoredObjectRow.key, StoredObjectRow.version_id),),
    locks=LockRecord(StoredObjectRow.key, StoredObjectRow.version_id, StoredObjectRow.created_at,
                     StoredObjectRow.retained_until),
)
