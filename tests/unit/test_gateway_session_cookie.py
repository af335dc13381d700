"""The web pages' session cookie (services/gateway/session_cookie.py) with
identity's session RPCs stubbed: its flags over HTTP, HTTPS and a trusted
proxy; the cookie alone is a session; a state change it authenticates must
come from this gateway's origin (403 csrf_origin), a bearer one need not;
a bearer header wins over the cookie; logout, and a 403 for a session that
has ended, clear it."""
from __future__ import annotations

from datetime import timedelta
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.clock import iso, now
from services.common.errors import Forbidden
from services.gateway.app import create_app
from services.gateway.session_cookie import COOKIE, SessionCookie, origin_of

PUBLIC_URL = "https://esign.example.com"
LIFETIME = 12 * 3600
EVIL = "https://evil.example"


class Identity:
    """identity's session RPCs as the gateway calls them: a token per login, ended at logout."""

    def __init__(self):
        self.sessions: dict[str, dict] = {}  # token -> {person_id, session_id, ended: reason or None}
        self.calls: list[str] = []

    def call(self, service, method, /, **kwargs):
        self.calls.append(method)
        if method in ("login", "register"):
            number = len(self.sessions) + 1
            token, session_id = f"token-{number}", f"s-{number}"
            self.sessions[token] = {"person_id": f"p-{number}", "session_id": session_id, "ended": None}
            return {"person_id": f"p-{number}", "name_masked": "张*", "session": {
                "session_id": session_id, "token": token, "expires_at": iso(now() + timedelta(seconds=LIFETIME))}}
        if method == "session_person":
            found = self.sessions.get(kwargs["token"])
            if found is None:
                raise Forbidden("session_invalid")
            if found["ended"]:
                raise Forbidden(found["ended"])
            return {"person_id": found["person_id"], "session_id": found["session_id"]}
        if method == "revoke_session":
            for found in self.sessions.values():
                if found["session_id"] == kwargs["session_id"]:
                    found["ended"] = "session_revoked"
            return {"session_id": kwargs["session_id"], "revoked": True}
        if method == "person_status":
            return {"person_id": kwargs["person_id"], "next_step": "ready"}
        if method == "start_liveness":
            return {"challenge_id": "c-1", "person_id": kwargs["person_id"]}
        raise AssertionError(f"unexpected RPC {service}.{method}")

    def close(self):
        pass


#: the module's gateway apps, one per configuration: FastAPI builds an app's routes on its first
#: request (about 0.15 s of CPU), the same work for every app made from the same configuration
_APPS: dict[str, FastAPI] = {}


def gateway(tmp_path, base_url="http://testserver", client=("127.0.0.1", 50000), trusted_proxies=""):
    """A client of a gateway with a new identity stub and new edge limits (no rate spent by an
    earlier test), as a gateway just started has."""
    identity = Identity()
    app = _APPS.get(trusted_proxies)
    if app is None:
        app = _APPS[trusted_proxies] = create_app(
            {"AMQP_URI": "memory://", "DATA_DIR": str(tmp_path), "HTTP": {"PUBLIC_URL": PUBLIC_URL},
             "LIMITS": {"TRUSTED_PROXIES": trusted_proxies}}, rpc=identity)
    app.state.rpc = identity
    app.middleware_stack = None  # built again on the next request: a new EdgeLimits and its buckets
    return TestClient(app, base_url=base_url, client=client), identity


@pytest.fixture
def http(tmp_path):
    with gateway(tmp_path)[0] as client:
        yield client


def set_cookie(response) -> dict[str, str]:
    """The one Set-Cookie of ``response`` for the session cookie: its value and attributes (lower-case names)."""
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(COOKIE + "=")]
    morsel = SimpleCookie(header)[COOKIE]
    flags = {part.strip().lower() for part in header.split(";")}
    attributes = {name: value for name, value in morsel.items() if value}
    attributes.update({name: "" for name in ("httponly", "secure") if name in flags})
    return {"value": morsel.value, **attributes}


