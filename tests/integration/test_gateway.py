"""The HTTP gateway in front of real services: typed errors become HTTP
answers that name the field and rule, and the happy path works."""
from __future__ import annotations

import json
import time

import eventlet
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.session_cookie import COOKIE
from services.identity.service import IdentityService
from services.notify.service import NotifyService
from tests.support.registry import write_registry

pytestmark = pytest.mark.integration


@pytest.fixture
def client(service_config, run_container, amqp_users, tmp_path):
    secrets_dir = tmp_path / "secrets"
    registry = write_registry(tmp_path / "registry", [("张三", "11010519491231002X", None)])
    run_container(IdentityService, service_config("identity", SECRETS={
        "KEK": {"file": str(secrets_dir / "kek")}, "BLIND_INDEX_KEY": {"file": str(secrets_dir / "bi")},
        "OTP_KEY": {"file": str(secrets_dir / "otp")}, "GENERATE_MISSING": True},
        PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)}))
    outbox = tmp_path / "outbox.jsonl"
    run_container(NotifyService, service_config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)}))
    app = create_app({"AMQP_URI": amqp_users["gateway"], "RPC_TIMEOUT": 20, "DATA_DIR": str(tmp_path / "gw"),
                      "SECRETS": {"GENERATE_MISSING": True}, "SESSIONS": {"CACHE_SECONDS": 10}})
    with TestClient(app) as test_client:
        yield test_client, outbox


