"""Least privilege on the message broker: who may call which RPC, and hear which event.

Every process connects to RabbitMQ as its own user (``esign-identity``,
``esign-gateway`` ...). This module is the one place that says what each may
do, and turns it into RabbitMQ permissions, so that the broker itself refuses
anything else:

- **RPC calls** go to the topic exchange ``nameko-rpc`` with the routing key
  ``service.method``. A user's *topic* write permission on that exchange lists
  exactly the ``service.method`` keys in :data:`RPC_CALLS` (plus reply keys,
  which are random UUIDs, for services that answer RPCs). The gateway may call
  only public methods: ``identity.otp_message`` published with the gateway's
  user is refused with ``ACCESS_REFUSED`` before any service sees it.
- **Readiness**: a service that answers RPCs may also call its own ``health``
  on the queue only its process consumes (``rpc-<service>-<instance UUID>``,
  bound with ``<service>.<instance UUID>.*``; services/common/readiness.py):
  it may declare and consume that queue, bind that key, and publish
  ``<service>.<instance UUID>.health``, nothing else of the kind.
- **Replies and requests cannot be overheard**: a user may bind only its own
  queues, and its topic *read* permission on ``nameko-rpc`` allows the binding
  keys ``<own service>.*`` and reply UUIDs, never ``#``; it may consume only
  queues named after itself.
- **Events** go to ``<source>.events``. Only the source may publish there (the
  event types it emits, :data:`~services.common.events.KNOWN_EVENTS`); only
  the services in :data:`EVENT_SUBSCRIPTIONS` may bind to it, with the event
  types they handle.

Tests check this table against the code (every ``RpcProxy`` call, every
``rpc.call`` of the gateway, every ``handles_event``), so a new call fails a
unit test until it is listed here, and a listed call must exist.

:func:`definitions` writes a RabbitMQ definitions document (users with salted
SHA-256 password hashes, permissions, topic permissions, exchanges), which
``rabbitmqctl import_definitions`` (``esign up``, the tests) or the broker's
``load_definitions`` setting (docker-compose, k8s) applies. Exchanges are left
to nameko, which declares them as it always has.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping

from services.common.events import KNOWN_EVENTS

RPC_EXCHANGE = "nameko-rpc"
#: the services that answer RPCs (the gateway only calls)
RPC_SERVERS = ("identity", "documents", "signing", "notify")
CLIENTS = RPC_SERVERS + ("gateway",)
#: nameko names the reply queue of a standalone proxy (the gateway's) after this
STANDALONE_PROXY = "standalone_rpc_proxy"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: a pattern that no routing key or resource name matches
_NOTHING = "^$"

#: Who may call what. Internal methods (``otp_message``, ``party_details``,
#: ``contact``, ``sign_digest`` ...) appear only under their intended caller.
RPC_CALLS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({
        # health of every backend service (/healthz)
        "identity.health", "documents.health", "signing.health", "notify.health",
        # identity: registration, login, sessions, willingness, certificates, PKI endpoints
        "identity.register", "identity.request_phone_code", "identity.confirm_phone_code",
        "identity.login", "identity.session_person", "identity.list_sessions", "identity.revoke_session",
        "identity.revoke_other_sessions", "identity.change_phone", "identity.person_status",
        "identity.start_liveness", "identity.proof_face", "identity.issue_certificate",
        "identity.new_willingness_challenge", "identity.confirm_willingness",
        "identity.crl", "identity.ocsp", "identity.pki_certificates", "identity.timestamp",
        # documents: templates, drafts, attachments, receipt invites
        "documents.list_templates", "documents.create_draft", "documents.update_draft",
        "documents.get_document", "documents.get_pdf", "documents.render", "documents.add_attachment",
        "documents.make_receipt_invite", "documents.open_receipt_invite", "documents.create_draft_from_invite",
        "documents.list_files",
        # signing: flows, signatures, voids, reports, the evidence log, verification
        "signing.start_flow", "signing.get_flow", "signing.join_flow", "signing.prepare_signature",
        "signing.sign", "signing.complete_action", "signing.decline", "signing.remind", "signing.request_void",
        "signing.confirm_void", "signing.reject_void", "signing.get_signed_pdf", "signing.report",
        "signing.evidence_package", "signing.verify", "signing.document_status", "signing.checkpoint",
        "signing.consistency_proof", "signing.inclusion_proof", "signing.log_public_key", "signing.list_files",
        "signing.loan", "signing.confirm_repayment", "signing.propose_extension",
    }),
    "documents": frozenset({"identity.person_status", "identity.party_details"}),
    "signing": frozenset({
        "documents.get_document_content", "documents.get_pdf", "documents.lock_for_signing",
        "documents.create_statement", "documents.release_signing_lock", "documents.signing_locks",
        "identity.current_certificate", "identity.start_willingness", "identity.sign_digest",
        "identity.report_profile", "identity.pki_certificates", "identity.crl", "identity.find_person",
        "identity.revocation_data",
        "identity.person_matches",
    }),
    "notify": frozenset({"identity.otp_message", "identity.contact", "identity.contacts", "documents.party_contact"}),
    "identity": frozenset(),
}

_FLOW_EVENTS_LOGGED = frozenset({
    "flow_sent", "party_joined", "party_signed", "flow_completed", "flow_declined", "flow_expired",
    "void_requested", "void_rejected", "flow_voided", "flow_cancelled", "flow_identity_disputed",
    "loan_repayment_recorded", "loan_extended", "loan_repaid",
})

#: Who handles which events: ``{subscriber: {source: event types}}``.
EVENT_SUBSCRIPTIONS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "identity": {"notify": frozenset({"sms_sent"})},
    "documents": {"signing": frozenset({"flow_declined", "flow_expired", "flow_cancelled"})},
    "signing": {
        "identity": frozenset({"certificate_revoked", "identity_disputed"}),
        # the evidence log records every flow event as a leaf
        "signing": _FLOW_EVENTS_LOGGED,
    },
    "notify": {
        "identity": frozenset({"otp_requested"}),
        "signing": frozenset({"flow_sent", "flow_completed", "void_requested", "flow_voided", "flow_declined",
                              "flow_expired", "flow_cancelled", "sign_reminder",
                              "loan_extended", "loan_repayment_recorded", "loan_repaid"}),
    },
    # its session memory forgets a person's sessions when they end (services/gateway/session_cache.py)
    "gateway": {"identity": frozenset({"sessions_ended"})},
}


@dataclass(frozen=True)
class Grants:
    """One user's RabbitMQ permissions on a vhost."""

    configure: str
    write: str
    read: str
    #: exchange -> (write pattern, read pattern) on routing/binding keys
    topics: Mapping[str, tuple[str, str]]


