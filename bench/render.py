"""Render time of documents on one core: p50 ms per document and pages per second.

Usage: .venv/bin/python bench/render.py [N]   (default N = 30 renders per document)

Renders a typical IOU (one page) and a long rental contract (several pages,
with two attachment thumbnails) N times each, after one warm-up render that
loads the fonts. Runs in one process on one thread, so the figures are for
one core.
"""
from __future__ import annotations

import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402
from pyhanko.pdf_utils.reader import PdfFileReader  # noqa: E402

from services.documents.attachments import sanitize_image  # noqa: E402
from services.documents.fonts import default_font_stack  # noqa: E402
from services.documents.rendering import render_pdf  # noqa: E402
from services.documents.rendering.examples import iou_example, rental_example  # noqa: E402


def photo(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1600, 1200), colour).save(out, "JPEG")
    return sanitize_image(out.getvalue()).thumbnail_jpeg


def measure(name: str, content, runs: int) -> None:
    render_pdf(content)  # warm-up: font subsetting tables, imports
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        pdf = render_pdf(content)
        times.append(time.perf_counter() - start)
    pages = int(PdfFileReader(io.BytesIO(pdf)).root["/Pages"]["/Count"])
    p50 = statistics.median(times)
    print(f"{name:<10} pages={pages:<2} bytes={len(pdf):<7} p50={p50 * 1000:7.1f} ms/doc  "
          f"p90={sorted(times)[int(0.9 * (runs - 1))] * 1000:7.1f} ms  "
          f"{pages / p50:6.1f} pages/s  ({p50 * 1000 / pages:.1f} ms/page)")


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    start = time.perf_counter()
    default_font_stack()
    print(f"font stack load (once per process): {(time.perf_counter() - start) * 1000:.0f} ms")
    measure("iou", iou_example(), runs)
    measure("rental", rental_example(months=36, photos=(photo((180, 40, 40)), photo((40, 40, 180)))), runs)


if __name__ == "__main__":
    main()
