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

Sequencing and integration (as Trillian and Tessera split them): a flow event
is *sequenced* by :meth:`EvidenceLog.sequence` — one short durable INSERT into
a queue, no lock on the tree's head, concurrent callers of a process sharing
one transaction (:mod:`services.common.group_commit`) — and *integrated* later
by :meth:`EvidenceLog.integrate`, which under the head lock takes a batch of
sequenced records in order, chains each to its flow (``prev_index``), hashes
the leaves and every subtree they complete in memory, and writes them with the
new head in one transaction. A crash between the two loses nothing: the next
integrator integrates the same records. The leaves and the tree are exactly
those that appending the records one by one in that order would give.
:meth:`EvidenceLog.append` still adds one record at once (sequenced and
integrated in one transaction) for callers that need its index.

A record's ``event_id`` (a flow event's id, when it has one) makes it a leaf
at most once: a second one is not sequenced while the first waits, and is
dropped by the integrator once the first is a leaf.
"""
from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from sqlalchemy import Select, and_, bindparam, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from services.common.clock import aware  # SQLite keeps no offset; the log writes UTC
from services.common.database import dialect_insert
from services.common.errors import IntegrityError, InvalidInput, NotFound
from services.common.group_commit import GroupCommit
from services.signing import merkle
from services.signing.checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    sign_checkpoint,
)
from services.signing.log_records import (
    ConsistencyProof,
    InclusionProof,
    LeafReceipt,
    SequencedRecord,
    StoredLeaf,
    check_record,
    leaf_record,
)
from services.signing.merkle import ConsistencyProofError, NodeId
from services.signing.models import LogCheckpoint, LogHead, LogLeaf, LogNode, LogSequenced

#: sequenced records integrated per transaction
INTEGRATION_BATCH = 2000


# --- integration -------------------------------------------------------------------


@dataclass(frozen=True)
class Integration:
    """What one integration did: ``taken`` records left the queue, ``leaves``
    were added (fewer when some were events logged already)."""

    taken: int
    leaves: list[StoredLeaf]


def unlogged(records: Sequence[SequencedRecord], logged_event_ids: Iterable[str]) -> list[int]:
    """Positions of ``records`` whose event is neither a leaf already nor
    earlier in ``records`` (records without an event id are always kept)."""
    seen = set(logged_event_ids)
    kept = []
    for position, record in enumerate(records):
        if record.event_id is not None:
            if record.event_id in seen:
                continue
            seen.add(record.event_id)
        kept.append(position)
    return kept


def chain(size: int, records: Sequence[SequencedRecord], last_of_flow: Mapping[str, int | None]) -> list[StoredLeaf]:
    """The leaves of ``records`` integrated in order from leaf index ``size``:
    each chained to its flow's previous leaf, from ``last_of_flow`` (the tree's
    last leaf of each flow) or earlier in the batch."""
    last = dict(last_of_flow)
    leaves = []
    for offset, record in enumerate(records):
        index = size + offset
        data = record.leaf_data(last.get(record.flow_id))
        leaves.append(StoredLeaf(index, record.flow_id, data, merkle.hash_leaf(data), record.created_at))
        last[record.flow_id] = index
    return leaves


# --- stores -----------------------------------------------------------------------


class LogStore(merkle.NodeReader, Protocol):
    """Persistence of the log: sequenced records, leaves, subtree hashes and
    signed checkpoints."""

    def size(self) -> int: ...

    def append(
        self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime, event_id: str | None = None
    ) -> StoredLeaf:
        """Atomically, with appends serialised: find the flow's last leaf index,
        call ``build(prev_index)`` for the leaf bytes, store the leaf at the next
        index with every subtree it completes. The leaf of ``event_id`` when
        that event is a leaf already."""
        ...

    def sequence(self, records: Sequence[SequencedRecord]) -> list[bool]:
        """Durably queue ``records`` for integration in one transaction; for
        each, False when its event is queued already, or (as far as the store
        can tell cheaply) a leaf already; then it is not queued again."""
        ...

    def sequence_in(self, session: Session, records: Sequence[SequencedRecord]) -> list[bool]:
        """:meth:`sequence` in the caller's transaction (``session``): the records are
        queued if and only if that transaction commits."""
        ...

    def integrate(self, limit: int) -> Integration:
        """Move up to ``limit`` queued records, in order, into the tree in one
        transaction, serialised with other integrators and appends."""
        ...

    def pending(self) -> int:
        """How many records are sequenced but not integrated yet."""
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
        self._event_leaf: dict[str, int] = {}
        self._lock = threading.Lock()

    def size(self) -> int:
        return self._tree.size

    def nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        return self._tree.nodes(ids)

    def append(
        self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime, event_id: str | None = None
    ) -> StoredLeaf:
        with self._lock:
            if event_id in self._event_leaf:
                return self._leaves[self._event_leaf[event_id]]
            data = build(self._last_of_flow.get(flow_id))
            return self._add(StoredLeaf(self.size(), flow_id, data, merkle.hash_leaf(data), created_at), event_id)

    def _add(self, leaf: StoredLeaf, event_id: str | None) -> StoredLeaf:
        index = self._tree.append_hash(leaf.leaf_hash)
        assert index == leaf.index
        self._leaves.append(leaf)
        self._last_of_flow[leaf.flow_id] = index
        self._flow_indices.setdefault(leaf.flow_id, []).append(index)
        if event_id is not None:
            self._event_leaf[event_id] = index
        return leaf

    def sequence(self, records: Sequence[SequencedRecord]) -> list[bool]:
        """Integrates at once: in memory, sequencing would buy nothing."""
        with self._lock:
            kept = unlogged(records, self._event_leaf)
            fresh = [records[position] for position in kept]
            for record, leaf in zip(fresh, chain(self.size(), fresh, self._last_of_flow), strict=True):
                self._add(leaf, record.event_id)
            new = [False] * len(records)
            for position in kept:
                new[position] = True
            return new

    def sequence_in(self, session, records: Sequence[SequencedRecord]) -> list[bool]:
        """In memory there is no transaction to join: integrated at once."""
        return self.sequence(records)

    def integrate(self, limit: int) -> Integration:
        return Integration(0, [])

    def pending(self) -> int:
        return 0

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

    Sequencing inserts into ``log_sequenced`` and locks nothing shared. Adding
    leaves (integration, a synchronous append) locks the single ``log_head``
    row: ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction's
    first statement is a write, which takes the database's one write lock at
    once (a read first would let two appenders see the same size). Either way,
    concurrent integrators and appenders in other processes wait, then see the
    committed size and the queue without what was just integrated.
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
        # creates the head on first use; on SQLite it is also the write that
        # takes the database lock before anything is read
        session.execute(dialect_insert(session)(LogHead).values(log_id=self.LOG_ID, size=0).on_conflict_do_nothing())
        return int(session.scalar(select(LogHead.size).where(LogHead.log_id == self.LOG_ID).with_for_update()))

    def append(
        self, flow_id: str, build: Callable[[int | None], bytes], created_at: datetime, event_id: str | None = None
    ) -> StoredLeaf:
        with self._transaction() as session:
            index = self._lock_head(session)
            if event_id is not None:
                logged = session.scalars(select(LogLeaf).where(LogLeaf.event_id == event_id).limit(1)).first()
                if logged is not None:
                    return self._leaf(logged)
            prev_index = session.scalar(
                select(func.max(LogLeaf.leaf_index)).where(LogLeaf.flow_id == flow_id)
            )
            data = build(prev_index)
            leaf_hash = merkle.hash_leaf(data)
            siblings = self._nodes(session, merkle.append_plan(index))
            session.execute(
                insert(LogLeaf).values(
                    leaf_index=index, flow_id=flow_id, event_id=event_id, leaf_data=data, leaf_hash=leaf_hash,
                    created_at=created_at,
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

    # sequencing and integration

    @staticmethod
    def _logged_events(session: Session, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        return set(session.scalars(select(LogLeaf.event_id).where(LogLeaf.event_id.in_(event_ids))))

    def sequence(self, records: Sequence[SequencedRecord]) -> list[bool]:
        """One INSERT: an event already a leaf is not looked for here (the
        integrator drops it), as that would cost every batch a round trip."""
        with self._transaction() as session:
            return self.sequence_in(session, records)

    def sequence_in(self, session: Session, records: Sequence[SequencedRecord]) -> list[bool]:
        kept = unlogged(records, ())
        rows = [
            {"flow_id": r.flow_id, "event_id": r.event_id, "record": r.record, "created_at": r.created_at}
            for r in (records[position] for position in kept)
        ]
        queued: set[str] = set()
        if rows:
            # a second copy of an event that another transaction queued is skipped, not an error
            statement = (
                dialect_insert(session)(LogSequenced.__table__)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(LogSequenced.__table__.c.event_id)
            )
            queued = {event_id for event_id in session.execute(statement, rows).scalars() if event_id}
        new = [False] * len(records)
        for position in kept:
            event_id = records[position].event_id
            new[position] = event_id is None or event_id in queued
        return new

    def integrate(self, limit: int) -> Integration:
        if limit < 1:
            raise InvalidInput("limit", "min", f"expected at least 1 record per integration, found {limit}")
        with self._transaction() as session:
            size = self._lock_head(session)
            rows = session.execute(
                select(LogSequenced.seq, LogSequenced.flow_id, LogSequenced.event_id, LogSequenced.record,
                       LogSequenced.created_at).order_by(LogSequenced.seq).limit(limit)
            ).all()
            if not rows:
                return Integration(0, [])
            records = [SequencedRecord(flow_id, event_id, bytes(record), aware(created_at))
                       for _seq, flow_id, event_id, record, created_at in rows]
            fresh = [records[position] for position in
                     unlogged(records, self._logged_events(session, [r.event_id for r in records if r.event_id]))]
            leaves = chain(size, fresh, self._last_of_flows(session, {r.flow_id for r in fresh}))
            if leaves:
                right_edge = self._nodes(session, merkle.root_plan(size))
                made = merkle.append_leaves(size, right_edge, [leaf.leaf_hash for leaf in leaves])
                # Core tables: the ORM's bulk path costs more than the rows here
                session.execute(insert(LogLeaf.__table__), [
                    {"leaf_index": leaf.index, "flow_id": leaf.flow_id, "event_id": record.event_id,
                     "leaf_data": leaf.data, "leaf_hash": leaf.leaf_hash, "created_at": leaf.created_at}
                    for leaf, record in zip(leaves, fresh, strict=True)
                ])
                session.execute(insert(LogNode.__table__), [
                    {"level": level, "node_index": node_index, "hash": value} for (level, node_index), value in made
                ])
                session.execute(update(LogHead).where(LogHead.log_id == self.LOG_ID).values(size=size + len(leaves)))
            # by seq, not "seq <= the batch's last": a lower seq committed
            # after the batch was read is not in it and must stay queued
            session.execute(delete(LogSequenced).where(LogSequenced.seq.in_([row[0] for row in rows])))
        return Integration(len(rows), leaves)

    @staticmethod
    def _last_of_flows(session: Session, flows: set[str]) -> dict[str, int | None]:
        """Each flow's last leaf index (None for a flow with no leaf yet)."""
        if not flows:
            return {}
        if session.get_bind().dialect.name == "postgresql":
            # one index probe per flow (max() reads the last entry of
            # ix_log_leaves_flow); a GROUP BY would read every leaf of each flow
            rows = session.execute(
                text("SELECT f.flow_id, (SELECT max(leaf_index) FROM log_leaves WHERE flow_id = f.flow_id) "
                     "FROM unnest(CAST(:flows AS varchar[])) AS f(flow_id)"),
                {"flows": sorted(flows)},
            )
        else:
            rows = session.execute(
                select(LogLeaf.flow_id, func.max(LogLeaf.leaf_index))
                .where(LogLeaf.flow_id.in_(sorted(flows))).group_by(LogLeaf.flow_id)
            )
        return {flow_id: (None if last is None else int(last)) for flow_id, last in rows}

    def pending(self, cap: int = 1_000_000) -> int:
        """Counted up to ``cap`` (a gauge need not count further)."""
        with self._reading() as session:
            queued = select(LogSequenced.seq).limit(cap).subquery()
            return int(session.scalar(select(func.count()).select_from(queued)) or 0)

    @staticmethod
    def _leaf(row: LogLeaf) -> StoredLeaf:
        return StoredLeaf(row.leaf_index, row.flow_id, bytes(row.leaf_data), bytes(row.leaf_hash),
                          aware(row.created_at))

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
            values = dict(tree_size=size, root_hash=root, note=note, created_at=created_at)
            # two replicas checkpointing the same size: the first one stays
            session.execute(dialect_insert(session)(LogCheckpoint).values(**values).on_conflict_do_nothing())
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

    def __init__(self, store: LogStore, signer: NoteSigner, clock: Callable[[], datetime] = _now,
                 sequencing_batch: int = 500):
        self.store = store
        self.signer = signer
        self.origin = signer.name
        self._clock = clock
        self._sequencer: GroupCommit[SequencedRecord, bool] = GroupCommit(store.sequence, sequencing_batch)

    # appending

    def sequence(self, record: Mapping[str, Any]) -> bool:
        """Queue one flow event for the tree, durably (committed when this
        returns); :meth:`integrate` makes it a leaf. False when its
        ``event_id`` is queued already (or, in memory, a leaf); a redelivered
        event that is a leaf already is dropped by the integrator."""
        # checked and canonicalised here, so a bad record fails its own caller, not a batch
        return self._sequencer.submit(SequencedRecord.of(record, self._clock().astimezone(timezone.utc)))

    def sequence_in(self, session: Session, record: Mapping[str, Any]) -> bool:
        """:meth:`sequence` in the caller's transaction: the record is queued with the
        change that made its event, and only if that change commits. A flow's events
        sequenced so are queued in the order of the flow's own transactions."""
        return self.store.sequence_in(session, [SequencedRecord.of(record, self._clock().astimezone(timezone.utc))])[0]

    def integrate(self, limit: int = INTEGRATION_BATCH) -> Integration:
        """Integrate up to ``limit`` sequenced records, in one transaction."""
        return self.store.integrate(limit)

    def integrate_all(self, limit: int = INTEGRATION_BATCH, budget: float | None = None) -> int:
        """Integrate batches until the queue is empty (or ``budget`` seconds
        have passed); how many leaves were added."""
        deadline = None if budget is None else time.monotonic() + budget
        added = 0
        while True:
            done = self.store.integrate(limit)
            added += len(done.leaves)
            if done.taken < limit or (deadline is not None and time.monotonic() >= deadline):
                return added

    def pending(self) -> int:
        """Records sequenced and not yet integrated."""
        return self.store.pending()

    def append(self, record: Mapping[str, Any]) -> LeafReceipt:
        """Add one flow event at once, for a caller that needs its leaf index
        (one transaction under the head lock: use :meth:`sequence` for rate);
        its ``prev_index`` links it to the flow's previous event. The leaf
        already holding its ``event_id``, if there is one."""
        check_record(record)  # fail before taking the append lock
        created_at = self._clock().astimezone(timezone.utc)
        leaf = self.store.append(record["flow_id"], lambda prev: leaf_record(record, prev), created_at,
                                 record.get("event_id"))
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
            raise InvalidInput(field_name, "range",
                               f"expected 0 <= {field_name} <= current tree size {current}, found {size}")

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
