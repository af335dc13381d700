"""What the witness remembers, per log origin: the latest checkpoint it cosigned
(size, root hash, and the note with the log's signatures and its own
cosignature), as c2sp.org/tlog-witness requires — and the evidence of log
misbehaviour it saw on the way.

Stored in one SQLite file (stdlib ``sqlite3``):

* WAL journal and ``synchronous=FULL``: a commit is on disk (the WAL fsynced)
  before :meth:`WitnessState.update` returns, so an answer is never sent for a
  state that a crash or a SIGKILL could take back;
* the check-and-set of add-checkpoint runs inside ``BEGIN IMMEDIATE``, which
  takes SQLite's write lock before the state is read: two requests (threads,
  or two witness processes on one directory) cannot both check against the
  same old state — the spec's "rolling back K leaves" race cannot happen.

Misbehaviour (the spec lets a witness log a validly signed checkpoint that
fails the consistency checks): ``fork`` (same size as the cosigned one, other
root — proof on its own, two log signatures on two trees), ``rollback`` (a
smaller tree than cosigned: the log, or someone replaying its old checkpoints,
shows a stale view), ``bad_proof`` (a consistency proof that does not join the
cosigned root to the new one; anyone may send a bad proof, so this is a lead,
not proof), ``empty_tree_root`` (a signed size-0 checkpoint whose root is not
SHA-256("")). Each record is kept once per (kind, checkpoint body, cosigned
state), with a count of how often it was seen, so repeated submissions cannot
fill the disk.
"""
from __future__ import annotations

import base64
import hashlib
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, TypeVar

SCHEMA_VERSION = 1
MISBEHAVIOUR_KINDS = ("fork", "rollback", "bad_proof", "empty_tree_root")
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cosigned (
    origin       TEXT PRIMARY KEY,
    origin_hash  TEXT NOT NULL UNIQUE,      -- lower-case hex SHA-256 of origin, the GET path
    size         INTEGER NOT NULL CHECK (size >= 0),
    root_hash    BLOB NOT NULL CHECK (length(root_hash) = 32),
    note         TEXT NOT NULL,             -- checkpoint + verified log signatures + our cosignature
    cosigned_at  INTEGER NOT NULL CHECK (cosigned_at > 0)
);
CREATE TABLE IF NOT EXISTS misbehaviour (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    digest       BLOB NOT NULL UNIQUE,      -- SHA-256 of kind, origin, checkpoint body, cosigned state
    origin       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    times_seen   INTEGER NOT NULL DEFAULT 1,
    old_size     INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    root_hash    BLOB NOT NULL,
    note         TEXT NOT NULL,             -- the submitted checkpoint note, as sent
    proof        TEXT NOT NULL,             -- the submitted proof, base64 lines
    known_size   INTEGER,                   -- the cosigned state it contradicts
    known_root   BLOB,
    known_note   TEXT
);
CREATE INDEX IF NOT EXISTS misbehaviour_origin ON misbehaviour (origin, kind);
"""


def origin_hash(origin: str) -> str:
    """The monitoring path's name for a log: hex SHA-256 of the origin line."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


class StateError(Exception):
    """The state file is not one this witness can use (other schema, not SQLite)."""


@dataclass(frozen=True)
class CosignedCheckpoint:
    """The latest checkpoint cosigned for one log."""

    origin: str
    size: int
    root_hash: bytes
    #: the signed note: checkpoint body, the log's verified signatures, our cosignature
    note: str
    #: the cosignature's timestamp, POSIX seconds
    cosigned_at: int


@dataclass(frozen=True)
class Misbehaviour:
    """A validly signed checkpoint that contradicts the cosigned state."""

    origin: str
    kind: str
    old_size: int
    size: int
    root_hash: bytes
    note: str
    proof: tuple[bytes, ...]
    known: CosignedCheckpoint | None
    #: filled when read back from the store
    first_seen: int = 0
    last_seen: int = 0
    times_seen: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MISBEHAVIOUR_KINDS:
            raise ValueError(f"expected a misbehaviour kind in {MISBEHAVIOUR_KINDS}, found {self.kind!r}")

    def digest(self) -> bytes:
        body = self.note[: self.note.rfind("\n\n") + 1]
        known = f"{self.known.size}:{self.known.root_hash.hex()}" if self.known else "none"
        text = "\n".join([self.kind, self.origin, known, body])
        return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True)
class Transition(Generic[T]):
    """What one add-checkpoint decided: a new latest checkpoint to store (or
    none: refused), evidence to record (or none), and the caller's answer."""

    outcome: T
    store: CosignedCheckpoint | None = None
    evidence: Misbehaviour | None = None


