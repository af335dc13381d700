"""Run the gateway: ``esign run gateway`` (uvicorn, one process, on uvloop with httptools' parser,
both in requirements.lock: uvicorn chooses them when they are installed, else asyncio's loop and h11).

With ``HTTP.REUSE_PORT`` several gateway processes listen on one port (``SO_REUSEPORT``):
the kernel spreads new connections over them, which is how ``esign up --scale gateway=N``
runs replicas on one machine without a load balancer. The gateway keeps no state of its
own; only the rate limits at the edge are counted per process."""
from __future__ import annotations

import socket

import uvicorn

from services.common.config import load_config
from services.common.errors import InvalidInput
from services.common.logs import configure_logging
from services.common.metrics import serve_metrics
from services.gateway.app import create_app


def reuse_port(value) -> bool:
    """``HTTP.REUSE_PORT`` as a boolean; a typo stops the gateway naming the setting."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise InvalidInput("HTTP.REUSE_PORT", "boolean", f"expected true or false, found {value!r}")


def listening_socket(host: str, port: int, shared: bool) -> socket.socket:
    """The gateway's listening socket; ``shared``: other processes may listen on the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def run() -> int:
    config = load_config("gateway")
    configure_logging(config.get("LOGGING_LEVEL", "INFO"))
    metrics = config.get("METRICS") or {}
    if metrics.get("PORT"):
        serve_metrics(int(metrics["PORT"]), metrics.get("ADDRESS") or "127.0.0.1")
    http = config.get("HTTP") or {}
    host, port = http.get("HOST", "127.0.0.1"), int(http.get("PORT", 8000))
    options = dict(host=host, port=port, log_level=str(config.get("LOGGING_LEVEL", "info")).lower(), access_log=False)
    if not reuse_port(http.get("REUSE_PORT", False)):
        uvicorn.run(create_app(config), **options)
        return 0
    server = uvicorn.Server(uvicorn.Config(create_app(config), **options))
    server.run(sockets=[listening_socket(host, port, shared=True)])
    return 0
