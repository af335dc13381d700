"""Least privilege on the real broker: each service's user may publish, bind and
consume only what services.common.broker_access grants it; RabbitMQ itself refuses
the rest (ACCESS_REFUSED), before any service sees the message."""
from __future__ import annotations

import uuid

import amqp
import pytest
from kombu import Connection, Exchange, Producer, Queue
from nameko.rpc import RpcProxy

from services.common.entrypoints import rpc
from services.common.errors import Unavailable
from services.common.rpc_client import RpcClient
from services.identity.service import IdentityService

pytestmark = pytest.mark.integration

RPC = Exchange("nameko-rpc", type="topic", durable=True)


@pytest.fixture
def identity(service_config, run_container, tmp_path):
    from tests.support.registry import write_registry

    registry = write_registry(tmp_path / "registry", [("张三", "11010519491231002X", None)])
    return run_container(IdentityService, service_config(
        "identity", PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)}))


def _refused(action) -> str:
    """Run ``action(channel)`` and a synchronous round trip; the broker's refusal text."""
    with pytest.raises(amqp.exceptions.AccessRefused) as refused:
        action()
    return str(refused.value)


def _publish(uri: str, exchange: Exchange, key: str, **properties) -> None:
    with Connection(uri) as connection:
        channel = connection.channel()
        properties.setdefault("reply_to", str(uuid.uuid4()))  # shaped like a nameko request
        Producer(channel).publish({"args": [], "kwargs": {}}, exchange=exchange, routing_key=key, declare=[exchange],
                                  **properties)
        channel.basic_qos(0, 1, False)  # a round trip: a refused publish closes the channel before it returns


def test_the_gateways_user_cannot_call_internal_methods_and_can_call_public_ones(identity, amqp_users):
    gateway = amqp_users["gateway"]
    for key in ("identity.otp_message", "identity.party_details", "identity.revoke_certificate",
                "identity.sign_digest", "notify.send_sms", "identity.audit_records"):
        text = _refused(lambda key=key: _publish(gateway, RPC, key))
        assert f"access to topic '{key}' in exchange 'nameko-rpc'" in text and "refused" in text
    _publish(gateway, RPC, "identity.health")  # allowed: no exception

    client = RpcClient(gateway, timeout=20)
    try:
        assert client.call("identity", "health")["status"] == "ok"
        with pytest.raises(Unavailable):  # refused by the broker: no service ever answers
            client.call("identity", "otp_message", challenge_id="0" * 32)
        assert client.call("identity", "health")["status"] == "ok"  # the client recovers
    finally:
        client.close()


class PretendNotify:
    """A service running as notify's user, asking identity what notify asks."""

    name = "notify"
    identity = RpcProxy("identity")

    @rpc
    def ask_identity(self, method: str) -> str:
        try:
            getattr(self.identity, method)(challenge_id="0" * 32)
        except Exception as exc:  # the answer's type is what the test looks at
            return type(exc).__name__
        return "answered"


def test_internal_methods_answer_their_intended_caller(identity, amqp_users, service_config, run_container,
                                                       rpc_proxy):
    run_container(PretendNotify, {"AMQP_URI": amqp_users["notify"]})
    # identity answers notify (a typed error here: the login challenge does not exist)
    assert rpc_proxy.notify.ask_identity("otp_message") in ("NotFound", "InvalidInput")
    # documents may not ask for a login code's text, though it may ask identity other things
    _publish(amqp_users["documents"], RPC, "identity.party_details")
    assert "refused" in _refused(lambda: _publish(amqp_users["documents"], RPC, "identity.otp_message"))


