"""The documents service: wires RPC and event entrypoints to the documents
domain (templates as data, validation, computed fields, PDF rendering,
attachments, receipt invites).

Rules kept here:

* a draft's values are validated on every create and update (missing
  required fields allowed until ``render``, which validates completely) and
  stored sealed; events carry ids only;
* a document is read-only once signing starts (signing calls
  ``lock_for_signing`` before it records a flow): ``update_draft``,
  ``add_attachment`` and ``render`` answer ``Conflict('document_locked')``;
  a declined, expired or cancelled flow (``signing.flow_declined``/
  ``flow_expired``/``flow_cancelled``) hands it back;
* files go to S3 before the row that references them, in one transaction
  with the change, so a failure leaves nothing half-written referenced; each
  put is recorded first as an intent (services/common/object_intents.py) that
  the change's transaction settles, so the file of a change that never
  committed is deleted by the object reconciler;
* rendering and image decoding run in worker processes, off the eventlet hub;
* the same document renders to the same bytes: its date is fixed at its first
  rendering (or given), its id is its own.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import time
import uuid

from nameko.dependency_providers import Config
from sqlalchemy import select

from services.common import events, listing
from services.common.clock import iso, today_in_china, utcnow
from services.common.entrypoints import BoundedRpcProxy, handles_event, rpc
from services.common.errors import Conflict, EsignError, InvalidInput, NotFound
from services.common.object_intents import ObjectReconciliation
from services.common.reasons import Reason
from services.common.service_base import ServiceBase
from services.common.storage import Storage
from services.common.wire import decode_base64
from services.documents import drafts, my_files
from services.documents.attachments import DEFAULT_POLICY, sanitize_image
from services.documents.catalog import TemplatesProvider
from services.documents.fields import Rejected, check_text
from services.documents.invite import invite_qr_svg, make_invite, read_invite
from services.documents.models import STORED_OBJECTS, Attachment, Document
from services.documents.render_pool import RenderPoolProvider
from services.documents.secrets import DocumentKeysProvider, load_keys
from services.documents.template import Template, render_input
from services.documents.validation import ValidationFailed

log = logging.getLogger(__name__)

RECEIPT_TEMPLATE = "receipt"
INVITE_PATH = "/receipts/new"
INVITE_TTL_SECONDS = (60, 30 * 86400)
PDF_PREFIX = "pdf/"
ATTACHMENT_PREFIX = "attachments/"
THUMBNAIL_PREFIX = "thumbnails/"


class DocumentsService(ObjectReconciliation, ServiceBase):
    name = "documents"
    config = Config()
    # objects encrypted under the service's KEK, put through intents (an object of a change that never
    # committed is deleted by the reconciler)
    storage = Storage(lambda config: load_keys(config).keyring, references=STORED_OBJECTS)
    templates = TemplatesProvider()
    keys = DocumentKeysProvider()
    renderer = RenderPoolProvider()
    identity = BoundedRpcProxy("identity")

    # -- templates ----------------------------------------------------------
    @rpc
    def list_templates(self) -> list:
        """The newest version of every template, as a form needs it."""
        latest = {}
        for template in self.templates.catalog:
            if not template.statement:  # those the platform makes (create_statement)
                latest[template.id] = template  # the catalog iterates by (id, version)
        return [dict(t.describe(), sha256=self.templates.sha256(t)) for t in latest.values()]

    # -- drafts ---------------------------------------------------------------
    @rpc
    def create_draft(self, template_id: str, values: dict, initiator_role: str | None = None,
                     owner_person_id: str | None = None) -> dict:
        """A new draft of the newest version of ``template_id``. Values may be
        incomplete; each one given must keep its field's rules."""
        return self._new_draft(template_id, values, initiator_role, owner_person_id)

    @rpc
    def create_statement(self, template_id: str, values: dict, owner_person_id: str) -> dict:
        """For signing only (never exposed by the gateway): a statement about a
        signed document (a 还款确认书, a 借款展期协议: ``statement: true``
        templates) made and rendered at once, as ``render`` answers. Every rule
        of its template holds, the rate cap of an extension's date included."""
        try:
            template = self.templates.get(template_id)
        except LookupError:
            raise NotFound("template", template_id) from None
        if not template.statement:
            raise InvalidInput("template_id", "statement_template", "expected a template the platform makes")
        draft = self._new_draft(template_id, values, None, owner_person_id, statement=True)
        return self.render(document_id=draft["document_id"])

    def _new_draft(self, template_id: str, values: dict, initiator_role: str | None, owner_person_id: str | None,
                   masked_persons: tuple[str, ...] = (), statement: bool = False) -> dict:
        try:
            template = self.templates.get(template_id)
        except LookupError:
            raise NotFound("template", template_id) from None
        if template.statement and not statement:
            raise InvalidInput("template_id", "made_by_platform",
                               f"{template.title} is made by the platform from a signed document, not as a draft")
        if owner_person_id is not None and not 0 < len(owner_person_id) <= 64:
            raise InvalidInput("owner_person_id", "max_length", "expected 1 to 64 characters")
        values = dict(values)
        if initiator_role is not None:
            values[template.initiator_field] = self._initiator_choice(template, initiator_role, values)
        drafts.refuse_image_values(template, values)
        normalised = self._validate(template, values, today_in_china(), complete=False, operation="create")
        document_id = str(uuid.uuid4())
        now = utcnow()
        document = Document(
            id=document_id, template_id=template.id, template_version=template.version,
            template_sha256=self.templates.sha256(template), status="draft",
            content_sealed=drafts.seal_values(self.keys.keyring, document_id, normalised),
            initiator_role=self._initiator_role_id(template, normalised),
            owner_person_id=owner_person_id, created_at=now, updated_at=now,
            masked_persons=json.dumps(list(masked_persons)) if masked_persons else None,
        )
        self.db.session.add(document)
        self.db.emit(events.DOCUMENT_CREATED, events.DocumentCreated(document_id=document_id, template_id=template.id))
        self.db.commit()
        self.metrics.inc("documents_created", "Documents created by template", template=template.id)
        return self._summary(document, template, normalised, [])

    @rpc
    def update_draft(self, document_id: str, values: dict) -> dict:
        """Merge ``values`` into the draft (a key set to null removes it). A
        change after rendering sets the document back to draft (its PDF no
        longer matches); refused once signing started."""
        document = self._editable(document_id)
        template = self._template_of(document)
        drafts.refuse_image_values(template, values)
        attachments = self._attachments(document_id)
        stored = drafts.open_values(self.keys.keyring, document_id, document.content_sealed)
        merged = drafts.merge_values(stored, values)
        normalised = self._validate(template, drafts.with_attachments(template, merged, attachments),
                                    today_in_china(), complete=False, operation="update")
        normalised = drafts.without_images(template, normalised)
        if normalised != stored:
            document.content_sealed = drafts.seal_values(self.keys.keyring, document_id, normalised)
            document.initiator_role = self._initiator_role_id(template, normalised)
            self._changed(document)
            self.db.emit(events.DOCUMENT_UPDATED, events.DocumentUpdated(document_id=document_id, change="values"))
        self.db.commit()
        return self._summary(document, template, normalised, attachments)

    @rpc
    def add_attachment(self, document_id: str, image: str, label: str, field: str | None = None) -> dict:
        """Attach one image (base64 JPEG/PNG/WebP, checked by content, EXIF
        stripped) to an image field (default: the template's first). The image
        and its thumbnail are stored in S3 before the row listing them."""
        data = decode_base64(image, "image", DEFAULT_POLICY.max_bytes)
        document = self._editable(document_id)
        template = self._template_of(document)
        images = drafts.images_field_for(template, field)
        try:
            label = check_text(label, 1, images.caption_max_chars, False, "label")
        except Rejected as exc:
            raise InvalidInput("label", exc.rule, exc.message) from None
        clean = self.renderer.run(sanitize_image, data, "image")
        attachments = self._attachments(document_id)
        existing = next((a for a in attachments if a.sha256 == clean.sha256), None)
        if existing is not None:  # the same image again: nothing to add
            return self._attachment_view(existing)
        if sum(1 for a in attachments if a.field == images.name) >= images.max_items:
            raise InvalidInput(images.name, "max_items", f"{images.name} holds at most {images.max_items} images")
        stored = self.storage.put(clean.data, owner_id=document_id, prefix=ATTACHMENT_PREFIX, content_type=clean.mime)
        thumbnail = self.storage.put(clean.thumbnail_jpeg, owner_id=document_id, prefix=THUMBNAIL_PREFIX,
                                     content_type="image/jpeg")
        attachment = Attachment(
            document_id=document_id, field=images.name, sha256=clean.sha256, label=label, mime=clean.mime,
            width=clean.width, height=clean.height, size=len(clean.data), object_key=stored.key,
            thumbnail_key=thumbnail.key, created_at=utcnow(),
        )
        self.db.session.add(attachment)
        self._changed(document)
        self.db.emit(events.DOCUMENT_UPDATED, events.DocumentUpdated(document_id=document_id, change="attachment"))
        self.db.commit()
        self.metrics.inc("document_attachments", "Images attached to documents", template=template.id)
        return self._attachment_view(attachment)

    # -- rendering ------------------------------------------------------------
    @rpc
    def render(self, document_id: str, document_date: str | None = None, owner_person_id: str | None = None) -> dict:
        """Validate completely, render the PDF in a worker process, store it in
        S3, then record its key and hash. The document date is the one given,
        else the date of the first rendering, so a re-rendering is identical.
        ``owner_person_id`` (the gateway's caller): anyone else's document is
        NotFound, before anything about it is told."""
        started = time.perf_counter()
        document = self._editable(document_id, owner_person_id)
        template = self._template_of(document)
        outcome = "internal_error"
        try:
            day = drafts.parse_document_date(document_date) or document.document_date or today_in_china()
            attachments = self._attachments(document_id)
            values = drafts.with_attachments(
                template, drafts.open_values(self.keys.keyring, document_id, document.content_sealed), attachments)
            content = self._content(template, values, day, operation="render")
            content = drafts.mask_persons(content, values, json.loads(document.masked_persons or "[]"))
            data = render_input(content, document_id, day)
            thumbnails = {a.sha256: a.thumbnail_key for a in attachments}
            for entry in data["attachments"]:
                thumbnail = self.storage.get(thumbnails[entry["sha256"]])
                entry["thumbnail_jpeg"] = base64.b64encode(thumbnail).decode("ascii")
            try:
                rendered = self.renderer.render(data)
            except InvalidInput as exc:
                raise InvalidInput(drafts.template_field_path(template, exc.field), exc.rule, exc.message) from None
            stored = self.storage.put(rendered.pdf, owner_id=document_id, prefix=PDF_PREFIX,
                                      content_type="application/pdf")
            document.pdf_key = stored.key
            document.pdf_sha256 = stored.sha256
            document.pdf_pages = rendered.pages
            document.document_date = day
            document.status = "rendered"
            document.updated_at = utcnow()
            self.db.emit(events.DOCUMENT_UPDATED, events.DocumentUpdated(document_id=document_id, change="rendered"))
            self.db.commit()
            outcome = "ok"
        except EsignError as exc:
            outcome = exc.code
            raise
        finally:
            self.metrics.inc("document_renders", "Document renderings by outcome", template=template.id,
                             outcome=outcome)
            self.metrics.observe("document_render_seconds", time.perf_counter() - started,
                                 "Time to render and store a document's PDF", template=template.id)
        return {
            "document_id": document_id, "pdf_sha256": stored.sha256, "pdf_key": stored.key,
            "pages": rendered.pages, "document_date": day.isoformat(),
            "signature_fields": [p["signature_field"] for p in content["parties"]],
            "parties": [{"role": p["role"], "label": p["label"], "signature_field": p["signature_field"],
                         "initiator": p["initiator"]} for p in content["parties"]],
        }

    # -- reading --------------------------------------------------------------
    @rpc
    def get_document(self, document_id: str) -> dict:
        """Overview of a document, its persons masked."""
        document = self._document(document_id)
        template = self._template_of(document)
        values = drafts.open_values(self.keys.keyring, document_id, document.content_sealed)
        return self._summary(document, template, values, self._attachments(document_id))

    @rpc
    def get_document_content(self, document_id: str, owner_person_id: str | None = None) -> dict:
        """The full values and, when complete, the content as rendered: for
        the parties' own view (the gateway decides who may see it; with
        ``owner_person_id``, anyone else's document is NotFound)."""
        document = self._document(document_id, owner_person_id=owner_person_id)
        template = self._template_of(document)
        values = drafts.with_attachments(
            template, drafts.open_values(self.keys.keyring, document_id, document.content_sealed),
            self._attachments(document_id))
        day = document.document_date or today_in_china()
        try:
            content, violations = template.content(values, day), []
        except ValidationFailed as exc:
            content, violations = None, [v.to_dict() for v in exc.violations]
        return {"document_id": document_id, "template_id": document.template_id,
                "template_version": document.template_version, "status": document.status,
                "values": values, "content": content, "violations": violations,
                "summary": template.summary(values), "pdf_sha256": document.pdf_sha256}

    @rpc
    def list_files(self, person_id: str, limit: int = listing.DEFAULT_PAGE, statuses: list | None = None,
                   template_id: str | None = None, q: str | None = None, before: dict | None = None) -> dict:
        """我的文件: a page of the drafts ``person_id`` made and has not sent
        for signing (status ``draft``; once sent, a document is signing's
        flow), newest first (services/common/listing.py); ``{"items", "more"}``."""
        query = listing.ListQuery.parse(person_id, limit, statuses, template_id, q, before)
        return my_files.list_drafts(self.db.session, self.keys.keyring, self.templates, query)

    @rpc
    def party_contact(self, document_id: str, role: str) -> dict:
        """For notify only (never exposed by the gateway): the phone and name
        the document gives a party (``role`` by id or label), to invite a
        counterparty who has not registered yet."""
        document = self._document(document_id)
        template = self._template_of(document)
        values = drafts.open_values(self.keys.keyring, document_id, document.content_sealed)
        for candidate in template.roles:
            if role in (candidate.id, candidate.label):
                person = values.get(candidate.person_field) or {}
                if not person.get("phone"):
                    raise NotFound("party_contact", role)
                return {"phone": person["phone"], "name": person.get("name") or ""}
        raise InvalidInput("role", "document_role", "expected one of "
                           + "、".join(candidate.label for candidate in template.roles))

    @rpc
    def get_pdf(self, document_id: str) -> dict:
        """The rendered PDF (base64), read from S3 and checked against its recorded SHA-256."""
        document = self._document(document_id)
        if not document.pdf_key:
            raise NotFound("pdf", document_id)
        pdf = self.storage.get(document.pdf_key, sha256=document.pdf_sha256)
        return {"document_id": document_id, "pdf": base64.b64encode(pdf).decode("ascii"),
                "sha256": document.pdf_sha256, "pages": document.pdf_pages}

    # -- receipt invites --------------------------------------------------------
    @rpc
    def make_receipt_invite(self, person_id: str, role: str, ttl_seconds: int = 86400) -> dict:
        """A signed link (and its QR code) opening a receipt with ``person_id``
        as payee or payer, valid for ``ttl_seconds``."""
        low, high = INVITE_TTL_SECONDS
        if not low <= ttl_seconds <= high:
            raise InvalidInput("ttl_seconds", "range", f"expected {low} to {high} seconds")
        expires_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0) + _dt.timedelta(seconds=ttl_seconds)
        base_url = str(self.config.get("PUBLIC_URL") or "http://127.0.0.1:8000").rstrip("/") + INVITE_PATH
        url = make_invite(person_id, role, expires_at, self.keys.invite_key, base_url)
        return {"url": url, "qr_svg": invite_qr_svg(url), "expires_at": expires_at.isoformat()}

    @rpc
    def open_receipt_invite(self, token: str) -> dict:
        """Check an invite's signature and expiry: who invites (masked), on which side."""
        invite = read_invite(token, self.keys.invite_key, _dt.datetime.now(_dt.timezone.utc))
        inviter = self.identity.person_status(person_id=invite.person_id)  # masked: no ID number needed here
        return {"person_id": invite.person_id, "role": invite.role, "role_label": invite.role_label,
                "template_id": RECEIPT_TEMPLATE, "expires_at": invite.expires_at.isoformat(),
                "inviter_name_masked": inviter["name_masked"]}

    @rpc
    def create_draft_from_invite(self, token: str, values: dict, owner_person_id: str) -> dict:
        """A receipt draft opened from a QR invite by ``owner_person_id``: the
        inviter on the invite's side and the owner on the other, both filled
        from their real-name records; the owner starts it. ``values`` holds
        the other fields only (amount, reason, time, remark). The inviter agreed
        to nothing yet: the PDF the owner previews and signs shows the inviter's
        ID number and phone masked (signing still binds the inviter by the full
        record, and the certificate and report name them)."""
        invite = read_invite(token, self.keys.invite_key, _dt.datetime.now(_dt.timezone.utc))
        if invite.person_id == owner_person_id:
            raise InvalidInput("invite", "own_invite", "this is your own QR code: send it to the other party")
        template = self.templates.get(RECEIPT_TEMPLATE)
        inviter_role = next(role for role in template.roles if role.id == invite.role)
        owner_role = next(role for role in template.roles if role.id != invite.role)
        for field in (inviter_role.person_field, owner_role.person_field, template.initiator_field):
            if field in values:
                raise InvalidInput(f"values.{field}", "from_invite", "filled from the real-name records")
        filled = dict(values)
        filled[inviter_role.person_field] = self.identity.party_details(person_id=invite.person_id)
        filled[owner_role.person_field] = self.identity.party_details(person_id=owner_person_id)
        return self._new_draft(RECEIPT_TEMPLATE, filled, owner_role.initiator_choice, owner_person_id,
                               masked_persons=(inviter_role.person_field,))

    # -- signing's lock ---------------------------------------------------------
    # Signing locks a document synchronously before it records a flow (there is
    # no lock on the flow_sent event: arriving after a decline, it would lock
    # a document that had just been handed back).
    @rpc
    def lock_for_signing(self, document_id: str, flow_id: str, pdf_sha256: str | None = None,
                         ended_flows: list[str] | None = None, with_pdf: bool = False) -> dict:
        """For signing, before it records a flow: make the document read-only
        for ``flow_id`` if its PDF is still the one the flow will sign
        (``pdf_sha256``; Conflict ``document_changed`` otherwise), or, without
        it, the PDF it has now. A document locked by an
        earlier flow is handed over only if signing names that flow among
        ``ended_flows`` (declined, expired, voided or cancelled); any other lock is a
        Conflict ``document_in_flow``. Idempotent for the same flow.

        ``with_pdf``: the answer also carries the PDF locked (base64, as
        :meth:`get_pdf` gives it), read before the lock commits, so signing
        needs no ``get_pdf`` first (an RPC per flow; a documents older than
        this answers InvalidInput ``with_pdf`` ``unexpected``)."""
        document = self._document(document_id, for_update=True)
        answer = {"document_id": document_id, "locked_by_flow": flow_id}
        changed = False
        if document.locked_by_flow != flow_id:
            if document.locked_at is not None and document.locked_by_flow not in (ended_flows or []):
                raise Conflict(Reason.DOCUMENT_IN_FLOW)
            if document.pdf_sha256 is None or not document.pdf_key:
                if pdf_sha256 is None:
                    raise NotFound("pdf", document_id)
                raise Conflict(Reason.DOCUMENT_CHANGED)
            if pdf_sha256 is not None and document.pdf_sha256 != pdf_sha256:
                raise Conflict(Reason.DOCUMENT_CHANGED)
            document.locked_at = utcnow()
            document.locked_by_flow = flow_id
            document.status = "locked"
            self.db.emit(events.DOCUMENT_LOCKED, events.DocumentLocked(document_id=document_id, flow_id=flow_id))
            changed = True
        if with_pdf:  # read under the row lock, before it commits: S3 away leaves the document as it was
            pdf = self.storage.get(document.pdf_key, sha256=document.pdf_sha256)
            answer.update(pdf=base64.b64encode(pdf).decode("ascii"), sha256=document.pdf_sha256,
                          pages=document.pdf_pages)
        if changed:
            self.db.commit()
        return answer

    @rpc
    def release_signing_lock(self, document_id: str, flow_id: str) -> dict:
        """For signing, when a flow it locked the document for was not
        recorded after all: editable again. Only that flow's lock is released."""
        document = self._document(document_id, for_update=True)
        released = document.locked_by_flow == flow_id
        if released:
            self._unlock(document)
            self.db.commit()
        return {"document_id": document_id, "released": released}

    @rpc
    def signing_locks(self, older_than_seconds: int = 300, limit: int = 100) -> list[dict]:
        """For signing's reconciler: documents locked for a flow more than
        ``older_than_seconds`` ago (a flow that was never recorded leaves one)."""
        if not 0 <= older_than_seconds <= 86_400 * 365 or not 1 <= limit <= 1000:
            raise InvalidInput("older_than_seconds", "range", "expected 0..31536000 seconds and 1..1000 rows")
        cutoff = utcnow() - _dt.timedelta(seconds=older_than_seconds)
        rows = self.db.session.execute(
            select(Document).where(Document.locked_by_flow.is_not(None), Document.locked_at <= cutoff)
            .order_by(Document.locked_at).limit(limit)).scalars()
        return [{"document_id": row.id, "flow_id": row.locked_by_flow, "locked_at": iso(row.locked_at)}
                for row in rows]

    # -- events -----------------------------------------------------------------
    @handles_event("signing", events.FLOW_DECLINED)
    def on_flow_declined(self, event: dict) -> None:
        """A declined flow hands the document back to its maker: it may be
        corrected and sent again (the declined flow keeps its own copy)."""
        self._unlock_after(event, events.FLOW_DECLINED)

    @handles_event("signing", events.FLOW_EXPIRED)
    def on_flow_expired(self, event: dict) -> None:
        """Likewise when nobody signed in time."""
        self._unlock_after(event, events.FLOW_EXPIRED)

    @handles_event("signing", events.FLOW_CANCELLED)
    def on_flow_cancelled(self, event: dict) -> None:
        """Likewise when the platform cancelled the flow because a party's
        identity was disputed: the maker may send it again to the right person."""
        self._unlock_after(event, events.FLOW_CANCELLED)

    def _unlock_after(self, event: dict, event_type: str) -> None:
        try:
            ended = events.parse(event_type, event["data"])
        except InvalidInput as exc:  # it names no lock to release
            log.error("signing.%s %s ignored: %s", event_type, event.get("event_id"), exc)
            return
        document = self.db.session.get(Document, ended.document_id, with_for_update=True)
        if document is not None and document.locked_by_flow == ended.flow_id:  # not if a newer flow holds it
            self._unlock(document)
            self.db.emit(events.DOCUMENT_UPDATED, events.DocumentUpdated(document_id=document.id, change="unlocked"))

    @staticmethod
    def _unlock(document: Document) -> None:
        document.locked_at = None
        document.locked_by_flow = None
        document.status = "rendered" if document.pdf_key else "draft"

    # -- wiring helpers ---------------------------------------------------------
    def _document(self, document_id: str, for_update: bool = False, owner_person_id: str | None = None) -> Document:
        """The document; with ``owner_person_id``, only if that person made it (NotFound
        otherwise, as for no document: an id reveals nothing to anyone else)."""
        document = self.db.session.get(Document, document_id, with_for_update=for_update or None)
        if document is None or (owner_person_id is not None and document.owner_person_id != owner_person_id):
            raise NotFound("document", document_id)
        return document

    def _editable(self, document_id: str, owner_person_id: str | None = None) -> Document:
        """The document, row-locked against a concurrent lock_for_signing; refused once locked."""
        document = self._document(document_id, for_update=True, owner_person_id=owner_person_id)
        if document.locked_at is not None:
            raise Conflict(Reason.DOCUMENT_LOCKED)
        return document

    def _template_of(self, document: Document) -> Template:
        try:
            return self.templates.get(document.template_id, document.template_version)
        except LookupError:
            raise NotFound("template", f"{document.template_id} v{document.template_version}") from None

    def _attachments(self, document_id: str) -> list[Attachment]:
        return list(self.db.session.execute(
            select(Attachment).where(Attachment.document_id == document_id).order_by(Attachment.id)).scalars())

    def _validate(self, template: Template, values: dict, today: _dt.date, *, complete: bool, operation: str) -> dict:
        try:
            return template.validate(values, today, complete=complete)
        except ValidationFailed as exc:
            self._count_violations(template, exc, operation)
            raise

    def _content(self, template: Template, values: dict, day: _dt.date, *, operation: str) -> dict:
        try:
            return template.content(values, day)
        except ValidationFailed as exc:
            self._count_violations(template, exc, operation)
            raise

    def _count_violations(self, template: Template, exc: ValidationFailed, operation: str) -> None:
        for violation in exc.violations:
            self.metrics.inc("document_validation_failures", "Field rule violations by rule",
                             template=template.id, rule=violation.rule, operation=operation)

    def _changed(self, document: Document) -> None:
        """Values or attachments changed: a PDF made before no longer shows the document."""
        document.status = "draft"
        document.pdf_key = None
        document.pdf_sha256 = None
        document.pdf_pages = None
        document.updated_at = utcnow()

    @staticmethod
    def _initiator_choice(template: Template, initiator_role: str, values: dict) -> str:
        """``initiator_role`` as a role id (lender) or the template's choice (出借方)."""
        choice = next((r.initiator_choice for r in template.roles if initiator_role in (r.id, r.initiator_choice)),
                      None)
        if choice is None:
            expected = ", ".join(r.id for r in template.roles)
            raise InvalidInput("initiator_role", "enum", f"expected one of {expected}")
        given = values.get(template.initiator_field)
        if given is not None and given != choice:
            raise InvalidInput(template.initiator_field, "conflict", "differs from initiator_role")
        return choice

    @staticmethod
    def _initiator_role_id(template: Template, values: dict) -> str | None:
        choice = values.get(template.initiator_field)
        return next((r.id for r in template.roles if r.initiator_choice == choice), None)

    @staticmethod
    def _attachment_view(attachment: Attachment) -> dict:
        return {"sha256": attachment.sha256, "field": attachment.field, "label": attachment.label,
                "mime": attachment.mime, "width": attachment.width, "height": attachment.height,
                "size": attachment.size}

    def _summary(self, document: Document, template: Template, values: dict, attachments: list) -> dict:
        return {
            "document_id": document.id, "id": document.id,
            "template_id": document.template_id, "template_version": document.template_version,
            "template_sha256": document.template_sha256, "title": template.title,
            "status": document.status, "locked": document.locked_at is not None,
            "locked_by_flow": document.locked_by_flow,
            "initiator_role": document.initiator_role, "owner_person_id": document.owner_person_id,
            "pdf_sha256": document.pdf_sha256, "pdf_key": document.pdf_key, "pages": document.pdf_pages,
            "document_date": document.document_date.isoformat() if document.document_date else None,
            "parties": drafts.masked_parties(template, values),
            "attachments": [self._attachment_view(a) for a in attachments],
            "created_at": document.created_at.isoformat() if document.created_at else None,
            "updated_at": document.updated_at.isoformat() if document.updated_at else None,
        }
