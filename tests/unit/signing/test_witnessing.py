"""The evidence log's witnesses from the log's side, against two real
witnesses (services.witness, served over HTTP on free ports) and the log on
SQLite: cosignatures gathered and checked, a witness that is down skipped
and caught up later, a 409 followed, and a rewritten log refused by every
witness, so its checkpoint is "not witnessed"."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text, update

from services.common.database import Database
from services.signing.checkpoint import NoteSigner, parse_note
from services.signing.evidence_log import EvidenceLog, SqlLogStore
from services.signing.models import LogWitnessHead
from services.signing.witnesses import Witnessing, WitnessPolicy, with_cosignatures
from services.witness.config import LOGS_FILE, STATE_FILE, LogsFile, load_signer
from services.witness.cosignature import check_cosignatures
from services.witness.local import prepare
from services.witness.metrics import WitnessMetrics
from services.witness.server import WitnessServer
from services.witness.state import WitnessState
from services.witness.witness import Witness

ORIGIN = "esign.test/evidence-log"


class Metrics:
    def __init__(self):
        self.counted, self.values = [], {}

    def inc(self, name, documentation="", amount=1, **labels):
        self.counted.append((name, labels))

    def set(self, name, value, documentation="", **labels):
        self.values[(name, tuple(sorted(labels.items())))] = value


@dataclass
class Served:
    server: WitnessServer
    state: WitnessState
    key: str

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.state.close()


def serve(state_dir, port: int = 0) -> Served:
    state = WitnessState(state_dir / STATE_FILE)
    witness = Witness(load_signer(state_dir), LogsFile(state_dir / LOGS_FILE).current, state)
    server = WitnessServer(("127.0.0.1", port), witness, WitnessMetrics(state))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return Served(server, state, load_signer(state_dir).verifier.to_key_string())


@pytest.fixture
def setting(tmp_path):
    signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    database = Database(f"sqlite:///{tmp_path / 'signing.db'}", None, "signing")
    database.migrate()
    log = EvidenceLog(SqlLogStore(database.sessionmaker), signer)
    served = []
    for name in ("w1.test", "w2.test"):
        prepare(tmp_path / name, name, ORIGIN, signer.verifier.to_key_string())
        served.append(serve(tmp_path / name))
    policy = WitnessPolicy.from_config({"LIST": [{"url": s.server.url, "key": s.key} for s in served],
                                        "THRESHOLD": 2, "TIMEOUT_SECONDS": 2})
    metrics = Metrics()
    yield log, Witnessing(database.sessionmaker, log, policy, metrics), served, metrics, database, tmp_path
    for s in served:
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - already stopped by the test
            pass
    database.dispose()


def grow(log, count: int, flow: str = "flow-1") -> None:
    for i in range(count):
        log.append({"flow_id": flow, "event_type": "party_signed", "timestamp": "2026-12-06T10:00:00Z",
                    "document_hash": f"{i:064x}"})


def keys(witnessing):
    return [w.verifier for w in witnessing.policy.witnesses]


def test_checkpoints_are_cosigned_by_both_witnesses_as_the_log_grows(setting):
    log, witnessing, _, metrics, _, _ = setting
    grow(log, 3)
    first = witnessing.cosign(log.checkpoint())
    assert len(parse_note(first).signatures) == 3  # the log's and two cosignatures
    check = check_cosignatures(first, keys(witnessing), 2)
    assert check.witnessed and sorted(name for name, _ in check.valid) == ["w1.test", "w2.test"]
    grow(log, 5)
    second = witnessing.cosign(log.checkpoint())  # consistency proofs from 3 to 8
    assert check_cosignatures(second, keys(witnessing), 2).witnessed
    assert witnessing.witnessed(log.checkpoint()) == second  # kept: asking again asks no witness
    assert {witness: head.size for witness, head in witnessing.heads().items()} == {"w1.test": 8, "w2.test": 8}
    assert metrics.values[("log_witness_cosigned_size", (("witness", "w1.test"),))] == 8


def test_a_witness_that_is_down_is_skipped_and_catches_up(setting):
    log, witnessing, served, metrics, _, tmp_path = setting
    grow(log, 2)
    witnessing.cosign(log.checkpoint())
    port = served[1].server.server_address[1]
    served[1].stop()
    grow(log, 2)
    note = witnessing.cosign(log.checkpoint())  # signing goes on with one cosignature
    check = check_cosignatures(note, keys(witnessing), 2)
    assert not check.witnessed and [name for name, _ in check.valid] == ["w1.test"]
    assert ("log_witness_refusals", {"witness": "w2.test", "outcome": "unreachable"}) in metrics.counted
    assert witnessing.heads()["w2.test"].last_error.startswith("unreachable")
    served[1] = serve(tmp_path / "w2.test", port)  # back: the next checkpoint is cosigned from its old size
    grow(log, 1)
    assert check_cosignatures(witnessing.cosign(log.checkpoint()), keys(witnessing), 2).witnessed


def test_a_conflict_tells_the_log_the_size_the_witness_knows(setting):
    log, witnessing, _, metrics, database, _ = setting
    grow(log, 4)
    witnessing.cosign(log.checkpoint())
    with database.session() as session:  # the log forgot what the witnesses know (a lost table, another replica)
        session.execute(update(LogWitnessHead).values(size=0))
        session.commit()
    grow(log, 2)
    assert check_cosignatures(witnessing.cosign(log.checkpoint()), keys(witnessing), 2).witnessed
    assert not [c for c in metrics.counted if c[0] == "log_witness_refusals"]


def test_a_rewritten_log_gets_no_cosignature(setting):
    """The operator rebuilds the log with one leaf changed and re-signs it: the
    witnesses hold the old tree and refuse the new one (422), so the new
    checkpoint carries no cosignature, and the old ones do not verify on it."""
    log, witnessing, _, metrics, database, _ = setting
    grow(log, 6)
    honest = witnessing.cosign(log.checkpoint())
    assert check_cosignatures(honest, keys(witnessing), 2).witnessed
    with database.session() as session:
        leaves = [row[0] for row in session.execute(text("SELECT leaf_data FROM log_leaves ORDER BY leaf_index"))]
        for table in ("log_checkpoints", "log_nodes", "log_leaves", "log_head"):
            session.execute(text(f"DELETE FROM {table}"))
        session.commit()
    rewritten = EvidenceLog(SqlLogStore(database.sessionmaker), log.signer)
    for i, _data in enumerate(leaves):
        rewritten.append({"flow_id": "flow-1", "event_type": "party_signed", "timestamp": "2026-12-06T10:00:00Z",
                          "document_hash": f"{(i if i != 2 else 99):064x}"})  # leaf 2 changed
    grow(rewritten, 1, "flow-2")  # and the log goes on
    note = witnessing.cosign(rewritten.checkpoint())
    check = check_cosignatures(note, keys(witnessing), 2)
    assert not check.witnessed and check.valid == ()
    assert {(c[1]["witness"], c[1]["outcome"]) for c in metrics.counted if c[0] == "log_witness_refusals"} == {
        ("w1.test", "422"), ("w2.test", "422")}
    # the honest tree's cosignatures do not carry over to the rewritten one
    borrowed = with_cosignatures(rewritten.checkpoint(), honest.splitlines(keepends=True)[5:])
    assert not check_cosignatures(borrowed, keys(witnessing), 2).witnessed


def test_the_policy_is_read_from_configuration():
    assert WitnessPolicy.from_config({"LIST": "[]"}).threshold == 0
    with pytest.raises(Exception) as bad:
        WitnessPolicy.from_config({"LIST": [{"url": "ftp://w", "key": "x"}]})
    assert bad.value.field == "witnesses.list.0.url"
    with pytest.raises(Exception) as key:
        WitnessPolicy.from_config({"LIST": [{"url": "http://w", "key": "not+a+key"}]})
    assert key.value.field == "witnesses.list.0.key"
