"""The signing service: signing flows, PAdES signatures with remote keys,
time stamps, signed files in S3 and the evidence log.

A party signs in two steps, because the person's key stays in identity and
is used only with a fresh willingness grant for one exact digest:

1. ``prepare_signature`` checks it is the person's turn, prepares the PDF
   (pyHanko, in a worker process) and asks identity to start a willingness
   check (SMS code or face) for the digest identity will sign;
2. the person proves willingness to identity and gets a single-use grant;
3. ``sign`` has identity sign the digest with that grant, embeds the
   signature and its RFC 3161 time stamp, stores the new PDF in S3 and only
   then moves the flow on, in one transaction with its events.

Voiding works the same way: the void request and each confirmation are
statements the person signs with their own key.

Identity assurance: every flow requires a level (``ASSURANCE.REQUIRED_LEVEL``,
the platform minimum, or a higher one given to ``start_flow``). Before any
PDF work or willingness code, signing and void consent read the level the
person's current certificate states (a certificate policy; none stated:
self_declared) and refuse a weaker one with ``Forbidden('assurance_too_low')``.
The level a party signed with is kept on the party and in its
``party_signed`` event, and so in the evidence log.

Identity disputes: identity's ``identity_disputed`` (an authority-proofed
person took an ID number back; the old account is frozen, its certificates
revoked) cancels every unfinished flow of the frozen account
(``flow_cancelled``; documents hands the document back, notify tells the
other parties) and marks every ended one, completed and void_requested
included (``flow_identity_disputed``; ``get_flow`` then answers ``status``
``disputed_identity``, and its report carries the dispute). See
:func:`services.signing.flow.dispute_identity`.

Events (payloads carry ids, never personal data)::

    {flow_id, document_id, document_title, document_sha256, parties: [{person_id, role}],
     initiator_person_id, next_person_id, actor_person_id, repayment_date, reason,
     certificate_serial, willingness_method,
     assurance_level,                          # party_signed (and the event after it)
     disputed_person_id, dispute_reason}       # flow_cancelled, flow_identity_disputed
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timedelta

import eventlet
from cryptography import x509
from nameko.rpc import RpcProxy
from nameko.timer import timer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from services.common import events
from services.common.assurance import AssuranceLevel, level_of_certificate
from services.common.entrypoints import handles_event, rpc
from services.common.errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.common.lease import acquire, holder_id
from services.common.offload import WorkerPoolProvider
from services.common.clock import aware as _aware
from services.common.clock import naive as _naive
from services.common.clock import now as _now
from services.common.clock import utcnow
from services.common.service_base import ServiceBase
from services.common.storage import Storage
from services.signing import flow as F
from services.signing import pdf_worker
from services.signing.checkpoint import Checkpoint, parse_note
from services.signing.dependencies import PENDING_TTL, SigningContext
from services.signing.evidence_log import utc_timestamp
from services.signing.models import (
    FlowParty,
    FlowRow,
    PendingAction,
    RevokedCertificate,
    StoredObjectRow,
)
from services.signing.report import build_report, sign_report

log = logging.getLogger(__name__)

WILLINGNESS_METHODS = ("sms", "face")
EVIDENCE_WAIT_SECONDS = 10.0  # a report waits this long for the flow's last event to reach the log
FLOW_EVENTS = (events.FLOW_SENT, events.PARTY_JOINED, events.PARTY_SIGNED, events.FLOW_COMPLETED,
               events.FLOW_DECLINED, events.FLOW_EXPIRED, events.VOID_REQUESTED, events.VOID_REJECTED,
               events.FLOW_VOIDED, events.FLOW_CANCELLED, events.FLOW_IDENTITY_DISPUTED)
#: fields of a flow event copied into its evidence-log leaf when the event has them
LEAF_EXTRA_FIELDS = ("assurance_level", "disputed_person_id", "dispute_reason")




def _b64decode(value: str, field: str, max_bytes: int) -> bytes:
    try:
        data = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise InvalidInput(field, "base64", "expected base64 data") from None
    if not data:
        raise InvalidInput(field, "required", "expected non-empty data")
    if len(data) > max_bytes:
        raise InvalidInput(field, "max_bytes", f"too large: {len(data)} > {max_bytes} bytes")
    return data


def to_domain(row: FlowRow, parties: list[FlowParty]) -> F.Flow:
    return F.Flow(
        id=row.id, document_id=row.document_id, document_sha256=row.document_sha256,
        parties=tuple(F.Party(p.person_id, p.role, p.signature_field, _aware(p.signed_at))
                      for p in sorted(parties, key=lambda p: p.position)),
        expires_at=_aware(row.expires_at), state=F.FlowState(row.state), current=row.current_index,
        reason=row.reason, void_requested_by=row.void_requested_by,
        void_confirmed_by=tuple(json.loads(row.void_confirmed_by or "[]")), ended_at=_aware(row.ended_at),
        required_assurance=AssuranceLevel(row.required_assurance), disputed_person_id=row.disputed_person_id,
        disputed_at=_aware(row.disputed_at), dispute_reason=row.dispute_reason,
    )


def certificate_level(certificate_pem: str) -> AssuranceLevel | None:
    """The assurance level a person certificate (PEM, as identity answers it) states."""
    return level_of_certificate(x509.load_pem_x509_certificate(certificate_pem.encode("ascii")))


def flow_status(row: FlowRow) -> str:
    """What ``get_flow`` calls the flow: its state, or ``disputed_identity``
    for an ended flow marked by a dispute (a cancelled one says cancelled)."""
    if row.disputed_at is not None and row.state != F.FlowState.CANCELLED.value:
        return "disputed_identity"
    return row.state


def void_statement(flow_id: str, document_sha256: str, action: str, person_id: str, reason: str | None) -> str:
    """The digest a person signs to request or confirm a void: SHA-256 of a
    canonical JSON statement naming the flow, the document and the action."""
    statement = json.dumps({"action": action, "document_sha256": document_sha256, "flow_id": flow_id,
                            "person_id": person_id, "reason": reason}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(statement.encode("utf-8")).hexdigest()


class SigningService(ServiceBase):
    name = "signing"
    storage = Storage()
    ctx = SigningContext()
    pdf = WorkerPoolProvider("PDF", default_workers=1)
    identity = RpcProxy("identity")
    documents = RpcProxy("documents")

    # -- loading and saving ------------------------------------------------
    def _load(self, flow_id: str, lock: bool = False) -> tuple[FlowRow, list[FlowParty]]:
        query = select(FlowRow).where(FlowRow.id == flow_id)
        if lock:
            query = query.with_for_update()
        row = self.db.session.execute(query).scalar_one_or_none()
        if row is None:
            raise NotFound("flow", flow_id)
        parties = self.db.session.execute(
            select(FlowParty).where(FlowParty.flow_id == flow_id).order_by(FlowParty.position)).scalars().all()
        return row, list(parties)

    def _apply(self, row: FlowRow, parties: list[FlowParty], transition: F.Transition, actor: str | None,
               extra: dict | None = None) -> None:
        """Write the new flow state and its events into the current transaction."""
        flow = transition.flow
        row.state = flow.state.value
        row.current_index = flow.current
        row.reason = flow.reason
        row.void_requested_by = flow.void_requested_by
        row.void_confirmed_by = json.dumps(list(flow.void_confirmed_by))
        row.ended_at = _naive(flow.ended_at)
        row.disputed_person_id = flow.disputed_person_id
        row.disputed_at = _naive(flow.disputed_at)
        row.dispute_reason = flow.dispute_reason
        row.updated_at = utcnow()
        for party_row, party in zip(parties, flow.parties):
            party_row.signed_at = _naive(party.signed_at)
        base = dict(self._payload(row, parties, flow, actor), link=f"{self.ctx.public_url}/flows/{row.id}")
        for event_type in transition.events:
            data = dict(base, **(extra or {}))
            if event_type == events.VOID_REQUESTED:
                data["requester_person_id"] = actor
            elif event_type == events.FLOW_DECLINED:
                data["decliner_person_id"] = actor
            self.db.emit(event_type, data)
            self.metrics.inc("flow_events", "Signing flow events", event=event_type)

    @staticmethod
    def _payload(row: FlowRow, parties: list[FlowParty], flow: F.Flow, actor: str | None) -> dict:
        current = flow.current_party
        return {
            "flow_id": row.id, "document_id": row.document_id, "document_title": row.title,
            "document_sha256": row.document_sha256,
            "parties": [{"person_id": p.person_id, "role": p.role} for p in parties],
            "initiator_person_id": row.initiator_person_id,
            "next_person_id": current.person_id if current else None,
            "next_role": current.role if current else None,
            "actor_person_id": actor, "repayment_date": row.repayment_date, "reason": flow.reason,
            "state": flow.state.value,
        }

    def _flow_dict(self, row: FlowRow, parties: list[FlowParty]) -> dict:
        objects = self.db.session.execute(
            select(StoredObjectRow).where(StoredObjectRow.flow_id == row.id).order_by(StoredObjectRow.id)
        ).scalars().all()
        return {
            "flow_id": row.id, "document_id": row.document_id, "title": row.title, "state": row.state,
            "status": flow_status(row), "required_assurance": row.required_assurance,
            "disputed_identity": None if row.disputed_at is None else {
                "person_id": row.disputed_person_id, "at": _aware(row.disputed_at).isoformat(),
                "reason": row.dispute_reason},
            "document_sha256": row.document_sha256, "current_pdf_sha256": row.current_pdf_sha256,
            "expires_at": _aware(row.expires_at).isoformat(), "reason": row.reason,
            "void_requested_by": row.void_requested_by, "repayment_date": row.repayment_date,
            "next_person_id": row.state == "waiting" and parties[row.current_index].person_id or None,
            "next_role": parties[row.current_index].role if row.state == "waiting" else None,
            "parties": [{"person_id": p.person_id, "role": p.role, "signature_field": p.signature_field,
                         "signed_at": _aware(p.signed_at).isoformat() if p.signed_at else None,
                         "certificate_serial": p.certificate_serial,
                         "willingness_method": p.willingness_method,
                         "assurance_level": p.assurance_level} for p in parties],
            "objects": [{"kind": o.kind, "sha256": o.sha256, "version_id": o.version_id, "size": o.size}
                        for o in objects],
        }

    def _store_pdf(self, flow_id: str, kind: str, data: bytes) -> StoredObjectRow:
        """Put the PDF in S3 first; the row that references it is added to the
        current transaction only after the object is safely stored."""
        stored = self.storage.put(data, prefix="flows/", content_type="application/pdf")
        row = StoredObjectRow(flow_id=flow_id, kind=kind, key=stored.key, sha256=stored.sha256,
                              version_id=stored.version_id, size=stored.size, created_at=utcnow())
        self.db.session.add(row)
        return row

    def _current_pdf(self, row: FlowRow) -> bytes:
        obj = self.db.session.execute(
            select(StoredObjectRow).where(StoredObjectRow.flow_id == row.id,
                                          StoredObjectRow.sha256 == row.current_pdf_sha256)
            .order_by(StoredObjectRow.id.desc())).scalars().first()
        return self.storage.get(obj.key, sha256=obj.sha256, version_id=obj.version_id)

    # -- starting ------------------------------------------------------------
    @rpc
    def start_flow(self, document_id: str, initiator_person_id: str, parties: list[dict],
                   expires_in_hours: int = 72, title: str | None = None,
                   repayment_date: str | None = None, required_assurance: str | None = None) -> dict:
        """Start signing a rendered document. ``parties`` in signing order,
        the initiator first: ``[{role, person_id?, signature_field?}]``, one
        for every party the document names (``role`` by id or label).

        Each party is bound to the person the document names for that role
        (real name and resident ID number, checked by identity): a given
        ``person_id`` must be that person, a missing one is looked up (the
        initiator is ``initiator_person_id``). ``signature_field`` defaults to
        the role's field and may not name another.

        ``required_assurance``: the identity assurance every party's
        certificate must state (services/common/assurance.py); the platform
        minimum when not given, refused when below it."""
        if not 1 <= expires_in_hours <= 24 * 30:
            raise InvalidInput("expires_in_hours", "range", "expected 1 to 720 hours")
        level = F.required_assurance(required_assurance, self.ctx.settings.required_assurance)
        content = self.documents.get_document_content(document_id=document_id)
        rendered = content.get("content") or {}
        named = rendered.get("parties") or []
        if content.get("status") not in ("rendered", "locked") or not named:
            raise InvalidInput("document_id", "not_rendered", "render the document before signing starts")
        domain_parties = self._bind_parties(parties, named, initiator_person_id)
        live = self.db.session.execute(
            select(FlowRow.id).where(FlowRow.document_id == document_id,
                                     FlowRow.state.notin_([state.value for state in F.FINAL_STATES]))).first()
        if live is not None:
            raise Conflict("document_in_flow")
        if repayment_date is None:
            # an IOU's repayment date drives the due-soon / due-today reminders once it is signed
            values = content.get("values") or {}
            repayment_date = values.get("repayment_date") if isinstance(values.get("repayment_date"), str) else None
        if repayment_date is not None:
            try:
                datetime.strptime(repayment_date, "%Y-%m-%d")
            except ValueError:
                raise InvalidInput("repayment_date", "date", "expected YYYY-MM-DD") from None
        fetched = self.documents.get_pdf(document_id=document_id)
        pdf = base64.b64decode(fetched["pdf"])
        sha = hashlib.sha256(pdf).hexdigest()
        if sha != fetched["sha256"]:
            raise IntegrityError(f"document {document_id}", "PDF hash differs from the recorded one")
        now = _now()
        flow_id = str(uuid.uuid4())
        flow = F.new_flow(flow_id, document_id, sha, domain_parties, now + timedelta(hours=expires_in_hours), now,
                          level)
        title = (title or rendered.get("title") or "文件")[:100]  # the template's title, as get_document says
        # read-only from here, if it is still the PDF just read (an edit since is a Conflict); released
        # again if the flow is not recorded after all
        ended = self.db.session.execute(
            select(FlowRow.id).where(FlowRow.document_id == document_id,
                                     FlowRow.state.in_([state.value for state in F.FINAL_STATES]))).scalars().all()
        self.documents.lock_for_signing(document_id=document_id, flow_id=flow_id, pdf_sha256=sha,
                                        ended_flows=list(ended))
        try:
            return self._record_flow(flow, title, repayment_date, initiator_person_id, pdf)
        except BaseException:
            self.db.rollback()
            try:
                self.documents.release_signing_lock(document_id=document_id, flow_id=flow_id)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                log.exception("flow %s not recorded; document %s stays locked for it", flow_id, document_id)
            raise

    def _record_flow(self, flow: F.Flow, title: str, repayment_date: str | None, initiator_person_id: str,
                     pdf: bytes) -> dict:
        """Store the flow's PDF, then the flow, its parties and its first events, in one commit."""
        flow_id, document_id, sha = flow.id, flow.document_id, flow.document_sha256
        domain_parties = list(flow.parties)
        now = _now()
        stored = self.storage.put(pdf, prefix="flows/", content_type="application/pdf")  # before any row refers to it
        row = FlowRow(id=flow_id, document_id=document_id, document_sha256=sha, title=title,
                      state=flow.state.value, current_index=0, initiator_person_id=initiator_person_id,
                      expires_at=_naive(flow.expires_at), repayment_date=repayment_date, void_confirmed_by="[]",
                      required_assurance=flow.required_assurance.value,
                      current_pdf_key=stored.key, current_pdf_sha256=sha, created_at=utcnow(), updated_at=utcnow())
        party_rows = [FlowParty(flow_id=flow_id, position=i, person_id=p.person_id, role=p.role,
                                signature_field=p.signature_field) for i, p in enumerate(domain_parties)]
        self.db.session.add(row)
        try:
            self.db.session.flush()  # the flow row first: parties and objects refer to it
        except DbIntegrityError:  # a concurrent start on the same document won
            self.db.rollback()
            raise Conflict("document_in_flow") from None
        self.db.session.add_all(party_rows)
        self.db.session.add(StoredObjectRow(flow_id=flow_id, kind="original", key=stored.key, sha256=stored.sha256,
                                            version_id=stored.version_id, size=stored.size, created_at=utcnow()))
        self.db.session.flush()
        self._apply(row, party_rows, F.send(flow, now), initiator_person_id)
        self.db.commit()
        return self._flow_dict(row, party_rows)

    def _bind_parties(self, parties: list[dict], named: list[dict], initiator_person_id: str) -> list[F.Party]:
        """The flow's parties, each checked against the person the document names."""
        by_role = {}
        for entry in named:
            by_role[entry["role"]] = by_role[entry["label"]] = entry
        labels = "、".join(entry["label"] for entry in named)
        bound: list[F.Party] = []
        for i, party in enumerate(parties):
            if not isinstance(party, dict):
                raise InvalidInput(f"parties.{i}", "object", "expected {role, person_id?, signature_field?}")
            role = party.get("role")
            if not isinstance(role, str) or role not in by_role:
                raise InvalidInput(f"parties.{i}.role", "document_role", f"expected one of {labels}")
            document_party = by_role[role]
            field = party.get("signature_field") or document_party["signature_field"]
            if field != document_party["signature_field"]:
                raise InvalidInput(f"parties.{i}.signature_field", "role_field",
                                   f"{document_party['label']} signs in {document_party['signature_field']}")
            person_id = party.get("person_id") or (initiator_person_id if i == 0 else None)
            if person_id is not None and (not isinstance(person_id, str) or not 0 < len(person_id) <= 64):
                raise InvalidInput(f"parties.{i}.person_id", "string", "expected a person id")
            if person_id is None:
                try:
                    person_id = self.identity.find_person(name=document_party["name"],
                                                          id_number=document_party["id_number"])["person_id"]
                except NotFound:
                    # not registered yet: invited by SMS at the document's number; joins later (join_flow)
                    person_id = None
            elif not self.identity.person_matches(person_id=person_id, name=document_party["name"],
                                                  id_number=document_party["id_number"])["matches"]:
                raise InvalidInput(f"parties.{i}.person_id", "not_the_named_party",
                                   f"this person is not the {document_party['label']} the document names")
            bound.append(F.Party(person_id, document_party["label"], field))
        if bound and bound[0].person_id != initiator_person_id:
            raise InvalidInput("parties.0.person_id", "initiator_first", "the initiator signs first")
        starter = next((entry for entry in named if entry.get("initiator")), None)
        if bound and starter is not None and bound[0].role != starter["label"]:
            raise InvalidInput("parties.0.role", "initiator_role", f"the document is started by its {starter['label']}")
        if sorted(p.role for p in bound) != sorted(entry["label"] for entry in named):
            raise InvalidInput("parties", "every_named_party", f"each party the document names signs once: {labels}")
        return bound

    @rpc
    def get_flow(self, flow_id: str) -> dict:
        row, parties = self._load(flow_id)
        return self._flow_dict(row, parties)

    @rpc
    def join_flow(self, flow_id: str, person_id: str) -> dict:
        """A person invited before they registered takes their place: the
        party whose role the document gives to someone with their real name
        and ID number (checked by identity). Joining twice answers the flow."""
        row, parties = self._load(flow_id, lock=True)
        if any(p.person_id == person_id for p in parties):
            return self._flow_dict(row, parties)
        open_places = [p for p in parties if p.person_id is None]
        if not open_places:
            raise Forbidden("not_a_party")
        named = (self.documents.get_document_content(document_id=row.document_id).get("content") or {}).get("parties")
        by_label = {entry["label"]: entry for entry in named or ()}
        for place in open_places:
            entry = by_label.get(place.role)
            if entry is not None and self.identity.person_matches(
                    person_id=person_id, name=entry["name"], id_number=entry["id_number"])["matches"]:
                transition = F.join(to_domain(row, parties), place.position, person_id, _now())
                place.person_id = person_id
                self._apply(row, parties, transition, person_id)
                self.db.commit()
                return self._flow_dict(row, parties)
        raise Forbidden("not_a_party")

    @rpc
    def get_signed_pdf(self, flow_id: str) -> dict:
        """The newest PDF of the flow (hash checked on read)."""
        row, _ = self._load(flow_id)
        return {"pdf": pdf_worker.b64(self._current_pdf(row)), "sha256": row.current_pdf_sha256}

    # -- signing -------------------------------------------------------------
    @rpc
    def prepare_signature(self, flow_id: str, person_id: str, signature_image: str, method: str,
                          location: str | None = None) -> dict:
        """Step 1 of a signature: returns the willingness check to complete."""
        if method not in WILLINGNESS_METHODS:
            raise InvalidInput("method", "enum", "expected sms or face")
        png = _b64decode(signature_image, "signature_image", 512 * 1024)
        row, parties = self._load(flow_id)
        flow = to_domain(row, parties)
        party = F.check_turn(flow, person_id, _now())
        certificate = self.identity.current_certificate(person_id=person_id)
        if certificate["status"] != "good":
            raise Forbidden("certificate_not_valid")
        if self.db.session.get(RevokedCertificate, certificate["serial"]) is not None:
            raise Forbidden("certificate_revoked")
        F.check_assurance(flow, certificate_level(certificate["certificate_pem"]))  # before any PDF work
        roots = self.ctx.platform.trust_roots(self.identity)
        prepared = self.pdf.run(
            pdf_worker.prepare, self._tsa_url(), roots, self._current_pdf(row), party.signature_field,
            certificate["certificate_pem"], tuple(certificate["chain_pem"]), png,
            flow.current == 0, f"{party.role}签署",
        )
        digest = prepared["digest_to_sign"]
        willingness = self.identity.start_willingness(person_id=person_id, digest=digest, method=method,
                                                      document_title=row.title)
        pending = PendingAction(
            id=str(uuid.uuid4()), flow_id=flow_id, person_id=person_id, action="sign", digest=digest,
            method=method, willingness_id=willingness["willingness_id"], prepared=json.dumps(prepared),
            created_at=utcnow(), expires_at=utcnow() + PENDING_TTL,
        )
        self.db.session.add(pending)
        self.db.commit()
        # a face check's liveness challenge (the head turns to perform) goes to the person as identity gave it
        return {"pending_id": pending.id, "willingness_id": pending.willingness_id, "method": method,
                "digest": digest, "expires_at": _aware(pending.expires_at).isoformat(),
                "challenge": willingness.get("challenge")}

    def _claim_pending(self, pending_id: str, person_id: str, action: str) -> PendingAction:
        pending = self.db.session.get(PendingAction, pending_id)
        if pending is None or pending.action != action:
            raise NotFound("pending_action", pending_id)
        if pending.person_id != person_id:
            raise Forbidden("not_your_action")
        if pending.used_at is not None:
            raise Conflict("pending_action_used")
        if _aware(pending.expires_at) <= _now():
            raise Conflict("pending_action_expired")
        return pending

    @rpc
    def sign(self, flow_id: str, person_id: str, pending_id: str, grant: str) -> dict:
        """Step 3 of a signature: identity signs with the grant; the flow moves on."""
        pending = self._claim_pending(pending_id, person_id, "sign")
        if pending.flow_id != flow_id:
            raise Forbidden("not_your_action")
        row, parties = self._load(flow_id, lock=True)
        flow = to_domain(row, parties)
        F.check_turn(flow, person_id, _now())
        prepared = json.loads(pending.prepared)
        if prepared["input_sha256"] != row.current_pdf_sha256:
            raise Conflict("document_changed_since_prepare")
        # the level of the certificate that signs, as checked when the signature was prepared
        level = F.check_assurance(flow, level_of_certificate(
            x509.load_der_x509_certificate(base64.b64decode(prepared["certificate"]))))
        signed = self.identity.sign_digest(grant=grant, person_id=person_id, digest=pending.digest)
        roots = self.ctx.platform.trust_roots(self.identity)
        pdf = self.pdf.run(pdf_worker.complete, self._tsa_url(), roots, prepared,
                           base64.b64decode(signed["signature"]))
        transition = F.sign(flow, person_id, _now())
        last = transition.flow.state is F.FlowState.COMPLETED
        if last:  # PAdES B-LTA: revocation data for every certificate and a document time stamp
            pdf = self.pdf.run(pdf_worker.finalize, self._tsa_url(), roots, pdf)
        stored = self._store_pdf(flow_id, "final" if last else "signed", pdf)
        row.current_pdf_key, row.current_pdf_sha256 = stored.key, stored.sha256
        position = flow.current
        parties[position].certificate_serial = signed.get("serial") or signed.get("certificate_serial")
        parties[position].willingness_method = pending.method
        parties[position].assurance_level = level.value
        pending.used_at = utcnow()
        self._apply(row, parties, transition, person_id, {
            "certificate_serial": parties[position].certificate_serial,
            "willingness_method": pending.method, "signed_pdf_sha256": stored.sha256,
            "assurance_level": level.value,
        })
        self.db.commit()
        self.metrics.inc("signatures", "Party signatures", method=pending.method)
        return self._flow_dict(row, parties)

    # -- declining and voiding ------------------------------------------------
    @rpc
    def decline(self, flow_id: str, person_id: str, reason: str) -> dict:
        row, parties = self._load(flow_id, lock=True)
        self._apply(row, parties, F.decline(to_domain(row, parties), person_id, reason, _now()), person_id)
        self.db.commit()
        return self._flow_dict(row, parties)

    def _start_void_action(self, flow_id: str, person_id: str, action: str, method: str,
                           reason: str | None) -> dict:
        if method not in WILLINGNESS_METHODS:
            raise InvalidInput("method", "enum", "expected sms or face")
        row, parties = self._load(flow_id)
        flow = to_domain(row, parties)
        # check now, so the person is not sent a code for an action that cannot happen
        if action == "request_void":
            F.request_void(flow, person_id, reason or "")
        else:
            F.confirm_void(flow, person_id, _now())
        certificate = self.identity.current_certificate(person_id=person_id)
        F.check_assurance(flow, certificate_level(certificate["certificate_pem"]))
        digest = void_statement(flow_id, row.document_sha256, action, person_id, reason)
        willingness = self.identity.start_willingness(person_id=person_id, digest=digest, method=method,
                                                      document_title=row.title)
        pending = PendingAction(id=str(uuid.uuid4()), flow_id=flow_id, person_id=person_id, action=action,
                                digest=digest, method=method, willingness_id=willingness["willingness_id"],
                                reason=reason, created_at=utcnow(), expires_at=utcnow() + PENDING_TTL)
        self.db.session.add(pending)
        self.db.commit()
        # a face check's liveness challenge (the head turns to perform) goes to the person as identity gave it
        return {"pending_id": pending.id, "willingness_id": pending.willingness_id, "method": method,
                "digest": digest, "expires_at": _aware(pending.expires_at).isoformat(),
                "challenge": willingness.get("challenge")}

    @rpc
    def request_void(self, flow_id: str, person_id: str, reason: str, method: str) -> dict:
        """Step 1 of 作废: the reason is checked and a willingness check started."""
        return self._start_void_action(flow_id, person_id, "request_void", method, reason)

    @rpc
    def confirm_void(self, flow_id: str, person_id: str, method: str) -> dict:
        """Step 1 of confirming another party's void request."""
        return self._start_void_action(flow_id, person_id, "confirm_void", method, None)

    @rpc
    def complete_action(self, pending_id: str, person_id: str, grant: str) -> dict:
        """Step 3 of a void request or confirmation: the person's key signs the
        void statement (proof of consent), then the flow moves on."""
        pending = self.db.session.get(PendingAction, pending_id)
        if pending is None or pending.action not in ("request_void", "confirm_void"):
            raise NotFound("pending_action", pending_id)
        pending = self._claim_pending(pending_id, person_id, pending.action)
        row, parties = self._load(pending.flow_id, lock=True)
        flow = to_domain(row, parties)
        if pending.action == "request_void":
            transition = F.request_void(flow, person_id, pending.reason or "")
        else:
            transition = F.confirm_void(flow, person_id, _now())
        signed = self.identity.sign_digest(grant=grant, person_id=person_id, digest=pending.digest)
        pending.used_at = utcnow()
        self._apply(row, parties, transition, person_id, {
            "willingness_method": pending.method, "statement_digest": pending.digest,
            "statement_signature": signed["signature"],
            "certificate_serial": signed.get("serial") or signed.get("certificate_serial"),
        })
        self.db.commit()
        return self._flow_dict(row, parties)

    @rpc
    def reject_void(self, flow_id: str, person_id: str) -> dict:
        row, parties = self._load(flow_id, lock=True)
        self._apply(row, parties, F.reject_void(to_domain(row, parties), person_id), person_id)
        self.db.commit()
        return self._flow_dict(row, parties)

    # -- jobs ----------------------------------------------------------------
    _holder = holder_id()

    @timer(interval=5)
    def expire_flows(self) -> int:
        """Expire overdue flows; one replica at a time (lease)."""
        if not acquire(self.db.session, "expire_flows", self._holder, timedelta(seconds=30)):
            return 0
        return self.run_expiry()

    def run_expiry(self, now: datetime | None = None) -> int:
        now = now or _now()
        overdue = self.db.session.execute(
            select(FlowRow.id).where(FlowRow.state.in_(("draft", "waiting")), FlowRow.expires_at <= _naive(now))
            .limit(100)).scalars().all()
        for flow_id in overdue:
            row, parties = self._load(flow_id, lock=True)
            flow = to_domain(row, parties)
            if flow.state in (F.FlowState.DRAFT, F.FlowState.WAITING) and now >= flow.expires_at:
                self._apply(row, parties, F.expire(flow, now), None)
            self.db.commit()
        return len(overdue)

    @rpc
    def expire_now(self) -> int:
        """Operations: run the expiry job at once (it also runs every 5 s)."""
        return self.run_expiry()

    # -- evidence log ----------------------------------------------------------
    def _append_leaf(self, event: dict) -> None:
        data = event["data"]
        existing = [json.loads(leaf.data) for leaf in self.ctx.log.flow_leaves(data["flow_id"])]
        if any(record.get("event_id") == event["event_id"] for record in existing):
            return  # a redelivered event is in the log already
        record = {
            "event_id": event["event_id"], "flow_id": data["flow_id"], "event_type": event["event_type"],
            "document_hash": data.get("signed_pdf_sha256") or data.get("document_sha256"),
            "party_id": data.get("actor_person_id"), "certificate_serial": data.get("certificate_serial"),
            "willingness_method": data.get("willingness_method"),
            "willingness_outcome": "passed" if data.get("willingness_method") else None,
            "timestamp": utc_timestamp(datetime.fromisoformat(event["occurred_at"])),
        }
        # only where the event has them: leaves of events without them stay as they always were
        record.update({name: data[name] for name in LEAF_EXTRA_FIELDS if data.get(name) is not None})
        self.ctx.log.append(record)

    @rpc
    def flow_evidence(self, flow_id: str) -> dict:
        """Every log leaf of a flow with its inclusion proof against a fresh signed checkpoint."""
        self._load(flow_id)
        checkpoint = self.ctx.log.checkpoint()
        # the size the checkpoint signed, not the log's size a moment later
        size = Checkpoint.from_body(parse_note(checkpoint).text).size
        leaves = []
        for leaf in self.ctx.log.flow_leaves(flow_id):
            if leaf.index >= size:  # appended after the checkpoint was taken: proven by the next one
                continue
            proof = self.ctx.log.inclusion_proof(leaf.index, size)
            leaves.append({"index": leaf.index, "leaf": leaf.data.decode("utf-8"), "proof": proof.to_dict()})
        return {"checkpoint": checkpoint, "tree_size": size, "leaves": leaves,
                "log_public_key": self.ctx.log.public_key()}

    def _settled_evidence(self, flow_id: str, state: str, disputed: bool) -> dict:
        """The flow's evidence once the event that put it in ``state`` (and
        the dispute mark, if any) is in the log and under a checkpoint. Leaves
        are appended by event handlers, so a report asked for right after the
        last signature may wait a moment."""
        ending = {"completed": events.FLOW_COMPLETED, "voided": events.FLOW_VOIDED,
                  "void_requested": events.VOID_REQUESTED}
        awaited = {ending[state]}
        if disputed:
            awaited.add(events.FLOW_IDENTITY_DISPUTED)
        deadline = time.monotonic() + EVIDENCE_WAIT_SECONDS
        while True:
            evidence = self.flow_evidence(flow_id)
            missing = awaited - {json.loads(leaf["leaf"]).get("event_type") for leaf in evidence["leaves"]}
            if not missing:
                return evidence
            if time.monotonic() >= deadline:
                raise Unavailable("evidence_log",
                                  f"{', '.join(sorted(missing))} of this flow is not logged yet; ask again shortly")
            eventlet.sleep(0.2)

    @rpc
    def checkpoint(self) -> dict:
        return {"checkpoint": self.ctx.log.checkpoint()}

    @rpc
    def log_public_key(self) -> dict:
        return {"public_key": self.ctx.log.public_key()}

    @rpc
    def inclusion_proof(self, index: int, tree_size: int | None = None) -> dict:
        return self.ctx.log.inclusion_proof(index, tree_size).to_dict()

    @rpc
    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict:
        return self.ctx.log.consistency_proof(old_size, new_size).to_dict()

    @timer(interval=5)
    def publish_checkpoint(self) -> None:
        """Sign a checkpoint of the current tree every few seconds (one replica)."""
        if acquire(self.db.session, "checkpoint", self._holder, timedelta(seconds=30)):
            self.ctx.log.checkpoint()

    # -- signing report (签约报告) ---------------------------------------------------
    @rpc
    def report(self, flow_id: str) -> dict:
        """Build, sign (platform Ed25519 key, C2SP note) and store the signing
        report of a completed or voided flow: JSON and a Chinese PDF. A flow
        whose party's identity was disputed carries the dispute. A cancelled
        flow has no report: it never took effect, and parties who never signed
        have no certificate to show."""
        row, parties = self._load(flow_id)
        if row.state not in ("completed", "voided", "void_requested"):
            raise Conflict(f"flow_{row.state}: a report needs a completed or voided flow")
        flow = self._flow_dict(row, parties)
        # how each identity was checked: the proof behind the certificate the party signed with
        profiles = {p.person_id: self.identity.report_profile(person_id=p.person_id, serial=p.certificate_serial)
                    for p in parties}
        serials = {p.person_id: p.certificate_serial for p in parties}
        report_parties, checks = [], []
        for p in parties:
            profile = profiles[p.person_id]
            cert = next((c for c in profile["certificates"] if c["serial"] == serials[p.person_id]), None)
            report_parties.append({
                "person_id": p.person_id, "role": p.role, "name": profile["name"],
                "id_number_masked": profile["id_number_masked"], "phone_masked": profile["phone_masked"],
                "certificate": None if cert is None else {
                    "serial": cert["serial"], "issuer": cert["issuer"], "subject": cert["subject_cn"],
                    "not_before": cert["not_before"], "not_after": cert["not_after"]},
            })
            # scores stay numbers here: build_report writes them as decimal strings (no floats in canonical JSON)
            checks.append(dict(profile["identity_check"], person_id=p.person_id))
        actions = self.db.session.execute(
            select(PendingAction).where(PendingAction.flow_id == flow_id, PendingAction.used_at.is_not(None))
            .order_by(PendingAction.used_at)).scalars().all()
        willingness = [{"person_id": a.person_id, "action": a.action, "method": a.method,
                        "at": _aware(a.used_at).isoformat(), "outcome": "passed"} for a in actions]
        final_pdf = self._current_pdf(row)
        roots = self.ctx.platform.trust_roots(self.identity)
        signatures = self.pdf.run(pdf_worker.report_signatures, roots, final_pdf,
                                  {p.signature_field: p.person_id for p in parties})
        built = build_report(flow, row.document_sha256, row.current_pdf_sha256, report_parties, checks,
                             willingness, signatures,
                             self._settled_evidence(flow_id, row.state, row.disputed_at is not None), _now(),
                             f"{self.ctx.public_url}/verify?flow={flow_id}")
        signed = sign_report(built, self.ctx.keys.log_signer)
        report_json = json.dumps(signed, ensure_ascii=False, sort_keys=True).encode("utf-8")
        report_pdf = self.pdf.run(pdf_worker.render_report, built)
        stored = [self.storage.put(report_json, prefix="reports/", content_type="application/json"),
                  self.storage.put(report_pdf, prefix="reports/", content_type="application/pdf")]
        for kind, obj in zip(("report_json", "report_pdf"), stored):
            self.db.session.add(StoredObjectRow(flow_id=flow_id, kind=kind, key=obj.key, sha256=obj.sha256,
                                                version_id=obj.version_id, size=obj.size, created_at=utcnow()))
        self.db.commit()
        self.metrics.inc("reports", "Signing reports made")
        return {"report": signed, "report_pdf": pdf_worker.b64(report_pdf),
                "report_json_sha256": stored[0].sha256, "report_pdf_sha256": stored[1].sha256}

    # -- verification ------------------------------------------------------------
    @rpc
    def verify(self, pdf: str) -> dict:
        """Check every signature and time stamp of a PDF against the platform root."""
        data = _b64decode(pdf, "pdf", 50 * 1024 * 1024)
        return self.pdf.run(pdf_worker.verify, self.ctx.platform.trust_roots(self.identity), data)

    def _tsa_url(self) -> str:
        return self.ctx.tsa_url

    # -- revocations announced by identity ----------------------------------------
    @rpc
    def certificate_revoked(self, serial: str) -> bool:
        """Whether identity has announced this certificate serial as revoked."""
        return self.db.session.get(RevokedCertificate, serial) is not None

    @handles_event("identity", events.CERTIFICATE_REVOKED)
    def on_certificate_revoked(self, event: dict) -> None:
        """Remember revoked serials so a pending flow refuses to sign with them
        even before the next CRL is fetched."""
        data = event["data"]
        self._remember_revoked(data["serial"], data.get("person_id"), data.get("reason"))

    def _remember_revoked(self, serial: str, person_id: str | None, reason: str | None) -> None:
        if self.db.session.get(RevokedCertificate, serial) is None:
            self.db.session.add(RevokedCertificate(serial=serial, person_id=person_id, reason=reason,
                                                   revoked_at=utcnow()))
            self.db.session.flush()  # a serial named twice in one event is added once

    @handles_event("identity", events.IDENTITY_DISPUTED)
    def on_identity_disputed(self, event: dict) -> None:
        """An authority-proofed person took an ID number back from the account
        that held it: cancel that account's unfinished flows, mark its ended
        ones (:func:`services.signing.flow.dispute_identity`), each with its
        event, all in one transaction with the processed-event mark."""
        data = event["data"]
        person_id = data.get("person_id")
        if not isinstance(person_id, str) or not person_id:
            log.error("identity_disputed %s without a person_id ignored", event.get("event_id"))
            return
        given = data.get("reason")
        reason = given[:64] if isinstance(given, str) and given.strip() else F.IDENTITY_DISPUTED  # a listed word
        # the certificate_revoked events follow on their own; refuse the serials already
        for serial in data.get("revoked_serials") or ():
            if isinstance(serial, str) and serial:
                self._remember_revoked(serial, person_id, "identity_disputed")
        flow_ids = self.db.session.execute(
            select(FlowParty.flow_id).where(FlowParty.person_id == person_id).distinct()).scalars().all()
        now = _now()
        for flow_id in sorted(flow_ids):  # one lock order for every replica
            row, parties = self._load(flow_id, lock=True)
            transition = F.dispute_identity(to_domain(row, parties), person_id, reason, now)
            if transition.events:
                self._apply(row, parties, transition, None,
                            {"disputed_person_id": person_id, "dispute_reason": reason})
        if flow_ids:
            log.info("identity of %s disputed: %d flows cancelled or marked", person_id, len(flow_ids))


def _leaf_handler(event_type: str):
    def handler(self, event: dict) -> None:
        self._append_leaf(event)

    handler.__name__ = handler.__qualname__ = f"log_{event_type}"
    handler.__doc__ = f"Every {event_type} event becomes a leaf of the evidence log."
    return handles_event("signing", event_type)(handler)


# Every flow event is a leaf of the evidence log (one idempotent handler per event type).
for _event_type in FLOW_EVENTS:
    setattr(SigningService, f"log_{_event_type}", _leaf_handler(_event_type))
