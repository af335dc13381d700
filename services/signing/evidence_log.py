"""The signing service's evidence log: every flow event is a leaf of an
append-only Merkle tree (RFC 9162 / RFC 6962, as in Certificate Transparency,
Trillian and Rekor), with signed checkpoints (C2SP tlog-checkpoint).

Leaf = the event record as canonical JSON, a subset of RFC 8785 (JCS) that is
exact for the value types allowed here:

* objects with keys sorted by their UTF-16 code units (RFC 8785 §3.2.3), no
  whitespace, strings escaped as ECMAScript's JSON.stringify does (only ``"``,
  ``\\``, and control characters; everything else literal), UTF-8 encoded;
* strings, integers within ±(2**53 - 1), booleans, null, arrays, objects —
  floats are refused, because JCS number formatting would then matter and no
  field needs them.

Record fields (keys of :data:`RECORD_FIELDS`): ``flow_id``, ``event_type``,
``timestamp`` (RFC 3339, required), ``document_hash``, ``party_id``,
``certificate_serial``, ``willingness_method``, ``willingness_outcome``
(null when an event has none), plus ``prev_index`` — the leaf index of the
previous event of the same flow, filled in by the log under its append lock
so the events of a flow form a chain — and ``version``. Extra JSON fields are
allowed and hashed like the rest.

Stores: :class:`MemoryLogStore` (tests, benchmarks) and :class:`SqlLogStore`
(SQLAlchemy 2; PostgreSQL or SQLite). Both keep every perfect subtree hash, so
appends cost O(log n) amortised O(1) hashes and each proof reads O(log n)
stored nodes.
"""
from __future__ import annotations

import base64
import functools
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from sqlalchemy import Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.common.errors import IntegrityError, InvalidInput, NotFound
from services.signing import merkle
from services.signing.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from services.signing.merkle import ConsistencyProofError, InclusionProofError, NodeId
from services.signing.models import LogCheckpoint, LogHead, LogLeaf, LogNode

RECORD_VERSION = 1
REQUIRED_FIELDS = ("flow_id", "event_type", "timestamp")
OPTIONAL_FIELDS = (
    "document_hash",
    "party_id",
    "certificate_serial",
    "willingness_method",
    "willingness_outcome",
)
#: filled by the log, never by the caller
LOG_FIELDS = ("prev_index", "version")
RECORD_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS + LOG_FIELDS
MAX_FLOW_ID_LENGTH = 64
#: integers beyond this lose precision in IEEE doubles, which JCS assumes
MAX_SAFE_INTEGER = 2**53 - 1


# --- canonical JSON (RFC 8785 subset) ---------------------------------------------


