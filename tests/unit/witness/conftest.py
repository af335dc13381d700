"""A witness state directory holding the published transparency-dev/witness keys
(see vectors.py), the witness over it, and that witness served on a free port."""
from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import pytest

from services.witness.config import KEY_FILE, LOGS_FILE, STATE_FILE, LogsFile, load_signer, write_logs
from services.witness.metrics import WitnessMetrics
from services.witness.server import WitnessServer
from services.witness.state import WitnessState
from services.witness.witness import Witness
from tests.unit.witness.vectors import M_PK, W_SK


@pytest.fixture
def state_dir(tmp_path) -> Path:
    directory = tmp_path / "witness"
    directory.mkdir(mode=0o700)
    key = directory / KEY_FILE
    key.write_text(W_SK + "\n")
    os.chmod(key, 0o600)
    write_logs(directory, {"monkeys": [M_PK]})
    return directory


@pytest.fixture
def witness(state_dir):
    state = WitnessState(state_dir / STATE_FILE)
    yield Witness(load_signer(state_dir), LogsFile(state_dir / LOGS_FILE).current, state)
    state.close()


@pytest.fixture
def server(witness):
    srv = WitnessServer(("127.0.0.1", 0), witness, WitnessMetrics(witness.state))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


class Client:
    """One keep-alive HTTP/1.1 connection to the witness."""

    def __init__(self, srv: WitnessServer):
        host, port = srv.server_address[:2]
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        self.conn.request(method, path, body=body)
        response = self.conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        return self.request("POST", "/add-checkpoint", body)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def client(server):
    c = Client(server)
    yield c
    c.close()
