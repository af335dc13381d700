"""The HTTP gateway in front of real services: typed errors become HTTP
answers that name the field and rule, and the happy path works."""
from __future__ import annotations

import json
import time

import eventlet
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.identity.service import IdentityService
from services.notify.service import NotifyService

pytestmark = pytest.mark.integration


@pytest.fixture
def client(service_config, run_container, amqp_uri, tmp_path):
    secrets_dir = tmp_path / "secrets"
    run_container(IdentityService, service_config("identity", SECRETS={
        "KEK": {"file": str(secrets_dir / "kek")}, "BLIND_INDEX_KEY": {"file": str(secrets_dir / "bi")},
        "OTP_KEY": {"file": str(secrets_dir / "otp")}, "GENERATE_MISSING": True}))
    outbox = tmp_path / "outbox.jsonl"
    run_container(NotifyService, service_config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)}))
    app = create_app({"AMQP_URI": amqp_uri, "RPC_TIMEOUT": 20, "DATA_DIR": str(tmp_path / "gw"),
                      "SECRETS": {"GENERATE_MISSING": True}})
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
    assert too_soon.json()["error"]["code"] == "rate_limited" and too_soon.json()["error"]["message"] == "otp_resend_too_soon"
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
    assert forged.status_code == 403 and forged.json()["error"]["message"] == "token_bad_signature"
