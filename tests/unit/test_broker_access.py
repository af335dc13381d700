"""The broker's access table matches the code, and its patterns say what they should.

The real broker's refusals are shown in tests/integration/test_broker_access.py;
here the table is checked against every RPC call and event handler in services/,
so a new call fails until it is listed (and a listed call must exist).
"""
from __future__ import annotations

import ast
import base64
import hashlib
import re
from pathlib import Path

import pytest

from services.common import broker_access as B
from services.common import events as E

SERVICES_DIR = Path(B.__file__).resolve().parents[1]


def _modules(package: str):
    for path in sorted((SERVICES_DIR / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def calls_in_code(package: str) -> set[str]:
    """``service.method`` for every RPC the package's code makes: ``self.identity.x(...)``,
    ``identity.x(...)`` on a proxy, ``rpc.call("identity", "x", ...)``, and the
    ``("identity", "x", kwargs)`` tuples ``rpc.call_all`` takes."""
    found = set()
    for _path, tree in _modules(package):
        for node in ast.walk(tree):
            if isinstance(node, ast.Tuple) and len(node.elts) == 3 and all(
                    isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.elts[:2]) \
                    and node.elts[0].value in B.RPC_SERVERS:
                found.add(f"{node.elts[0].value}.{node.elts[1].value}")
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            target = getattr(func, "value", None)
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
            if isinstance(func, ast.Attribute) and name in B.RPC_SERVERS and name != package:
                if isinstance(target, ast.Name) or (isinstance(target.value, ast.Name) and target.value.id == "self"):
                    found.add(f"{name}.{func.attr}")
            # rpc.call("identity", "x", ...), and the call handed on: run_in_threadpool(rpc.call, "identity", "x")
            args = list(node.args)
            for i, arg in enumerate([func] + args):
                named = args[i:i + 2]
                if (getattr(arg, "attr", None) in ("call", "_call") and len(named) == 2
                        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in named)
                        and named[0].value in B.RPC_SERVERS):
                    found.add(f"{named[0].value}.{named[1].value}")
    return found


def subscriptions_in_code(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for _path, tree in _modules(package):
        for node in ast.walk(tree):
            # a subscription outside nameko: SUBSCRIPTION = ("identity", events.SESSIONS_ENDED) (the gateway's)
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUBSCRIPTION" for t in node.targets)
                    and isinstance(node.value, ast.Tuple)):
                source, event = node.value.elts
                found.setdefault(source.value, set()).add(getattr(E, event.attr))
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "handles_event"):
                    source = decorator.args[0].value
                    event = decorator.args[1]
                    event_type = getattr(E, event.attr) if isinstance(event, ast.Attribute) else event.value
                    found.setdefault(source, set()).add(event_type)
    return found


@pytest.mark.parametrize("service", B.CLIENTS)
def test_every_rpc_the_code_makes_is_listed_and_every_listed_one_is_made(service):
    in_code = calls_in_code(service)
    listed = set(B.RPC_CALLS[service])
    health = {f"{s}.health" for s in B.RPC_SERVERS} if service == "gateway" else set()  # called in a loop
    assert in_code - listed == set(), f"{service} calls RPCs the broker would refuse: list them in RPC_CALLS"
    assert listed - in_code - health == set(), f"{service} is allowed RPCs it never makes: remove them"


@pytest.mark.parametrize("service", B.CLIENTS)
def test_every_event_handler_is_listed_and_every_listed_one_exists(service):
    in_code = subscriptions_in_code(service)
    listed = {source: set(types) for source, types in B.EVENT_SUBSCRIPTIONS[service].items()}
    assert in_code == listed


def test_every_listed_method_is_an_rpc_of_its_service():
    from services.documents.service import DocumentsService
    from services.identity.service import IdentityService
    from services.notify.service import NotifyService
    from services.signing.service import SigningService

    classes = {"identity": IdentityService, "documents": DocumentsService, "signing": SigningService,
               "notify": NotifyService}
    for caller, keys in B.RPC_CALLS.items():
        for key in keys:
            service, method = key.split(".")
            fn = getattr(classes[service], method, None)
            assert fn is not None and getattr(fn, "nameko_entrypoints", None), f"{caller} lists {key}, not an RPC"


def test_internal_methods_are_callable_only_by_their_intended_caller():
    internal = {
        "identity.otp_message": {"notify"}, "identity.contact": {"notify"}, "documents.party_contact": {"notify"},
        "identity.party_details": {"documents"}, "identity.sign_digest": {"signing"},
        "identity.find_person": {"signing"}, "identity.person_matches": {"signing"},
        "documents.lock_for_signing": {"signing"}, "documents.get_document_content": {"signing"},
        "identity.revoke_certificate": set(), "identity.audit_records": set(), "notify.send_sms": set(),
    }
    for key, callers in internal.items():
        allowed = {caller for caller in B.CLIENTS if _topic_allows(caller, B.RPC_EXCHANGE, key, write=True)}
        assert allowed == callers, key