def log_in(http: TestClient, path: str = "/api/v1/sessions", **kwargs):
    body = {"phone_challenge_id": "c-1"} if path == "/api/v1/sessions" else {
        "name": "张三", "id_number": "11010519491231002X", "phone": "13812345678", "phone_challenge_id": "c-1"}
    answer = http.post(path, json=body, **kwargs)
    assert answer.status_code == 201, answer.text
    return answer


@pytest.mark.parametrize("path", ["/api/v1/sessions", "/api/v1/persons"])
def test_login_and_registration_set_an_httponly_strict_cookie_over_http(http, path):
    answer = log_in(http, path)
    token = (answer.json()["session"] if path == "/api/v1/persons" else answer.json())["token"]
    cookie = set_cookie(answer)
    assert cookie["value"] == token  # API clients still read the token from the JSON
    assert "httponly" in cookie and cookie["samesite"].lower() == "strict" and cookie["path"] == "/"
    assert "secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert LIFETIME - 60 <= int(cookie["max-age"]) <= LIFETIME  # until identity's expires_at


def test_over_https_the_cookie_is_secure(tmp_path):
    with gateway(tmp_path, base_url="https://esign.example.com")[0] as http:
        cookie = set_cookie(log_in(http))
        assert "secure" in cookie and "httponly" in cookie and cookie["samesite"].lower() == "strict"
        assert http.get("/api/v1/me").status_code == 200  # the browser sends a Secure cookie back over HTTPS


def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(tmp_path):
    forwarded = {"X-Forwarded-Proto": "https"}
    with gateway(tmp_path, client=("10.1.2.3", 40000), trusted_proxies="10.0.0.0/8")[0] as behind_ingress:
        assert "secure" in set_cookie(log_in(behind_ingress, headers=forwarded))
    with gateway(tmp_path, client=("203.0.113.9", 40000), trusted_proxies="10.0.0.0/8")[0] as direct:
        assert "secure" not in set_cookie(log_in(direct, headers=forwarded))


def test_the_cookie_alone_is_a_session(http):
    person = log_in(http).json()["person_id"]
    me = http.get("/api/v1/me")  # no Authorization header: the cookie the login set
    assert me.status_code == 200 and me.json()["person_id"] == person
    http.cookies.clear()
    refused = http.get("/api/v1/me")
    assert refused.status_code == 403 and refused.json() == {"error": {"code": "forbidden",
                                                                       "message": "session_required"}}


@pytest.mark.parametrize("headers", [
    {"Origin": EVIL},
    {"Origin": "null"},  # a sandboxed frame, a data: page
    {"Origin": "http://esign.example.com"},  # the public host, but not over HTTPS
    {"Referer": EVIL + "/page"},
    {},  # neither header
], ids=["foreign-origin", "null-origin", "other-scheme", "foreign-referer", "no-origin"])
def test_a_cookie_state_change_from_another_origin_is_refused(tmp_path, headers):
    http, identity = gateway(tmp_path)
    with http:
        log_in(http)
        identity.calls.clear()
        refused = http.post("/api/v1/me/liveness", headers=headers)
        assert refused.status_code == 403
        assert refused.json() == {"error": {"code": "forbidden", "message": "csrf_origin"}}
        assert identity.calls == []  # refused before identity is asked
        assert not refused.headers.get_list("set-cookie")  # the session itself is fine


