"""The witness state (SQLite, WAL, synchronous=FULL): the check-and-set is atomic
across connections (c2sp.org/tlog-witness's "rolling back K leaves" race), a
commit is visible to other connections when ``update`` returns, a failed
decision writes nothing, and misbehaviour is kept once per checkpoint, counted."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest
from eventlet import patcher

from services.witness.state import (
    CosignedCheckpoint,
    Misbehaviour,
    StateError,
    Transition,
    WitnessState,
    origin_hash,
)

# the root conftest monkey-patches threading; the race needs real OS threads
real_threading = patcher.original("threading")
real_time = patcher.original("time")


def cosigned(size: int, root: bytes = b"\x01" * 32, origin: str = "log.example/a") -> CosignedCheckpoint:
    return CosignedCheckpoint(origin, size, root, f"{origin}\n{size}\n...\n\n\u2014 sig\n", 1700000000 + size)


@pytest.fixture
def state(tmp_path):
    s = WitnessState(tmp_path / "state.db")
    yield s
    s.close()


def test_fresh_state_has_nothing_then_keeps_what_update_stores(state, tmp_path):
    assert state.latest("log.example/a") is None
    result = state.update("log.example/a", lambda latest: Transition("ok", store=cosigned(5)))
    assert result.outcome == "ok"
    assert state.latest("log.example/a") == cosigned(5)
    assert state.latest_by_origin_hash(origin_hash("log.example/a")) == cosigned(5)
    assert state.all_latest() == [cosigned(5)]
    reopened = WitnessState(tmp_path / "state.db")
    try:
        assert reopened.latest("log.example/a") == cosigned(5)
    finally:
        reopened.close()


def test_origin_hash_is_lowercase_hex_sha256():
    assert origin_hash("monkeys") == hashlib.sha256(b"monkeys").hexdigest()


def test_journal_is_wal_and_commits_are_synchronous_full(state, tmp_path):
    with sqlite3.connect(tmp_path / "state.db") as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_commit_is_visible_to_another_connection_when_update_returns(state, tmp_path):
    state.update("log.example/a", lambda latest: Transition(None, store=cosigned(7)))
    other = sqlite3.connect(tmp_path / "state.db")
    try:
        assert other.execute("SELECT size FROM cosigned WHERE origin = 'log.example/a'").fetchone() == (7,)
    finally:
        other.close()


def test_a_decision_that_raises_writes_nothing(state):
    state.update("log.example/a", lambda latest: Transition(None, store=cosigned(5)))

    def explode(latest):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        state.update("log.example/a", explode)
    assert state.latest("log.example/a") == cosigned(5)
    # and the connection is usable again (no transaction left open)
    state.update("log.example/a", lambda latest: Transition(None, store=cosigned(6)))
    assert state.latest("log.example/a").size == 6


def test_check_and_set_is_atomic_across_connections(tmp_path):
    """Request A reads the state and, before it stores, request B (another
    connection, as another process would have) tries to read: B must wait and
    then see A's result, never the state A started from."""
    path = tmp_path / "state.db"
    first, second = WitnessState(path), WitnessState(path)
    a_inside = real_threading.Event()
    seen_by_b: list[int | None] = []

    def a() -> None:
        def decide(latest):
            a_inside.set()
            real_time.sleep(0.3)  # B starts meanwhile
            return Transition(None, store=cosigned(10))

        first.update("log.example/a", decide)

    def b() -> None:
        a_inside.wait(5)

        def decide(latest):
            seen_by_b.append(latest.size if latest else None)
            # what a witness does with a smaller tree than it knows: refuse, store nothing
            return Transition(None) if latest and latest.size > 5 else Transition(None, store=cosigned(5))

        second.update("log.example/a", decide)

    threads = [real_threading.Thread(target=a), real_threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert seen_by_b == [10]
        assert first.latest("log.example/a").size == 10
    finally:
        first.close()
        second.close()


def _evidence(kind: str, size: int, known: CosignedCheckpoint | None, old_size: int = 0) -> Misbehaviour:
    note = f"log.example/a\n{size}\nAAAA\n\n\u2014 log.example/a sig\n"
    return Misbehaviour("log.example/a", kind, old_size, size, b"\x02" * 32, note, (b"\x03" * 32,), known)


def test_misbehaviour_is_recorded_once_per_checkpoint_and_counted_each_time(state):
    state.update("log.example/a", lambda latest: Transition(None, store=cosigned(5)))
    known = state.latest("log.example/a")
    for old in (5, 0, 5):
        state.update("log.example/a",
                     lambda latest, old=old: Transition(None, evidence=_evidence("fork", 5, latest, old)))
    state.update("log.example/a", lambda latest: Transition(None, evidence=_evidence("rollback", 3, latest)))
    records = state.misbehaviour("log.example/a")
    assert [(r.kind, r.times_seen) for r in records] == [("fork", 3), ("rollback", 1)]
    assert records[0].known.size == known.size and records[0].known.root_hash == known.root_hash
    assert records[0].proof == (b"\x03" * 32,)
    assert state.misbehaviour_counts() == {("log.example/a", "fork"): 3, ("log.example/a", "rollback"): 1}
    # evidence never touches the cosigned state
    assert state.latest("log.example/a") == cosigned(5)


def test_unknown_misbehaviour_kinds_are_refused():
    with pytest.raises(ValueError):
        _evidence("mystery", 1, None)


def test_integrity_check_passes_on_a_good_file(state):
    state.update("log.example/a", lambda latest: Transition(None, store=cosigned(5)))
    state.check_integrity()
    state.ping()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError):
        WitnessState(path)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "state.db"
    WitnessState(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="schema 1, found 99"):
        WitnessState(path)


def test_the_database_refuses_impossible_rows(state):
    with pytest.raises(sqlite3.IntegrityError):
        state.update("log.example/a", lambda latest: Transition(None, store=cosigned(5, root=b"short")))
    assert state.latest("log.example/a") is None