def _alternatives(names: Iterable[str]) -> str:
    names = sorted(set(names))
    if not names:
        return _NOTHING
    return "^(" + "|".join(names) + ")$"


def _literal(names: Iterable[str]) -> list[str]:
    return [re.escape(name) for name in names]


def subscription_queues(service: str) -> list[str]:
    """Patterns of the queues nameko declares for ``service``'s event handlers
    (``evt-<source>-<event type>--<service>.<handler method>``)."""
    return [re.escape(f"evt-{source}-{event_type}--{service}.") + "[a-z_]+"
            for source, types in sorted(EVENT_SUBSCRIPTIONS.get(service, {}).items()) for event_type in sorted(types)]


def grants(service: str) -> Grants:
    """What ``service``'s user may do, and nothing more."""
    if service not in CLIENTS:
        raise ValueError(f"unknown service {service!r}")
    serves = service in RPC_SERVERS
    reply_owner = STANDALONE_PROXY if service == "gateway" else service
    own_queues = subscription_queues(service)
    own_queue_patterns = own_queues + [re.escape(f"rpc.reply-{reply_owner}-") + _UUID]
    if serves:
        own_queue_patterns.append(re.escape(f"rpc-{service}"))
        own_queue_patterns.append(re.escape(f"rpc-{service}-") + _UUID)  # the process's own (readiness)
    publishes = KNOWN_EVENTS.get(service, ()) if serves else ()
    sources = sorted(EVENT_SUBSCRIPTIONS.get(service, {}))
    own_exchange = [re.escape(f"{service}.events")] if publishes else []
    source_exchanges = _literal(f"{source}.events" for source in sources)

    topics: dict[str, tuple[str, str]] = {}
    calls = _literal(RPC_CALLS.get(service, ()))
    # replies; and its own health on its own instance queue (readiness)
    rpc_write = calls + ([_UUID, re.escape(f"{service}.") + _UUID + re.escape(".health")] if serves else [])
    rpc_read = [_UUID] + ([re.escape(f"{service}.*"), re.escape(f"{service}.") + _UUID + re.escape(".*")]
                          if serves else [])
    topics[RPC_EXCHANGE] = (_alternatives(rpc_write), _alternatives(rpc_read))
    if publishes:
        heard = EVENT_SUBSCRIPTIONS.get(service, {}).get(service, {})
        topics[f"{service}.events"] = (_alternatives(_literal(publishes)), _alternatives(_literal(heard)))
    for source in sources:
        if source == service:
            continue
        topics[f"{source}.events"] = (_NOTHING, _alternatives(_literal(EVENT_SUBSCRIPTIONS[service][source])))
    rpc = [re.escape(RPC_EXCHANGE)]
    return Grants(
        configure=_alternatives(rpc + own_exchange + source_exchanges + own_queue_patterns),
        write=_alternatives(rpc + own_exchange + own_queue_patterns),
        read=_alternatives(rpc + source_exchanges + own_queue_patterns),
        topics=topics,
    )


