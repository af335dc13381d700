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

Events: a flow's go out with its change (:meth:`.flow_store.FlowStore.apply`);
each event's payload is its type in :data:`services.common.events.PAYLOADS`,
a :class:`~services.common.events.FlowEvent` (ids, hashes and words, never
personal data).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

from cryptography import x509
from nameko.exceptions import MethodNotFound
from nameko.timer import timer

from services.common import events, listing
from services.common.assurance import AssuranceLevel, level_of_certificate
from services.common.clock import aware, now, utcnow
from services.common.database import dialect_insert
from services.common.entrypoints import BoundedRpcProxy, handles_event, rpc
from services.common.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound, RateLimited, Unavailable
from services.common.keystore.provider import KeyStoreProvider
from services.common.lease import acquire
from services.common.metrics import Metrics, Series, refreshes_gauges
from services.common.object_intents import ObjectReconciliation
from services.common.offload import WorkerPoolProvider
from services.common.reasons import Reason
from services.common.service_base import ServiceBase
from services.common.storage import Storage
from services.common.wire import decode_base64
from services.signing import evidence_package as package
from services.signing import flow as F
from services.signing import my_files, pdf_worker, status
from services.signing.dependencies import PENDING_TTL, SigningContext, load_keyring
from services.signing.evidence import ENDING_EVENTS, EvidenceEntrypoints
from services.signing.flow_store import FLOW_EVENT_SERIES, FlowStoreProvider, to_domain
from services.signing.loans import LoanEntrypoints
from services.signing.models import STORED_OBJECTS, PendingAction, RevokedCertificate
from services.signing.parties import IdentityDirectory, bind_parties, place_for
from services.signing.report import sign_report
from services.signing.report_assembly import REPORTABLE_STATES, assemble
from services.signing.witnesses import WitnessPolicy, refusal_series
from services.witness.cosignature import check_cosignatures

log = logging.getLogger(__name__)

WILLINGNESS_METHODS = ("sms", "face")
MAX_SIGNATURE_IMAGE = 512 * 1024
MAX_VERIFIED_PDF = 50 * 1024 * 1024
#: a document locked this long for a flow signing never recorded is released
DOCUMENT_LOCK_GRACE_SECONDS = 300
#: the report's files, kept per state of the flow
REPORT_KINDS = ("report_json", "report_pdf")
#: 催签 at most this often a flow
REMIND_EVERY = timedelta(days=1)


#: a party's sign step in this service (:meth:`SigningService._sign_step_took`)
SIGN_STEP_DOCUMENTATION = "A party's sign step in the signing service, by stage"


def known_series(config: dict) -> tuple[Series, ...]:
    """signing's counters shown at 0 from the start."""
    return (FLOW_EVENT_SERIES, Series("signatures", "Party signatures", {"method": WILLINGNESS_METHODS}),
            Series("sign_step_seconds", SIGN_STEP_DOCUMENTATION, {"stage": ("prepare", "sign", "sign_final")},
                   histogram=True),
            refusal_series(WitnessPolicy.from_config(config.get("WITNESSES"))))


def certificate_level(certificate_pem: str) -> AssuranceLevel | None:
    """The assurance level a person certificate (PEM, as identity answers it) states."""
    return level_of_certificate(x509.load_pem_x509_certificate(certificate_pem.encode("ascii")))


def _binary(value: str, field: str, max_bytes: int) -> bytes:
    data = decode_base64(value, field, max_bytes)
    if not data:
        raise InvalidInput(field, "required", "expected non-empty data")
    return data


