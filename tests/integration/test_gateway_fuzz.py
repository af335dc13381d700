"""Schemathesis over the gateway's OpenAPI, in front of the real services:
fuzzed requests, without a session and with a registered person's, get no
5xx and no answer outside the schema (status, content type, body).

identity, documents, signing and notify run in this process on the run's
broker, database and S3; the gateway runs as its own process (uvicorn, as
deployed) with its own broker user, and is reached over HTTP. Every operation
gets schema-valid requests, invalid ones where a request can break its schema
(a JSON body, a number), and, with the session, requests naming the person's
own draft. The number of examples is bounded so that the whole test runs in
about a minute (ESIGN_FUZZ_EXAMPLES per operation and generation mode;
derandomized, so a run is repeatable). Signing is reached as far as fuzzed
input can go (ids it does not know, PDFs that are not signed): no flow is
signed here, so its TSA is never asked.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import eventlet
import pytest
import requests

# Before hypothesis is first imported: its plugins include trio's, which cannot be
# imported once eventlet has patched socket (tests/conftest.py); none is needed here.
os.environ.setdefault("HYPOTHESIS_NO_PLUGINS", "1")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, Verbosity, given, settings  # noqa: E402
from hypothesis.errors import HypothesisException  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.common.s3server import free_port  # noqa: E402
from services.documents.service import DocumentsService  # noqa: E402
from services.identity.service import IdentityService  # noqa: E402
from services.notify.service import NotifyService  # noqa: E402
from services.signing.service import SigningService  # noqa: E402
from tests.support.registry import write_registry  # noqa: E402
from tests.support.stack import REPO  # noqa: E402

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("ESIGN_FUZZ_EXAMPLES", "10"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PERSON = ("张三", "11010519491231002X")
PHONE = "13812345678"
#: ends the session the authenticated run uses: fuzzed last
LOGOUT = ("POST", "/api/v1/sessions/current/revoke")

# the two raw bodies the gateway reads itself (DER): sent as the bytes generated
schemathesis.serializer.alias(["application/timestamp-query", "application/ocsp-request"], "application/octet-stream")


@dataclass
class Gateway:
    url: str
    token: str
    known: dict[str, str]  # path parameter -> an id that exists for the person (their draft)


@pytest.fixture
def gateway(service_config, run_container, amqp_users, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    registry = write_registry(tmp_path / "registry", [(*PERSON, None)])
    outbox = tmp_path / "sms.jsonl"
    run_container(IdentityService, service_config("identity", PUBLIC_URL=url,
                                                  PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)}))
    run_container(NotifyService, service_config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)}))
    run_container(DocumentsService, service_config("documents", PUBLIC_URL=url))
    run_container(SigningService, service_config("signing", PUBLIC_URL=url, TSA={"URL": f"{url}/tsa"}))
    env = dict(os.environ, AMQP_URI=amqp_users["gateway"], ESIGN_DATA_DIR=str(tmp_path / "gateway"),
               ESIGN_GATEWAY_PORT=str(port), GATEWAY_METRICS_PORT=str(free_port()), ESIGN_PUBLIC_URL=url,
               ESIGN_RPC_TIMEOUT="20", ESIGN_LOG_LEVEL="WARNING")
    log = open(tmp_path / "gateway.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "run", "gateway"], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: requests.get(url + "/pki/root.pem", timeout=5).status_code == 200, 60, "the gateway")
        yield Gateway(url, *_registered_person(url, outbox))
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def _wait_for(ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except requests.RequestException:
            pass
        eventlet.sleep(0.2)
    raise AssertionError(f"{what} did not come up in {seconds} s")


def _registered_person(url: str, outbox) -> tuple[str, dict[str, str]]:
    """Register PERSON (the registry vouches for the name and ID number) with a
    code from the console SMS outbox; a draft of theirs gives fuzzing an id that exists."""
    challenge = requests.post(url + "/api/v1/phone-codes", json={"phone": PHONE}, timeout=30).json()["challenge_id"]
    codes: list[str] = []

    def arrived() -> bool:
        codes[:] = [json.loads(line)["params"]["code"] for line in outbox.read_text().splitlines()]
        return bool(codes)

    _wait_for(lambda: outbox.exists() and arrived(), 20, "the phone code")
    confirmed = requests.post(f"{url}/api/v1/phone-codes/{challenge}/confirm", json={"code": codes[-1]}, timeout=30)
    assert confirmed.status_code == 200, confirmed.text
    registered = requests.post(url + "/api/v1/persons", timeout=30, json={
        "name": PERSON[0], "id_number": PERSON[1], "phone": PHONE, "phone_challenge_id": challenge})
    assert registered.status_code == 201, registered.text
    session = registered.json()["session"]
    headers = {"Authorization": "Bearer " + session["token"]}
    draft = requests.post(url + "/api/v1/documents", headers=headers, timeout=30,
                          json={"template_id": "receipt", "values": {}})
    assert draft.status_code == 201, draft.text
    return session["token"], {"document_id": draft.json()["document_id"]}


@dataclass
class Run:
    """What one fuzzing run sent and what came back."""

    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_operation: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    not_generated: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)

    def summary(self, name: str) -> str:
        spread = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses.items()))
        missed = [label for label in self.operations if not self.by_operation[label]]
        return (f"{name}: {self.requests} requests to {len(self.operations) - len(missed)} of "
                f"{len(self.operations)} operations ({spread}); {len(self.failures)} failures"
                + (f"; never sent: {', '.join(missed)}" if missed else "")
                + (f"; {len(self.not_generated)} operations have no invalid request to generate"
                   if self.not_generated else ""))


def has_invalid_requests(operation: dict) -> bool:
    """Whether a request can break the operation's schema: a JSON body, or a
    parameter that is not any text (hypothesis would search in vain, for seconds)."""
    if "application/json" in (operation.get("requestBody") or {}).get("content", {}):
        return True
    return any(p["in"] in ("path", "query") and p["schema"].get("type") != "string"
               for p in operation.get("parameters", ()))


def fuzz(gateway: Gateway, headers: dict[str, str] | None) -> Run:
    raw = requests.get(gateway.url + "/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(raw)
    http = requests.Session()
    run = Run()
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.method.upper(), op.path) == LOGOUT)
    run.operations = [operation.label for operation in operations]
    for operation in operations:
        path_parameters = {p.name for p in operation.path_parameters}
        known = {name: value for name, value in gateway.known.items() if name in path_parameters}
        strategies = [operation.as_strategy(GenerationMode.POSITIVE, headers=headers)]
        if has_invalid_requests(raw["paths"][operation.path][operation.method.lower()]):
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE, headers=headers))
        if headers and known:
            strategies.append(operation.as_strategy(GenerationMode.POSITIVE, headers=headers, path_parameters=known))
        for strategy in strategies:
            _run_examples(operation, strategy, gateway.url, http, run)
    http.close()  # an open keep-alive connection would hold up the gateway's shutdown
    return run


def _run_examples(operation, strategy, url: str, http: requests.Session, run: Run) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(case=strategy)
    def examples(case):
        try:
            response = case.call(base_url=url, session=http, timeout=30)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
            return  # a request the client library will not send: nothing reached the gateway
        run.requests += 1
        run.statuses[response.status_code] += 1
        run.by_operation[operation.label] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            if len(run.failures) < 20:
                run.failures.append(f"{operation.label}: {group}")

    try:
        examples()
    except HypothesisException as exc:  # e.g. no invalid value exists for an operation without parameters
        run.not_generated.append(f"{operation.label}: {type(exc).__name__}")


#: requests that answered 5xx or outside the schema (the first found by fuzzing, the others by probing
#: what it might reach: NUL characters, huge numbers), and what each answers now: (field, rule) of a 422
FOUND = [
    # JSON that is not UTF-8: FastAPI's own 400 {"detail": ...}
    ("POST", "/api/v1/phone-codes", {"data": b"q\xff\xfeyU", "headers": {"Content-Type": "application/json"}},
     "body", "json_invalid"),
    # a NUL character reached PostgreSQL (psycopg2: ValueError): 500 internal_error
    ("POST", "/api/v1/sessions", {"json": {"phone_challenge_id": "\x00"}}, "phone_challenge_id", "nul_character"),
    ("GET", "/api/v1/documents/%00", {}, "document_id", "nul_character"),
    ("POST", "/api/v1/documents", {"json": {"template_id": "receipt", "values": {"remark": "a\x00"}}},
     "values.remark", "nul_character"),
    # more digits than Decimal's precision (28): quantize raised InvalidOperation, 500 internal_error
    ("POST", "/api/v1/documents", {"json": {"template_id": "receipt", "values": {"amount": 10 ** 40}}},
     "amount", "max"),
]


def test_fuzzed_requests_get_only_declared_answers(gateway):
    session = {"Authorization": "Bearer " + gateway.token}
    for method, path, request, name, rule in FOUND:
        request = dict(request)
        answer = requests.request(method, gateway.url + path, headers={**session, **request.pop("headers", {})},
                                  timeout=30, **request)
        assert answer.status_code == 422, (method, path, answer.text)
        assert (answer.json()["error"]["field"], answer.json()["error"]["rule"]) == (name, rule), answer.text
    started = time.monotonic()
    anonymous = fuzz(gateway, None)
    with_session = fuzz(gateway, {"authorization": "Bearer " + gateway.token})
    elapsed = time.monotonic() - started
    report = "\n".join([anonymous.summary("without a session"), with_session.summary("with a session"),
                        f"fuzzing took {elapsed:.1f} s ({EXAMPLES} examples per operation and mode)"])
    print(report)
    failures = anonymous.failures + with_session.failures
    assert not failures, report + "\n\n" + "\n\n".join(failures)
    assert anonymous.requests > 300 and with_session.requests > 300, report
    for run in (anonymous, with_session):  # every operation was fuzzed
        assert all(run.by_operation[label] for label in run.operations), report
    # with a session, the routes behind it were reached, not only refused
    assert with_session.statuses[200] + with_session.statuses[201] > anonymous.statuses[200] + anonymous.statuses[201]
