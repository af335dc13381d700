"""The web pages (Chinese UI): five HTML pages and their static CSS and
JavaScript modules from ``services/gateway/web/``. The pages hold no business
rules and no secrets; they call the ``/api/v1`` JSON API, which knows them by
the session cookie (HttpOnly: no script of theirs reads it; every tab shares
it; services/gateway/session_cookie.py) and tells them who is logged in
(``GET /me``).

Each page is composed once, on first use, from ``layout.html`` (head, header
bar, ``<main>``) and the page's file, which holds only its ``<main>`` content:
``{{title}}``, ``{{script}}`` and ``{{main}}`` in the layout come from
``PAGES``; a line ``<!-- include editor.html hint="..." -->`` in a page is
replaced by that fragment, its ``{{hint}}`` filled from the marker (a fragment
may include others: the camera preview, ``camera.html``, is in the face step
and in each 意愿认证 of the flow page). Nothing dynamic goes into a page, so
nothing is escaped.

Every page is sent with a strict Content-Security-Policy (W3C CSP Level 3):
scripts, styles and requests only from this origin, no inline code; ``blob:``
only where the PDF preview and downloads need it; ``data:``/``blob:`` images
for the signature preview and the QR code (an SVG data: URL). The camera
preview is a MediaStream in a <video> (``srcObject``), which needs no source in
the policy.
"""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import NamedTuple

from fastapi import APIRouter
from fastapi.responses import Response

from services.common.errors import NotFound

WEB_DIR = Path(__file__).resolve().parent / "web"

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "frame-src 'self' blob:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # the flow id in /flows/{id} is the SMS link: never leak it to another site
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class PageSpec(NamedTuple):
    title: str  # after "电子签 · "
    script: str  # the page's module in web/


PAGES = {  # a page's file in web/ (its <main> content): its title and script
    "index.html": PageSpec("登录与实名认证", "start.js"),
    "new.html": PageSpec("新建文件", "new.js"),
    "receipt.html": PageSpec("扫码开收据", "receipt.js"),
    "flow.html": PageSpec("签署文件", "flow.js"),
    "verify.html": PageSpec("验证文件", "verify.js"),
    "files.html": PageSpec("我的文件", "files.js"),
}

# {{name}}; alone on its line, it takes a block of lines, indented like itself
_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{\{(?P<block>\w+)\}\}\n|\{\{(?P<name>\w+)\}\}", re.M)
_INCLUDE = re.compile(r'^([ \t]*)<!-- include ([\w-]+\.html)((?: \w+="[^"]*")*) -->\n', re.M)


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


def _fill(text: str, values: dict[str, str], where: str) -> str:
    """Every ``{{name}}`` in ``text`` → its value (in one pass: values are not searched)."""
    def value(match: re.Match) -> str:
        name = match["block"] or match["name"]
        if name not in values:
            raise KeyError(f"{where}: nothing for {{{{{name}}}}}")
        return _indent(values[name], match["indent"]) if match["block"] else values[name]

    return _PLACEHOLDER.sub(value, text)


def _include(match: re.Match) -> str:
    """A fragment, its ``{{name}}`` filled from the marker; then the includes it
    has itself (willingness.html has camera.html), whose markers may use those values."""
    indent, name, arguments = match.groups()
    fragment = _fill((WEB_DIR / name).read_text("utf-8"), dict(re.findall(r'(\w+)="([^"]*)"', arguments)), name)
    return _indent(_INCLUDE.sub(_include, fragment), indent)


@cache
def page_html(name: str) -> bytes:
    """The page ``name`` of ``PAGES`` as it is sent: the layout around its content."""
    spec = PAGES[name]
    main = _INCLUDE.sub(_include, (WEB_DIR / name).read_text("utf-8"))
    layout = (WEB_DIR / "layout.html").read_text("utf-8")
    return _fill(layout, {"title": spec.title, "script": spec.script, "main": main}, name).encode("utf-8")


router = APIRouter(include_in_schema=False)


def _page(name: str) -> Response:
    return Response(page_html(name), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get("/")
def start_page() -> Response:
    """Log in or register, then the real-name steps (face check, certificate)."""
    return _page("index.html")


@router.get("/new")
def new_document_page() -> Response:
    """Choose a template, fill its form, preview the PDF, start signing."""
    return _page("new.html")


@router.get("/receipts/new")
def receipt_from_invite_page() -> Response:
    """Whoever scans a person's QR code (我的二维码, ``?invite=``): a receipt with
    both parties filled from their real-name records; the rest of the form,
    then preview and start signing."""
    return _page("receipt.html")


@router.get("/flows/{flow_id}")
def flow_page(flow_id: str) -> Response:
    """The link the sign-request SMS carries: view, sign, decline, void, report."""
    return _page("flow.html")


@router.get("/files")
def files_page() -> Response:
    """我的文件: everything the person made or is a party to, found by status,
    type, title or the counterparty's name."""
    return _page("files.html")


@router.get("/verify")
def verify_page() -> Response:
    """Upload a signed PDF and see every check."""
    return _page("verify.html")


@router.get("/static/{name}")
def static_asset(name: str) -> Response:
    """A CSS or JavaScript file of the pages: only plain names in web/, no paths."""
    path = WEB_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise NotFound("static file", name)
    return Response(path.read_bytes(), media_type=media_type,
                    headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})