def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 canonical JSON bytes (see the module docstring)."""
    text = _canonical(value, "record")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("record", "utf8", "expected text encodable as UTF-8, found a lone surrogate") from None


def _utf16_key(key: str, path: str) -> bytes:
    try:
        # big-endian UTF-16 bytes compare like the code-unit sequences JCS sorts by
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise InvalidInput(path, "utf8", "expected keys encodable as UTF-8, found a lone surrogate") from None


def _canonical(value: Any, path: str) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidInput(path, "max_integer", f"expected an integer within ±{MAX_SAFE_INTEGER}, found one of {value.bit_length()} bits")
        return str(value)
    if isinstance(value, str):
        # json.dumps escapes exactly '"', '\\' and U+0000..U+001F (\b \t \n \f \r
        # short, others \u00xx lower-case), as RFC 8785 §3.2.2.2 requires
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise InvalidInput(path, "type", f"expected string keys, found {type(key).__name__}")
        keys = sorted(value, key=lambda k: _utf16_key(k, f"{path}.{k}"))
        members = (json.dumps(k, ensure_ascii=False) + ":" + _canonical(value[k], f"{path}.{k}") for k in keys)
        return "{" + ",".join(members) + "}"
    raise InvalidInput(path, "type", f"expected a string, integer, boolean, null, list or object, found {type(value).__name__}")


# --- leaf records ---------------------------------------------------------------


def _check_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise InvalidInput("record", "type", f"expected an object, found {type(record).__name__}")
    for name in LOG_FIELDS:
        if name in record:
            raise InvalidInput(name, "log_managed", f"expected no {name}: the log sets it")
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidInput(name, "required", f"expected a non-empty string, found {type(value).__name__}")
    if len(record["flow_id"]) > MAX_FLOW_ID_LENGTH:
        raise InvalidInput("flow_id", "max_length", f"expected at most {MAX_FLOW_ID_LENGTH} characters, found {len(record['flow_id'])}")
    try:
        moment = datetime.fromisoformat(record["timestamp"])
    except ValueError:
        raise InvalidInput("timestamp", "rfc3339", "expected an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidInput("timestamp", "rfc3339", "expected a date-time with a UTC offset, found none")
    full = {name: None for name in OPTIONAL_FIELDS}
    full.update(record)
    return full


def leaf_record(record: Mapping[str, Any], prev_index: int | None) -> bytes:
    """The leaf bytes of ``record`` once the log has chained it to ``prev_index``."""
    full = _check_record(record)
    full["prev_index"] = prev_index
    full["version"] = RECORD_VERSION
    return canonical_json(full)


def utc_timestamp(moment: datetime) -> str:
    """An aware datetime as the RFC 3339 UTC form records use (``...Z``)."""
    if moment.tzinfo is None:
        raise InvalidInput("timestamp", "rfc3339", "expected an aware datetime, found a naive one")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# --- proofs as values -------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise InvalidInput(field_name, "base64", "expected standard base64") from None


@dataclass(frozen=True)
class LeafReceipt:
    index: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    index: int
    flow_id: str
    data: bytes
    leaf_hash: bytes
    created_at: datetime

    def record(self) -> dict[str, Any]:
        return json.loads(self.data)


@dataclass(frozen=True)
class InclusionProof:
    """Audit path of one leaf against one tree size (RFC 9162 §2.1.3)."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"leaf_index": self.leaf_index, "tree_size": self.tree_size, "hashes": [_b64(h) for h in self.hashes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InclusionProof":
        return cls(int(data["leaf_index"]), int(data["tree_size"]), tuple(_unb64(h, "hashes") for h in data["hashes"]))


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that the tree of ``old_size`` is a prefix of that of ``new_size`` (§2.1.4)."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"old_size": self.old_size, "new_size": self.new_size, "hashes": [_b64(h) for h in self.hashes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConsistencyProof":
        return cls(int(data["old_size"]), int(data["new_size"]), tuple(_unb64(h, "hashes") for h in data["hashes"]))


# --- offline verification (esign verify) ------------------------------------------


