"""The batched evidence log on PostgreSQL: many appenders in several processes
sequencing at once while an integrator runs, and an integrator SIGKILLed in
the middle of a large backlog. Nothing sequenced is lost or logged twice, and
the tree is the one the records give appended one by one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from services.signing import merkle
from services.signing.checkpoint import Checkpoint, NoteSigner, parse_note
from services.signing.evidence_log import EvidenceLog, MemoryLogStore, SqlLogStore
from services.signing.log_records import SequencedRecord, verify_inclusion
from services.signing.models import EVIDENCE_LOG_TABLES, Base

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("ESIGN_TEST_PG_URL", "postgresql+psycopg2://root@127.0.0.1:5432/test")
ORIGIN = "esign.test/evidence-log"
NOW = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def schema():
    name = "test_evidence_batching_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except OperationalError as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        pytest.skip(f"PostgreSQL at {PG_URL} not reachable: {exc.__class__.__name__}")
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={name}"})
    Base.metadata.create_all(engine, tables=EVIDENCE_LOG_TABLES)
    engine.dispose()
    try:
        yield name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def open_log(schema: str, application: str = "pytest") -> tuple[EvidenceLog, object]:
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}",
                                                 "application_name": application})
    return EvidenceLog(SqlLogStore(sessionmaker(engine)), NoteSigner.generate(ORIGIN), clock=lambda: NOW), engine


def event(event_id: str, i: int) -> dict:
    return {"flow_id": f"flow-{i % 13}", "event_type": "party_signed", "timestamp": "2024-05-01T10:00:00Z",
            "event_id": event_id, "party_id": f"person-{i % 7}"}


def check_chains(log: EvidenceLog, size: int) -> list[dict]:
    records = [log.leaf(i).record() for i in range(size)]
    last: dict[str, int] = {}
    for index, record in enumerate(records):
        assert record["prev_index"] == last.get(record["flow_id"]), index
        last[record["flow_id"]] = index
    return records


PRELUDE = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from services.signing.checkpoint import NoteSigner
from services.signing.evidence_log import EvidenceLog, SqlLogStore
url, schema, application = sys.argv[2], sys.argv[3], sys.argv[4]
engine = create_engine(url, pool_size=20, connect_args={"options": "-csearch_path=" + schema,
                                                          "application_name": application})
log = EvidenceLog(SqlLogStore(sessionmaker(engine)), NoteSigner.generate("esign.test/evidence-log"))
"""

APPENDER = PRELUDE + r"""
import threading
worker, count, threads, shared, go = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8]), sys.argv[9]
open(go + ".ready" + str(worker), "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
def record(event_id, i):
    return {"flow_id": "flow-%d" % (i % 13), "event_type": "party_signed", "timestamp": "2024-05-01T10:00:00Z",
            "event_id": event_id, "party_id": "person-%d" % (i % 7)}
def run(t):
    for i in range(t, count, threads):
        log.sequence(record("w%d-%d" % (worker, i), i))
        if i < shared:  # the broker delivers these to every worker: one leaf each all the same
            log.sequence(record("shared-%d" % i, i))
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
[t.start() for t in ts]
[t.join() for t in ts]
"""

INTEGRATOR = PRELUDE + r"""
stop, limit = sys.argv[5], int(sys.argv[6])
while not os.path.exists(stop):
    if not log.integrate_all(limit=limit):
        time.sleep(0.01)
log.integrate_all(limit=limit)
"""


