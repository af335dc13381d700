"""The evidence log over the stores a unit test can make (memory, SQLite):
chained records, proofs that verify offline, cached signed checkpoints, typed
refusals, and appenders in several processes at once.

The same tests run on PostgreSQL in tests/integration/test_evidence_log_postgresql.py,
which imports them and gives the ``store``, ``sql_log`` and ``database`` fixtures
a PostgreSQL schema: unit tests need no server."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from services.common.errors import IntegrityError, InvalidInput, NotFound
from services.signing import merkle
from services.signing.checkpoint import NoteSigner, NoteVerifier, open_checkpoint
from services.signing.evidence_log import EvidenceLog, MemoryLogStore, SqlLogStore
from services.signing.log_records import (
    ConsistencyProof,
    InclusionProof,
    canonical_json,
    utc_timestamp,
    verify_checkpointed_inclusion,
    verify_inclusion,
)
from services.signing.merkle import InclusionProofError
from services.signing.models import EVIDENCE_LOG_TABLES, Base

REPO = Path(__file__).resolve().parents[3]
ORIGIN = "esign.test/evidence-log"
FIXED_NOW = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)


def rfc_mth(leaf_hashes: list[bytes]) -> bytes:
    """RFC 9162 MTH, literally, as an oracle independent of the stores."""
    if not leaf_hashes:
        return hashlib.sha256(b"").digest()
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < len(leaf_hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + rfc_mth(leaf_hashes[:k]) + rfc_mth(leaf_hashes[k:])).digest()


def event_record(flow: str, event_type: str = "party_signed", **extra) -> dict:
    record = {"flow_id": flow, "event_type": event_type, "timestamp": "2024-05-01T10:00:00+08:00"}
    record.update(extra)
    return record


# --- stores -----------------------------------------------------------------------


def sqlite_engine(path: Path):
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine


@pytest.fixture
def sqlite_db(tmp_path):
    path = tmp_path / "signing.db"
    engine = sqlite_engine(path)
    Base.metadata.create_all(engine, tables=EVIDENCE_LOG_TABLES)
    yield engine, f"sqlite:///{path}", ""
    engine.dispose()


@pytest.fixture(params=["memory", "sqlite"])
def store(request):
    if request.param == "memory":
        return MemoryLogStore()
    return SqlLogStore(sessionmaker(request.getfixturevalue("sqlite_db")[0]))


@pytest.fixture
def signer():
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def log(store, signer):
    return EvidenceLog(store, signer, clock=lambda: FIXED_NOW)


# --- canonical JSON ---------------------------------------------------------------


def test_canonical_json_sorts_keys_by_utf16_code_units_as_rfc8785_publishes():
    # RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33, unlike code-point order
    value = {
        "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
        '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_escapes_strings_as_rfc8785_publishes():
    # RFC 8785 §3.2.2 sample without its numbers (floats are not allowed here)
    value = {"string": "\u20ac$\u000f\nA'B\"\\\\\"/", "literals": [None, True, False]}
    expected = '{"literals":[null,true,false],"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_keeps_chinese_literal_and_nests():
    assert canonical_json({"b": [{"z": 1, "a": "借条"}], "a": {}}) == '{"a":{},"b":[{"a":"借条","z":1}]}'.encode()


@pytest.mark.parametrize(
    "value,rule",
    [({"amount": 1.5}, "type"), ({"n": 2**53}, "max_integer"), ({1: "x"}, "type"), ({"s": "\ud800"}, "utf8")],
)
def test_canonical_json_refuses_values_it_cannot_canonicalise(value, rule):
    with pytest.raises(InvalidInput) as caught:
        canonical_json(value)
    assert caught.value.rule == rule


# --- appending and proving --------------------------------------------------------


def test_append_chains_each_flows_events_and_hashes_the_stored_bytes(log):
    receipts = [log.append(event_record(flow, party_id=f"p{i}")) for i, flow in enumerate("ABAACB")]
    assert [r.index for r in receipts] == list(range(6))
    prev = [log.leaf(i).record()["prev_index"] for i in range(6)]
    assert prev == [None, None, 0, 2, None, 1]
    for receipt in receipts:
        leaf = log.leaf(receipt.index)
        assert receipt.leaf_hash == hashlib.sha256(b"\x00" + leaf.data).digest() == leaf.leaf_hash
        assert leaf.created_at == FIXED_NOW
    assert [leaf.index for leaf in log.flow_leaves("A")] == [0, 2, 3]


def test_leaf_bytes_are_the_canonical_record_with_every_field(log):
    log.append(event_record("flow-1", "flow_sent", document_hash="ab" * 32, party_id="person-7",
                            certificate_serial="3f2a", willingness_method="sms", willingness_outcome="passed",
                            title="小借条"))
    data = log.leaf(0).data
    assert data == (
        '{"certificate_serial":"3f2a","document_hash":"' + "ab" * 32 + '","event_type":"flow_sent",'
        '"flow_id":"flow-1","party_id":"person-7","prev_index":null,"timestamp":"2024-05-01T10:00:00+08:00",'
        '"title":"小借条","version":1,"willingness_method":"sms","willingness_outcome":"passed"}'
    ).encode("utf-8")


def test_every_leaf_is_provable_at_every_later_size_and_roots_match_the_rfc(log):
    for i in range(13):
        log.append(event_record(f"flow-{i % 4}"))
    hashes = [log.leaf(i).leaf_hash for i in range(13)]
    for size in range(1, 14):
        root = log.root(size)
        assert root == rfc_mth(hashes[:size])
        for index in range(size):
            proof = log.inclusion_proof(index, size)
            verify_inclusion(log.leaf(index).data, index, size, proof.hashes, root)
    with pytest.raises(InclusionProofError):
        verify_inclusion(log.leaf(3).data + b" ", 3, 13, log.inclusion_proof(3, 13).hashes, log.root(13))


def test_checkpoints_are_signed_cached_and_consistent(log, signer):
    for _ in range(5):
        log.append(event_record("flow-1"))
    first = log.checkpoint()
    assert log.checkpoint() == first and log.latest_checkpoint() == first
    verifier = NoteVerifier.from_key_string(log.public_key())
    old = open_checkpoint(first, verifier, ORIGIN)
    assert (old.size, old.root_hash) == (5, rfc_mth([log.leaf(i).leaf_hash for i in range(5)]))
    for _ in range(6):
        log.append(event_record("flow-2"))
    second = log.checkpoint()
    assert second != first and log.latest_checkpoint() == second
    new = open_checkpoint(second, verifier)
    proof = log.consistency_proof(old.size, new.size)
    merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes)
    assert log.store.checkpoint_at(5) == first


def test_an_empty_log_signs_the_empty_tree(log):
    checkpoint = open_checkpoint(log.checkpoint(), log.verifier())
    assert checkpoint.size == 0 and checkpoint.root_hash == hashlib.sha256(b"").digest()


def test_checkpointed_inclusion_checks_signature_size_and_leaf(log, signer):
    for _ in range(4):
        log.append(event_record("flow-1"))
    note = log.checkpoint()
    proof = log.inclusion_proof(0, 4)
    assert verify_checkpointed_inclusion(log.leaf(0).data, proof, note, log.verifier()).size == 4
    # RFC 9162 paths do not bind the size: leaf 0 of 3 verifies against the
    # root of 4 unless the checkpoint's signed size is compared
    short = log.inclusion_proof(0, 3)
    assert short.hashes != proof.hashes
    with pytest.raises(InclusionProofError, match="tree size 4, found one for 3"):
        verify_checkpointed_inclusion(log.leaf(0).data, short, note, log.verifier())
    with pytest.raises(InclusionProofError):
        verify_checkpointed_inclusion(log.leaf(1).data, proof, note, log.verifier())


def test_proof_values_round_trip_through_json_dicts(log):
    for _ in range(7):
        log.append(event_record("flow-1"))
    inclusion = log.inclusion_proof(2, 7)
    assert InclusionProof.from_dict(inclusion.to_dict()) == inclusion
    consistency = log.consistency_proof(3, 7)
    assert ConsistencyProof.from_dict(consistency.to_dict()) == consistency
    assert len(consistency.hashes) > 0


def test_requests_outside_the_tree_are_typed_refusals(log):
    log.append(event_record("flow-1"))
    with pytest.raises(InvalidInput) as caught:
        log.inclusion_proof(0, 2)
    assert caught.value.field == "tree_size" and "current tree size 1, found 2" in caught.value.message
    with pytest.raises(InvalidInput) as caught:
        log.inclusion_proof(1, 1)
    assert caught.value.field == "leaf_index"
    with pytest.raises(InvalidInput):
        log.consistency_proof(0, 5)
    with pytest.raises(NotFound):
        log.leaf(1)


@pytest.mark.parametrize(
    "change,field,rule",
    [
        ({"flow_id": None}, "flow_id", "required"),
        ({"event_type": ""}, "event_type", "required"),
        ({"timestamp": "yesterday"}, "timestamp", "rfc3339"),
        ({"timestamp": "2024-05-01T10:00:00"}, "timestamp", "rfc3339"),
        ({"prev_index": 3}, "prev_index", "log_managed"),
        ({"flow_id": "f" * 65}, "flow_id", "max_length"),
        ({"amount": 12.5}, "record.amount", "type"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_appended(log, change, field, rule):
    record = event_record("flow-1")
    record.update(change)
    with pytest.raises(InvalidInput) as caught:
        log.append(record)
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert log.size() == 0


def test_the_log_refuses_to_sign_a_tree_that_forks_from_its_last_checkpoint(store, signer):
    # a checkpoint of another history at size 3, as a database restored from an
    # old backup and appended to again would hold
    other = MemoryLogStore()
    other_log = EvidenceLog(other, signer)
    for _ in range(3):
        other_log.append(event_record("other"))
    store.save_checkpoint(3, other_log.root(), other_log.checkpoint(), FIXED_NOW)
    log = EvidenceLog(store, signer)
    for _ in range(5):
        log.append(event_record("flow-1"))
    with pytest.raises(IntegrityError, match="refusing to sign size 5"):
        log.checkpoint()
    assert store.checkpoint_at(5) is None


def test_utc_timestamp_writes_rfc3339_utc():
    moment = datetime(2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=8)))
    assert utc_timestamp(moment) == "2024-05-01T02:00:00Z"
    with pytest.raises(InvalidInput):
        utc_timestamp(datetime(2024, 5, 1))


# --- several processes appending at once ------------------------------------------

WORKER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker
from services.signing.checkpoint import NoteSigner
from services.signing.evidence_log import EvidenceLog, SqlLogStore

url, schema, worker, count, go = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
if schema:
    engine = create_engine(url, connect_args={"options": "-csearch_path=" + schema})
else:
    engine = create_engine(url, connect_args={"timeout": 60})
    @event.listens_for(engine, "connect")
    def _wal(conn, _):
        conn.execute("PRAGMA journal_mode=WAL")
log = EvidenceLog(SqlLogStore(sessionmaker(engine)), NoteSigner.generate("esign.test/evidence-log"))
open(go + ".ready" + worker, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
for i in range(count):
    log.append({"flow_id": "flow-%d" % (i % 3), "event_type": "party_signed",
                "timestamp": "2024-05-01T10:00:00Z", "party_id": "%s-%d" % (worker, i)})
    # think time between requests, as a service has; without it SQLite's busy
    # handler lets one process take the write lock again and again
    time.sleep(0.003)
"""


