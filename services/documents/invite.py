"""QR invites: a signed, expiring link that opens a receipt (收据) prefilled
with one person as payee (收款人) or payer (付款人), for whoever scans it.

Token: the platform's signed token (services/common/tokens.py:
``base64url(payload) "." base64url(HMAC-SHA256(key, context || payload))``). The payload is
compact JSON ``{"v":1,"p":person_id,"r":role,"exp":unix seconds}``. The HMAC
input starts with a fixed context string so a MAC made with the same key for
another purpose can never pass as an invite. The token carries only the
person's id, never a name, ID number or phone number: a QR code is public.

The QR code (ISO/IEC 18004) is drawn with segno, error correction level M.
"""
from __future__ import annotations

import datetime
import io
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import segno

from services.common.errors import Forbidden, InvalidInput
from services.common.reasons import Reason
from services.common.tokens import read_token, sign_token

TOKEN_VERSION = 1
MAC_CONTEXT = b"esign/receipt-invite/v1\x00"
QUERY_PARAMETER = "invite"
#: 收款人 payee, 付款人 payer: the side of the receipt the inviting person takes
ROLES = {"payee": "收款人", "payer": "付款人"}
PERSON_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Invite:
    person_id: str
    role: str
    expires_at: datetime.datetime

    @property
    def role_label(self) -> str:
        return ROLES[self.role]


def _unix_seconds(moment: datetime.datetime, field: str) -> int:
    if moment.tzinfo is None:
        raise InvalidInput(field, "timezone", "expected a timezone-aware datetime, found a naive one")
    return int(moment.timestamp())


def make_token(person_id: str, role: str, expires_at: datetime.datetime, key: bytes) -> str:
    if not PERSON_ID.match(person_id):
        raise InvalidInput("person_id", "format", "expected 1-64 characters of A-Z a-z 0-9 _ -")
    if role not in ROLES:
        raise InvalidInput("role", "choice", f"expected one of {', '.join(sorted(ROLES))}")
    _unix_seconds(expires_at, "expires_at")
    return sign_token({"v": TOKEN_VERSION, "p": person_id, "r": role}, expires_at, key, MAC_CONTEXT)


def make_invite(person_id: str, role: str, expires_at: datetime.datetime, key: bytes, base_url: str) -> str:
    """The invite link: ``base_url`` with ``?invite=<token>`` added (other query
    parameters kept)."""
    token = make_token(person_id, role, expires_at, key)
    scheme, netloc, path, query, fragment = urlsplit(base_url)
    if scheme not in ("https", "http") or not netloc:
        raise InvalidInput("base_url", "url", "expected an absolute http(s) URL")
    query = f"{query}&{urlencode({QUERY_PARAMETER: token})}" if query else urlencode({QUERY_PARAMETER: token})
    return urlunsplit((scheme, netloc, path, query, fragment))


def token_from_url(url: str) -> str:
    """The token in an invite link; ``Forbidden`` if there is none."""
    values = parse_qs(urlsplit(url).query).get(QUERY_PARAMETER, [])
    if len(values) != 1:
        raise Forbidden(Reason.INVITE_INVALID)
    return values[0]


def read_invite(token: str, key: bytes, now: datetime.datetime) -> Invite:
    """Check the token's MAC, then its expiry; ``Forbidden`` on any failure.
    The MAC is checked before the payload is parsed, so nothing unauthenticated
    is interpreted."""
    _unix_seconds(now, "now")
    try:
        fields = read_token(token, key, MAC_CONTEXT, now)  # MAC first, then expiry (services/common/tokens.py)
    except Forbidden as exc:
        # the invite's own reasons: a token_* reason means a session problem to a web page
        raise Forbidden(Reason.INVITE_EXPIRED if exc.reason == Reason.TOKEN_EXPIRED else Reason.INVITE_INVALID) from exc
    version, person_id, role, expires = fields.get("v"), fields.get("p"), fields.get("r"), fields.get("exp")
    if version != TOKEN_VERSION or role not in ROLES or not isinstance(person_id, str) or not isinstance(expires, int):
        raise Forbidden(Reason.INVITE_INVALID)
    return Invite(person_id, role, datetime.datetime.fromtimestamp(expires, datetime.timezone.utc))


def invite_qr_png(url: str, scale: int = 8, border: int = 4) -> bytes:
    """The QR code of ``url`` as PNG (``scale`` pixels a module, quiet zone ``border`` modules)."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind="png", scale=scale, border=border)
    return out.getvalue()


def invite_qr_svg(url: str, scale: int = 4, border: int = 4) -> str:
    """The QR code of ``url`` as a standalone SVG document."""
    out = io.BytesIO()
    segno.make(url, error="m", micro=False).save(out, kind="svg", scale=scale, border=border, xmldecl=False)
    return out.getvalue().decode("utf-8")