class WitnessState:
    """The SQLite state of one witness. Safe to share between threads (one
    connection behind a lock); several processes on one file serialise on
    SQLite's write lock."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 30.0, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StateError(f"expected SQLite WAL mode for {self.path}, found {mode}")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"cannot open the witness state {self.path}: {exc}") from None

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise StateError(f"expected witness state schema {SCHEMA_VERSION}, found {version}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def ping(self) -> None:
        """Raise unless the state file answers a query (health checks)."""
        with self._lock:
            self._db.execute("SELECT count(*) FROM cosigned").fetchone()

    def close(self) -> None:
        """Close after any running transaction (callers hold the lock while in one)."""
        with self._lock:
            self._db.close()

    # --- the check-and-set -------------------------------------------------------------

    def update(self, origin: str, decide: Callable[[CosignedCheckpoint | None], Transition[T]]) -> Transition[T]:
        """Run ``decide`` on the latest cosigned checkpoint of ``origin`` under the
        write lock, store what it returns, commit (durably), then return it.

        ``decide`` may sign; it must not block on anything but the CPU. If it
        raises, nothing is written.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                transition = decide(self._latest("WHERE origin = ?", origin))
                if transition.store is not None:
                    self._store(transition.store)
                if transition.evidence is not None:
                    self._record(transition.evidence)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return transition

    def _store(self, cp: CosignedCheckpoint) -> None:
        self._db.execute(
            "INSERT INTO cosigned (origin, origin_hash, size, root_hash, note, cosigned_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root_hash = excluded.root_hash, "
            "note = excluded.note, cosigned_at = excluded.cosigned_at",
            (cp.origin, origin_hash(cp.origin), cp.size, cp.root_hash, cp.note, cp.cosigned_at),
        )

    def _record(self, evidence: Misbehaviour) -> None:
        now = int(self._clock())
        known = evidence.known
        self._db.execute(
            "INSERT INTO misbehaviour (digest, origin, kind, first_seen, last_seen, old_size, size, root_hash, note, "
            "proof, known_size, known_root, known_note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (digest) DO UPDATE SET last_seen = excluded.last_seen, times_seen = times_seen + 1",
            (
                evidence.digest(), evidence.origin, evidence.kind, now, now, evidence.old_size, evidence.size,
                evidence.root_hash, evidence.note, "".join(base64.b64encode(h).decode() + "\n" for h in evidence.proof),
                known.size if known else None, known.root_hash if known else None, known.note if known else None,
            ),
        )

    # --- reading ---------------------------------------------------------------------------

    def _latest(self, where: str, *params) -> CosignedCheckpoint | None:
        row = self._db.execute(
            f"SELECT origin, size, root_hash, note, cosigned_at FROM cosigned {where}", params
        ).fetchone()
        return CosignedCheckpoint(row[0], row[1], bytes(row[2]), row[3], row[4]) if row else None

    def latest(self, origin: str) -> CosignedCheckpoint | None:
        with self._lock:
            return self._latest("WHERE origin = ?", origin)

    def latest_by_origin_hash(self, hex_hash: str) -> CosignedCheckpoint | None:
        with self._lock:
            return self._latest("WHERE origin_hash = ?", hex_hash)

    def all_latest(self) -> list[CosignedCheckpoint]:
        with self._lock:
            rows = self._db.execute("SELECT origin, size, root_hash, note, cosigned_at FROM cosigned ORDER BY origin")
            return [CosignedCheckpoint(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows.fetchall()]

    def misbehaviour_counts(self) -> dict[tuple[str, str], int]:
        """Times seen, per (origin, kind)."""
        with self._lock:
            rows = self._db.execute("SELECT origin, kind, SUM(times_seen) FROM misbehaviour GROUP BY origin, kind")
            return {(origin, kind): count for origin, kind, count in rows.fetchall()}

    def misbehaviour(self, origin: str | None = None) -> list[Misbehaviour]:
        query = (
            "SELECT origin, kind, old_size, size, root_hash, note, proof, known_size, known_root, known_note, "
            "first_seen, last_seen, times_seen FROM misbehaviour"
        )
        with self._lock:
            rows = self._db.execute(
                query + (" WHERE origin = ? ORDER BY id" if origin else " ORDER BY id"), (origin,) if origin else ()
            ).fetchall()
        found = []
        for r in rows:
            known = CosignedCheckpoint(r[0], r[7], bytes(r[8]), r[9], 0) if r[7] is not None else None
            proof = tuple(base64.b64decode(line) for line in r[6].splitlines())
            found.append(Misbehaviour(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], proof, known, r[10], r[11], r[12]))
        return found

    def check_integrity(self) -> None:
        """Raise :class:`StateError` unless SQLite's own check passes."""
        with self._lock, closing(self._db.execute("PRAGMA integrity_check")) as cursor:
            result = [row[0] for row in cursor.fetchall()]
        if result != ["ok"]:
            raise StateError(f"witness state {self.path} fails SQLite's integrity check: {result[:3]}")
