"""The witness over HTTP (c2sp.org/tlog-witness), on the standard library's
``ThreadingHTTPServer``:

    POST /add-checkpoint              200 cosignature line(s) | 400 | 403 | 404 | 409 | 422
    GET  /<hex sha256(origin)>/checkpoint   200 the latest cosigned note | 404
    GET  /healthz                     200 "ok" when the state answers
    GET  /metrics                     Prometheus text

HTTP/1.1 with keep-alive (the spec asks witnesses to support it). A request
body needs a Content-Length and may be at most ``max_body`` bytes (64 KiB: a
checkpoint with many signatures and 63 proof lines is a few KiB); larger is
413, no length 411. Idle or slow connections time out after 30 s. Anything
unexpected is 500 with a reference-free message; details go to the log.
Serve it behind a TLS-terminating proxy: it speaks plain HTTP.
"""
from __future__ import annotations

import logging
import re
import sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from services.witness.metrics import WitnessMetrics
from services.witness.protocol import SIGNATURES_CONTENT_TYPE, Answer, WitnessRefusal, cosigned_answer
from services.witness.witness import Witness

MAX_BODY = 64 * 1024
_CHECKPOINT_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")

log = logging.getLogger("services.witness")


class WitnessServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], witness: Witness, metrics: WitnessMetrics, max_body: int = MAX_BODY):
        self.witness = witness
        self.metrics = metrics
        self.max_body = max_body
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def _text(status: int, message: str) -> Answer:
    return Answer(status, f"{message}\n".encode("utf-8"), SIGNATURES_CONTENT_TYPE)


class _Handler(BaseHTTPRequestHandler):
    server: WitnessServer
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes; with Nagle on, a kept-alive
    # connection's next answer waits for the client's delayed ACK (about 40 ms)
    disable_nagle_algorithm = True
    timeout = 30

    def version_string(self) -> str:
        return "esign-witness"

    # --- POST ------------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path != "/add-checkpoint":
            self._drain_or_close()
            self._send(_text(404, "not found"))
            return
        body, refused = self._read_body()
        if body is None:
            self.server.metrics.request(refused)
            return
        try:
            answer = cosigned_answer([self.server.witness.add_checkpoint(body)])
            outcome = "cosigned"
        except WitnessRefusal as refusal:
            answer, outcome = refusal.answer(), refusal.outcome
            log.info("add-checkpoint refused %d %s: %s", refusal.status, refusal.outcome, refusal.message)
        except (sqlite3.Error, OSError):
            log.exception("add-checkpoint failed")
            answer, outcome = _text(503, "the witness state is unavailable; try again"), "error"
        except Exception:  # the witness never cosigns on a path it did not expect
            log.exception("add-checkpoint failed")
            answer, outcome = _text(500, "internal error"), "error"
        self.server.metrics.request(outcome)
        self._send(answer)

    def _read_body(self) -> tuple[bytes | None, str]:
        """The request body, or None and the outcome after answering 411/413 (or
        losing the client) and closing the connection."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(_text(411, "expected a Content-Length, not a transfer encoding"))
            return None, "malformed"
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.strip().isdigit():
            self.close_connection = True
            self._send(_text(411, "expected a Content-Length"))
            return None, "malformed"
        length = int(length_text)
        if length > self.server.max_body:
            self.close_connection = True
            self._send(_text(413, f"expected a body of at most {self.server.max_body} bytes, found {length}"))
            return None, "too_large"
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return None, "malformed"
        return body, ""

    def _drain_or_close(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= self.server.max_body:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    # --- GET -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/add-checkpoint":
            self._send(_text(405, "expected POST"), {"Allow": "POST"})
            return
        try:
            answer = self._get(path)
        except (sqlite3.Error, OSError):
            log.exception("GET %s failed", path)
            answer = _text(503, "the witness state is unavailable")
        self._send(answer)

    def _get(self, path: str) -> Answer:
        if path == "/healthz":
            self.server.witness.state.ping()
            return _text(200, "ok")
        if path == "/metrics":
            body, content_type = self.server.metrics.exposition()
            return Answer(200, body, content_type)
        match = _CHECKPOINT_PATH.fullmatch(path)
        note = self.server.witness.latest_note(match.group(1)) if match else None
        if note is None:
            return _text(404, "not found")
        return Answer(200, note.encode("utf-8"), SIGNATURES_CONTENT_TYPE)

    # --- plumbing --------------------------------------------------------------------------

    def _send(self, answer: Answer, headers: dict[str, str] | None = None) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)
