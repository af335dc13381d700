"""Limits at the edge: how big a body may be, and how often one client may call
an anonymous route.

Both run as one ASGI middleware in front of everything else, so a request is
refused before FastAPI reads or parses its body and before any session check:

- **Body size, per route, streamed.** A declared ``Content-Length`` over the
  route's limit is answered 413 at once, without reading; a body without one
  (chunked) is counted as it arrives and refused as soon as it passes the limit.
  Memory held for a request is bounded by its route's limit, never by what the
  client sends.
- **Per-client-IP rate limits** on the routes anyone may call without a
  session (phone codes, verify, the TSA, OCSP): a token bucket per client and
  route group, answered 429 with ``Retry-After``. The client is the TCP peer,
  or, when the peer is a trusted proxy (``LIMITS.TRUSTED_PROXIES``), the
  nearest untrusted address of ``X-Forwarded-For``. Addresses in
  ``LIMITS.RATE_EXEMPT`` (the platform's own network: signing asks the TSA
  through the gateway) are not limited. Buckets live in each gateway process:
  with N replicas a client gets at most N times the rate.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from services.common.errors import PayloadTooLarge, RateLimited
from services.common.metrics import counter
from services.common.reasons import Reason

EDGE_REFUSALS = counter("esign_http_edge_refusals_total", "Requests refused at the edge before any work",
                        ("reason", "group"))

KB, MB = 1024, 1024 * 1024
#: (path pattern, limit in bytes), first match wins; base64 makes a file 4/3 bigger
BODY_LIMITS: tuple[tuple[str, int], ...] = (
    (r"/api/v1/verify", 72 * MB),  # a signed PDF of up to 50 MiB, base64 in JSON
    (r"/api/v1/documents/[^/]+/attachments", 16 * MB),  # one image of up to 10 MiB
    (r"/api/v1/me/face", 32 * MB),  # live frames or a short video (20 MiB)
    (r"/api/v1/willingness/[^/]+/confirm", 32 * MB),
    (r"/api/v1/flows/[^/]+/(signature|void-requests|void-confirmations|void-rejections|decline)", 2 * MB),
    (r"/tsa", 4 * KB),
    (r"/pki/ocsp", 4 * KB),
)
DEFAULT_BODY_LIMIT = 256 * KB


@dataclass(frozen=True)
class Rate:
    per_minute: float
    burst: int


#: anonymous routes, by group: (path pattern, method)
RATE_GROUPS: dict[str, tuple[str, str]] = {
    "phone_codes": (r"/api/v1/phone-codes(/[^/]+/confirm)?", "POST"),
    "verify": (r"/api/v1/verify", "POST"),
    "document_status": (r"/api/v1/documents/[0-9a-fA-F]{64}/status", "GET"),
    "tsa": (r"/tsa", "POST"),
    "ocsp": (r"/pki/ocsp(/.*)?", "*"),
}
#: the reason a group's 429 names (a group without a listed reason stops the gateway at import)
RATE_REASONS: dict[str, Reason] = {group: Reason(f"too_many_requests_{group}") for group in RATE_GROUPS}
DEFAULT_RATES: dict[str, Rate] = {
    "phone_codes": Rate(per_minute=10, burst=5),
    "verify": Rate(per_minute=20, burst=10),
    "document_status": Rate(per_minute=60, burst=30),
    "tsa": Rate(per_minute=120, burst=60),
    "ocsp": Rate(per_minute=300, burst=100),
}


class TokenBuckets:
    """One bucket per key; ``take`` answers 0 when allowed, else the seconds to wait."""

    def __init__(self, rate: Rate, clock=time.monotonic, max_keys: int = 100_000):
        self.rate, self.clock, self.max_keys = rate, clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        now = self.clock()
        per_second = self.rate.per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.rate.burst), now))
            tokens = min(float(self.rate.burst), tokens + (now - at) * per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                self._forget_full(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / per_second

    def _forget_full(self, now: float) -> None:
        # bounded memory: drop buckets that have refilled (they equal a new one)
        if len(self._buckets) <= self.max_keys:
            return
        refill = self.rate.burst / (self.rate.per_minute / 60.0)
        for key, (_tokens, at) in list(self._buckets.items()):
            if now - at >= refill:
                del self._buckets[key]


def networks(values: Iterable[str] | str | None) -> tuple:
    """CIDRs from the config (a comma-separated string or a list) as IP networks."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values or ())