@pytest.mark.parametrize("headers", [
    {"Origin": "http://testserver"},  # the gateway reached directly: its Host
    {"Origin": PUBLIC_URL},  # the public address, behind the ingress
    {"Origin": PUBLIC_URL + ":443"},  # the same origin spelled with its default port
    {"Referer": "http://testserver/flows/f-1"},  # no Origin: the Referer's origin
], ids=["host", "public-url", "default-port", "referer"])
def test_a_cookie_state_change_from_this_origin_passes(http, headers):
    person = log_in(http).json()["person_id"]
    answer = http.post("/api/v1/me/liveness", headers=headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["person_id"] == person


def test_reads_by_cookie_need_no_origin(http):
    log_in(http)
    assert http.get("/api/v1/me", headers={"Origin": EVIL}).status_code == 200


def test_a_bearer_state_change_needs_no_origin_and_the_header_wins(tmp_path):
    http, identity = gateway(tmp_path)
    with http:
        cookie_person = log_in(http).json()["person_id"]
        bearer = log_in(http).json()  # the jar now holds this login's cookie: put the first one back
        http.cookies.set(COOKIE, "token-1")
        answer = http.post("/api/v1/me/liveness", headers={"Authorization": f"Bearer {bearer['token']}",
                                                           "Origin": EVIL})
        assert answer.status_code == 201 and answer.json()["person_id"] == bearer["person_id"] != cookie_person
        identity.sessions["token-2"]["ended"] = "session_revoked"
        refused = http.get("/api/v1/me", headers={"Authorization": f"Bearer {bearer['token']}"})
        assert refused.json()["error"]["message"] == "session_revoked"  # not the cookie's live session
        assert not refused.headers.get_list("set-cookie")  # a bearer's ended session leaves the cookie alone


def test_logout_clears_the_cookie(http):
    log_in(http)
    logout = http.post("/api/v1/sessions/current/revoke", headers={"Origin": "http://testserver"})
    assert logout.status_code == 200 and logout.json()["revoked"] is True
    cleared = set_cookie(logout)
    assert cleared["value"] == "" and cleared["max-age"] == "0"
    assert parsedate_to_datetime(cleared["expires"]) <= now()  # for browsers that know no Max-Age
    assert "httponly" in cleared and cleared["path"] == "/"
    assert COOKIE not in http.cookies
    assert http.get("/api/v1/me").json()["error"]["message"] == "session_required"


@pytest.mark.parametrize("ended", ["session_revoked", "session_expired", "account_frozen"])
def test_a_cookie_naming_an_ended_session_is_cleared_in_the_403(tmp_path, ended):
    http, identity = gateway(tmp_path)
    with http:
        log_in(http)
        identity.sessions["token-1"]["ended"] = ended
        refused = http.get("/api/v1/me")
        assert refused.status_code == 403 and refused.json()["error"]["message"] == ended
        assert set_cookie(refused)["max-age"] == "0"
        assert COOKIE not in http.cookies
    unknown, _identity = gateway(tmp_path)
    with unknown:
        refused = unknown.get("/api/v1/me", headers={"Cookie": f"{COOKIE}=forged"})
        assert refused.json()["error"]["message"] == "session_invalid" and set_cookie(refused)["max-age"] == "0"


def test_a_login_from_another_origin_is_refused(tmp_path):
    """Login CSRF: another site's page must not log the browser into an account of its choosing."""
    http, identity = gateway(tmp_path)
    with http:
        refused = http.post("/api/v1/sessions", json={"phone_challenge_id": "c-1"}, headers={"Origin": EVIL})
        assert refused.status_code == 403 and refused.json()["error"]["message"] == "csrf_origin"
        assert identity.calls == [] and not refused.headers.get_list("set-cookie")
        assert log_in(http, headers={"Origin": "http://testserver"}).status_code == 201


@pytest.mark.parametrize("url, origin", [
    ("https://Esign.Example.com/path?q", "https://esign.example.com"),
    ("https://esign.example.com:443", "https://esign.example.com"),
    ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
    ("http://[::1]:8000/x", "http://[::1]:8000"),
    ("null", None), ("ftp://esign.example.com", None), ("http://", None), ("http://host:port", None),
])
def test_origins(url, origin):
    assert origin_of(url) == origin


def test_a_public_url_that_is_no_url_stops_the_gateway():
    with pytest.raises(ValueError, match="HTTP.PUBLIC_URL"):
        SessionCookie.from_config({"HTTP": {"PUBLIC_URL": "esign.example.com"}})
