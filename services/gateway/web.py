"""The web pages (Chinese UI): five HTML pages and their static CSS and
JavaScript modules from ``services/gateway/web/``. The pages hold no business
rules and no secrets; they call the ``/api/v1`` JSON API with the session
token the browser keeps in sessionStorage.

Every page is sent with a strict Content-Security-Policy (W3C CSP Level 3):
scripts, styles and requests only from this origin, no inline code; ``blob:``
only where the PDF preview and downloads need it; ``data:``/``blob:`` images
for the selfie and signature previews and the QR code (an SVG data: URL).
"""
from __future__ import annotations

from pathlib import Path

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

router = APIRouter(include_in_schema=False)


def _page(name: str) -> Response:
    body = (WEB_DIR / name).read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


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