class EdgeLimits:
    """The ASGI middleware (see the module docstring)."""

    def __init__(self, app, config: dict[str, Any] | None = None, clock=time.monotonic):
        config = config or {}
        self.app = app
        self.default_body_limit = int(config.get("DEFAULT_BODY_BYTES") or DEFAULT_BODY_LIMIT)
        self.body_limits = [(re.compile(pattern + r"/?\Z"), limit) for pattern, limit in BODY_LIMITS]
        self.trusted_proxies = networks(config.get("TRUSTED_PROXIES"))
        self.exempt = networks(config.get("RATE_EXEMPT"))
        rates = dict(DEFAULT_RATES)
        for group, value in (config.get("RATES") or {}).items():
            if group not in RATE_GROUPS:
                raise ValueError(f"LIMITS.RATES: unknown group {group!r} (one of {', '.join(RATE_GROUPS)})")
            rates[group] = Rate(float(value["PER_MINUTE"]), int(value["BURST"]))
        self.groups = [(group, re.compile(pattern + r"\Z"), method, TokenBuckets(rates[group], clock))
                       for group, (pattern, method) in RATE_GROUPS.items()]

    def body_limit(self, path: str) -> int:
        for pattern, limit in self.body_limits:
            if pattern.match(path):
                return limit
        return self.default_body_limit

    def client_ip(self, scope) -> str:
        peer = (scope.get("client") or ("",))[0]
        if not peer_in(scope, self.trusted_proxies):
            return peer
        forwarded = []
        for name, value in scope.get("headers") or ():
            if name == b"x-forwarded-for":
                forwarded += [part.strip() for part in value.decode("latin-1").split(",")]
        # the nearest address a trusted proxy did not add is the client
        for hop in reversed(forwarded):
            hop_address = _address(hop)
            if hop_address is None:
                return hop
            if not any(hop_address in net for net in self.trusted_proxies):
                return hop
        return peer

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        refusal = self._rate_refusal(scope, path, method)
        if refusal is not None:
            return await _answer(send, refusal)
        limit = self.body_limit(path)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            EDGE_REFUSALS.labels(reason="body_too_large", group="declared").inc()
            return await _answer(send, _too_large(limit))
        received = 0
        started = refused = False

        async def limited_receive():
            # over the limit: answer 413 now and tell the app the client left, so it stops
            # reading (FastAPI turns an exception raised here into its own 400)
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    EDGE_REFUSALS.labels(reason="body_too_large", group="streamed").inc()
                    if not started:
                        await _answer(send, _too_large(limit))
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            nonlocal started
            if refused:
                return  # the 413 is the answer; whatever the app says after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    def _rate_refusal(self, scope, path: str, method: str):
        for group, pattern, wanted, buckets in self.groups:
            if (wanted == "*" or wanted == method) and pattern.match(path):
                client = self.client_ip(scope)
                address = _address(client)
                if address is not None and any(address in net for net in self.exempt):
                    return None
                wait = buckets.take(client)
                if wait <= 0:
                    return None
                EDGE_REFUSALS.labels(reason="rate_limited", group=group).inc()
                return RateLimited(RATE_REASONS[group], retry_after=max(1, math.ceil(wait)))
        return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge("body", "max_bytes", f"expected a body of at most {limit} bytes")


def peer_in(scope, among: tuple) -> bool:
    """Whether the TCP peer of an ASGI ``scope`` has an address in the networks ``among``."""
    address = _address((scope.get("client") or ("",))[0])
    return address is not None and any(address in net for net in among)


def _address(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send, error) -> None:
    body = json.dumps({"error": error.to_dict()}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
