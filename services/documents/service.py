"""The documents service: wires RPC and event entrypoints to the documents
domain (templates as data, validation, computed fields, PDF rendering)."""
from __future__ import annotations

import logging

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.errors import NotFound
from services.common.outbox import utcnow
from services.common.service_base import ServiceBase
from services.common.storage import Storage
from services.documents.models import Document

log = logging.getLogger(__name__)


class DocumentsService(ServiceBase):
    name = "documents"
    storage = Storage()

    @rpc
    def get_document(self, document_id: str) -> dict:
        document = self.db.session.get(Document, document_id)
        if document is None:
            raise NotFound("document", document_id)
        return {
            "id": document.id, "template_id": document.template_id,
            "template_version": document.template_version, "status": document.status,
            "pdf_sha256": document.pdf_sha256,
            "locked": document.locked_at is not None, "locked_by_flow": document.locked_by_flow,
        }

    @handles_event("signing", events.FLOW_SENT)
    def on_flow_sent(self, event: dict) -> None:
        """Signing has started on a document: from now on it is read-only."""
        data = event["data"]
        document = self.db.session.get(Document, data.get("document_id"))
        if document is None:
            log.warning("flow_sent for unknown document %s", data.get("document_id"))
            return
        if document.locked_at is None:
            document.locked_at = utcnow()
            document.locked_by_flow = data.get("flow_id")
            document.status = "locked"
            self.db.emit(events.DOCUMENT_LOCKED, {"document_id": document.id, "flow_id": data.get("flow_id")})