@pytest.fixture
def database(sqlite_db):
    """The database the processes share: ``(engine, url, schema)``."""
    return sqlite_db


def test_appenders_in_several_processes_get_one_consistent_tree(tmp_path, database):
    engine, url, schema = database
    workers, count = 3, 20
    go = str(tmp_path / "go")
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(REPO), url, schema, str(w), str(count), go],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for w in range(workers)
    ]
    try:
        # start them together so their appends interleave
        for _ in range(3000):
            if all(os.path.exists(f"{go}.ready{w}") or procs[w].poll() is not None for w in range(workers)):
                break
            time.sleep(0.01)
        Path(go).touch()
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * workers, [r[1].decode()[-800:] for r in results]

    log = EvidenceLog(SqlLogStore(sessionmaker(engine)), NoteSigner.generate(ORIGIN))
    total = workers * count
    assert log.size() == total
    leaves = [log.leaf(i) for i in range(total)]
    records = [leaf.record() for leaf in leaves]
    assert sorted(r["party_id"] for r in records) == sorted(f"{w}-{i}" for w in range(workers) for i in range(count))
    order = [r["party_id"].split("-")[0] for r in records]
    switches = sum(a != b for a, b in zip(order, order[1:], strict=False))
    assert switches > workers - 1, f"appends did not interleave ({''.join(order)}); nothing was tested"
    for flow in ("flow-0", "flow-1", "flow-2"):
        indices = [i for i, r in enumerate(records) if r["flow_id"] == flow]
        assert [records[i]["prev_index"] for i in indices] == [None] + indices[:-1]
    hashes = [leaf.leaf_hash for leaf in leaves]
    assert all(h == hashlib.sha256(b"\x00" + leaf.data).digest() for h, leaf in zip(hashes, leaves, strict=True))
    assert log.root() == rfc_mth(hashes)
    for index in (0, 17, total - 1):
        verify_inclusion(leaves[index].data, index, total, log.inclusion_proof(index, total).hashes, log.root())


