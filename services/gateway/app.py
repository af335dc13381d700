"""The HTTP gateway: the platform's public API (OpenAPI at /docs) and web
pages. It holds no business rules: it checks the request's shape, calls the
services over RPC and turns their typed errors into HTTP answers."""
from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.common.errors import EsignError, InvalidInput
from services.common.metrics import counter, histogram
from services.common.rpc_client import RpcClient
from services.gateway.api import router as api_router
from services.gateway.limits import EdgeLimits
from services.gateway.responses import (
    BODY,
    HealthReport,
    binary,
    errors,
    raw_body,
    without_default_validation_errors,
)
from services.gateway.session_cache import SessionCache, SessionEvents
from services.gateway.session_cookie import SessionCookie
from services.gateway.web import router as web_router

BACKEND_SERVICES = ("identity", "documents", "signing", "notify")

CRL = binary("application/pkix-crl", "a DER certificate revocation list (RFC 5280)")
PEM = binary("application/x-pem-file", "a PEM certificate", text=True)
OCSP = binary("application/ocsp-response", "a DER OCSP response (RFC 6960), signed by the delegated responder")

HTTP_REQUESTS = counter("esign_http_requests_total", "Gateway HTTP requests",
                        ("route", "method", "status"))
HTTP_LATENCY = histogram("esign_http_request_seconds", "Gateway HTTP latency", ("route", "method"))


