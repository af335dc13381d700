"""The gateway's listening socket: shared between processes only when asked (esign up --scale)."""
from __future__ import annotations

import socket

import pytest

from services.common.errors import InvalidInput
from services.gateway.server import listening_socket, reuse_port


def test_two_gateways_share_a_port_only_with_reuse_port():
    first = listening_socket("127.0.0.1", 0, shared=True)
    port = first.getsockname()[1]
    second = listening_socket("127.0.0.1", port, shared=True)
    try:
        assert second.getsockname()[1] == port
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port, shared=False).close()
    finally:
        first.close()
        second.close()


def test_an_unshared_port_refuses_a_second_gateway():
    first = listening_socket("127.0.0.1", 0, shared=False)
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", first.getsockname()[1], shared=True).close()
    finally:
        first.close()


@pytest.mark.parametrize("value,expected", [(True, True), ("true", True), ("1", True), ("false", False),
                                            ("", False), (False, False)])
def test_reuse_port_reads_booleans(value, expected):
    assert reuse_port(value) is expected


def test_a_typo_names_the_setting():
    with pytest.raises(InvalidInput) as caught:
        reuse_port("ture")
    assert (caught.value.field, caught.value.rule) == ("HTTP.REUSE_PORT", "boolean")
    assert isinstance(socket.SO_REUSEPORT, int)