def test_no_user_can_overhear_requests_replies_or_events(identity, amqp_users):
    gateway = amqp_users["gateway"]
    with Connection(gateway) as connection:
        channel = connection.channel()
        own = Queue(f"rpc.reply-standalone_rpc_proxy-{'1' * 8}-1111-1111-1111-{'1' * 12}", exchange=RPC,
                    routing_key="#", auto_delete=True)
        text = _refused(lambda: own(channel).declare())
        assert "access to topic '#' in exchange 'nameko-rpc'" in text
    with Connection(gateway) as connection:
        channel = connection.channel()
        text = _refused(lambda: channel.basic_consume("rpc-identity", callback=lambda m: None))
        assert "queue 'rpc-identity'" in text
    with Connection(gateway) as connection:
        channel = connection.channel()
        events = Exchange("identity.events", type="topic", durable=True)
        queue = Queue(f"rpc.reply-standalone_rpc_proxy-{'2' * 8}-2222-2222-2222-{'2' * 12}", exchange=events,
                      routing_key="otp_requested", auto_delete=True)
        assert "exchange 'identity.events'" in _refused(lambda: queue(channel).declare())
    # only identity publishes identity's events, and only the types it emits
    notify_events = Exchange("identity.events", type="topic", durable=True)
    assert "refused" in _refused(lambda: _publish(amqp_users["notify"], notify_events, "otp_requested"))
    _publish(amqp_users["identity"], notify_events, "otp_requested")
    assert "refused" in _refused(lambda: _publish(amqp_users["identity"], notify_events, "flow_completed"))


def test_a_request_without_reply_to_does_not_stop_the_service(identity, amqp_users):
    # nameko's responder raised KeyError('reply_to') in the consumer thread and the container died
    _publish(amqp_users["gateway"], RPC, "identity.health", reply_to=None)
    client = RpcClient(amqp_users["gateway"], timeout=20)
    try:
        assert client.call("identity", "health")["status"] == "ok"
    finally:
        client.close()


def test_the_deployment_definitions_with_an_administrator_are_accepted_by_rabbitmq(amqp_uri):
    """What docker-compose loads at boot (esign broker definitions --admin-user), applied to a
    scratch vhost: every user logs in, the administrator may do anything there."""
    import secrets
    import subprocess

    from services.common import broker_access

    vhost = f"esign-defs-{secrets.token_hex(4)}"
    prefix = f"esign-defs-{secrets.token_hex(4)}-"
    passwords = {service: secrets.token_hex(8) for service in broker_access.CLIENTS}
    admin = (prefix + "admin", secrets.token_hex(8))
    broker_access.import_definitions(broker_access.definitions(vhost, passwords, prefix, admin))
    base = amqp_uri.rsplit("/", 1)[0] + "/" + vhost
    try:
        _publish(broker_access.amqp_uri(base, *admin), RPC, "identity.otp_message")  # the admin may
        _publish(broker_access.amqp_uri(base, prefix + "gateway", passwords["gateway"]), RPC, "identity.login")
        assert "refused" in _refused(lambda: _publish(broker_access.amqp_uri(
            base, prefix + "gateway", passwords["gateway"]), RPC, "identity.otp_message"))
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        for user in [admin[0]] + [prefix + service for service in passwords]:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user], capture_output=True)


def test_the_monitor_user_can_neither_consume_nor_publish(amqp_uri, identity):
    """KEDA's user (esign broker apply --monitor-user) reads queue statistics through the
    management API (not on this machine's broker); over AMQP it may do nothing at all."""
    import secrets
    import subprocess

    from services.common import broker_access

    vhost = amqp_uri.rsplit("/", 1)[1]
    monitor = (f"esign-monitor-{secrets.token_hex(4)}", secrets.token_hex(8))
    broker_access.import_definitions(broker_access.definitions(vhost, {}, monitor=monitor))
    uri = broker_access.amqp_uri(amqp_uri, *monitor)
    try:
        assert "refused" in _refused(lambda: _publish(uri, RPC, "identity.health"))
        with Connection(uri) as connection:
            channel = connection.channel()
            assert "queue 'rpc-identity'" in _refused(lambda: channel.basic_consume("rpc-identity",
                                                                                    callback=lambda m: None))
        with Connection(uri) as connection:
            channel = connection.channel()
            queue = Queue(f"rpc.reply-identity-{'3' * 8}-3333-3333-3333-{'3' * 12}", exchange=RPC,
                          routing_key=f"{'3' * 8}-3333-3333-3333-{'3' * 12}", auto_delete=True)
            assert "refused" in _refused(lambda: queue(channel).declare())
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_user", monitor[0]], capture_output=True)
