"""我的文件 in documents: the drafts a person made and has not sent for signing.

A document sent for signing is locked and listed by signing, as a flow; a
draft whose flow ended without being signed (declined, expired, cancelled)
is unlocked and listed here again, to be changed and sent anew. Field values
are sealed, so each listed draft is opened to show its amount, due date and
counterparty (masked), and a search opens the person's drafts a chunk at a
time (services/common/listing.py).
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.listing import ListQuery, before_clause, collect, key
from services.common.masking import mask_name
from services.common.sealing import Keyring
from services.documents import drafts
from services.documents.catalog import Templates
from services.documents.models import Document

#: a document's statuses while it is its maker's draft (``locked`` once a flow holds it)
DRAFT_STATUSES = ("draft", "rendered")


def list_drafts(session: Session, keyring: Keyring, templates: Templates, query: ListQuery) -> dict:
    """A page of ``query.person_id``'s drafts (``{"items", "more"}``)."""
    if not query.wants("draft"):
        return {"items": [], "more": False}

    # a statement (还款确认书 …) is made and sent at once: signing lists it; one whose render failed is not a draft
    statements = sorted({template.id for template in templates.catalog if template.statement})

    def fetch(after, limit):
        statement = select(Document).where(Document.owner_person_id == query.person_id,
                                           Document.template_id.notin_(statements),
                                           Document.locked_at.is_(None), Document.status.in_(DRAFT_STATUSES),
                                           before_clause(Document.updated_at, Document.id, after))
        if query.template_id is not None:
            statement = statement.where(Document.template_id == query.template_id)
        return session.execute(statement.order_by(Document.updated_at.desc(), Document.id.desc())
                               .limit(limit)).scalars().all()

    def keep(document: Document) -> dict | None:
        template = templates.get(document.template_id, document.template_version)
        values = drafts.open_values(keyring, document.id, document.content_sealed)
        summary = template.summary(values)
        mine = next((role.label for role in template.roles
                     if values.get(template.initiator_field) == role.initiator_choice), None)
        others = [p for p in summary["parties"] if p["label"] != mine]
        if not query.matches(template.title, (p["name"] for p in others)):
            return None
        return {
            "kind": "document", "id": document.id, "flow_id": None, "document_id": document.id,
            "title": template.title, "template_id": document.template_id, "status": "draft", "my_role": mine,
            "counterparties": [{"role": p["label"], "name": mask_name(p["name"]) if p["name"] else None}
                               for p in others],
            "amount": summary["amount"], "due_date": summary["due_date"],
            "created_at": key(document.created_at, document.id)["at"],
            "updated_at": key(document.updated_at, document.id)["at"],
            "key": key(document.updated_at, document.id),
        }

    return collect(fetch, keep, lambda document: (document.updated_at, document.id), query)