class SigningService(LoanEntrypoints, EvidenceEntrypoints, ObjectReconciliation, ServiceBase):
    name = "signing"
    metrics = Metrics(known=known_series)
    # objects encrypted under the service's KEK; put through intents, locked once their row is committed
    storage = Storage(load_keyring, references=STORED_OBJECTS)
    custody = KeyStoreProvider()
    ctx = SigningContext()
    flows = FlowStoreProvider()
    pdf = WorkerPoolProvider("PDF", default_workers=1)
    identity = BoundedRpcProxy("identity")
    documents = BoundedRpcProxy("documents")

    # -- starting ------------------------------------------------------------
    @rpc
    def start_flow(self, document_id: str, initiator_person_id: str, parties: list[dict],
                   expires_in_hours: int = 72, title: str | None = None,
                   repayment_date: str | None = None, required_assurance: str | None = None,
                   owner_person_id: str | None = None) -> dict:
        """Start signing a rendered document. ``parties`` in signing order,
        the initiator first: ``[{role, person_id?, signature_field?}]``, one
        for every party the document names (``role`` by id or label), each
        bound to the person the document names (:mod:`.parties`).

        ``required_assurance``: the identity assurance every party's
        certificate must state (services/common/assurance.py); the platform
        minimum when not given, refused when below it. ``owner_person_id``
        (the gateway's caller): a document someone else made is NotFound."""
        if not 1 <= expires_in_hours <= 24 * 30:
            raise InvalidInput("expires_in_hours", "range", "expected 1 to 720 hours")
        level = F.required_assurance(required_assurance, self.ctx.settings.required_assurance)
        owner = {"owner_person_id": owner_person_id} if owner_person_id is not None else {}
        content = self.documents.get_document_content(document_id=document_id, **owner)
        rendered = content.get("content") or {}
        named = rendered.get("parties") or []
        if content.get("status") not in ("rendered", "locked") or not named:
            raise InvalidInput("document_id", "not_rendered", "render the document before signing starts")
        domain_parties = bind_parties(parties, named, initiator_person_id, IdentityDirectory(self.identity))
        repayment_date = _repayment_date(repayment_date, content.get("values") or {})
        title = (title or rendered.get("title") or "文件")[:100]  # the template's title, as get_document says
        row, party_rows = self._start_signing(content, domain_parties, initiator_person_id, level,
                                             timedelta(hours=expires_in_hours), title, repayment_date)
        return self.flows.flow_dict(row, party_rows)

    def _start_signing(self, content: dict, parties: list[F.Party], initiator_person_id: str, level,
                      lasts: timedelta, title: str, repayment_date: str | None, *, min_parties: int = 2,
                      parent_flow_id: str | None = None, statement: dict | None = None):
        """Record and commit the flow of a rendered document (``content``: documents'
        ``get_document_content``), its PDF locked for it; released again if the flow is
        not recorded after all. ``statement``: what a statement about ``parent_flow_id``
        states (services/signing/loans.py), kept in its sealed summary."""
        document_id = content["document_id"]
        if self.flows.live_flow_of(document_id) is not None:
            raise Conflict(Reason.DOCUMENT_IN_FLOW)
        flow_id = str(uuid.uuid4())
        # read-only from here, and the PDF it is locked with in the same call; released again if the
        # flow is not recorded after all
        pdf, sha = self._lock_document(document_id, flow_id, content.get("pdf_sha256"))
        try:
            moment = now()
            flow = F.new_flow(flow_id, document_id, sha, parties, moment + lasts, moment, level, min_parties)
            summary = dict(my_files.summary_of(content), **({"statement": statement} if statement else {}))
            sealed = my_files.seal_summary(self.ctx.keys.keyring, flow.id, summary)
            row, party_rows = self.flows.record(flow, title, repayment_date, initiator_person_id, pdf,
                                                content.get("template_id"), sealed)
            if parent_flow_id is not None:
                row.parent_flow_id, row.statement = parent_flow_id, statement["kind"]
            self.db.commit()
            return row, party_rows
        except BaseException:
            self.db.rollback()
            try:
                self.documents.release_signing_lock(document_id=document_id, flow_id=flow_id)
            except Exception:  # noqa: BLE001 - the first failure is the one to report
                log.exception("flow %s not recorded; document %s stays locked for it", flow_id, document_id)
            raise

    def _lock_document(self, document_id: str, flow_id: str, pdf_sha256: str | None) -> tuple[bytes, str]:
        """Lock the document for ``flow_id`` if its PDF is still the rendering ``pdf_sha256`` whose
        content was read (the current one when not given), and answer that PDF: one documents RPC.
        A documents older than ``with_pdf``: its PDF first, then the lock if it is still that PDF."""
        ended = self.flows.ended_flows_of(document_id)
        try:
            locked = self.documents.lock_for_signing(document_id=document_id, flow_id=flow_id, pdf_sha256=pdf_sha256,
                                                     ended_flows=ended, with_pdf=True)
        except InvalidInput as exc:
            if exc.field != "with_pdf":
                raise
            locked = self.documents.get_pdf(document_id=document_id)
            self.documents.lock_for_signing(document_id=document_id, flow_id=flow_id, pdf_sha256=locked["sha256"],
                                            ended_flows=ended)
        pdf = base64.b64decode(locked["pdf"])
        sha = hashlib.sha256(pdf).hexdigest()
        if sha != locked["sha256"]:
            try:
                self.documents.release_signing_lock(document_id=document_id, flow_id=flow_id)
            except Exception:  # noqa: BLE001 - the hash is the failure to report
                log.exception("document %s stays locked for flow %s", document_id, flow_id)
            raise IntegrityError(f"document {document_id}", "PDF hash differs from the recorded one")
        return pdf, sha

    @rpc
    def get_flow(self, flow_id: str) -> dict:
        row, parties = self.flows.load(flow_id)
        return self.flows.flow_dict(row, parties)

    @rpc
    def list_files(self, person_id: str, limit: int = listing.DEFAULT_PAGE, statuses: list | None = None,
                   template_id: str | None = None, q: str | None = None, before: dict | None = None) -> dict:
        """我的文件: a page of the flows ``person_id`` is a party to, newest
        first (services/common/listing.py: the filters, ``before`` the last
        key of the previous page); ``{"items", "more"}``."""
        query = listing.ListQuery.parse(person_id, limit, statuses, template_id, q, before)
        return my_files.list_files(self.db.session, self.ctx.keys.keyring, query)

    @rpc
    def join_flow(self, flow_id: str, person_id: str) -> dict:
        """A person invited before they registered takes their place: the
        party whose role the document gives to someone with their real name
        and ID number (checked by identity). Joining twice answers the flow."""
        row, parties = self.flows.load(flow_id, lock=True)
        if any(p.person_id == person_id for p in parties):
            return self.flows.flow_dict(row, parties)
        open_places = [(p.position, p.role) for p in parties if p.person_id is None]
        if not open_places:
            raise Forbidden(Reason.NOT_A_PARTY)
        named = (self.documents.get_document_content(document_id=row.document_id).get("content") or {}).get("parties")
        position = place_for(open_places, named or (), person_id, IdentityDirectory(self.identity))
        if position is None:
            raise Forbidden(Reason.NOT_A_PARTY)
        transition = F.join(to_domain(row, parties), position, person_id, now())
        parties[position].person_id = person_id
        self.flows.apply(row, parties, transition, person_id)
        self.db.commit()
        return self.flows.flow_dict(row, parties)

    @rpc
    def get_signed_pdf(self, flow_id: str) -> dict:
        """The newest PDF of the flow (hash checked on read)."""
        row, _ = self.flows.load(flow_id)
        return {"pdf": pdf_worker.b64(self.flows.current_pdf(row)), "sha256": row.current_pdf_sha256}

    # -- signing -------------------------------------------------------------
    @rpc
    def prepare_signature(self, flow_id: str, person_id: str, signature_image: str, method: str,
                          location: str | None = None) -> dict:
        """Step 1 of a signature: returns the willingness check to complete."""
        started = time.perf_counter()
        if method not in WILLINGNESS_METHODS:
            raise InvalidInput("method", "enum", "expected sms or face")
        png = _binary(signature_image, "signature_image", MAX_SIGNATURE_IMAGE)
        row, parties = self.flows.load(flow_id)
        flow = to_domain(row, parties)
        party = F.check_turn(flow, person_id, now())
        certificate = self.identity.current_certificate(person_id=person_id)
        if certificate["status"] != "good":
            raise Forbidden(Reason.CERTIFICATE_NOT_VALID)
        if self.db.session.get(RevokedCertificate, certificate["serial"]) is not None:
            raise Forbidden(Reason.CERTIFICATE_REVOKED)
        F.check_assurance(flow, certificate_level(certificate["certificate_pem"]))  # before any PDF work
        roots = self.ctx.platform.trust_roots(self.identity)
        prepared = self.pdf.run(
            pdf_worker.prepare, self.ctx.tsa_url, roots, self.flows.current_pdf(row), party.signature_field,
            certificate["certificate_pem"], tuple(certificate["chain_pem"]), png,
            flow.current == 0, f"{party.role}签署",
        )
        pending = self._pending(flow_id, person_id, "sign", prepared["digest_to_sign"], method, row.title,
                                prepared=json.dumps(prepared))
        self._sign_step_took(started, "prepare")
        return pending

    def _pending(self, flow_id: str, person_id: str, action: str, digest: str, method: str, title: str,
                 prepared: str | None = None, reason: str | None = None) -> dict:
        """Start the person's willingness check for ``digest`` and keep the action pending until it is done."""
        willingness = self.identity.start_willingness(person_id=person_id, digest=digest, method=method,
                                                      document_title=title)
        pending = PendingAction(id=str(uuid.uuid4()), flow_id=flow_id, person_id=person_id, action=action,
                                digest=digest, method=method, willingness_id=willingness["willingness_id"],
                                prepared=prepared, reason=reason, created_at=utcnow(),
                                expires_at=utcnow() + PENDING_TTL)
        self.flows.add_pending(pending)
        self.db.commit()
        # a face check's liveness challenge (the head turns to perform) goes to the person as identity gave it
        return {"pending_id": pending.id, "willingness_id": pending.willingness_id, "method": method,
                "digest": digest, "expires_at": aware(pending.expires_at).isoformat(),
                "challenge": willingness.get("challenge")}

    @rpc
    def sign(self, flow_id: str, person_id: str, pending_id: str, grant: str) -> dict:
        """Step 3 of a signature: identity signs with the grant; the flow moves on."""
        started = time.perf_counter()
        pending = self.flows.claim_pending(pending_id, person_id, ("sign",))
        if pending.flow_id != flow_id:
            raise Forbidden(Reason.NOT_YOUR_ACTION)
        row, parties = self.flows.load(flow_id, lock=True)
        flow = to_domain(row, parties)
        F.check_turn(flow, person_id, now())
        prepared = json.loads(pending.prepared)
        if prepared["input_sha256"] != row.current_pdf_sha256:
            raise Conflict(Reason.DOCUMENT_CHANGED_SINCE_PREPARE)
        # the level of the certificate that signs, as checked when the signature was prepared
        level = F.check_assurance(flow, level_of_certificate(
            x509.load_der_x509_certificate(base64.b64decode(prepared["certificate"]))))
        in_identity = self.ctx.settings.stamps_in_identity  # else pdf_worker asks the TSA at TSA.URL
        stamp = {"timestamp": True} if in_identity else {}
        signed = self.identity.sign_digest(grant=grant, person_id=person_id, digest=pending.digest, **stamp)
        roots = self.ctx.platform.trust_roots(self.identity)
        token = base64.b64decode(signed["timestamp_token"]) if in_identity else None
        # the prepared PDF is kept as its update to the flow's PDF (a row from before: whole)
        prepared_from = None if "prepared_pdf" in prepared else self.flows.current_pdf(row)
        pdf = self.pdf.run(pdf_worker.complete, self.ctx.tsa_url, roots, prepared,
                           base64.b64decode(signed["signature"]), token, prepared_from)
        transition = F.sign(flow, person_id, now())
        last = transition.flow.state is F.FlowState.COMPLETED
        if last:
            # PAdES B-LTA: revocation data for every certificate and a document time stamp, from an
            # external TSA when configured. If that TSA does not answer, nothing of this step is kept
            # (Unavailable("document_tsa")): the grant is spent, so the person confirms willingness again.
            serials = [p.certificate_serial for p in parties if p.certificate_serial]
            serials.append(signed.get("serial") or signed.get("certificate_serial"))
            pdf = self.pdf.run(pdf_worker.finalize, self.ctx.tsa_url, roots, pdf,
                               document_tsa_url=self.ctx.document_tsa_url,
                               document_tsa_roots_pem=self.ctx.document_tsa_roots_pem,
                               document_tsa_auth=self.ctx.document_tsa_auth,
                               revocation=self._revocation_data(serials))
        stored = self.flows.store_pdf(flow_id, "final" if last else "signed", pdf)
        row.current_pdf_key, row.current_pdf_sha256 = stored.key, stored.sha256
        signer = parties[flow.current]
        signer.certificate_serial = signed.get("serial") or signed.get("certificate_serial")
        signer.willingness_method = pending.method
        signer.assurance_level = level.value
        pending.used_at = utcnow()
        self.flows.apply(row, parties, transition, person_id, certificate_serial=signer.certificate_serial,
                         willingness_method=pending.method, signed_pdf_sha256=stored.sha256,
                         assurance_level=level.value, **({"loan": self.loan_on_completion(row)} if last else {}))
        if last and row.parent_flow_id is not None:
            self.settle_statement(row, person_id)  # a 还款确认书 or 借款展期协议 takes effect with it
        self.db.commit()
        self.metrics.inc("signatures", "Party signatures", method=pending.method)
        self._sign_step_took(started, "sign_final" if last else "sign")
        return self.flows.flow_dict(row, parties)

    def _revocation_data(self, serials: list[str]) -> dict | None:
        """The parties' and the TSA's OCSP responses and the root's CRL from identity in one RPC, for
        the B-LTA finalisation (else pyHanko fetches each over HTTP, through the gateway, which asks
        identity for each). None if identity cannot say now: the worker then fetches them itself."""
        try:
            answer = self.identity.revocation_data(serials=sorted(set(filter(None, serials))))
        except (Unavailable, NotFound, InvalidInput, MethodNotFound) as exc:  # MethodNotFound: an older identity
            log.warning("revocation data not had from identity (%s): the PDF worker fetches it over HTTP",
                        type(exc).__name__)
            return None
        return {"ocsp": tuple(base64.b64decode(der) for der in answer["ocsp_der"]),
                "crls": tuple(base64.b64decode(der) for der in answer["crl_der"])}

    def _sign_step_took(self, started: float, stage: str) -> None:
        """``esign_sign_step_seconds{stage}``, a successful step's time in this service: ``prepare``
        (turn, certificate, PDF prepared, willingness started), ``sign`` (identity signs, signature and
        time stamp embedded, PDF stored, flow moved on) and ``sign_final``, the last party's, which also
        makes the PDF PAdES B-LTA (revocation data, a document time stamp, maybe from an external TSA)."""
        self.metrics.observe("sign_step_seconds", time.perf_counter() - started, SIGN_STEP_DOCUMENTATION, stage=stage)

    # -- reminding (催签) -------------------------------------------------------
    @rpc
    def remind(self, flow_id: str, person_id: str) -> dict:
        """催签: another party asks that the one whose turn it is be sent the sign request again,
        at most once a day a flow (``RateLimited('reminded_today')`` with the seconds to wait)."""
        row, parties = self.flows.load(flow_id, lock=True)
        flow = to_domain(row, parties)
        F.check_reminder(flow, person_id, now())
        moment = utcnow()
        if row.last_reminded_at is not None and row.last_reminded_at + REMIND_EVERY > moment:
            wait = row.last_reminded_at + REMIND_EVERY - moment
            raise RateLimited(Reason.REMINDED_TODAY, retry_after=int(wait.total_seconds()) + 1)
        row.last_reminded_at = moment
        self.db.emit(events.SIGN_REMINDER, self.flows.event_payload(events.SIGN_REMINDER, row, parties, flow,
                                                                    person_id, requester_person_id=person_id))
        self.db.commit()
        return {"flow_id": flow_id, "reminded_person_id": flow.parties[flow.current].person_id,
                "reminded_at": aware(moment).isoformat(),
                "next_reminder_from": aware(moment + REMIND_EVERY).isoformat()}

    # -- declining and voiding ------------------------------------------------
    @rpc
    def decline(self, flow_id: str, person_id: str, reason: str) -> dict:
        row, parties = self.flows.load(flow_id, lock=True)
        self.flows.apply(row, parties, F.decline(to_domain(row, parties), person_id, reason, now()), person_id)
        self.db.commit()
        return self.flows.flow_dict(row, parties)

    def _start_void_action(self, flow_id: str, person_id: str, action: str, method: str,
                           reason: str | None) -> dict:
        if method not in WILLINGNESS_METHODS:
            raise InvalidInput("method", "enum", "expected sms or face")
        row, parties = self.flows.load(flow_id)
        flow = to_domain(row, parties)
        # check now, so the person is not sent a code for an action that cannot happen
        if action == "request_void":
            F.request_void(flow, person_id, reason or "")
        else:
            F.confirm_void(flow, person_id, now())
        certificate = self.identity.current_certificate(person_id=person_id)
        F.check_assurance(flow, certificate_level(certificate["certificate_pem"]))
        digest = F.void_statement(flow_id, row.document_sha256, action, person_id, reason)
        return self._pending(flow_id, person_id, action, digest, method, row.title, reason=reason)

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
        pending = self.flows.claim_pending(pending_id, person_id, ("request_void", "confirm_void"))
        row, parties = self.flows.load(pending.flow_id, lock=True)
        flow = to_domain(row, parties)
        if pending.action == "request_void":
            transition = F.request_void(flow, person_id, pending.reason or "")
        else:
            transition = F.confirm_void(flow, person_id, now())
        signed = self.identity.sign_digest(grant=grant, person_id=person_id, digest=pending.digest)
        pending.used_at = utcnow()
        self.flows.apply(row, parties, transition, person_id, willingness_method=pending.method,
                         statement_digest=pending.digest, statement_signature=signed["signature"],
                         certificate_serial=signed.get("serial") or signed.get("certificate_serial"))
        self.db.commit()
        return self.flows.flow_dict(row, parties)

    @rpc
    def reject_void(self, flow_id: str, person_id: str) -> dict:
        row, parties = self.flows.load(flow_id, lock=True)
        self.flows.apply(row, parties, F.reject_void(to_domain(row, parties), person_id), person_id)
        self.db.commit()
        return self.flows.flow_dict(row, parties)

    # -- jobs ----------------------------------------------------------------
    @timer(interval=5)
    def expire_flows(self) -> int:
        """Expire overdue flows; one replica at a time (lease)."""
        if not acquire(self.db.session, "expire_flows", self._holder, timedelta(seconds=30)):
            return 0
        return self.run_expiry()

    def run_expiry(self, moment: datetime | None = None) -> int:
        """Expire overdue flows and forget prepared signatures no one can use any more;
        the number of flows expired."""
        moment = moment or now()
        overdue = self.flows.overdue(moment)
        for flow_id in overdue:
            row, parties = self.flows.load(flow_id, lock=True)
            flow = to_domain(row, parties)
            if flow.state in (F.FlowState.DRAFT, F.FlowState.WAITING) and moment >= flow.expires_at:
                self.flows.apply(row, parties, F.expire(flow, moment), None)
            self.db.commit()
        cleared, deleted = self.flows.forget_prepared(moment)
        self.db.commit()
        if cleared or deleted:
            self.metrics.inc("prepared_signatures_forgotten", "Prepared signatures cleared or deleted",
                             amount=cleared + deleted)
        return len(overdue)

    @refreshes_gauges
    def count_flows(self) -> None:
        """Flows by state for ``/metrics`` (``esign_flows{state}``), counted every
        METRICS.REFRESH_SECONDS by each replica (dashboards take the largest)."""
        for state, count in self.flows.count_by_state().items():
            self.metrics.set("flows", count, "Signing flows by state", state=state)

    @timer(interval=60)
    def reconcile_document_locks(self) -> int:
        """Release documents locked for a flow that was never recorded (signing
        stopped between documents' lock and its own commit); one replica at a time."""
        if not acquire(self.db.session, "reconcile_document_locks", self._holder, timedelta(seconds=120)):
            return 0
        return self.run_lock_reconciliation(DOCUMENT_LOCK_GRACE_SECONDS)

    def run_lock_reconciliation(self, older_than_seconds: int) -> int:
        released = 0
        for lock in self.documents.signing_locks(older_than_seconds=older_than_seconds):
            if self.flows.exists(lock["flow_id"]):
                continue
            answer = self.documents.release_signing_lock(document_id=lock["document_id"], flow_id=lock["flow_id"])
            if answer["released"]:
                released += 1
                log.warning("document %s was locked for flow %s, which was never recorded: released",
                            lock["document_id"], lock["flow_id"])
        if released:
            self.metrics.inc("document_locks_released", "Document locks of flows never recorded, released",
                             amount=released)
        return released

    @rpc
    def reconcile_locks_now(self, older_than_seconds: int = 300) -> int:
        """Operations: run the lock reconciler at once (it also runs every minute)."""
        return self.run_lock_reconciliation(older_than_seconds)

    @rpc
    def expire_now(self) -> int:
        """Operations: run the expiry job at once (it also runs every 5 s)."""
        return self.run_expiry()

    # -- signing report (签约报告) ---------------------------------------------------
    @rpc
    def report(self, flow_id: str) -> dict:
        """The signed signing report of a completed or voided flow (platform Ed25519
        key, C2SP note): JSON and a Chinese PDF. A flow whose party's identity was
        disputed carries the dispute. Built and stored once per state of the flow,
        then served as stored. A cancelled flow has no report: it never took effect,
        and parties who never signed have no certificate to show."""
        signed, report_json, report_pdf, _, stored = self._signed_report(flow_id)
        return {"report": signed, "report_pdf": pdf_worker.b64(report_pdf),
                "report_json_sha256": stored["report_json"].sha256, "report_pdf_sha256": stored["report_pdf"].sha256}

    def _signed_report(self, flow_id: str) -> tuple[dict, bytes, bytes, bytes, dict]:
        """The signed report (object, JSON, PDF) of a reportable flow, the flow's signed
        PDF, and the stored report objects: those kept for the flow's current state,
        or new ones built, stored and committed now."""
        row, parties = self.flows.load(flow_id)
        if row.state not in REPORTABLE_STATES:
            raise F.state_conflict(row.state, *REPORTABLE_STATES)
        document = self.flows.current_pdf(row)
        state_key = self.flows.state_key(row)
        kept = self.flows.kept_objects(flow_id, REPORT_KINDS, state_key)
        if kept is not None:
            report_json, report_pdf = (self.flows.read_object(kept[kind]) for kind in REPORT_KINDS)
            return json.loads(report_json), report_json, report_pdf, document, kept
        awaited = {ENDING_EVENTS[row.state]: 1, **({events.FLOW_IDENTITY_DISPUTED: 1} if row.disputed_at else {}),
                   **self.loan_events_made(row)}  # every repayment and extension of an IOU, logged
        evidence = self.evidence.settled(flow_id, awaited)
        roots = self.ctx.platform.trust_roots(self.identity)
        signatures = self.pdf.run(pdf_worker.report_signatures, roots, document,
                                  {p.signature_field: p.person_id for p in parties},
                                  tsa_roots_pem=self.ctx.document_tsa_roots_pem)

        def profile_of(party):  # how each identity was checked: the proof behind the certificate it signed with
            return self.identity.report_profile(person_id=party.person_id, serial=party.certificate_serial)

        built = assemble(self.flows.flow_dict(row, parties), row.document_sha256, row.current_pdf_sha256, parties,
                         profile_of, self.flows.used_actions(flow_id), signatures, evidence, now(),
                         f"{self.ctx.public_url}/verify?flow={flow_id}")
        signed = sign_report(built, self.ctx.keys.log_signer)
        report_json = json.dumps(signed, ensure_ascii=False, sort_keys=True).encode("utf-8")
        report_pdf = self.pdf.run(pdf_worker.render_report, built)
        stored = {"report_json": self.flows.store_object(flow_id, "report_json", report_json, "application/json",
                                                          state_key=state_key),
                  "report_pdf": self.flows.store_object(flow_id, "report_pdf", report_pdf, "application/pdf",
                                                         state_key=state_key)}
        self.db.commit()
        self.metrics.inc("reports", "Signing reports made")
        return signed, report_json, report_pdf, document, stored

    @rpc
    def evidence_package(self, flow_id: str) -> dict:
        """The evidence package (证据包) of a completed or voided flow: one ZIP
        with the signed PDF, the report (JSON and PDF), the CA certificates and
        CRL, the revocation data the signatures were validated with, the log key,
        the cosigned checkpoint and the witness keys, under a manifest signed
        with the log key (:mod:`.evidence_package`). Kept in S3 like the report."""
        signed, report_json, report_pdf, document, _ = self._signed_report(flow_id)
        pki = self.identity.pki_certificates()
        crl = base64.b64decode(self.identity.crl()["crl_der"])
        validation = self.pdf.run(pdf_worker.validation_data, document)
        policy = self.ctx.witnesses.policy
        files = {
            "document.pdf": document, "report.json": report_json, "report.pdf": report_pdf,
            "pki/root.pem": pki["root_pem"].encode(), "pki/issuing.pem": pki["issuing_pem"].encode(),
            "pki/issuing.crl": crl,
            "log/public-key.txt": (self.ctx.log.public_key() + "\n").encode(),
            "log/checkpoint.txt": signed["report"]["evidence"]["checkpoint"].encode(),
            "log/witnesses.json": package.witness_policy_file(
                [{"name": w.name, "key": w.verifier.to_key_string()} for w in policy.witnesses], policy.threshold),
            "说明.txt": package.README_ZH.encode(),
        }
        if self.ctx.document_tsa_roots_pem:
            files["pki/tsa-roots.pem"] = "".join(self.ctx.document_tsa_roots_pem).encode()
        for kind, items in (("crl", validation["crls"]), ("ocsp", validation["ocsps"])):
            for i, der in enumerate(items, 1):
                files[f"revocation/{kind}-{i}.der"] = der
        data = package.build_package(flow_id, files, self.ctx.keys.log_signer, now())
        stored = self.flows.store_object(flow_id, "evidence_package", data, "application/zip")
        self.db.commit()
        self.metrics.inc("evidence_packages", "Evidence packages made")
        return {"package": pdf_worker.b64(data), "sha256": stored.sha256, "size": stored.size,
                "filename": f"evidence-{flow_id}.zip"}

    # -- verification ------------------------------------------------------------
    @rpc
    def verify(self, pdf: str) -> dict:
        """Check every signature and time stamp of a PDF against the platform
        root, and say whether the agreement is in force (``document_status``)."""
        data = _binary(pdf, "pdf", MAX_VERIFIED_PDF)
        result = self.pdf.run(pdf_worker.verify, self.ctx.platform.trust_roots(self.identity), data,
                              tsa_roots_pem=self.ctx.document_tsa_roots_pem)
        result["document_status"] = self.document_status(hashlib.sha256(data).hexdigest())
        return result

    @rpc
    def document_status(self, sha256: str) -> dict:
        """The status of the flow that produced the PDF with this SHA-256 (any
        version of it), with the leaf that set it and its inclusion proof under
        the latest checkpoint (:mod:`.status`); ``known: false`` for a PDF the
        platform never produced."""
        if not isinstance(sha256, str) or len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower()):
            raise InvalidInput("sha256", "format", "expected a SHA-256 digest as 64 hex characters")
        sha256 = sha256.lower()
        version = self.flows.document_version(sha256)
        if version is None:
            return status.unknown(sha256)
        row, parties = self.flows.load(version.flow_id)
        evidence = self.evidence.of_flow(row.id)
        policy = self.ctx.witnesses.policy
        check = check_cosignatures(evidence["checkpoint"], policy.verifiers(), policy.threshold)
        witnesses = {"witnessed": check.witnessed, "threshold": policy.threshold, "configured": check.configured,
                     "cosigned": [{"name": name, "at": datetime.fromtimestamp(ts, timezone.utc).isoformat()}
                                  for name, ts in check.valid]}
        return status.answer(sha256, version.kind, row.current_pdf_sha256 == sha256,
                             self.flows.flow_dict(row, parties), evidence, witnesses)

    # -- revocations and disputes announced by identity ----------------------------------------
    @rpc
    def certificate_revoked(self, serial: str) -> bool:
        """Whether identity has announced this certificate serial as revoked."""
        return self.db.session.get(RevokedCertificate, serial) is not None

    @handles_event("identity", events.CERTIFICATE_REVOKED)
    def on_certificate_revoked(self, event: dict) -> None:
        """Remember revoked serials so a pending flow refuses to sign with them
        even before the next CRL is fetched."""
        revoked = events.parse(events.CERTIFICATE_REVOKED, event["data"])
        self._remember_revoked(revoked.serial, revoked.person_id, revoked.reason)

    def _remember_revoked(self, serial: str, person_id: str, reason: str) -> None:
        """Once per serial, whichever announcement comes first: identity_disputed and the
        certificate_revoked of the same serial arrive together and are handled at once; a
        read-then-insert let the second fail on the key, and its event with it."""
        session = self.db.session
        session.execute(dialect_insert(session)(RevokedCertificate)
                        .values(serial=serial, person_id=person_id, reason=reason, revoked_at=utcnow())
                        .on_conflict_do_nothing(index_elements=["serial"]))

    @handles_event("identity", events.IDENTITY_DISPUTED)
    def on_identity_disputed(self, event: dict) -> None:
        """An authority-proofed person took an ID number back from the account
        that held it: cancel that account's unfinished flows, mark its ended
        ones (:func:`services.signing.flow.dispute_identity`), each with its
        event, all in one transaction with the processed-event mark."""
        try:
            disputed = events.parse(events.IDENTITY_DISPUTED, event["data"])
        except InvalidInput as exc:
            log.error("identity_disputed %s ignored: %s", event.get("event_id"), exc)
            return
        person_id = disputed.person_id
        if not person_id:
            log.error("identity_disputed %s without a person_id ignored", event.get("event_id"))
            return
        reason = disputed.reason[:64] if disputed.reason.strip() else F.IDENTITY_DISPUTED  # a listed word
        # the certificate_revoked events follow on their own; refuse the serials already
        for serial in disputed.revoked_serials:
            if serial:
                self._remember_revoked(serial, person_id, "identity_disputed")
        flow_ids = self.flows.flows_of_person(person_id)
        moment = now()
        for flow_id in flow_ids:  # sorted: one lock order for every replica
            row, parties = self.flows.load(flow_id, lock=True)
            transition = F.dispute_identity(to_domain(row, parties), person_id, reason, moment)
            if transition.events:
                self.flows.apply(row, parties, transition, None, disputed_person_id=person_id, dispute_reason=reason)
        if flow_ids:
            log.info("identity of %s disputed: %d flows cancelled or marked", person_id, len(flow_ids))


def _repayment_date(given: str | None, values: dict) -> str | None:
    """The flow's repayment date: given, or the IOU's own (it drives the due-soon
    and due-today reminders once the IOU is signed); YYYY-MM-DD."""
    if given is None:
        given = values.get("repayment_date") if isinstance(values.get("repayment_date"), str) else None
    if given is not None:
        try:
            datetime.strptime(given, "%Y-%m-%d")
        except ValueError:
            raise InvalidInput("repayment_date", "date", "expected YYYY-MM-DD") from None
    return given