def test_phone_code_over_http(client):
    http, outbox = client
    response = http.post("/api/v1/phone-codes", json={"phone": "0086 139-1234-5678"})
    assert response.status_code == 201, response.text
    challenge = response.json()["challenge_id"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (outbox.exists() and outbox.read_text().strip()):
        eventlet.sleep(0.1)
    code = json.loads(outbox.read_text().splitlines()[0])["params"]["code"]
    assert http.post(f"/api/v1/phone-codes/{challenge}/confirm", json={"code": code}).json()["confirmed"]
    again = http.post(f"/api/v1/phone-codes/{challenge}/confirm", json={"code": code})
    assert again.status_code == 403 and again.json()["error"]["code"] == "forbidden"
    too_soon = http.post("/api/v1/phone-codes", json={"phone": "13912345678"})
    assert too_soon.status_code == 429, too_soon.text
    assert (too_soon.json()["error"]["code"] == "rate_limited"
            and too_soon.json()["error"]["message"] == "otp_resend_too_soon")
    assert 1 <= int(too_soon.headers["Retry-After"]) <= 60


def test_http_errors_name_field_and_rule(client):
    http, _ = client
    bad_phone = http.post("/api/v1/phone-codes", json={"phone": "1234"})
    assert bad_phone.status_code == 422
    assert bad_phone.json()["error"]["field"] == "phone"
    missing = http.post("/api/v1/phone-codes", json={})
    assert missing.status_code == 422
    assert missing.json()["error"] == {"code": "invalid_input", "field": "phone", "rule": "missing",
                                       "message": "Field required"}
    unknown = http.post("/api/v1/phone-codes/no-such-id/confirm", json={"code": "123456"})
    assert unknown.status_code == 404
    assert http.get("/openapi.json").json()["paths"]["/api/v1/phone-codes"]


def test_person_routes_need_a_genuine_session(client):
    http, _ = client
    missing = http.post("/api/v1/me/certificate")
    assert missing.status_code == 403 and missing.json()["error"]["message"] == "session_required"
    forged = http.post("/api/v1/me/certificate", headers={"Authorization": "Bearer eyJwaWQiOiJ4In0.AAAA"})
    assert forged.status_code == 403 and forged.json()["error"]["message"] == "session_invalid"


def _code(outbox, count_before: int) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = outbox.read_text().splitlines() if outbox.exists() else []
        if len(lines) > count_before:
            return json.loads(lines[-1])["params"]["code"]
        eventlet.sleep(0.1)
    raise AssertionError("no code arrived")


def test_sessions_over_http_are_listed_and_end_at_logout(client):
    """Register over HTTP (the registry vouches for the name and ID number),
    log in again from a second client, see both sessions, log one out."""
    http, outbox = client
    phone = "13812345678"
    challenge = http.post("/api/v1/phone-codes", json={"phone": phone}).json()["challenge_id"]
    http.post(f"/api/v1/phone-codes/{challenge}/confirm", json={"code": _code(outbox, 0)})
    registered = http.post("/api/v1/persons", headers={"User-Agent": "browser-A"},
                           json={"name": "张三", "id_number": "11010519491231002X", "phone": phone,
                                 "phone_challenge_id": challenge})
    assert registered.status_code == 201, registered.text
    first = registered.json()["session"]
    assert registered.json()["assurance_level"] == "authority_two_element"
    # the registration also set the web pages' cookie: the same session, without a header
    assert http.cookies[COOKIE] == first["token"]
    assert http.get("/api/v1/me").json()["person_id"] == registered.json()["person_id"]
    a = {"Authorization": "Bearer " + first["token"]}
    me = http.get("/api/v1/me", headers=a).json()
    assert me["next_step"] == "proofing" and me["assurance_level"] == "authority_two_element"
    assert "id_number" not in me and "11010519491231002X" not in json.dumps(me)
    sessions = http.get("/api/v1/me/sessions", headers=a).json()
    assert [(s["user_agent"], s["current"]) for s in sessions] == [("browser-A", True)]
    # a session alone issues no certificate
    refused = http.post("/api/v1/me/certificate", headers=a, json={})
    assert refused.status_code == 403 and refused.json()["error"]["message"] == "step_up_required"
    logout = http.post("/api/v1/sessions/current/revoke", headers=a)
    assert logout.status_code == 200 and logout.json()["revoked"] is True
    after = http.get("/api/v1/me", headers=a)
    assert after.status_code == 403 and after.json()["error"]["message"] == "session_revoked"
    # the cookie names that session too: refused all the same, and cleared
    by_cookie = http.get("/api/v1/me")
    assert by_cookie.json()["error"]["message"] == "session_revoked" and COOKIE not in http.cookies


def _wait(condition, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        eventlet.sleep(0.02)
    raise AssertionError(f"no {what} in {seconds} s")


def test_a_session_ended_elsewhere_is_refused_once_its_event_is_heard(client, rpc_proxy):
    """The gateway remembers identity's answer for a session (services/gateway/session_cache.py)
    only while it hears sessions_ended, on its own queue, as its own broker user; a session ended
    at identity by another way than this gateway (another device's gateway, a takeover) is
    refused as soon as the event arrives, not after the cache's seconds."""
    http, outbox = client
    cache = http.app.state.session_cache
    _wait(lambda: cache.on, "subscription to sessions_ended")
    phone = "13812345678"
    challenge = http.post("/api/v1/phone-codes", json={"phone": phone}).json()["challenge_id"]
    http.post(f"/api/v1/phone-codes/{challenge}/confirm", json={"code": _code(outbox, 0)})
    registered = http.post("/api/v1/persons", json={"name": "张三", "id_number": "11010519491231002X",
                                                    "phone": phone, "phone_challenge_id": challenge}).json()
    token, person_id = registered["session"]["token"], registered["person_id"]
    a = {"Authorization": "Bearer " + token}
    assert http.get("/api/v1/me", headers=a).status_code == 200
    assert cache.get(token).person_id == person_id  # remembered: the next requests ask identity nothing
    assert http.get("/api/v1/me", headers=a).status_code == 200
    started = time.monotonic()
    rpc_proxy.identity.revoke_session(person_id=person_id, session_id=registered["session"]["session_id"])
    refused = _wait(lambda: (answer := http.get("/api/v1/me", headers=a)).status_code == 403 and answer,
                    "refusal of the ended session", seconds=5.0)
    assert refused.json()["error"]["message"] == "session_revoked"
    assert time.monotonic() - started < 5.0 < cache.seconds  # the event, not the cache's seconds, ended it
    assert cache.get(token) is None