def _topic_allows(service: str, exchange: str, key: str, write: bool) -> bool:
    patterns = B.grants(service).topics.get(exchange)
    if patterns is None:
        return False
    return re.search(patterns[0 if write else 1], key) is not None


def test_no_one_binds_the_rpc_exchange_to_everything_or_to_another_services_requests():
    for service in B.CLIENTS:
        for key in ("#", "*.*", "identity.#", "signing.*"):
            if key == f"{service}.*":
                continue
            assert not _topic_allows(service, B.RPC_EXCHANGE, key, write=False), (service, key)
    assert _topic_allows("signing", B.RPC_EXCHANGE, "signing.*", write=False)
    reply = "9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
    assert all(_topic_allows(s, B.RPC_EXCHANGE, reply, write=False) for s in B.CLIENTS)
    # only services that answer RPCs publish replies
    assert _topic_allows("identity", B.RPC_EXCHANGE, reply, write=True)
    assert not _topic_allows("gateway", B.RPC_EXCHANGE, reply, write=True)


def test_events_are_published_only_by_their_source_and_heard_only_by_subscribers():
    assert _topic_allows("signing", "signing.events", "party_signed", write=True)
    assert not _topic_allows("signing", "signing.events", "sms_sent", write=True)
    for service in ("gateway", "identity", "documents", "notify"):
        assert not re.search(B.grants(service).write, "signing.events"), service
    assert _topic_allows("notify", "identity.events", "otp_requested", write=False)
    assert not _topic_allows("notify", "identity.events", "#", write=False)
    # the gateway hears only that a person's sessions ended (services/gateway/session_cache.py)
    assert _topic_allows("gateway", "identity.events", "sessions_ended", write=False)
    for key in ("#", "otp_requested", "certificate_revoked"):
        assert not _topic_allows("gateway", "identity.events", key, write=False), key
    assert not re.search(B.grants("gateway").write, "identity.events")
    assert not re.search(B.grants("documents").read, "identity.events")


def test_queues_are_a_services_own():
    gateway, notify = B.grants("gateway"), B.grants("notify")
    for queue in ("rpc-identity", "rpc.reply-signing-9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10",
                  "evt-identity-otp_requested--notify.on_otp_requested"):
        assert not re.search(gateway.read, queue) and not re.search(gateway.configure, queue)
    assert re.search(notify.read, "evt-identity-otp_requested--notify.on_otp_requested")
    assert re.search(notify.read, "rpc-notify") and not re.search(notify.read, "rpc-identity")
    assert re.search(gateway.read, "rpc.reply-standalone_rpc_proxy-9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10")
    # a process's own queue (readiness) is its service's alone
    own = "rpc-notify-9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
    assert re.search(notify.read, own) and re.search(notify.configure, own)
    assert not re.search(gateway.read, own) and not re.search(B.grants("identity").configure, own)
    assert not re.search(notify.read, "rpc-notify-anything")


def test_a_service_may_call_only_its_own_health_on_its_own_instance_queue():
    instance = "9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
    for service in B.RPC_SERVERS:
        assert _topic_allows(service, B.RPC_EXCHANGE, f"{service}.{instance}.health", write=True)
        assert _topic_allows(service, B.RPC_EXCHANGE, f"{service}.{instance}.*", write=False)
        for key in (f"{service}.{instance}.sign_digest", f"{service}.{instance}.#", f"{service}.x.health"):
            assert not _topic_allows(service, B.RPC_EXCHANGE, key, write=True), key
        assert not _topic_allows(service, B.RPC_EXCHANGE, f"{service}.{instance}.#", write=False)
    assert not _topic_allows("gateway", B.RPC_EXCHANGE, f"identity.{instance}.health", write=True)
    assert not _topic_allows("signing", B.RPC_EXCHANGE, f"identity.{instance}.health", write=True)
    assert not _topic_allows("signing", B.RPC_EXCHANGE, f"identity.{instance}.*", write=False)


def test_definitions_hash_passwords_as_rabbitmq_does_and_hold_no_password():
    document = B.definitions("esign", {"gateway": "pw-gateway", "identity": "pw-identity"}, prefix="t-")
    assert "pw-gateway" not in str(document) and "pw-identity" not in str(document)
    users = {u["name"]: u for u in document["users"]}
    assert set(users) == {"t-gateway", "t-identity"}
    raw = base64.b64decode(users["t-gateway"]["password_hash"])
    salt, digest = raw[:4], raw[4:]
    assert digest == hashlib.sha256(salt + b"pw-gateway").digest()
    assert {(p["user"], p["exchange"]) for p in document["topic_permissions"]} >= {
        ("t-gateway", "nameko-rpc"), ("t-identity", "nameko-rpc"), ("t-identity", "identity.events")}
    assert all(p["vhost"] == "esign" for p in document["permissions"] + document["topic_permissions"])