# --- sequencing, then integrating in batches ---------------------------------------


def flow_event(i: int, flows: str = "ABCDE") -> dict:
    # flows interleave irregularly so batches cut through every flow's chain
    return event_record(f"flow-{flows[(i * 7 + i // 3) % len(flows)]}", party_id=f"p{i}", event_id=f"ev-{i}")


@pytest.fixture
def sql_log(sqlite_db, signer):
    return EvidenceLog(SqlLogStore(sessionmaker(sqlite_db[0])), signer, clock=lambda: FIXED_NOW)


def reference_log(signer, count: int) -> EvidenceLog:
    """The same records appended one by one, as the log did before batching."""
    log = EvidenceLog(MemoryLogStore(), signer, clock=lambda: FIXED_NOW)
    for i in range(count):
        log.append(flow_event(i))
    return log


def test_batched_integration_gives_the_leaves_and_tree_of_one_by_one_appends(sql_log, signer):
    for i in range(4):  # a tree that exists before batching began
        sql_log.append(flow_event(i))
    for i in range(4, 45):
        assert sql_log.sequence(flow_event(i)) is True
    assert sql_log.size() == 4 and sql_log.pending() == 41
    taken = []
    while (done := sql_log.integrate(limit=6)).taken:
        taken.append(done.taken)
        assert [leaf.index for leaf in done.leaves] == list(range(sql_log.size() - done.taken, sql_log.size()))
    assert taken == [6] * 6 + [5] and sql_log.pending() == 0
    reference = reference_log(signer, 45)
    assert [sql_log.leaf(i).data for i in range(45)] == [reference.leaf(i).data for i in range(45)]
    flows = [f"flow-{name}" for name in "ABCDE"]
    chain_of = {flow: [leaf.record()["prev_index"] for leaf in sql_log.flow_leaves(flow)] for flow in flows}
    assert chain_of == {flow: [None] + [leaf.index for leaf in reference.flow_leaves(flow)][:-1] for flow in flows}
    assert all(len(chain) > 5 for chain in chain_of.values())
    for size in range(1, 46):
        assert sql_log.root(size) == reference.root(size)
    # every stored subtree node, not only the ones the roots above read
    nodes = [(level, index) for level in range(6) for index in range(45 >> level)]
    assert sql_log.store.nodes(nodes) == reference.store.nodes(nodes)
    assert sql_log.leaf(30).created_at == FIXED_NOW


