"""Render time of documents on one core: p50 ms per document and pages per second,
against a bare-reportlab floor for the same content; with ``--rpc``, also
``render()`` over RPC against the in-process render.

Usage: .venv/bin/python bench/render.py [N] [--rpc]   (default N = 30 renders per document)

Renders a typical IOU (one page) and a long rental contract (several pages,
with two attachment thumbnails) N times each, after one warm-up render that
loads the fonts. Runs in one process on one thread, so the figures are for
one core.

The floor (issue #12, target 4) is the same content drawn by reportlab's
canvas directly: every string the document shows (``DocumentContent.texts``,
the parties, sections, amount, schedule, remark) in the same fonts and sizes,
split into the same font runs, wrapped greedily by width, one line after
another, the attachment thumbnails drawn as images, the same embedded font
subsets, in as many A4 pages as it takes. No layout engine, no tables, no
checks: what the PDF costs before the renderer decides where things go.
``floor`` draws with the fonts registered as reportlab ships them; ``floor*``
with the platform's registration, which reads the glyph table in place
instead of copying it per PDF (services/common/fonts.py), so ``render /
floor*`` is the layout's own share.

``--rpc`` then starts, in this process, a SeaweedFS on free ports and the
documents service (SQLite in a temporary directory, RabbitMQ at ``AMQP_URI``
or 127.0.0.1 on a fresh virtual host made with rabbitmqctl when it is
available), creates an IOU and a rental draft from the shipped templates and
measures N ``documents.render`` calls of each (validation, rendering in the
service's worker process, the S3 put and the commit) against
``render_pdf`` of the same content in this process, in the same run; it
prints both p50s and their ratio.
"""
from __future__ import annotations

import sys

if "--rpc" in sys.argv:  # nameko's containers are greenthreads: patch before anything imports socket
    import eventlet

    eventlet.monkey_patch()

import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from PIL import Image  # noqa: E402
from pyhanko.pdf_utils.reader import PdfFileReader  # noqa: E402

from services.common.fonts import default_font_stack  # noqa: E402
from services.documents.attachments import sanitize_image  # noqa: E402
from services.documents.rendering import DocumentContent, render_pdf  # noqa: E402
from services.documents.rendering.examples import iou_example, rental_example  # noqa: E402


def photo(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1600, 1200), colour).save(out, "JPEG")
    return sanitize_image(out.getvalue()).thumbnail_jpeg


def timed(fn, runs: int) -> tuple[list[float], object]:
    fn()  # warm-up
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def stock_faces(fonts) -> dict[str, str]:
    """The platform's faces registered again as reportlab ships them (``stock-<name>``), without the
    platform's in-place font tables (services/common/fonts.py): face name -> stock face name."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    names = {}
    for loaded in fonts.faces:
        name = "stock-" + loaded.face.name
        font = TTFont(name, loaded.path, validate=0, subfontIndex=loaded.face.subfont_index)
        font.face.name = name.encode()  # reportlab keeps one font per face name: this one must be its own
        pdfmetrics.registerFont(font)
        names[loaded.face.name] = name
    return names


def floor_pdf(content, fonts, size: float = 10.5, faces: dict[str, str] | None = None) -> bytes:
    """The bare-reportlab floor: ``content``'s strings on a canvas (see the module docstring);
    ``faces`` maps the platform's face names to others to draw with (the stock ones)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen.canvas import Canvas

    out = io.BytesIO()
    canvas = Canvas(out, pagesize=A4, invariant=1)
    width, height = A4
    left, right, top, bottom = 20 * mm, width - 20 * mm, height - 20 * mm, 20 * mm
    leading = size * 1.55
    y = top

    def newline(space: float = leading) -> None:
        nonlocal y
        y -= space
        if y < bottom:
            canvas.showPage()
            y = top - space

    def draw(segments: list) -> None:  # one line: one drawString per font run on it
        x = left
        for face, text in segments:
            canvas.setFont(face, size)
            canvas.drawString(x, y, text)
            x += stringWidth(text, face, size)

    for _field, text in content.texts():
        newline()
        line, x = [], left
        for face, run in fonts.runs(text):
            face = (faces or {}).get(face, face)
            piece = ""
            for char in run:
                advance = stringWidth(char, face, size)
                if x + advance > right:
                    draw(line + [(face, piece)] if piece else line)
                    newline()
                    line, piece, x = [], "", left
                piece += char
                x += advance
            if piece:
                line.append((face, piece))
        draw(line)
    for entry in content.attachments:
        if entry.thumbnail_jpeg:
            newline(28 * mm)
            canvas.drawImage(ImageReader(io.BytesIO(entry.thumbnail_jpeg)), left, y, 28 * mm, 28 * mm,
                             preserveAspectRatio=True)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def measure(name: str, content, runs: int) -> None:
    times, pdf = timed(lambda c=content: render_pdf(c), runs)
    pages = int(PdfFileReader(io.BytesIO(pdf)).root["/Pages"]["/Count"])
    p50 = statistics.median(times)
    print(f"{name:<10} pages={pages:<2} bytes={len(pdf):<7} p50={p50 * 1000:7.1f} ms/doc  "
          f"p90={sorted(times)[int(0.9 * (runs - 1))] * 1000:7.1f} ms  "
          f"{pages / p50:6.1f} pages/s  ({p50 * 1000 / pages:.1f} ms/page)")
    fonts = default_font_stack()
    stock = stock_faces(fonts)
    for label, faces, what in (("floor", stock, "reportlab as shipped"),
                               ("floor*", None, "with the platform's font tables")):
        floor_times, floor = timed(lambda c=content, f=faces: floor_pdf(c, fonts, faces=f), runs)
        floor_pages = int(PdfFileReader(io.BytesIO(floor)).root["/Pages"]["/Count"])
        floor_p50 = statistics.median(floor_times)
        print(f"  {label:<8} pages={floor_pages:<2} bytes={len(floor):<7} p50={floor_p50 * 1000:7.1f} ms/doc  "
              f"(bare canvas, same strings and fonts; {what})   render / {label} = {p50 / floor_p50:.2f}"
              + ("   (target <= 1.5)" if label == "floor" else ""))


