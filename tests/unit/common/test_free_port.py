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
