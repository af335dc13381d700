"""The HTTP gateway: the platform's public API (OpenAPI at /docs) and web
pages. It holds no business rules: it checks the request's shape, calls the
services over RPC and turns their typed errors into HTTP answers."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.common.errors import EsignError
from services.common.metrics import counter, histogram
from services.common.rpc_client import RpcClient

BACKEND_SERVICES = ("identity", "documents", "signing", "notify")

HTTP_REQUESTS = counter("esign_http_requests_total", "Gateway HTTP requests",
                        ("route", "method", "status"))
HTTP_LATENCY = histogram("esign_http_request_seconds", "Gateway HTTP latency", ("route", "method"))


class PhoneCodeRequest(BaseModel):
    phone: str = Field(..., description="mainland mobile number; +86, spaces and hyphens allowed")
    purpose: str = Field("phone_confirmation", description="phone_confirmation or willingness")


class PhoneCodeConfirmation(BaseModel):
    code: str = Field(..., description="the 6-digit code from the SMS")


def create_app(config: dict[str, Any], rpc: RpcClient | None = None) -> FastAPI:
    app = FastAPI(title="esign gateway", version="0.1.0",
                  description="Electronic signatures for IOUs, receipts and contracts.")
    app.state.config = config
    app.state.rpc = rpc or RpcClient(config["AMQP_URI"], float(config.get("RPC_TIMEOUT", 30)))
    health_pool = ThreadPoolExecutor(max_workers=len(BACKEND_SERVICES), thread_name_prefix="health")

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(route=path, method=request.method, status=str(response.status_code)).inc()
        HTTP_LATENCY.labels(route=path, method=request.method).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(EsignError)
    async def _typed_error(_request: Request, exc: EsignError):
        return JSONResponse(status_code=exc.http_status, content={"error": exc.to_dict()})

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        return JSONResponse(status_code=422, content={"error": {
            "code": "invalid_input", "field": ".".join(loc) or "body",
            "rule": first.get("type", "invalid"), "message": first.get("msg", "invalid request")}})

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        """Calls every service's ``health`` RPC and reports each."""

        def check(service: str) -> dict:
            started = time.perf_counter()
            try:
                answer = app.state.rpc.call(service, "health")
            except EsignError as exc:
                return {"status": "unavailable", "error": exc.code,
                        "ms": round((time.perf_counter() - started) * 1000, 1)}
            answer["ms"] = round((time.perf_counter() - started) * 1000, 1)
            return answer

        results = dict(zip(BACKEND_SERVICES, health_pool.map(check, BACKEND_SERVICES)))
        healthy = all(r.get("status") == "ok" for r in results.values())
        return JSONResponse(status_code=200 if healthy else 503,
                            content={"status": "ok" if healthy else "degraded", "services": results})

    @app.post("/api/v1/phone-codes", tags=["identity"], status_code=201)
    def request_phone_code(body: PhoneCodeRequest) -> dict:
        """Send a 6-digit confirmation code to a phone (expires in 5 minutes)."""
        return app.state.rpc.call("identity", "request_phone_code", phone=body.phone, purpose=body.purpose)

    @app.post("/api/v1/phone-codes/{challenge_id}/confirm", tags=["identity"])
    def confirm_phone_code(challenge_id: str, body: PhoneCodeConfirmation) -> dict:
        return app.state.rpc.call("identity", "confirm_phone_code", challenge_id=challenge_id, code=body.code)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.on_event("shutdown")
    def _close() -> None:
        app.state.rpc.close()
        health_pool.shutdown(wait=False)

    return app
