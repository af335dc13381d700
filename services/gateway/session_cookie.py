"""The web pages' session: identity's token in a cookie, and the Origin check
that keeps other sites from using it (cross-site request forgery, CSRF).

API clients send the token as ``Authorization: Bearer``. The pages cannot keep
it where their scripts read it (a script injected into a page could carry it
off), and sessionStorage belongs to one tab, so a new tab started logged out.
The gateway therefore also hands the token to the browser as a cookie
(RFC 6265 with the SameSite attribute of draft-ietf-httpbis-rfc6265bis):

- at login and registration, ``HttpOnly`` (no script reads it),
  ``SameSite=Strict`` (the browser sends it only with requests that pages of
  this site make, and keeps none that a cross-site response sets), ``Path=/``,
  and ``Max-Age`` until the session's absolute end (identity's
  ``expires_at``; an idle session ends sooner at identity, and the next
  request learns it);
- ``Secure`` when the request came over HTTPS: its own scheme, or
  ``X-Forwarded-Proto: https`` from a proxy the gateway trusts
  (``LIMITS.TRUSTED_PROXIES``, the same proxies whose ``X-Forwarded-For``
  limits.py believes). Over plain HTTP (this machine, the tests) a Secure
  cookie would never come back, so there it is not Secure;
- cleared (``Max-Age=0``) by a logout that the cookie authenticated, and in
  any 403 that identity answers for a cookie naming a session that has ended
  (``session_*``, ``account_frozen``).

**CSRF** (OWASP CSRF Prevention Cheat Sheet, "Verifying Origin With Standard
Headers"). A request that changes state (any method but GET, HEAD, OPTIONS)
and that the cookie authenticates must come from a page of this site: its
``Origin`` header or, without one, its ``Referer`` must be one of the
gateway's own origins, otherwise it is refused with 403 ``csrf_origin``,
before identity is asked; a request with neither header is refused too. The
gateway's own origins are

- the origin of ``HTTP.PUBLIC_URL``: the address people use, in front of the
  ingress;
- the request's own: its scheme (HTTPS as above) and its ``Host`` header,
  for the gateway reached directly (this machine, the tests). A browser sets
  ``Host`` to the server it sends to and ``Origin`` to the page's, so a page
  of another site cannot make the two agree.

The pages call the API with ``fetch``, whose POSTs carry ``Origin`` even
under the pages' ``Referrer-Policy: no-referrer``. SameSite=Strict alone
stops cross-site requests in current browsers; the Origin check also holds
for browsers without it and for a sibling subdomain (same site, another
origin). A bearer request needs no check: a page of another site cannot set
``Authorization``. Login and registration take no session but set the cookie,
so they refuse an ``Origin`` that is present and foreign (login CSRF: another
site logging the browser into an account of its choosing); API clients,
which send no ``Origin``, are not affected.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response

from services.common.clock import now
from services.common.errors import Forbidden
from services.common.reasons import Reason
from services.gateway.limits import networks, peer_in

COOKIE = "esign_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


def origin_of(url: str) -> str | None:
    """The origin (RFC 6454) of an http(s) URL, ``scheme://host[:port]`` with
    the host in lower case and a default port left out; None for anything else
    (``null``, another scheme, no host)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


@dataclass(frozen=True)
class SessionCookie:
    """The cookie's rules (see the module docstring), read once from the gateway's config."""

    public_origin: str
    trusted_proxies: tuple

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SessionCookie:
        public_url = str((config.get("HTTP") or {}).get("PUBLIC_URL") or DEFAULT_PUBLIC_URL)
        public_origin = origin_of(public_url)
        if public_origin is None:
            raise ValueError(f"HTTP.PUBLIC_URL: expected an http(s) URL such as https://esign.example.com, "
                             f"found {public_url!r}")
        return cls(public_origin, networks((config.get("LIMITS") or {}).get("TRUSTED_PROXIES")))

    def token(self, request: Request) -> str | None:
        return request.cookies.get(COOKIE) or None

    def over_https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        forwarded = (request.headers.get("x-forwarded-proto") or "").split(",")[0].strip().lower()
        return forwarded == "https" and peer_in(request.scope, self.trusted_proxies)

    def give(self, response: Response, request: Request, session: dict) -> None:
        """Set the cookie to identity's ``session`` answer (its ``token`` and ``expires_at``)."""
        ends = datetime.fromisoformat(session["expires_at"])
        response.set_cookie(COOKIE, session["token"], max_age=max(0, int((ends - now()).total_seconds())),
                            path="/", secure=self.over_https(request), httponly=True, samesite="strict")

    def clear(self, response: Response, request: Request) -> None:
        # the same attributes as when it was set: a browser keeps a Secure cookie that a
        # response without Secure tries to replace
        response.delete_cookie(COOKIE, path="/", secure=self.over_https(request), httponly=True, samesite="strict")

    def own_origins(self, request: Request) -> set[str]:
        scheme = "https" if self.over_https(request) else "http"
        direct = origin_of(f"{scheme}://{request.headers.get('host') or ''}")
        return {self.public_origin} | ({direct} if direct else set())

    def check_origin(self, request: Request) -> None:
        """Refuse (403 ``csrf_origin``) a request whose ``Origin``, or without
        one whose ``Referer``, is not this gateway's, or that has neither."""
        stated = request.headers.get("origin")
        if stated is None:
            stated = request.headers.get("referer")
        if stated is None or origin_of(stated) not in self.own_origins(request):
            raise Forbidden(Reason.CSRF_ORIGIN)

    def check_state_change(self, request: Request) -> None:
        """The CSRF check for a request the cookie authenticates: state changes only."""
        if request.method not in SAFE_METHODS:
            self.check_origin(request)

    def check_login(self, request: Request) -> None:
        """Login CSRF: a login or registration stating a foreign ``Origin`` is refused."""
        if request.headers.get("origin") is not None:
            self.check_origin(request)
