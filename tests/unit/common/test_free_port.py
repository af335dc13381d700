"""free_port never hands out a port twice in a process, and shards of the test run take
disjoint ports (seen before: a gateway given the port its own metrics server had just taken)."""
from __future__ import annotations

import socket

from services.common import s3server


def test_no_port_is_handed_out_twice_and_each_is_free():
    ports = [s3server.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:  # the last one can be bound by whoever is given it
        sock.bind(("127.0.0.1", ports[-1]))


def test_shards_side_by_side_take_disjoint_ports(monkeypatch):
    monkeypatch.setenv("ESIGN_TEST_SHARD", "1/2")  # odd ports: a bind to port 0 never gives one
    assert all(s3server.free_port() % 2 == 1 for _ in range(20))
    for k in range(3):
        monkeypatch.setenv("ESIGN_TEST_SHARD", f"{k}/3")
        assert all(s3server.free_port() % 3 == k for _ in range(20))
    monkeypatch.setenv("ESIGN_TEST_SHARD", "not a shard")
    assert s3server.free_port() > 0


def test_ports_the_environment_names_are_not_handed_out(monkeypatch):
    """A child (esign up in a test) is given ports its parent picked and not yet bound: it does not
    pick one of them for something else (seen: SeaweedFS on the gateway's metrics port)."""
    monkeypatch.delenv("ESIGN_TEST_SHARD", raising=False)
    monkeypatch.setattr(s3server, "_PORT_RANGE", (20_000, 20_020))  # picked from low to high - 1)
    monkeypatch.setattr(s3server, "_HANDED_OUT", set())
    for n in range(15):
        monkeypatch.setenv(f"SERVICE{n}_METRICS_PORT", str(20_000 + n))
    monkeypatch.setenv("ESIGN_GATEWAY_PORT_NOTE", "20015")  # not a *_PORT name: free to hand out
    monkeypatch.setenv("ESIGN_S3_PORT", "not a number")
    assert sorted(s3server.free_port() for _ in range(5)) == list(range(20_015, 20_020))


def test_seaweedfs_grpc_ports_are_not_handed_out_again(monkeypatch):
    monkeypatch.setattr(s3server, "_HANDED_OUT", set())
    ports = s3server.SeaweedPorts.free()
    http = [ports.s3, ports.master, ports.volume, ports.filer, ports.admin]
    assert {port + 10_000 for port in http} <= s3server._HANDED_OUT
    assert not {port + 10_000 for port in http} & set(http)
