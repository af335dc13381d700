"""The gateway's OpenAPI says what the gateway answers: every operation
declares its error statuses with the one error body (ErrorResponse), each
typed error maps to a status that the routes that can raise it declare, the
edge's 413 and 429 are declared where the edge answers them, and answers that
are not JSON are declared with their own content type.

The services are stood in for by a stub RPC that answers, or raises the typed
error a test asks for; what is checked is the gateway's own mapping and its
schema, request by request, against the schema it publishes."""
from __future__ import annotations

import base64
import re
from http.cookiejar import CookieJar, DefaultCookiePolicy

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.common import errors as typed
from services.gateway.api import current_session
from services.gateway.api import router as api_router
from services.gateway.app import create_app
from services.gateway.limits import BODY_LIMITS, DEFAULT_BODY_LIMIT, RATE_GROUPS
from services.gateway.responses import ERROR_CLASSES, ERROR_STATUSES, ErrorResponse, HealthReport

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
BODY_METHODS = {"post", "put", "patch"}
TOKEN = "t" * 43
PERSON = "p-1"

#: for each operation, the typed errors the services (and the gateway's own
#: checks) behind it can raise, from reading them; besides these every route
#: calling a service can fail (InternalError, IntegrityError: 500) or find it
#: away (Unavailable: 503), and the edge answers 413/429 (checked apart). Every
#: text given to a service can be InvalidInput: the RPC entrypoint refuses a NUL
#: character (services/common/entrypoints.py), so a path parameter can be too.
CAN_RAISE: dict[tuple[str, str], set[type[typed.EsignError]]] = {
    # identity: codes, registration, sessions (otp.py, phone_codes.py, registration.py, sessions.py)
    ("post", "/api/v1/phone-codes"): {typed.InvalidInput, typed.RateLimited},
    ("post", "/api/v1/phone-codes/{challenge_id}/confirm"): {typed.InvalidInput, typed.NotFound, typed.Forbidden},
    ("post", "/api/v1/persons"): {typed.InvalidInput, typed.NotFound, typed.Forbidden, typed.Conflict},
    ("post", "/api/v1/sessions"): {typed.InvalidInput, typed.NotFound, typed.Forbidden},
    ("post", "/api/v1/sessions/current/revoke"): {typed.Forbidden},
    ("get", "/api/v1/me/sessions"): {typed.Forbidden},
    ("post", "/api/v1/me/sessions/{session_id}/revoke"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("post", "/api/v1/me/sessions/revoke-others"): {typed.Forbidden},
    ("get", "/api/v1/me"): {typed.Forbidden},
    # proofing and step-ups (proofs.py: face checks lock with RateLimited; takeover.py: Conflict)
    ("post", "/api/v1/me/liveness"): {typed.Forbidden, typed.RateLimited},
    ("post", "/api/v1/me/face"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict,
                                  typed.RateLimited},
    ("post", "/api/v1/me/certificate"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("post", "/api/v1/me/phone"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("post", "/api/v1/willingness/{willingness_id}/confirm"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                               typed.RateLimited},
    ("post", "/api/v1/willingness/{willingness_id}/challenge"): {typed.InvalidInput, typed.Forbidden,
                                                                 typed.NotFound, typed.RateLimited},
    # documents
    ("get", "/api/v1/templates"): set(),
    ("post", "/api/v1/documents"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("patch", "/api/v1/documents/{document_id}"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                   typed.Conflict},
    ("get", "/api/v1/documents/{document_id}"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("post", "/api/v1/documents/{document_id}/attachments"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                              typed.Conflict},
    ("post", "/api/v1/documents/{document_id}/render"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                         typed.Conflict},
    ("get", "/api/v1/documents/{document_id}/pdf"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("get", "/api/v1/me/receipt-invite"): {typed.InvalidInput, typed.Forbidden},
    ("get", "/api/v1/me/files"): {typed.InvalidInput, typed.Forbidden},
    # a signed token, not looked up: a bad one is invite_invalid (403), not 404
    ("get", "/api/v1/receipt-invites/{token}"): {typed.InvalidInput, typed.Forbidden},
    ("post", "/api/v1/receipt-invites/{token}/documents"): {typed.InvalidInput, typed.Forbidden},
    # signing (flow.py, flow_store.py; willingness starts send codes or check face locks: RateLimited)
    ("post", "/api/v1/flows"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("post", "/api/v1/flows/{flow_id}/join"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("get", "/api/v1/flows/{flow_id}"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("get", "/api/v1/flows/{flow_id}/pdf"): {typed.InvalidInput, typed.Forbidden, typed.NotFound},
    ("post", "/api/v1/flows/{flow_id}/signature"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                    typed.Conflict, typed.RateLimited},
    ("post", "/api/v1/flows/{flow_id}/sign"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("post", "/api/v1/flows/{flow_id}/decline"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                  typed.Conflict},
    # a signed IOU's life (loans.py): statements refused by rule, by state, or to the borrower
    ("get", "/api/v1/flows/{flow_id}/loan"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("post", "/api/v1/flows/{flow_id}/repayments"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                     typed.Conflict},
    ("post", "/api/v1/flows/{flow_id}/extensions"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                     typed.Conflict},
    # 催签: once a day a flow (RateLimited with the seconds to wait)
    ("post", "/api/v1/flows/{flow_id}/reminders"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                    typed.Conflict, typed.RateLimited},
    ("post", "/api/v1/flows/{flow_id}/void-requests"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                        typed.Conflict, typed.RateLimited},
    ("post", "/api/v1/flows/{flow_id}/void-confirmations"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                             typed.Conflict, typed.RateLimited},
    ("post", "/api/v1/flows/{flow_id}/void-rejections"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                          typed.Conflict},
    ("post", "/api/v1/actions/{pending_id}/complete"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                        typed.Conflict},
    ("post", "/api/v1/verify"): {typed.InvalidInput},
    ("get", "/api/v1/documents/{sha256}/status"): {typed.InvalidInput},
    ("get", "/api/v1/log/checkpoint"): set(),
    ("get", "/api/v1/log/public-key"): set(),
    ("get", "/api/v1/log/inclusion/{index}"): {typed.InvalidInput, typed.NotFound},
    ("get", "/api/v1/log/consistency"): {typed.InvalidInput},
    ("post", "/api/v1/flows/{flow_id}/report"): {typed.InvalidInput, typed.Forbidden, typed.NotFound, typed.Conflict},
    ("get", "/api/v1/flows/{flow_id}/evidence"): {typed.InvalidInput, typed.Forbidden, typed.NotFound,
                                                  typed.Conflict},
    # pki: the root CRL is NotFound where the offline root published none
    ("get", "/pki/crl"): set(),
    ("get", "/pki/root.crl"): {typed.NotFound},
    ("get", "/pki/issuing.pem"): set(),
    ("get", "/pki/root.pem"): set(),
    ("post", "/pki/ocsp"): {typed.InvalidInput},
    ("get", "/pki/ocsp/{encoded}"): {typed.InvalidInput},
    ("post", "/tsa"): {typed.InvalidInput},
}

#: the error each status stands for, as a service would raise it
SAMPLE_ERRORS = {
    403: typed.Forbidden("not_a_party"),
    404: typed.NotFound("flow", "f-1"),
    409: typed.Conflict("flow_completed", "expected waiting"),
    422: typed.ValidationFailed.from_violations([typed.Violation("amount", "min", "expected at least 1"),
                                                  typed.Violation("remark", "max_chars", "expected at most 200")]),
    429: typed.RateLimited("otp_resend_too_soon", 42),
    500: typed.InternalError("ref-1"),
    503: typed.Unavailable("signing", "timeout"),
}


class StubRpc:
    """Answers what each route needs to reach its end, or raises ``self.error``
    for the route's own call (the session check still answers, unless the
    error is the session's)."""

    def __init__(self):
        self.error: typed.EsignError | None = None
        self.session_error: typed.EsignError | None = None

    def call(self, service, method, /, *args, **kwargs):
        if method == "session_person":
            if self.session_error is not None:
                raise self.session_error
            return {"person_id": PERSON, "session_id": "s-1"}
        if self.error is not None:
            raise self.error
        if method in ("list_templates", "list_sessions"):
            return []
        if method == "list_files":
            return {"items": [], "more": False}
        if method == "get_flow":
            return {"flow_id": "f-1", "parties": [{"person_id": PERSON}]}
        if method == "health":
            return {"service": service, "status": "ok", "checks": {}}
        der = base64.b64encode(b"\x30\x00").decode()
        return {"owner_person_id": PERSON, "person_id": PERSON,
                "session": {"session_id": "s-1", "token": TOKEN, "expires_at": "2030-01-01T00:00:00+00:00"},
                "crl_der": der, "response_der": der, "pdf": der, "package": der, "sha256": "0" * 64,
                "filename": "evidence-f-1.zip", "issuing_pem": "-----BEGIN CERTIFICATE-----\n",
                "root_pem": "-----BEGIN CERTIFICATE-----\n"}

    def call_all(self, *calls):
        return [self.call(service, method, **kwargs) for service, method, kwargs in calls]

    def close(self):
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """The gateway behind a trusted proxy (the test client, 127.0.0.1), which
    the rate limits exempt; a request forwarded for another address is allowed
    one request a minute to each anonymous route group."""
    rpc = StubRpc()
    rates = {group: {"PER_MINUTE": 1, "BURST": 1} for group in RATE_GROUPS}
    app = create_app({"AMQP_URI": "memory://", "DATA_DIR": str(tmp_path_factory.mktemp("gw")),
                      "LIMITS": {"RATE_EXEMPT": "127.0.0.0/8", "TRUSTED_PROXIES": "127.0.0.1/32", "RATES": rates}},
                     rpc=rpc)
    # an API client: a bearer token, and no cookie kept (the login route's session cookie
    # would otherwise stand in for the token a request leaves out)
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000),
                    cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[]))) as http:
        yield app, http, rpc


@pytest.fixture(scope="module")
def schema(gateway):
    return gateway[1].get("/openapi.json").json()


def operations(schema):
    return [(method, path, operation) for path, item in schema["paths"].items()
            for method, operation in item.items()]


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _sample(schema, node):
    """The smallest value of a JSON schema that FastAPI accepts (required members only)."""
    node = _resolve(schema, node)
    if "anyOf" in node:
        return _sample(schema, node["anyOf"][0])
    kind = node.get("type")
    if kind == "object":
        return {name: _sample(schema, node["properties"][name]) for name in node.get("required", ())}
    return {"array": [], "integer": 1, "number": 1, "boolean": True}.get(kind, "x")


def _path_value(name: str) -> str:
    return {"sha256": "ab" * 32, "index": "1", "encoded": base64.b64encode(b"\x30\x00").decode()}.get(name, "x-1")


def request_for(schema, method, path, operation, session=True) -> dict:
    """A request FastAPI lets through to the route for this operation."""
    url = path
    query = {}
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            url = url.replace("{%s}" % parameter["name"], _path_value(parameter["name"]))
        elif parameter["in"] == "query" and parameter.get("required"):
            query[parameter["name"]] = 1
    kwargs: dict = {"method": method.upper(), "url": url, "params": query,
                    "headers": {"Authorization": f"Bearer {TOKEN}"} if session else {}}
    content = (operation.get("requestBody") or {}).get("content") or {}
    if "application/json" in content:
        kwargs["json"] = _sample(schema, content["application/json"]["schema"])
    elif content:
        [media_type] = content
        kwargs["content"] = b"\x30\x00"
        kwargs["headers"]["Content-Type"] = media_type
    return kwargs


def declared(operation) -> set[int]:
    return {int(status) for status in operation["responses"] if int(status) >= 400}


def session_routes(app) -> set[tuple[str, str]]:
    """(method, path) of the routes that depend on the session check (the API's
    routes and the app's own; FastAPI keeps included routers apart)."""
    def needs(dependant) -> bool:
        return any(d.call is current_session or needs(d) for d in dependant.dependencies)

    routes = [route for route in [*api_router.routes, *app.routes] if isinstance(route, APIRoute)]
    return {(method.lower(), route.path) for route in routes if needs(route.dependant) for method in route.methods}


def rate_limited(method: str, path: str) -> bool:
    concrete = re.sub(r"\{(\w+)\}", lambda m: _path_value(m.group(1)), path)
    return any((wanted == "*" or wanted == method.upper()) and re.match(pattern + r"\Z", concrete)
               for pattern, wanted in RATE_GROUPS.values())


def body_limit(path: str) -> int:
    concrete = re.sub(r"\{(\w+)\}", lambda m: _path_value(m.group(1)), path)
    return next((limit for pattern, limit in BODY_LIMITS if re.match(pattern + r"/?\Z", concrete)),
                DEFAULT_BODY_LIMIT)


# -- the schema -------------------------------------------------------------------------
def test_the_error_body_is_one_typed_model(schema):
    components = schema["components"]["schemas"]
    assert "HTTPValidationError" not in components and "ValidationError" not in components
    detail = components["ErrorDetail"]
    assert detail["additionalProperties"] is False and set(detail["required"]) == {"code", "message"}
    assert components["ErrorResponse"]["required"] == ["error"]
    # every typed error that can reach the gateway has its code in the schema, and no other code is there
    in_module = {cls for cls in vars(typed).values() if isinstance(cls, type) and issubclass(cls, typed.EsignError)
                 and cls is not typed.EsignError and not cls.__name__.startswith("_")}
    assert in_module == set(ERROR_CLASSES) | {typed.ValidationFailed}
    assert set(detail["properties"]["code"]["enum"]) == {cls.code for cls in in_module}


def test_every_operation_declares_its_errors_with_the_error_body(schema):
    assert len(operations(schema)) >= 50
    for method, path, operation in operations(schema):
        errors = declared(operation)
        assert errors, (method, path)
        for status in errors:
            answer = operation["responses"][str(status)]
            assert answer["description"], (method, path, status)
            if path == "/healthz":
                continue
            assert answer["content"] == {"application/json": {"schema": ERROR_REF}}, (method, path, status)
        assert set(errors) <= set(ERROR_STATUSES), (method, path)


def test_each_operation_declares_what_its_services_can_raise(schema):
    """The statuses of CAN_RAISE, plus 500 and 503, plus the edge's: no more, no fewer."""
    seen = set()
    for method, path, operation in operations(schema):
        if path == "/healthz":
            assert declared(operation) == {503}
            continue
        seen.add((method, path))
        expected = {cls.http_status for cls in CAN_RAISE[(method, path)]} | {500, 503}
        if method in BODY_METHODS:
            expected.add(413)
        if rate_limited(method, path):
            expected.add(429)
        if "requestBody" in operation:
            expected.add(422)  # FastAPI's own check of the body (RequestValidationError)
        assert declared(operation) == expected, (method, path)
    assert seen == set(CAN_RAISE)


def test_structural_rules(gateway, schema):
    """422 with a body or a parameter, 404 with an id in the path, 429 on
    the RATE_GROUPS routes, 413 with a body, 403 behind a session."""
    app = gateway[0]
    behind_session = session_routes(app)
    assert len(behind_session) > 30
    limited = 0
    for method, path, operation in operations(schema):
        errors = declared(operation)
        parameters = operation.get("parameters", ())
        if "requestBody" in operation or any(p["in"] in ("path", "query") for p in parameters):
            assert 422 in errors, (method, path)  # a body or a parameter: shape, rules, NUL characters
        if "requestBody" in operation or method in BODY_METHODS:
            assert 413 in errors, (method, path)
        if any(p["in"] == "path" and (p["name"].endswith("_id") or p["name"] == "index") for p in parameters):
            assert 404 in errors, (method, path)
        if rate_limited(method, path):
            limited += 1
            assert 429 in errors, (method, path)
        if (method, path) in behind_session:
            assert 403 in errors, (method, path)
    assert limited == 7  # phone codes (2), verify, document status, tsa, ocsp (2)


def test_non_json_answers_declare_their_content_type(schema):
    types = {(m, p): set(o["responses"][next(s for s in o["responses"] if s.startswith("2"))].get("content", {}))
             for m, p, o in operations(schema)}
    assert types[("get", "/api/v1/documents/{document_id}/pdf")] == {"application/pdf"}
    assert types[("get", "/api/v1/flows/{flow_id}/pdf")] == {"application/pdf"}
    assert types[("get", "/api/v1/flows/{flow_id}/evidence")] == {"application/zip"}
    assert types[("get", "/pki/crl")] == types[("get", "/pki/root.crl")] == {"application/pkix-crl"}
    assert types[("get", "/pki/root.pem")] == types[("get", "/pki/issuing.pem")] == {"application/x-pem-file"}
    assert types[("post", "/pki/ocsp")] == types[("get", "/pki/ocsp/{encoded}")] == {"application/ocsp-response"}
    assert types[("post", "/tsa")] == {"application/timestamp-reply"}
    assert schema["paths"]["/tsa"]["post"]["requestBody"]["content"].keys() == {"application/timestamp-query"}
    assert schema["paths"]["/pki/ocsp"]["post"]["requestBody"]["content"].keys() == {"application/ocsp-request"}
    others = {key for key, value in types.items() if value != {"application/json"}}
    assert len(others) == 10


# -- what the gateway answers, against what it declares ---------------------------------------
def _media_type(response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def test_each_success_has_a_declared_content_type(gateway, schema):
    _app, client, rpc = gateway
    rpc.error = rpc.session_error = None
    for method, path, operation in operations(schema):
        response = client.request(**request_for(schema, method, path, operation))
        declared_answer = operation["responses"].get(str(response.status_code))
        assert response.status_code < 300 and declared_answer, (method, path, response.status_code, response.text)
        assert _media_type(response) in declared_answer["content"], (method, path)


@pytest.mark.parametrize("status", sorted(SAMPLE_ERRORS))
def test_each_typed_error_answers_the_status_declared(gateway, schema, status):
    """Where a route declares a status its services can raise, raising that
    typed error answers that status with a body of the declared schema."""
    _app, client, rpc = gateway
    rpc.session_error, rpc.error = None, SAMPLE_ERRORS[status]
    tried = 0
    try:
        for method, path, operation in operations(schema):
            if path == "/healthz" or status not in declared(operation):
                continue
            response = client.request(**request_for(schema, method, path, operation))
            assert response.status_code == status, (method, path, response.text)
            body = ErrorResponse.model_validate(response.json())
            assert body.error.code == SAMPLE_ERRORS[status].code
            if status == 429:
                assert response.headers["retry-after"] == "42"
            tried += 1
    finally:
        rpc.error = None
    assert tried >= 3


def test_routes_behind_a_session_answer_403_without_one(gateway, schema):
    app, client, rpc = gateway
    rpc.error = rpc.session_error = None
    behind_session = session_routes(app)
    for method, path, operation in operations(schema):
        if (method, path) not in behind_session:
            continue
        response = client.request(**request_for(schema, method, path, operation, session=False))
        assert response.status_code == 403, (method, path)
        assert ErrorResponse.model_validate(response.json()).error.message == "session_required"
        rpc.session_error = typed.Forbidden("session_expired")
        expired = client.request(**request_for(schema, method, path, operation))
        rpc.session_error = None
        assert expired.status_code == 403 and expired.json()["error"]["message"] == "session_expired"


def test_a_body_not_of_its_shape_answers_the_declared_422(gateway, schema):
    _app, client, rpc = gateway
    rpc.error = rpc.session_error = None
    for method, path, operation in operations(schema):
        content = (operation.get("requestBody") or {}).get("content") or {}
        if "application/json" not in content:
            continue
        request = request_for(schema, method, path, operation)
        request["json"] = ["not", "an", "object"]
        response = client.request(**request)
        assert response.status_code == 422 and 422 in declared(operation), (method, path)
        assert ErrorResponse.model_validate(response.json()).error.code == "invalid_input"
        # found by fuzzing: JSON that is not UTF-8 was FastAPI's own 400 {"detail": ...}, in no schema
        request.pop("json")
        request["content"], request["headers"]["Content-Type"] = b"q\xff\xfeyU", "application/json"
        undecodable = client.request(**request)
        assert undecodable.status_code == 422, (method, path, undecodable.text)
        assert ErrorResponse.model_validate(undecodable.json()).error.rule == "json_invalid"


def test_the_edge_answers_the_declared_413(gateway, schema):
    """A declared Content-Length over the route's limit is refused before the route runs."""
    _app, client, _rpc = gateway
    for method, path, operation in operations(schema):
        if method not in BODY_METHODS:
            continue
        request = request_for(schema, method, path, operation)
        request["headers"]["Content-Length"] = str(body_limit(path) + 1)
        request.pop("json", None)
        request["content"] = b"{}"
        response = client.request(**request)
        assert response.status_code == 413 and 413 in declared(operation), (method, path)
        assert ErrorResponse.model_validate(response.json()).error.code == "payload_too_large"


def test_rate_limited_routes_answer_the_declared_429(gateway, schema):
    """One request per group and minute for a client (forwarded for a test
    address, one per route): the second to a group is refused at the edge."""
    _app, client, rpc = gateway
    rpc.error = rpc.session_error = None
    for number, (method, path, operation) in enumerate(operations(schema), start=1):
        if not rate_limited(method, path):
            continue
        request = request_for(schema, method, path, operation, session=False)
        request["headers"]["X-Forwarded-For"] = f"192.0.2.{number}"
        statuses = [client.request(**request).status_code for _ in range(2)]
        assert statuses[0] < 300 and statuses[-1] == 429 and 429 in declared(operation), (method, path, statuses)
        refused = client.request(**request)
        assert int(refused.headers["retry-after"]) >= 1
        assert ErrorResponse.model_validate(refused.json()).error.message.startswith("too_many_requests_")


def test_health_answers_its_declared_report(gateway, schema):
    _app, client, rpc = gateway
    rpc.error = None
    healthy = client.get("/healthz")
    assert healthy.status_code == 200 and HealthReport.model_validate(healthy.json()).status == "ok"
    rpc.error = typed.Unavailable("identity", "timeout")
    try:
        degraded = client.get("/healthz")
    finally:
        rpc.error = None
    assert degraded.status_code == 503
    report = HealthReport.model_validate(degraded.json())
    assert report.status == "degraded" and report.services["identity"].status == "unavailable"
    assert schema["paths"]["/healthz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HealthReport"}


def test_a_service_the_broker_does_not_know_answers_the_declared_503(gateway, schema):
    """nameko raises UnknownService when no queue is bound for the service (it never ran on
    this broker, or its queue was deleted); that escaped the RPC client as a plain-text 500."""
    from nameko.exceptions import UnknownService

    from services.common.rpc_client import RpcClient

    class NoQueues:
        def __getattr__(self, service):
            raise UnknownService(service)  # what ClusterRpcProxy's mandatory publish raises

    app, http, stub = gateway
    client = RpcClient("memory://")
    client._proxy = NoQueues
    app.state.rpc = client
    try:
        response = http.get("/api/v1/templates")
    finally:
        app.state.rpc = stub
    assert response.status_code == 503 and 503 in declared(schema["paths"]["/api/v1/templates"]["get"])
    body = ErrorResponse.model_validate(response.json())
    assert body.error.code == "unavailable" and body.error.message == "documents unavailable: unknown_service"
