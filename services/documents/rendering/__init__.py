"""PDF rendering of documents: content model, layout, empty signature fields.

``render_pdf(DocumentContent) -> bytes`` is the entry point; see
:mod:`.content` for the JSON form of the content and :mod:`.pdf` for what
makes the bytes reproducible.
"""
from services.documents.rendering.content import (
    AttachmentEntry,
    DocumentContent,
    Party,
    ScheduleTable,
    Section,
)
from services.documents.rendering.pdf import PageLayout, check_glyphs, pdf_id_for, render_pdf

__all__ = [
    "AttachmentEntry", "DocumentContent", "Party", "ScheduleTable", "Section",
    "PageLayout", "check_glyphs", "pdf_id_for", "render_pdf",
]
