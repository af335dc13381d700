"""Limits at the edge, over a real socket to a real uvicorn: bodies over a route's
limit are refused (413) before they are read whole, and anonymous routes are
rate-limited per client IP (429 with Retry-After). The services are stood in for
(tests/support/edge_app.py): these are the gateway's own rules."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.gateway.limits import EdgeLimits, Rate, TokenBuckets

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    limits = {"RATE_EXEMPT": "", "TRUSTED_PROXIES": "127.0.0.1/32",
              "RATES": {"phone_codes": {"PER_MINUTE": 6, "BURST": 3}}}
    env = dict(os.environ, ESIGN_TEST_LIMITS=json.dumps(limits), PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "tests.support.edge_app:app",
                                "--port", str(port), "--log-level", "warning"], cwd=REPO, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port, process
    process.terminate()
    process.wait(10)


def _request(port: int, head: str, body_chunks=(), chunked: bool = False) -> tuple[int, dict, bytes, int]:
    """Send a request; returns (status, headers, body, bytes of body sent before the server answered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(head.encode("latin-1"))
    sent = 0
    try:
        for chunk in body_chunks:
            data = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
            sock.sendall(data)
            sent += len(chunk)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed: what the test wants to see
    sock.settimeout(20)
    answer = b""
    try:
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    except (ConnectionResetError, socket.timeout):
        pass
    sock.close()
    head_part, _, rest = answer.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, rest, sent


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_declared_600_mb_body_is_refused_before_a_byte_is_read(server):
    port, process = server
    started = time.monotonic()
    status, headers, body, sent = _request(
        port, f"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {600 * MB}\r\n\r\n", [b"x" * 65536] * 4)
    assert status == 413
    error = json.loads(body)["error"]
    assert error == {"code": "payload_too_large", "field": "body", "rule": "max_bytes",
                     "message": f"expected a body of at most {72 * MB} bytes"}
    assert time.monotonic() - started < 5


def test_a_streamed_body_is_refused_once_it_passes_the_limit_and_memory_stays_bounded(server):
    port, process = server
    before = _peak_rss_mb(process.pid)
    chunk = b"A" * MB
    status, _headers, body, sent = _request(
        port, "POST /api/v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n", (chunk for _ in range(600)), chunked=True)
    assert status == 413 and json.loads(body)["error"]["rule"] == "max_bytes"
    # the server stopped reading soon after 72 MiB; the kernel's buffers hold a few more
    assert sent < 120 * MB, f"{sent / MB:.0f} MiB sent before the refusal"
    assert _peak_rss_mb(process.pid) - before < 150, "the gateway held the body in memory"


def test_the_default_limit_applies_to_routes_without_one(server):
    port, _ = server
    status, _h, body, _ = _request(
        port, "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {300 * 1024}\r\n\r\n", [b" " * (300 * 1024)])
    assert status == 413
    payload = json.dumps({"pdf": "QQ=="}).encode()
    status, _h, body, _ = _request(
        port, f"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(payload)}\r\n\r\n", [payload])
    assert status == 200 and json.loads(body)["method"] == "verify"


def test_phone_codes_are_rate_limited_per_client_ip(server):
    port, _ = server
    payload = json.dumps({"phone": "13912345678"}).encode()

    def ask(client: str):
        return _request(port, f"POST /api/v1/phone-codes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              f"X-Forwarded-For: {client}\r\nContent-Length: {len(payload)}\r\n\r\n", [payload])

    answers = [ask("203.0.113.7") for _ in range(4)]
    assert [a[0] for a in answers] == [201, 201, 201, 429]  # a burst of 3
    status, headers, body, _ = answers[3]
    assert int(headers["retry-after"]) in range(1, 11)  # 6 a minute: one every 10 s
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert ask("198.51.100.9")[0] == 201  # another client is not held back
    # an address the client claims is not believed: only the trusted proxy's view counts
    assert ask("198.51.100.9, 203.0.113.7")[0] == 429


def test_token_buckets_refill_at_the_rate():
    now = [0.0]
    buckets = TokenBuckets(Rate(per_minute=60, burst=2), clock=lambda: now[0])
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(1.0)
    now[0] += 1.0
    assert buckets.take("a") == 0
    assert buckets.take("b") == 0


def test_client_ip_trusts_only_configured_proxies():
    limits = EdgeLimits(app=None, config={"TRUSTED_PROXIES": "10.0.0.0/8"})
    scope = {"client": ("10.1.2.3", 1), "headers": [(b"x-forwarded-for", b"1.2.3.4, 10.9.9.9")]}
    assert limits.client_ip(scope) == "1.2.3.4"
    assert limits.client_ip(dict(scope, client=("192.0.2.1", 1))) == "192.0.2.1"
    with pytest.raises(ValueError, match="unknown group"):
        EdgeLimits(app=None, config={"RATES": {"nope": {"PER_MINUTE": 1, "BURST": 1}}})