# ------------------------------------------------------------------ --rpc


def _rabbitmqctl(*args: str) -> bool:
    if not shutil.which("rabbitmqctl"):
        return False
    try:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
        return True
    except (subprocess.SubprocessError, OSError):
        return False


def _bench_drafts():
    """Draft values (no images) of the IOU and rental templates, valid today."""
    from tests.unit.documents.samples import VALID

    images = {"images", "property_photos", "facility_photos", "ownership_proof"}
    return {name: {k: v for k, v in VALID[name]().items() if k not in images} for name in ("iou", "rental")}


def measure_rpc(runs: int) -> None:
    from nameko.containers import ServiceContainer
    from nameko.standalone.rpc import ClusterRpcProxy

    from services.common.s3server import SeaweedPorts, SeaweedServer
    from services.documents.service import DocumentsService
    from services.documents.template import load_templates, render_input

    base = urlsplit(os.environ.get("AMQP_URI", "pyamqp://guest:guest@127.0.0.1:5672/"))
    vhost = "esign-bench-" + secrets.token_hex(4)
    made_vhost = _rabbitmqctl("add_vhost", vhost) and _rabbitmqctl(
        "set_permissions", "-p", vhost, base.username or "guest", ".*", ".*", ".*")
    amqp_uri = urlunsplit(base._replace(path="/" + vhost)) if made_vhost else urlunsplit(base)
    if not made_vhost:
        print("rabbitmqctl not usable: benchmarking on", base, "(stop any running documents service first)")
    work = Path(tempfile.mkdtemp(prefix="esign-bench-"))
    s3 = SeaweedServer(work / "s3", "bench-" + secrets.token_hex(6), secrets.token_hex(20), SeaweedPorts.free())
    s3.start()
    container = None
    config = {
        "AMQP_URI": amqp_uri, "DATA_DIR": str(work), "max_workers": 10,
        "DATABASE": {"URL": f"sqlite:///{work / 'documents.db'}", "SCHEMA": None},
        "OUTBOX": {"RELAY_INTERVAL": 1.0}, "METRICS": {"PORT": 0}, "RENDER": {"WORKERS": 1},
        "S3": {"ENDPOINT": s3.endpoint, "ACCESS_KEY": s3.access_key, "SECRET_KEY": s3.secret_key,
               "BUCKET": "esign-bench"},
        "SECRETS": {"KEK": {"file": str(work / "kek")}, "INVITE_KEY": {"file": str(work / "invite")},
                    "GENERATE_MISSING": True},
    }
    catalog = load_templates()
    try:
        container = ServiceContainer(DocumentsService, config)
        container.start()
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
            print(f"render() over RPC ({runs} runs each; one render worker process) vs in-process render_pdf:")
            for name, values in _bench_drafts().items():
                document_id = rpc.documents.create_draft(template_id=name, values=values)["document_id"]
                rpc_times, result = timed(lambda d=document_id: rpc.documents.render(document_id=d), runs)
                day = dt.date.fromisoformat(result["document_date"])
                content = DocumentContent.from_dict(
                    render_input(catalog.get(name).content(values, day), document_id, day))
                floor_times, pdf = timed(lambda c=content: render_pdf(c), runs)
                same = "same bytes" if hashlib.sha256(pdf).hexdigest() == result["pdf_sha256"] else "DIFFERENT bytes"
                rpc_p50, floor_p50 = statistics.median(rpc_times), statistics.median(floor_times)
                print(f"{name:<10} pages={result['pages']:<2} rpc p50={rpc_p50 * 1000:7.1f} ms  "
                      f"in-process p50={floor_p50 * 1000:7.1f} ms  ratio={rpc_p50 / floor_p50:5.2f}  ({same})")
    finally:
        if container is not None:
            container.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        if made_vhost:
            _rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = int(args[0]) if args else 30
    start = time.perf_counter()
    default_font_stack()
    print(f"font stack load (once per process): {(time.perf_counter() - start) * 1000:.0f} ms")
    measure("iou", iou_example(), runs)
    measure("rental", rental_example(months=36, photos=(photo((180, 40, 40)), photo((40, 40, 180)))), runs)
    if "--rpc" in sys.argv:
        measure_rpc(runs)


if __name__ == "__main__":
    main()