def verify_inclusion(leaf_bytes: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`InclusionProofError` unless ``leaf_bytes`` is leaf ``index``
    of the tree of ``size`` leaves whose root is ``root``. Needs no store."""
    merkle.verify_inclusion(merkle.hash_leaf(leaf_bytes), index, size, proof, root)


def verify_checkpointed_inclusion(
    leaf_bytes: bytes, proof: InclusionProof, checkpoint_note: str, verifier: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Check a checkpoint's signature, then the leaf's proof against its root."""
    checkpoint = open_checkpoint(checkpoint_note, verifier, origin)
    if checkpoint.size != proof.tree_size:
        raise InclusionProofError(f"expected a proof for the checkpoint's tree size {checkpoint.size}, found one for {proof.tree_size}")
    verify_inclusion(leaf_bytes, proof.leaf_index, proof.tree_size, proof.hashes, checkpoint.root_hash)
    return checkpoint


# --- stores -----------------------------------------------------------------------


class LogStore(merkle.NodeReader, Protocol):
    """Persistence of the log: leaves, subtree hashes and signed checkpoints."""

    def size(self) -> int: ...

    def append(self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime) -> StoredLeaf:
        """Atomically, with appends serialised: find the flow's last leaf index,
        call ``build(prev_index)`` for the leaf bytes, store the leaf at the next
        index with every subtree it completes."""
        ...

    def leaf(self, index: int) -> StoredLeaf | None: ...

    def flow_leaves(self, flow_id: str) -> list[StoredLeaf]: ...

    def checkpoint_at(self, size: int) -> str | None: ...

    def save_checkpoint(self, size: int, root: bytes, note: str, created_at: datetime) -> str:
        """Keep the note for ``size`` unless one is stored already; return the stored one."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None: ...


class MemoryLogStore:
    """Everything in process memory, appends serialised by a lock."""

    def __init__(self) -> None:
        self._tree = merkle.MemoryTree()
        self._leaves: list[StoredLeaf] = []
        self._last_of_flow: dict[str, int] = {}
        self._flow_indices: dict[str, list[int]] = {}
        self._checkpoints: dict[int, str] = {}
        self._lock = threading.Lock()

    def size(self) -> int:
        return self._tree.size

    def nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        return self._tree.nodes(ids)

    def append(self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime) -> StoredLeaf:
        with self._lock:
            data = build(self._last_of_flow.get(flow_id))
            leaf_hash = merkle.hash_leaf(data)
            index = self._tree.append_hash(leaf_hash)
            leaf = StoredLeaf(index, flow_id, data, leaf_hash, created_at)
            self._leaves.append(leaf)
            self._last_of_flow[flow_id] = index
            self._flow_indices.setdefault(flow_id, []).append(index)
            return leaf

    def leaf(self, index: int) -> StoredLeaf | None:
        return self._leaves[index] if 0 <= index < len(self._leaves) else None

    def flow_leaves(self, flow_id: str) -> list[StoredLeaf]:
        return [self._leaves[i] for i in self._flow_indices.get(flow_id, [])]

    def checkpoint_at(self, size: int) -> str | None:
        return self._checkpoints.get(size)

    def save_checkpoint(self, size: int, root: bytes, note: str, created_at: datetime) -> str:
        with self._lock:
            return self._checkpoints.setdefault(size, note)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        if not self._checkpoints:
            return None
        size = max(self._checkpoints)
        return size, self._checkpoints[size]


class SqlLogStore:
    """The log in the service's database (tables in ``models.py``).

    Appends lock the single ``log_head`` row: ``SELECT ... FOR UPDATE`` on
    PostgreSQL; on SQLite the transaction's first statement is a write, which
    takes the database's one write lock at once (a read first would let two
    appenders see the same size). Either way, concurrent appenders in other
    processes wait, then see the committed size.
    """

    LOG_ID = 1

    def __init__(self, sessions: sessionmaker[Session] | Callable[[], Session]):
        self._sessions = sessions

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
        finally:
            session.close()

    def size(self) -> int:
        with self._reading() as session:
            size = session.scalar(select(LogHead.size).where(LogHead.log_id == self.LOG_ID))
            return int(size or 0)

    def nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        with self._reading() as session:
            return self._nodes(session, ids)

    @staticmethod
    @functools.lru_cache(maxsize=256)
    def _nodes_query(count: int) -> Select:
        """``(level = ? AND node_index = ?) OR ...`` for ``count`` nodes: one
        statement shape per count, so SQLAlchemy compiles each once, and both
        PostgreSQL (bitmap OR) and SQLite (multi-index OR) use the primary key
        for it (SQLite scans the table for a row-value ``IN``)."""
        terms = (
            and_(LogNode.level == bindparam(f"l{i}"), LogNode.node_index == bindparam(f"i{i}")) for i in range(count)
        )
        return select(LogNode.level, LogNode.node_index, LogNode.hash).where(or_(*terms))

    @classmethod
    def _nodes(cls, session: Session, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        params = {}
        for i, (level, index) in enumerate(wanted):
            params[f"l{i}"], params[f"i{i}"] = level, index
        rows = session.execute(cls._nodes_query(len(wanted)), params)
        found = {(level, index): bytes(value) for level, index, value in rows}
        if len(found) != len(wanted):
            missing = [node for node in wanted if node not in found][:3]
            raise IntegrityError(
                "evidence log", f"expected {len(wanted)} stored tree nodes, found {len(found)}; missing e.g. {missing}"
            )
        return found

    def _lock_head(self, session: Session) -> int:
        dialect = session.get_bind().dialect.name
        if dialect in ("postgresql", "sqlite"):
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert
            else:
                from sqlalchemy.dialects.sqlite import insert as upsert
            # creates the head on first use; on SQLite it is also the write that
            # takes the database lock before anything is read
            session.execute(upsert(LogHead).values(log_id=self.LOG_ID, size=0).on_conflict_do_nothing())
        size = session.scalar(select(LogHead.size).where(LogHead.log_id == self.LOG_ID).with_for_update())
        if size is None:
            session.execute(insert(LogHead).values(log_id=self.LOG_ID, size=0))
            size = 0
        return int(size)

    def append(self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime) -> StoredLeaf:
        with self._transaction() as session:
            index = self._lock_head(session)
            prev_index = session.scalar(
                select(func.max(LogLeaf.leaf_index)).where(LogLeaf.flow_id == flow_id)
            )
            data = build(prev_index)
            leaf_hash = merkle.hash_leaf(data)
            siblings = self._nodes(session, merkle.append_plan(index))
            session.execute(
                insert(LogLeaf).values(
                    leaf_index=index, flow_id=flow_id, leaf_data=data, leaf_hash=leaf_hash, created_at=created_at
                )
            )
            session.execute(
                insert(LogNode),
                [
                    {"level": level, "node_index": node_index, "hash": value}
                    for (level, node_index), value in merkle.completed_nodes(index, leaf_hash, siblings)
                ],
            )
            session.execute(update(LogHead).where(LogHead.log_id == self.LOG_ID).values(size=index + 1))
        return StoredLeaf(index, flow_id, data, leaf_hash, created_at)

    @staticmethod
    def _leaf(row: LogLeaf) -> StoredLeaf:
        created = row.created_at
        if created.tzinfo is None:  # SQLite keeps no offset; the log writes UTC
            created = created.replace(tzinfo=timezone.utc)
        return StoredLeaf(row.leaf_index, row.flow_id, bytes(row.leaf_data), bytes(row.leaf_hash), created)

    def leaf(self, index: int) -> StoredLeaf | None:
        with self._reading() as session:
            row = session.get(LogLeaf, index)
            return self._leaf(row) if row is not None else None

    def flow_leaves(self, flow_id: str) -> list[StoredLeaf]:
        with self._reading() as session:
            rows = session.scalars(select(LogLeaf).where(LogLeaf.flow_id == flow_id).order_by(LogLeaf.leaf_index))
            return [self._leaf(row) for row in rows]

    def checkpoint_at(self, size: int) -> str | None:
        with self._reading() as session:
            return session.scalar(select(LogCheckpoint.note).where(LogCheckpoint.tree_size == size))

    def save_checkpoint(self, size: int, root: bytes, note: str, created_at: datetime) -> str:
        with self._transaction() as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert
            elif dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as upsert
            else:  # pragma: no cover - only PostgreSQL and SQLite are deployed
                upsert = None
            values = dict(tree_size=size, root_hash=root, note=note, created_at=created_at)
            if upsert is not None:
                # two replicas checkpointing the same size: the first one stays
                session.execute(upsert(LogCheckpoint).values(**values).on_conflict_do_nothing())
            elif session.get(LogCheckpoint, size) is None:
                session.execute(insert(LogCheckpoint).values(**values))
            return session.scalar(select(LogCheckpoint.note).where(LogCheckpoint.tree_size == size))

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self._reading() as session:
            row = session.execute(
                select(LogCheckpoint.tree_size, LogCheckpoint.note).order_by(LogCheckpoint.tree_size.desc()).limit(1)
            ).first()
            return (int(row[0]), row[1]) if row else None


# --- the log ----------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


class EvidenceLog:
    """Append flow events, prove them, sign checkpoints.

    ``origin`` names the log in its checkpoints and is the key name of
    ``signer`` (c2sp.org/tlog-checkpoint recommends they match).
    """

    def __init__(self, store: LogStore, signer: NoteSigner, clock: Callable[[], datetime] = _now):
        self.store = store
        self.signer = signer
        self.origin = signer.name
        self._clock = clock

    # appending

    def append(self, record: Mapping[str, Any]) -> LeafReceipt:
        """Add one flow event; its ``prev_index`` links it to the flow's previous event."""
        _check_record(record)  # fail before taking the append lock
        created_at = self._clock().astimezone(timezone.utc)
        leaf = self.store.append(record["flow_id"], lambda prev: leaf_record(record, prev), created_at)
        return LeafReceipt(leaf.index, leaf.leaf_hash)

    # reading

    def size(self) -> int:
        return self.store.size()

    def root(self, size: int | None = None) -> bytes:
        current = self.store.size()
        size = current if size is None else size
        self._check_size("tree_size", size, current)
        return merkle.root_hash(self.store, size)

    def leaf(self, index: int) -> StoredLeaf:
        leaf = self.store.leaf(index)
        if leaf is None:
            raise NotFound("log leaf", str(index))
        return leaf

    def flow_leaves(self, flow_id: str) -> list[StoredLeaf]:
        return self.store.flow_leaves(flow_id)

    @staticmethod
    def _check_size(field_name: str, size: int, current: int) -> None:
        if size < 0 or size > current:
            raise InvalidInput(field_name, "range", f"expected 0 <= {field_name} <= current tree size {current}, found {size}")

    # proving

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        current = self.store.size()
        tree_size = current if tree_size is None else tree_size
        self._check_size("tree_size", tree_size, current)
        return InclusionProof(index, tree_size, tuple(merkle.inclusion_proof(self.store, index, tree_size)))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        current = self.store.size()
        new_size = current if new_size is None else new_size
        self._check_size("new_size", new_size, current)
        return ConsistencyProof(old_size, new_size, tuple(merkle.consistency_proof(self.store, old_size, new_size)))

    # checkpoints

    def checkpoint(self) -> str:
        """The signed checkpoint of the current tree; one per size, reused once made."""
        size = self.store.size()
        stored = self.store.checkpoint_at(size)
        if stored is not None:
            return stored
        root = merkle.root_hash(self.store, size)
        self._refuse_fork(size, root)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
        return self.store.save_checkpoint(size, root, note, self._clock().astimezone(timezone.utc))

    def _refuse_fork(self, size: int, root: bytes) -> None:
        """A log must never sign a tree head inconsistent with one it signed
        before (c2sp.org/tlog-checkpoint); a database restored from an old
        backup and appended to again would do exactly that."""
        latest = self.store.latest_checkpoint()
        if latest is None:
            return
        old_size, note = latest
        if old_size > size:
            raise IntegrityError(
                "evidence log", f"expected a tree of at least {old_size} leaves (last checkpoint), found {size}"
            )
        old = Checkpoint.from_body(note[: note.rfind("\n\n") + 1])
        proof = merkle.consistency_proof(self.store, old_size, size)
        try:
            merkle.verify_consistency(old_size, size, old.root_hash, root, proof)
        except ConsistencyProofError as exc:
            raise IntegrityError("evidence log", f"refusing to sign size {size}: {exc.reason}") from None

    def latest_checkpoint(self) -> str | None:
        latest = self.store.latest_checkpoint()
        return latest[1] if latest else None

    def public_key(self) -> str:
        """The verifier key string (``<name>+<key id>+<base64 key>``)."""
        return self.signer.verifier.to_key_string()

    def verifier(self) -> NoteVerifier:
        return self.signer.verifier