def user_name(service: str, prefix: str = "esign-") -> str:
    return f"{prefix}{service}"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + SHA-256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def definitions(vhost: str, passwords: Mapping[str, str], prefix: str = "esign-",
                admin: tuple[str, str] | None = None, monitor: tuple[str, str] | None = None) -> dict:
    """A RabbitMQ definitions document giving each service in ``passwords`` its
    user, its permissions and its topic permissions on ``vhost``; with ``admin``
    (name, password), also an administrator for operators (a broker that loads
    definitions at boot makes no default user); with ``monitor`` (name, password),
    a user that may only read the queues' statistics through the management API
    (KEDA scales the services on their queues' depth: deploy/k8s/keda.yaml)."""
    users, permissions, topic_permissions = [], [], []
    if admin is not None:
        users.append({"name": admin[0], "password_hash": password_hash(admin[1]),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]})
        permissions.append({"user": admin[0], "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
    if monitor is not None:
        # the "management" tag lists the queues of the vhosts a user has any permission on; these
        # permissions match no resource, so it can neither publish, consume, bind nor declare
        users.append({"name": monitor[0], "password_hash": password_hash(monitor[1]),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["management"]})
        permissions.append({"user": monitor[0], "vhost": vhost, "configure": _NOTHING, "write": _NOTHING,
                            "read": _NOTHING})
    for service in sorted(passwords):
        name = user_name(service, prefix)
        granted = grants(service)
        users.append({"name": name, "password_hash": password_hash(passwords[service]),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        permissions.append({"user": name, "vhost": vhost, "configure": granted.configure,
                            "write": granted.write, "read": granted.read})
        for exchange, (write, read) in sorted(granted.topics.items()):
            topic_permissions.append({"user": name, "vhost": vhost, "exchange": exchange,
                                      "write": write, "read": read})
    return {"vhosts": [{"name": vhost}], "users": users, "permissions": permissions,
            "topic_permissions": topic_permissions}


def import_definitions(document: dict, rabbitmqctl: str = "rabbitmqctl") -> None:
    """Apply ``document`` to the local broker with ``rabbitmqctl import_definitions``
    (adds and updates; leaves other users and vhosts alone). The document goes
    through standard input, so no file holds the password hashes."""
    done = subprocess.run([rabbitmqctl, "-q", "import_definitions", "--format", "json"], input=json.dumps(document),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl import_definitions failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[:500]}")


def post_definitions(document: dict, management_url: str, user: str, password: str, timeout: float = 30.0) -> None:
    """Apply ``document`` through the RabbitMQ management API (``POST /api/definitions``,
    which adds and updates like ``import_definitions``): for brokers this process cannot
    reach with rabbitmqctl (Kubernetes, a managed RabbitMQ)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        management_url.rstrip("/") + "/api/definitions", data=json.dumps(document).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            if answer.status not in (200, 201, 204):
                raise RuntimeError(f"RabbitMQ management API answered {answer.status}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"RabbitMQ management API answered {exc.code}: {exc.read()[:300]!r}") from None


PASSWORD_ENV = "ESIGN_BROKER_PASSWORD_{}"


def passwords_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Each service's broker password from ``ESIGN_BROKER_PASSWORD_<SERVICE>``."""
    missing = [PASSWORD_ENV.format(s.upper()) for s in CLIENTS if not environ.get(PASSWORD_ENV.format(s.upper()))]
    if missing:
        from services.common.errors import InvalidInput

        raise InvalidInput(missing[0], "required", f"set {', '.join(missing)} (one password per service)")
    return {service: environ[PASSWORD_ENV.format(service.upper())] for service in CLIENTS}


def main(argv: list[str] | None = None) -> int:
    """``esign broker definitions|apply``: the services' broker users and permissions."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="esign broker", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("definitions", "write a RabbitMQ definitions file (load_definitions at boot)"),
                       ("apply", "apply them to the broker: rabbitmqctl import_definitions, or the management "
                                 "API with --management-url (user and password from ESIGN_BROKER_MANAGEMENT_USER, "
                                 "ESIGN_BROKER_MANAGEMENT_PASSWORD)")):
        command = commands.add_parser(name, help=text,
                                      description=text + ". Passwords come from ESIGN_BROKER_PASSWORD_<SERVICE> "
                                      "(IDENTITY, DOCUMENTS, SIGNING, NOTIFY, GATEWAY).")
        command.add_argument("--vhost", default="/")
        command.add_argument("--prefix", default="esign-", help="user names: <prefix><service>")
        command.add_argument("--admin-user", default=None,
                             help="also an administrator, password from ESIGN_BROKER_ADMIN_PASSWORD")
        command.add_argument("--monitor-user", default=None,
                             help="also a user that may only read queue statistics (KEDA), password from "
                                  "ESIGN_BROKER_MONITOR_PASSWORD")
        if name == "definitions":
            command.add_argument("--out", default="-", help="file to write (default standard output)")
        else:
            command.add_argument("--management-url", default=None, help="e.g. http://rabbitmq:15672")
    args = parser.parse_args(argv)
    admin = None
    if args.admin_user:
        admin_password = os.environ.get("ESIGN_BROKER_ADMIN_PASSWORD")
        if not admin_password:
            from services.common.errors import InvalidInput

            raise InvalidInput("ESIGN_BROKER_ADMIN_PASSWORD", "required", "set it with --admin-user")
        admin = (args.admin_user, admin_password)
    monitor = None
    if args.monitor_user:
        monitor_password = os.environ.get("ESIGN_BROKER_MONITOR_PASSWORD")
        if not monitor_password:
            from services.common.errors import InvalidInput

            raise InvalidInput("ESIGN_BROKER_MONITOR_PASSWORD", "required", "set it with --monitor-user")
        monitor = (args.monitor_user, monitor_password)
    document = definitions(args.vhost, passwords_from_env(os.environ), args.prefix, admin, monitor)
    if args.command == "apply":
        if args.management_url:
            user, password = (os.environ.get("ESIGN_BROKER_MANAGEMENT_USER"),
                              os.environ.get("ESIGN_BROKER_MANAGEMENT_PASSWORD"))
            if not user or not password:
                from services.common.errors import InvalidInput

                raise InvalidInput("ESIGN_BROKER_MANAGEMENT_USER", "required",
                                   "set ESIGN_BROKER_MANAGEMENT_USER and ESIGN_BROKER_MANAGEMENT_PASSWORD")
            post_definitions(document, args.management_url, user, password)
        else:
            import_definitions(document)
        print(f"broker users {args.prefix}<service> on vhost {args.vhost!r} applied")
        return 0
    text = json.dumps(document, indent=2)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        # password hashes only; the broker (another user in its container) must read it
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"wrote {args.out}: users {args.prefix}<service> on vhost {args.vhost!r}", file=sys.stderr)
    return 0


def amqp_uri(base_uri: str, user: str, password: str) -> str:
    """``base_uri`` (any credentials) with ``user:password`` instead."""
    from urllib.parse import quote

    scheme, rest = base_uri.split("://", 1)
    host_part = rest.split("@", 1)[-1]
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host_part}"
