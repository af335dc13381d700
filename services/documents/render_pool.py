"""PDF rendering off the eventlet hub, in a pool of worker processes.

reportlab is pure Python: rendering in the service process would hold the
GIL and stop every greenthread (other RPCs, AMQP heartbeats) for the 20–100 ms
a document takes. So each rendering runs in a separate process
(``concurrent.futures.ProcessPoolExecutor``, ``spawn`` start method, so a child
never inherits the parent's monkey-patched eventlet state), created on first
use and shut down when the container stops.

The pool is the platform's :class:`~services.common.offload.WorkerPool`
(the waiting greenthread polls the future and yields to the hub meanwhile).

What crosses to the child is the JSON form of
:class:`~services.documents.rendering.content.DocumentContent` (plain data);
what comes back is the PDF bytes and its page count, or the renderer's
``InvalidInput`` (e.g. ``glyph_missing``), which pickles as itself.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from services.common.offload import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedPdf:
    pdf: bytes
    pages: int


def render_document(content: dict) -> RenderedPdf:
    """In a worker process: JSON content → reproducible PDF bytes and page count."""
    from services.documents.rendering import DocumentContent, render_pdf

    pdf = render_pdf(DocumentContent.from_dict(content))
    return RenderedPdf(pdf, count_pages(pdf))


def count_pages(pdf: bytes) -> int:
    from pyhanko.pdf_utils.reader import PdfFileReader

    return int(PdfFileReader(io.BytesIO(pdf)).root["/Pages"]["/Count"])


def _warm_up() -> None:
    """Load the fonts once per worker process, not in the first request."""
    from services.common.fonts import default_font_stack

    default_font_stack()


class RenderPool(WorkerPool):
    """The render workers (fonts loaded once per process); ``render``/``run``
    block only the calling greenthread. Besides rendering, attachments are
    decoded and re-encoded here too (``sanitize_image``: up to 16 megapixels)."""

    def __init__(self, workers: int, timeout: float = 120.0):
        super().__init__(max(1, int(workers)), initializer=_warm_up, timeout=timeout, name="documents.render")

    def render(self, content: dict) -> RenderedPdf:
        return self.run(render_document, content)


class RenderPoolProvider(DependencyProvider):
    """nameko dependency: the container's render pool (config ``RENDER.WORKERS``)."""

    def setup(self) -> None:
        settings = self.container.config.get("RENDER") or {}
        self.pool = RenderPool(int(settings.get("WORKERS") or 2), float(settings.get("TIMEOUT") or 120))

    def stop(self) -> None:
        self.pool.shutdown(wait=True)

    def kill(self) -> None:
        self.pool.shutdown(wait=False)

    def get_dependency(self, worker_ctx) -> RenderPool:
        return self.pool