def test_a_redelivered_event_becomes_one_leaf(sql_log):
    assert sql_log.sequence(flow_event(1)) is True
    assert sql_log.sequence(flow_event(1)) is False  # queued already
    assert sql_log.pending() == 1
    sql_log.integrate()
    # delivered again once it is a leaf: queued (not looked for), then dropped by the integrator
    sql_log.sequence(flow_event(1))
    sql_log.sequence(flow_event(2))
    done = sql_log.integrate()
    assert (done.taken, [leaf.record()["event_id"] for leaf in done.leaves]) == (2, ["ev-2"])
    assert sql_log.size() == 2 and sql_log.pending() == 0
    # a synchronous append of a logged event answers with its leaf
    assert sql_log.append(flow_event(1)).index == 0 and sql_log.size() == 2


def test_the_memory_store_integrates_as_it_sequences(signer):
    log = EvidenceLog(MemoryLogStore(), signer, clock=lambda: FIXED_NOW)
    assert [log.sequence(flow_event(i)) for i in (0, 1, 0)] == [True, True, False]
    assert log.size() == 2 and log.pending() == 0 and log.integrate().taken == 0
    assert log.root() == reference_log(signer, 2).root()


def test_an_integration_that_fails_midway_keeps_the_queue(sqlite_db, signer, monkeypatch):
    log = EvidenceLog(SqlLogStore(sessionmaker(sqlite_db[0])), signer, clock=lambda: FIXED_NOW)
    for i in range(10):
        log.sequence(flow_event(i))

    def crash(*_args, **_kwargs):
        raise RuntimeError("the integrator died after writing the leaves")

    monkeypatch.setattr(merkle, "append_leaves", crash)
    with pytest.raises(RuntimeError):
        log.integrate()
    assert (log.size(), log.pending()) == (0, 10)
    monkeypatch.undo()
    assert log.integrate_all(limit=4) == 10
    assert log.root() == reference_log(signer, 10).root()


