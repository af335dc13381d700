"""PDF rendering off the eventlet hub, in a pool of worker processes.

reportlab is pure Python: rendering in the service process would hold the
GIL and stop every greenthread (other RPCs, AMQP heartbeats) for the 20–100 ms
a document takes. So each rendering runs in a separate process
(``concurrent.futures.ProcessPoolExecutor``, ``spawn`` start method, so a child
never inherits the parent's monkey-patched eventlet state), created on first
use and shut down when the container stops.

The worker is waited for with an eventlet ``Event`` set by the future's
done-callback: under ``eventlet.monkey_patch()`` the executor's manager thread
is a greenthread of the same hub, so the callback may wake the worker
directly (``Future.result()`` from a tpool thread would cross OS threads on an
eventlet lock and fail).

What crosses to the child is the JSON form of
:class:`~services.documents.rendering.content.DocumentContent` (plain data);
what comes back is the PDF bytes and its page count, or the renderer's
``InvalidInput`` (e.g. ``glyph_missing``), which pickles as itself.
"""
from __future__ import annotations

import io
import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from eventlet.event import Event
from nameko.extensions import DependencyProvider

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


class RenderPool:
    """A lazily started process pool; ``render``/``run`` block only the calling greenthread.
    Besides rendering, attachments are decoded and re-encoded here too
    (``sanitize_image``: up to 40 megapixels)."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_up)
            return self._executor

    def render(self, content: dict) -> RenderedPdf:
        return self.run(render_document, content)

    def run(self, fn, *args):
        """``fn(*args)`` in a worker process (``fn`` and its arguments must pickle)."""
        future = self._pool().submit(fn, *args)
        done = Event()
        future.add_done_callback(lambda _f: done.send(None) if not done.ready() else None)
        done.wait()
        return future.result()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)


class RenderPoolProvider(DependencyProvider):
    """nameko dependency: the container's render pool (config ``RENDER.WORKERS``)."""

    def setup(self) -> None:
        settings = self.container.config.get("RENDER") or {}
        self.pool = RenderPool(int(settings.get("WORKERS") or 2))

    def stop(self) -> None:
        self.pool.shutdown(wait=True)

    def kill(self) -> None:
        self.pool.shutdown(wait=False)

    def get_dependency(self, worker_ctx) -> RenderPool:
        return self.pool