def spawn(script: str, schema: str, application: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, str(REPO), PG_URL, schema, application, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_many_concurrent_appenders_lose_and_duplicate_nothing(schema, tmp_path):
    workers, threads, count, shared = 4, 8, 300, 40
    go, stop = str(tmp_path / "go"), str(tmp_path / "stop")
    log, engine = open_log(schema)
    appenders = [spawn(APPENDER, schema, f"appender-{w}", w, count, threads, shared, go) for w in range(workers)]
    integrator = spawn(INTEGRATOR, schema, "integrator", stop, 200)
    try:
        for _ in range(3000):
            if all(os.path.exists(f"{go}.ready{w}") or appenders[w].poll() is not None for w in range(workers)):
                break
            time.sleep(0.01)
        Path(go).touch()
        # a checkpoint while appenders and the integrator run, as soon as a first batch (at most
        # 200 of the 1,240) is in the tree: later trees must extend it
        for _ in range(6000):
            if log.size() > 0:
                break
            time.sleep(0.01)
        early = Checkpoint.from_body(parse_note(log.checkpoint()).text)
        results = [p.communicate(timeout=300) for p in appenders]
        assert [p.returncode for p in appenders] == [0] * workers, [r[1].decode()[-800:] for r in results]
        Path(stop).touch()
        _, err = integrator.communicate(timeout=300)
        assert integrator.returncode == 0, err.decode()[-800:]
    finally:
        for p in appenders + [integrator]:
            if p.poll() is None:
                p.kill()

    log.integrate_all()
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(count)} | {f"shared-{i}" for i in range(shared)}
    size = log.size()
    assert (size, log.pending()) == (len(expected), 0)
    records = check_chains(log, size)
    ids = [record["event_id"] for record in records]
    assert len(set(ids)) == len(ids) and set(ids) == expected
    order = [event_id.split("-")[0] for event_id in ids]
    assert sum(a != b for a, b in zip(order, order[1:], strict=False)) > workers, (
        "appends did not interleave; nothing was tested")
    hashes = [log.leaf(i).leaf_hash for i in range(size)]
    tree = merkle.MemoryTree()
    for leaf_hash in hashes:
        tree.append_hash(leaf_hash)
    assert log.root() == tree.root()
    assert 0 < early.size < size, "the early checkpoint saw no batch or every batch; nothing was tested"
    proof = log.consistency_proof(early.size, size)
    merkle.verify_consistency(early.size, size, early.root_hash, log.root(), proof.hashes)
    engine.dispose()


def test_an_integrator_sigkilled_mid_backlog_loses_and_duplicates_nothing(schema, tmp_path):
    log, engine = open_log(schema)
    reference = EvidenceLog(MemoryLogStore(), log.signer, clock=lambda: NOW)
    for i in range(10):
        log.append(event(f"before-{i}", i))
        reference.append(event(f"before-{i}", i))
    early = Checkpoint.from_body(parse_note(log.checkpoint()).text)
    backlog = 20000
    for start in range(0, backlog, 1000):
        log.store.sequence([SequencedRecord.of(event(f"e-{i}", i), NOW) for i in range(start, start + 1000)])
    assert log.pending() == backlog

    child = spawn(INTEGRATOR, schema, "sigkill-integrator", str(tmp_path / "never"), 700)
    killed_in_transaction = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            size = log.size()
            with engine.connect() as conn:
                busy = conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                        "'sigkill-integrator' AND xact_start IS NOT NULL"))
            if size > 10 + 1400 and busy:
                os.kill(child.pid, signal.SIGKILL)
                killed_in_transaction = True
                break
            time.sleep(0.002)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert killed_in_transaction and child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-800:]
    at_kill = log.size()
    assert 10 < at_kill < 10 + backlog, "the integrator was not killed mid-backlog; nothing was tested"
    assert (at_kill - 10) % 700 == 0, "a partial batch was committed"

    # the restart: a new integrator takes over where the dead one's last commit left off
    log.integrate_all(limit=700)
    assert (log.size(), log.pending()) == (10 + backlog, 0)
    records = check_chains(log, log.size())
    ids = [record["event_id"] for record in records]
    assert ids == [f"before-{i}" for i in range(10)] + [f"e-{i}" for i in range(backlog)]
    for i in range(backlog):
        reference.append(event(f"e-{i}", i))
    assert log.root() == reference.root()
    proof = log.consistency_proof(early.size)
    merkle.verify_consistency(early.size, log.size(), early.root_hash, log.root(), proof.hashes)
    assert Checkpoint.from_body(parse_note(log.checkpoint()).text).size == 10 + backlog  # no fork refused
    leaf = log.leaf(at_kill)
    verify_inclusion(leaf.data, at_kill, log.size(), log.inclusion_proof(at_kill).hashes, log.root())
    engine.dispose()