def test_the_monitor_user_may_read_queue_statistics_and_nothing_else():
    """KEDA's user: the management API lists the queues of a vhost it has a permission
    on; its permissions match no queue or exchange, and it has no topic permission."""
    document = B.definitions("esign", {"identity": "pw"}, prefix="t-", monitor=("t-keda", "pw-keda"))
    assert "pw-keda" not in str(document)
    (user,) = [u for u in document["users"] if u["name"] == "t-keda"]
    assert user["tags"] == ["management"]
    (granted,) = [p for p in document["permissions"] if p["user"] == "t-keda"]
    for what in ("configure", "write", "read"):
        assert granted[what] == "^$" and not re.search(granted[what], "rpc-identity")
    assert not [p for p in document["topic_permissions"] if p["user"] == "t-keda"]


def test_amqp_uri_replaces_the_credentials_and_quotes_them():
    uri = B.amqp_uri("pyamqp://guest:guest@127.0.0.1:5672/esign", "esign-gateway", "a/b:c@d")
    assert uri == "pyamqp://esign-gateway:a%2Fb%3Ac%40d@127.0.0.1:5672/esign"
    assert B.amqp_uri("amqp://rabbit:5672/", "u", "p") == "amqp://u:p@rabbit:5672/"


def test_the_cli_writes_definitions_from_passwords_in_the_environment(tmp_path, monkeypatch, capsys):
    from services.common.errors import InvalidInput

    for service in B.CLIENTS:
        monkeypatch.delenv(B.PASSWORD_ENV.format(service.upper()), raising=False)
    with pytest.raises(InvalidInput) as missing:
        B.main(["definitions", "--vhost", "esign"])
    assert (missing.value.field == "ESIGN_BROKER_PASSWORD_IDENTITY"
            and "ESIGN_BROKER_PASSWORD_GATEWAY" in str(missing.value))
    for service in B.CLIENTS:
        monkeypatch.setenv(B.PASSWORD_ENV.format(service.upper()), f"secret-{service}")
    monkeypatch.setenv("ESIGN_BROKER_ADMIN_PASSWORD", "secret-admin")
    out = tmp_path / "definitions.json"
    assert B.main(["definitions", "--vhost", "esign", "--admin-user", "esign", "--out", str(out)]) == 0
    document = __import__("json").loads(out.read_text())
    assert "secret-" not in out.read_text()
    users = {u["name"]: u for u in document["users"]}
    assert set(users) == {"esign"} | {f"esign-{s}" for s in B.CLIENTS}
    assert users["esign"]["tags"] == ["administrator"] and users["esign-gateway"]["tags"] == []
    with pytest.raises(InvalidInput) as missing:
        B.main(["definitions", "--vhost", "esign", "--monitor-user", "esign-keda", "--out", str(out)])
    assert missing.value.field == "ESIGN_BROKER_MONITOR_PASSWORD"
    monkeypatch.setenv("ESIGN_BROKER_MONITOR_PASSWORD", "secret-keda")
    assert B.main(["definitions", "--vhost", "esign", "--monitor-user", "esign-keda", "--out", str(out)]) == 0
    users = {u["name"]: u for u in __import__("json").loads(out.read_text())["users"]}
    assert users["esign-keda"]["tags"] == ["management"] and "secret-" not in out.read_text()


def test_apply_through_the_management_api_posts_the_definitions(monkeypatch):
    """The request the management API receives (a local HTTP server stands in for it here;
    this machine's RabbitMQ has no management plugin)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"], seen["auth"] = self.path, self.headers["Authorization"]
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(401 if seen["auth"] != "Basic " + base64.b64encode(b"ops:pw").decode() else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for service in B.CLIENTS:
            monkeypatch.setenv(B.PASSWORD_ENV.format(service.upper()), f"secret-{service}")
        monkeypatch.setenv("ESIGN_BROKER_MANAGEMENT_USER", "ops")
        monkeypatch.setenv("ESIGN_BROKER_MANAGEMENT_PASSWORD", "pw")
        url = f"http://127.0.0.1:{server.server_port}"
        assert B.main(["apply", "--vhost", "esign", "--management-url", url]) == 0
        assert seen["path"] == "/api/definitions"
        assert {u["name"] for u in seen["body"]["users"]} == {f"esign-{s}" for s in B.CLIENTS}
        monkeypatch.setenv("ESIGN_BROKER_MANAGEMENT_PASSWORD", "wrong")
        with pytest.raises(RuntimeError, match="answered 401"):
            B.main(["apply", "--vhost", "esign", "--management-url", url])
    finally:
        server.shutdown()
