"""Where flows live: the flow, its parties, its pending actions and the PDFs
it produced, in the signing database and S3, and the one way a flow changes.

:meth:`FlowStore.apply` is that way: it writes the state a pure transition of
:mod:`services.signing.flow` produced and emits the transition's events into
the same transaction (the outbox), so a state change and its events never
part ways. A PDF goes to S3 *before* any row refers to it
(:meth:`FlowStore.store_pdf`), so a failure midway leaves no row pointing at
nothing, and through an intent (:mod:`services.common.object_intents`), so it
leaves no object behind either: the object is put without Object Lock, the
transaction that adds its row also settles the intent, and the version is
locked (COMPLIANCE) only once that row is committed. An object stored for a
transaction that then fails is deleted by the reconciler after a grace period;
a committed one left unlocked by a crash is locked by it.

The service's workers get a :class:`FlowStore` from :class:`FlowStoreProvider`,
bound to the worker's unit of work.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Callable

from nameko.extensions import DependencyProvider
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.clock import aware, naive, now, utcnow
from services.common.database import DatabaseProvider
from services.common.errors import Conflict, Forbidden, NotFound
from services.common.metrics import BusinessMetrics, Series
from services.common.object_intents import IntentStore
from services.common.outbox import UnitOfWork
from services.common.reasons import Reason
from services.common.storage import ContentCache, Storage
from services.signing import flow as F
from services.signing import my_files
from services.signing.dependencies import SigningContext
from services.signing.evidence import FLOW_EVENTS, LOGGED_WITH_CHANGE, leaf_of
from services.signing.evidence_log import EvidenceLog
from services.signing.models import FlowParty, FlowRow, PendingAction, StoredObjectRow
from services.signing.settings import SigningSettings

#: the member an event names its actor by, besides ``actor_person_id``
ACTOR_MEMBERS = {events.VOID_REQUESTED: "requester_person_id", events.FLOW_DECLINED: "decliner_person_id"}


def to_domain(row: FlowRow, parties: list[FlowParty]) -> F.Flow:
    """The pure flow a stored flow is."""
    return F.Flow(
        id=row.id, document_id=row.document_id, document_sha256=row.document_sha256,
        parties=tuple(F.Party(p.person_id, p.role, p.signature_field, aware(p.signed_at))
                      for p in sorted(parties, key=lambda p: p.position)),
        expires_at=aware(row.expires_at), state=F.FlowState(row.state), current=row.current_index,
        reason=row.reason, void_requested_by=row.void_requested_by,
        void_confirmed_by=tuple(json.loads(row.void_confirmed_by or "[]")), ended_at=aware(row.ended_at),
        required_assurance=AssuranceLevel(row.required_assurance), disputed_person_id=row.disputed_person_id,
        disputed_at=aware(row.disputed_at), dispute_reason=row.dispute_reason,
    )


#: every flow event counted from the start (0 until it first happens)
FLOW_EVENT_SERIES = Series("flow_events", "Signing flow events", {"event": F.TRANSITION_EVENTS})


def flow_status(row: FlowRow) -> str:
    """What ``get_flow`` calls the flow: its state, or ``disputed_identity``
    for an ended flow marked by a dispute (a cancelled one says cancelled)."""
    if row.disputed_at is not None and row.state != F.FlowState.CANCELLED.value:
        return "disputed_identity"
    return row.state


class FlowStore:
    """A worker's flows: ``unit`` gives the worker's unit of work (session,
    emit, commit) when first needed."""

    def __init__(self, unit: Callable[[], UnitOfWork], storage: IntentStore, metrics: BusinessMetrics,
                 public_url: str, pdfs: ContentCache | None = None, log: EvidenceLog | None = None):
        self._unit = unit
        #: the evidence log a flow event's leaf is sequenced in, in the event's own transaction
        #: (None: the log's event handlers sequence it, as they do an event emitted before this)
        self.log = log
        self.storage = storage
        self.metrics = metrics
        self.public_url = public_url
        #: the PDFs this process stored or read, by hash: the next step of a flow reads its PDF from here
        self.pdfs = pdfs if pdfs is not None else ContentCache(0)

    @property
    def db(self) -> UnitOfWork:
        return self._unit()

    # -- reading ---------------------------------------------------------------------
    def load(self, flow_id: str, lock: bool = False) -> tuple[FlowRow, list[FlowParty]]:
        query = select(FlowRow).where(FlowRow.id == flow_id)
        if lock:
            query = query.with_for_update()
        row = self.db.session.execute(query).scalar_one_or_none()
        if row is None:
            raise NotFound("flow", flow_id)
        parties = self.db.session.execute(
            select(FlowParty).where(FlowParty.flow_id == flow_id).order_by(FlowParty.position)).scalars().all()
        return row, list(parties)

    def live_flow_of(self, document_id: str) -> str | None:
        return self.db.session.execute(
            select(FlowRow.id).where(FlowRow.document_id == document_id,
                                     FlowRow.state.notin_([s.value for s in F.FINAL_STATES]))).scalars().first()

    def ended_flows_of(self, document_id: str) -> list[str]:
        return list(self.db.session.execute(
            select(FlowRow.id).where(FlowRow.document_id == document_id,
                                     FlowRow.state.in_([s.value for s in F.FINAL_STATES]))).scalars())

    def count_by_state(self) -> dict[str, int]:
        """How many flows are in each state (every state named, 0 when none is)."""
        counted = dict(self.db.session.execute(
            select(FlowRow.state, func.count()).group_by(FlowRow.state)).all())
        return {state.value: int(counted.get(state.value, 0)) for state in F.FlowState}

    def overdue(self, moment, limit: int = 100) -> list[str]:
        """Unfinished flows whose expiry has passed (a batch)."""
        return list(self.db.session.execute(
            select(FlowRow.id).where(FlowRow.state.in_((F.FlowState.DRAFT.value, F.FlowState.WAITING.value)),
                                     FlowRow.expires_at <= naive(moment)).limit(limit)).scalars())

    def flows_of_person(self, person_id: str) -> list[str]:
        return sorted(self.db.session.execute(
            select(FlowParty.flow_id).where(FlowParty.person_id == person_id).distinct()).scalars())

    def objects(self, flow_id: str) -> list[StoredObjectRow]:
        return list(self.db.session.execute(
            select(StoredObjectRow).where(StoredObjectRow.flow_id == flow_id).order_by(StoredObjectRow.id)
        ).scalars())

    def document_version(self, sha256: str) -> StoredObjectRow | None:
        """The PDF a flow produced with this hash (original, signed or final), if any."""
        return self.db.session.execute(
            select(StoredObjectRow).where(StoredObjectRow.sha256 == sha256,
                                          StoredObjectRow.kind.in_(("original", "signed", "final")))
            .order_by(StoredObjectRow.id.desc())).scalars().first()

    def current_pdf(self, row: FlowRow) -> bytes:
        """The flow's newest PDF: as this process stored or last read it (its hash is the row's),
        else from S3, checked against the row's hash."""
        cached = self.pdfs.get(row.current_pdf_sha256)
        if cached is not None:
            return cached
        obj = self.db.session.execute(
            select(StoredObjectRow).where(StoredObjectRow.flow_id == row.id,
                                          StoredObjectRow.sha256 == row.current_pdf_sha256)
            .order_by(StoredObjectRow.id.desc())).scalars().first()
        data = self.read_object(obj)
        self.pdfs.add(data)
        return data

    def flow_dict(self, row: FlowRow, parties: list[FlowParty]) -> dict:
        return {
            "flow_id": row.id, "document_id": row.document_id, "title": row.title, "state": row.state,
            "status": flow_status(row), "required_assurance": row.required_assurance,
            "disputed_identity": None if row.disputed_at is None else {
                "person_id": row.disputed_person_id, "at": aware(row.disputed_at).isoformat(),
                "reason": row.dispute_reason},
            "document_sha256": row.document_sha256, "current_pdf_sha256": row.current_pdf_sha256,
            "expires_at": aware(row.expires_at).isoformat(), "reason": row.reason,
            "void_requested_by": row.void_requested_by, "repayment_date": row.repayment_date,
            "loan_state": row.loan_state, "parent_flow_id": row.parent_flow_id, "statement": row.statement,
            "next_person_id": row.state == "waiting" and parties[row.current_index].person_id or None,
            "next_role": parties[row.current_index].role if row.state == "waiting" else None,
            "parties": [{"person_id": p.person_id, "role": p.role, "signature_field": p.signature_field,
                         "signed_at": aware(p.signed_at).isoformat() if p.signed_at else None,
                         "certificate_serial": p.certificate_serial,
                         "willingness_method": p.willingness_method,
                         "assurance_level": p.assurance_level} for p in parties],
            "objects": [{"kind": o.kind, "sha256": o.sha256, "version_id": o.version_id, "size": o.size}
                        for o in self.objects(row.id)],
        }

    # -- writing -----------------------------------------------------------------------
    def record(self, flow: F.Flow, title: str, repayment_date: str | None, initiator_person_id: str,
               pdf: bytes, template_id: str | None = None,
               summary_sealed: str | None = None) -> tuple[FlowRow, list[FlowParty]]:
        """Store the flow's PDF, then the flow, its parties and its first events (not committed);
        ``template_id`` and ``summary_sealed`` are what 我的文件 shows of it (:mod:`.my_files`)."""
        # before any row refers to it
        stored = self.storage.put(pdf, owner_id=flow.id, prefix="flows/", content_type="application/pdf")
        self.pdfs.add(pdf)
        row = FlowRow(id=flow.id, document_id=flow.document_id, document_sha256=flow.document_sha256, title=title,
                      state=flow.state.value, current_index=0, initiator_person_id=initiator_person_id,
                      expires_at=naive(flow.expires_at), repayment_date=repayment_date, void_confirmed_by="[]",
                      required_assurance=flow.required_assurance.value,
                      current_pdf_key=stored.key, current_pdf_sha256=flow.document_sha256,
                      template_id=template_id, summary_sealed=summary_sealed,
                      created_at=utcnow(), updated_at=utcnow())
        party_rows = [FlowParty(flow_id=flow.id, position=i, person_id=p.person_id, role=p.role,
                                signature_field=p.signature_field) for i, p in enumerate(flow.parties)]
        session = self.db.session
        session.add(row)
        try:
            session.flush()  # the flow row first: parties and objects refer to it
        except DbIntegrityError:  # a concurrent start on the same document won
            self.db.rollback()
            raise Conflict(Reason.DOCUMENT_IN_FLOW) from None
        session.add_all(party_rows)
        session.add(StoredObjectRow(flow_id=flow.id, kind="original", key=stored.key, sha256=stored.sha256,
                                    version_id=stored.version_id, size=stored.size, created_at=utcnow()))
        session.flush()
        self.apply(row, party_rows, F.send(flow, now()), initiator_person_id)
        return row, party_rows

    def store_pdf(self, flow_id: str, kind: str, data: bytes) -> StoredObjectRow:
        """Put the PDF in S3 first; the row that references it is added to the
        current transaction only after the object is safely stored (and its
        intent is settled when that transaction commits)."""
        stored = self.storage.put(data, owner_id=flow_id, prefix="flows/", content_type="application/pdf")
        self.pdfs.add(data)  # the next signer's step starts from it
        row = StoredObjectRow(flow_id=flow_id, kind=kind, key=stored.key, sha256=stored.sha256,
                              version_id=stored.version_id, size=stored.size, created_at=utcnow())
        self.db.session.add(row)
        return row

    def store_object(self, flow_id: str, kind: str, data: bytes, content_type: str,
                     state_key: str | None = None) -> StoredObjectRow:
        """A report or other file of the flow, stored like a PDF; ``state_key`` says
        which state of the flow it was made for (:meth:`state_key`)."""
        stored = self.storage.put(data, owner_id=flow_id, prefix="reports/", content_type=content_type)
        row = StoredObjectRow(flow_id=flow_id, kind=kind, key=stored.key, sha256=stored.sha256,
                              version_id=stored.version_id, size=stored.size, created_at=utcnow(),
                              state_key=state_key)
        self.db.session.add(row)
        return row

    @staticmethod
    def state_key(row: FlowRow) -> str:
        """Names one state of a flow: every transition and a dispute change it."""
        return f"{row.state}@{row.updated_at.isoformat()}" + (f"/disputed@{row.disputed_at.isoformat()}"
                                                             if row.disputed_at else "")

    def exists(self, flow_id: str) -> bool:
        return self.db.session.get(FlowRow, flow_id) is not None

    def kept_objects(self, flow_id: str, kinds: tuple[str, ...], state_key: str) -> dict | None:
        """The newest stored object of each kind made for this state of the flow, or
        None unless every kind has one."""
        found = {}
        for kind in kinds:
            found[kind] = self.db.session.execute(
                select(StoredObjectRow).where(StoredObjectRow.flow_id == flow_id, StoredObjectRow.kind == kind,
                                              StoredObjectRow.state_key == state_key)
                .order_by(StoredObjectRow.id.desc()).limit(1)).scalars().first()
            if found[kind] is None:
                return None
        return found

    def read_object(self, obj: StoredObjectRow) -> bytes:
        return self.storage.get(obj.key, sha256=obj.sha256, version_id=obj.version_id)

    def apply(self, row: FlowRow, parties: list[FlowParty], transition: F.Transition, actor: str | None,
              **members) -> None:
        """Write the new flow state, its parties' index rows (我的文件) and its
        events into the current transaction; ``members``: those of the
        transition's events beyond what every flow event says (:meth:`event_payload`)."""
        flow = transition.flow
        row.state = flow.state.value
        row.current_index = flow.current
        row.reason = flow.reason
        row.void_requested_by = flow.void_requested_by
        row.void_confirmed_by = json.dumps(list(flow.void_confirmed_by))
        row.ended_at = naive(flow.ended_at)
        row.disputed_person_id = flow.disputed_person_id
        row.disputed_at = naive(flow.disputed_at)
        row.dispute_reason = flow.dispute_reason
        row.updated_at = utcnow()
        for party_row, party in zip(parties, flow.parties, strict=True):
            party_row.signed_at = naive(party.signed_at)
        my_files.write_index(self.db.session, row, parties)
        for event_type in transition.events:
            named = {ACTOR_MEMBERS[event_type]: actor} if event_type in ACTOR_MEMBERS else {}
            payload = self.event_payload(event_type, row, parties, flow, actor, **members, **named)
            if self.log is not None and event_type in FLOW_EVENTS:
                # its leaf queued with the change: in the flow's order, and only if this commits
                event = self.db.emit_event(event_type, payload, **{LOGGED_WITH_CHANGE: True})
                self.log.sequence_in(self.db.session, leaf_of(event))
            else:
                self.db.emit(event_type, payload)
            self.metrics.inc("flow_events", "Signing flow events", event=event_type)

    def event_payload(self, event_type: str, row: FlowRow, parties: list[FlowParty], flow: F.Flow,
                      actor: str | None, **members) -> events.FlowEvent:
        """The payload of a flow event: what every flow event says about the flow, with the
        link to it, and ``members``, which the event's type must declare
        (:data:`services.common.events.PAYLOADS`)."""
        current = flow.current_party
        return events.PAYLOADS[event_type](
            flow_id=row.id, document_id=row.document_id, document_title=row.title,
            document_sha256=row.document_sha256,
            parties=tuple(events.Party(person_id=p.person_id, role=p.role) for p in parties),
            initiator_person_id=row.initiator_person_id,
            next_person_id=current.person_id if current else None, next_role=current.role if current else None,
            actor_person_id=actor, repayment_date=row.repayment_date, reason=flow.reason, state=flow.state.value,
            link=f"{self.public_url}/flows/{row.id}", **members)

    # -- pending actions (a signature or a void consent between its two steps) -----------
    def add_pending(self, pending: PendingAction) -> None:
        self.db.session.add(pending)

    def claim_pending(self, pending_id: str, person_id: str, actions: tuple[str, ...]) -> PendingAction:
        """The person's unused, unexpired pending action of one of ``actions``."""
        pending = self.db.session.get(PendingAction, pending_id) if isinstance(pending_id, str) else None
        if pending is None or pending.action not in actions:
            raise NotFound("pending_action", pending_id if isinstance(pending_id, str) else "")
        if pending.person_id != person_id:
            raise Forbidden(Reason.NOT_YOUR_ACTION)
        if pending.used_at is not None:
            raise Conflict(Reason.PENDING_ACTION_USED)
        if aware(pending.expires_at) <= now():
            raise Conflict(Reason.PENDING_ACTION_EXPIRED)
        return pending

    def forget_prepared(self, moment: datetime, keep_unused: timedelta = timedelta(days=1)) -> tuple[int, int]:
        """Prepared PDFs are kept only while they can still be signed: cleared once the
        action was used (the report keeps what it needs of a used action) or expired,
        and unused actions deleted a day after they expired. Not committed.
        Returns (prepared PDFs cleared, actions deleted)."""
        at = naive(moment)
        cleared = self.db.session.execute(
            update(PendingAction).where(PendingAction.prepared.is_not(None),
                                        (PendingAction.used_at.is_not(None)) | (PendingAction.expires_at <= at))
            .values(prepared=None)).rowcount
        deleted = self.db.session.execute(
            delete(PendingAction).where(PendingAction.used_at.is_(None),
                                        PendingAction.expires_at <= at - keep_unused)).rowcount
        return cleared, deleted

    def used_actions(self, flow_id: str) -> list[PendingAction]:
        return list(self.db.session.execute(
            select(PendingAction).where(PendingAction.flow_id == flow_id, PendingAction.used_at.is_not(None))
            .order_by(PendingAction.used_at)).scalars())


class FlowStoreProvider(DependencyProvider):
    """Hands each worker a :class:`FlowStore` on the worker's own unit of work."""

    def setup(self) -> None:
        dependencies = self.container.dependencies
        self.database = next(d for d in dependencies if isinstance(d, DatabaseProvider))
        self.storage = next(d for d in dependencies if isinstance(d, Storage))
        settings = SigningSettings.from_config(self.container.config)
        self.public_url = settings.public_url
        self.pdfs = ContentCache(settings.pdf_cache_bytes)
        self.context = next((d for d in dependencies if isinstance(d, SigningContext)), None)

    def get_dependency(self, worker_ctx) -> FlowStore:
        return FlowStore(lambda: self.database.units[worker_ctx], self.storage.for_worker(worker_ctx),
                         BusinessMetrics(self.container.service_name), self.public_url, self.pdfs,
                         self.context.evidence_log() if self.context is not None else None)