class RequestMetrics:
    """``esign_http_requests_total`` and ``esign_http_request_seconds`` by route, method and status, as
    a plain ASGI middleware. Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) ran every
    request's app in a task of its own and passed the response through a memory stream: a tenth of
    the gateway's samples under the full-flow load (bench/full_flow.py --profile)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the router notes the route it chose
            HTTP_REQUESTS.labels(route=path, method=scope["method"], status=str(status)).inc()
            HTTP_LATENCY.labels(route=path, method=scope["method"]).observe(time.perf_counter() - started)


def session_cache_seconds(config: dict[str, Any]) -> float:
    """``SESSIONS.CACHE_SECONDS``: how long identity's answer for a session token is remembered
    (services/gateway/session_cache.py); 0 (the default of a config without it) asks every time.
    Not a number, negative or over 60 (identity records a session's last use once a minute) stops
    the gateway, naming the setting."""
    value = (config.get("SESSIONS") or {}).get("CACHE_SECONDS", 0)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("sessions.cache_seconds", "number", f"expected seconds, found {value!r}") from None
    if not 0 <= seconds <= 60:
        raise InvalidInput("sessions.cache_seconds", "range", "expected 0 to 60 seconds")
    return seconds


def create_app(config: dict[str, Any], rpc: RpcClient | None = None) -> FastAPI:
    app = FastAPI(title="esign gateway", version="0.1.0",
                  description="Electronic signatures for IOUs, receipts and contracts.")
    app.state.config = config
    app.state.session_cookie = SessionCookie.from_config(config)
    app.state.rpc = rpc or RpcClient(config["AMQP_URI"], float(config.get("RPC_TIMEOUT", 30)))
    app.state.session_cache = SessionCache(session_cache_seconds(config))
    session_events = (SessionEvents(config["AMQP_URI"], app.state.session_cache)
                      if app.state.session_cache.seconds > 0 else None)
    app.include_router(api_router)
    app.include_router(web_router)
    health_pool = ThreadPoolExecutor(max_workers=len(BACKEND_SERVICES), thread_name_prefix="health")

    app.add_middleware(RequestMetrics)
    # outermost: sizes and rates are checked before anything reads or parses the body
    app.add_middleware(EdgeLimits, config=config.get("LIMITS"))

    @app.exception_handler(EsignError)
    async def _typed_error(request: Request, exc: EsignError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        answer = JSONResponse(status_code=exc.http_status, content={"error": exc.to_dict()}, headers=headers)
        if getattr(request.state, "clear_session_cookie", False):  # set by api.current_session
            app.state.session_cookie.clear(answer, request)
        return answer

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        # FastAPI answers a body it cannot read at all (JSON that is not UTF-8) with its own 400
        # {"detail": ...}; it is invalid input like JSON that does not parse (422 json_invalid)
        if exc.status_code == 400:
            return JSONResponse(status_code=422, content={"error": InvalidInput(
                "body", "json_invalid", "expected a JSON body in UTF-8").to_dict()})
        return await http_exception_handler(request, exc)  # unknown paths (404) and methods (405)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        return JSONResponse(status_code=422, content={"error": {
            "code": "invalid_input", "field": ".".join(loc) or "body",
            "rule": first.get("type", "invalid"), "message": first.get("msg", "invalid request")}})

    @app.get("/healthz", tags=["operations"], response_model=None,
             responses={200: {"model": HealthReport, "description": "every service answered ok"},
                        503: {"model": HealthReport, "description": "some service did not (`degraded`)"}})
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

        results = dict(zip(BACKEND_SERVICES, health_pool.map(check, BACKEND_SERVICES), strict=True))
        healthy = all(r.get("status") == "ok" for r in results.values())
        return JSONResponse(status_code=200 if healthy else 503,
                            content={"status": "ok" if healthy else "degraded", "services": results})

    @app.get("/pki/crl", tags=["pki"], response_class=Response, responses={**CRL, **errors()})
    def crl() -> Response:
        """The issuing CA's certificate revocation list (DER)."""
        answer = app.state.rpc.call("identity", "crl")
        return Response(base64.b64decode(answer["crl_der"]), media_type="application/pkix-crl")

    @app.get("/pki/root.crl", tags=["pki"], response_class=Response, responses={**CRL, **errors(404)})
    def root_crl() -> Response:
        """The offline root's CRL (DER): revocation data for the issuing CA."""
        answer = app.state.rpc.call("identity", "crl", ca_name="root")
        return Response(base64.b64decode(answer["crl_der"]), media_type="application/pkix-crl")

    @app.get("/pki/issuing.pem", tags=["pki"], response_class=Response, responses={**PEM, **errors()})
    def issuing_pem() -> Response:
        return Response(app.state.rpc.call("identity", "pki_certificates")["issuing_pem"],
                        media_type="application/x-pem-file")

    @app.post("/pki/ocsp", tags=["pki"], response_class=Response, responses={**OCSP, **errors(BODY, 429)},
              openapi_extra=raw_body("application/ocsp-request", "a DER OCSP request (RFC 6960), 1..4096 bytes"))
    async def ocsp_post(request: Request) -> Response:
        body = await request.body()
        return await run_in_threadpool(_ocsp, body)

    @app.get("/pki/ocsp/{encoded:path}", tags=["pki"], response_class=Response, responses={**OCSP, **errors(422, 429)})
    def ocsp_get(encoded: str) -> Response:
        """RFC 6960 appendix A.1: the DER request, base64 then URL-encoded, in the path."""
        try:
            body = base64.b64decode(unquote(encoded), validate=True)
        except ValueError:
            raise InvalidInput("request", "base64", "expected a base64 OCSP request") from None
        return _ocsp(body)

    def _ocsp(body: bytes) -> Response:
        if not 0 < len(body) <= 4096:
            raise InvalidInput("request", "size", "expected an OCSP request of 1..4096 bytes")
        answer = app.state.rpc.call("identity", "ocsp", request_der=base64.b64encode(body).decode())
        return Response(base64.b64decode(answer["response_der"]), media_type="application/ocsp-response")

    @app.post("/tsa", tags=["pki"], response_class=Response,
              responses={**binary("application/timestamp-reply", "a DER TimeStampResp (RFC 3161)"),
                         **errors(BODY, 429)},
              openapi_extra=raw_body("application/timestamp-query", "a DER TimeStampReq (RFC 3161), 1..4096 bytes"))
    async def timestamp(request: Request) -> Response:
        """RFC 3161 over HTTP: ``application/timestamp-query`` in, ``-reply`` out."""
        if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/timestamp-query":
            raise InvalidInput("content-type", "media_type", "expected application/timestamp-query")
        body = await request.body()
        if not 0 < len(body) <= 4096:
            raise InvalidInput("request", "size", "expected a time-stamp query of 1..4096 bytes")
        answer = await run_in_threadpool(app.state.rpc.call, "identity", "timestamp",
                                         request_der=base64.b64encode(body).decode())
        return Response(base64.b64decode(answer["response_der"]), media_type="application/timestamp-reply")

    @app.get("/pki/root.pem", tags=["pki"], response_class=Response, responses={**PEM, **errors()})
    def root_pem() -> Response:
        """The platform root certificate: the trust anchor for verifying signed PDFs."""
        return Response(app.state.rpc.call("identity", "pki_certificates")["root_pem"],
                        media_type="application/x-pem-file")

    fastapi_openapi = app.openapi

    def openapi() -> dict:
        """The schema as FastAPI makes it, less the 422 bodies the gateway never answers (made once)."""
        if app.openapi_schema is None:
            app.openapi_schema = without_default_validation_errors(fastapi_openapi())
        return app.openapi_schema

    app.openapi = openapi

    @app.on_event("startup")
    def _hear_sessions_ended() -> None:
        if session_events is not None:
            session_events.start()

    @app.on_event("shutdown")
    def _close() -> None:
        if session_events is not None:
            session_events.stop()
        app.state.rpc.close()
        health_pool.shutdown(wait=False)

    return app