@pytest.mark.parametrize(
    "change,field,rule",
    [({"event_id": ""}, "event_id", "type"), ({"event_id": 7}, "event_id", "type"),
     ({"event_id": "e" * 65}, "event_id", "max_length"), ({"prev_index": 1}, "prev_index", "log_managed")],
)
def test_bad_records_are_refused_before_they_are_sequenced(sql_log, change, field, rule):
    with pytest.raises(InvalidInput) as caught:
        sql_log.sequence(dict(flow_event(1), **change))
    assert (caught.value.field, caught.value.rule) == (field, rule)
    assert sql_log.pending() == 0


def test_concurrent_sequencers_share_transactions_and_each_is_queued_once(sqlite_db, signer):
    import threading

    store = SqlLogStore(sessionmaker(sqlite_db[0]))
    batches = []
    sequence = store.sequence


    def slow_sequence(records):
        batches.append(len(records))
        time.sleep(0.002)  # a commit's latency, cooperative under eventlet, so others queue meanwhile
        return sequence(records)

    store.sequence = slow_sequence
    log = EvidenceLog(store, signer, clock=lambda: FIXED_NOW)
    results: dict[int, bool] = {}
    threads = [threading.Thread(target=lambda w=w: results.update(
        {i: log.sequence(flow_event(i)) for i in range(w, 240, 8)})) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: True for i in range(240)} and sum(batches) == 240
    assert max(batches) > 1, f"no two appends shared a transaction ({batches}); nothing was tested"
    log.integrate_all()
    assert sorted(leaf.record()["event_id"] for i in range(240) for leaf in [log.leaf(i)]) == \
        sorted(f"ev-{i}" for i in range(240))


def test_inclusion_proofs_are_at_most_ceil_log2_n_hashes_and_reach_it(signer):
    import math

    log = EvidenceLog(MemoryLogStore(), signer)
    for n in range(1, 70):
        log.append(flow_event(n))
        lengths = [len(log.inclusion_proof(i, n).hashes) for i in range(n)]
        assert max(lengths) == math.ceil(math.log2(n)), n
        assert all(len(log.consistency_proof(m, n).hashes) <= math.ceil(math.log2(n)) + 1 for m in range(1, n))
