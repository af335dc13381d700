"""Run the gateway: ``esign run gateway`` (uvicorn, one process)."""
from __future__ import annotations

import uvicorn

from services.common.config import load_config
from services.common.logs import configure_logging
from services.common.metrics import serve_metrics
from services.gateway.app import create_app


def run() -> int:
    config = load_config("gateway")
    configure_logging(config.get("LOGGING_LEVEL", "INFO"))
    metrics = config.get("METRICS") or {}
    if metrics.get("PORT"):
        serve_metrics(int(metrics["PORT"]), metrics.get("ADDRESS") or "127.0.0.1")
    http = config.get("HTTP") or {}
    uvicorn.run(create_app(config), host=http.get("HOST", "127.0.0.1"), port=int(http.get("PORT", 8000)),
                log_level=str(config.get("LOGGING_LEVEL", "info")).lower(), access_log=False)
    return 0
