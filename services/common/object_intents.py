"""Objects put so that a failure at any moment leaves no orphan in the bucket.

A service's rows refer to objects it stored in S3 (content-addressed,
:mod:`services.common.storage`). A row and its object cannot be written in one
transaction, and a version under S3 Object Lock in COMPLIANCE mode can never be
deleted, so an object put (and locked) for a transaction that then fails (the
time-stamp authority or the database away, the process killed) would stay for
the whole retention period, referenced by nothing. Every put therefore goes:

1. **intent**: a row of ``object_intents`` (key, owner, time) is committed in a
   short transaction of its own, on another connection than the worker's, so
   the worker's open transaction and its row locks are untouched;
2. **put** without retention, the intent's id in the object's user metadata;
   the version S3 made is added to the intent;
3. **commit**: the worker's transaction adds the rows that refer to the object
   and, as its last step, deletes the intent
   (:meth:`~services.common.outbox.UnitOfWork.before_commit`). An intent gone
   by then was taken back by the reconciler with its object: nothing commits
   (``Unavailable``), so no row ever names a deleted version;
4. **lock**, where the service keeps objects locked (``OBJECT_LOCK_DAYS``):
   right after the commit the version gets COMPLIANCE retention, and the rows
   naming it their ``retained_until``.

The reconciler (:meth:`ObjectIntents.reconcile`; a timer in one replica at a
time, :class:`ObjectReconciliation`) finishes whatever a failure left:

- an intent older than the grace period whose version no committed row names
  is deleted from S3 (it was never locked, so it can be), then forgotten;
  only that version, found by the intent's id in the metadata when the put's
  answer was lost, never another version of the same key;
- an intent whose object a row does name (two puts of identical bytes share a
  key) is just forgotten;
- a row whose version is not locked yet is locked, until its creation time
  plus the retention period (never longer than a lock in step 4 would have been).

Taking an intent back (deleting the intent row, then its object) is one
transaction holding the intent's row, so a worker settling the same intent
either commits first (the reconciler finds no intent) or fails. In an
unversioned bucket, where one key is one object, an object is deleted only if
no row and no other intent names the key, under a lock on the key that a new
intent for it waits for (a PostgreSQL advisory lock; SQLite has one writer at a
time anyway). On SQLite the intent's own transaction needs the write lock, so a
worker puts before its own transaction writes anything.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from nameko.timer import timer
from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, delete, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from services.common.clock import aware, naive, now, utcnow
from services.common.database import writes_sqlite_elsewhere
from services.common.entrypoints import rpc
from services.common.errors import EsignError, InvalidInput, Unavailable
from services.common.lease import acquire, holder_id

if TYPE_CHECKING:
    from services.common.database import Database
    from services.common.outbox import UnitOfWork
    from services.common.storage import ObjectStore, StoredObject

log = logging.getLogger(__name__)

#: the S3 user metadata naming the intent a version was put for
INTENT_METADATA = "esign-intent"
DEFAULT_GRACE_SECONDS = 600
#: a grace period shorter than this would take back objects of calls still running
MIN_GRACE_SECONDS = 60
RECONCILE_BATCH = 100


def _columns() -> list:
    return [
        Column("id", String(36), primary_key=True),
        Column("object_key", String(200), nullable=False),
        Column("version_id", String(100), nullable=True),  # learnt after the put
        Column("owner_id", String(64), nullable=False),  # the flow, document ... the object is for
        Column("created_at", DateTime, nullable=False),
    ]


def _indexes(table: str) -> list[tuple[str, list[str]]]:
    return [(f"ix_{table}_object_key", ["object_key"]), (f"ix_{table}_created_at", ["created_at"])]


OBJECT_INTENTS = Table("object_intents", MetaData(), *_columns(),
                       *(Index(name, *columns) for name, columns in _indexes("object_intents")))


def create_intent_table(op) -> None:
    """For a service's Alembic migration."""
    op.create_table("object_intents", *_columns())
    for name, columns in _indexes("object_intents"):
        op.create_index(name, "object_intents", columns)


@dataclass(frozen=True)
class ObjectReference:
    """A column of the service's tables naming objects of its bucket, with the
    column of the version it names when it records one (none: any version)."""

    key: Any
    version_id: Any = None


@dataclass(frozen=True)
class LockRecord:
    """Where the service notes that an object version is locked: the columns
    of its key, version, creation time and ``retained_until`` (None: not yet)."""

    key: Any
    version_id: Any
    created_at: Any
    retained_until: Any


@dataclass(frozen=True)
class ObjectReferences:
    """Every column naming the service's objects, and where locks are noted
    (required when the service keeps its objects locked)."""

    columns: tuple[ObjectReference, ...]
    locks: LockRecord | None = None


@dataclass(frozen=True)
class IntentSettings:
    grace: timedelta
    lock_days: int

    @classmethod
    def from_config(cls, config: dict[str, Any], lock_days: int) -> "IntentSettings":
        """``S3.INTENT_GRACE_SECONDS``: how old an intent is before the reconciler
        takes its object back (default 600); a bad value stops the service."""
        raw = (config.get("S3") or {}).get("INTENT_GRACE_SECONDS")
        try:
            seconds = DEFAULT_GRACE_SECONDS if raw in (None, "") else int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"S3.INTENT_GRACE_SECONDS: expected whole seconds, found {raw!r}") from None
        if seconds < MIN_GRACE_SECONDS:
            raise ValueError(f"S3.INTENT_GRACE_SECONDS: expected at least {MIN_GRACE_SECONDS}, found {seconds}")
        return cls(timedelta(seconds=seconds), lock_days)


@dataclass(frozen=True)
class Reconciled:
    """What one reconciler run did."""

    removed: int = 0  # object versions no row named, deleted
    forgotten: int = 0  # intents whose object a row names (or that never put one), dropped
    locked: int = 0  # versions locked late (after a failure between commit and lock)
    failed: int = 0  # intents or locks left for the next run (S3 away)

    def to_dict(self) -> dict[str, int]:
        return {"removed": self.removed, "forgotten": self.forgotten, "locked": self.locked, "failed": self.failed}


def _lock_key(session: Session, key: str) -> None:
    """Serialise intents and take-backs of one key (PostgreSQL; SQLite writers take turns anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "object:" + key})


class ObjectIntents:
    """One service's intents and the store they guard (one per process); its
    own bookkeeping runs in short transactions of its own."""

    def __init__(self, store: "ObjectStore", database: Callable[[], "Database"], references: ObjectReferences,
                 settings: IntentSettings):
        if settings.lock_days and references.locks is None:
            raise ValueError("objects are kept locked (S3.OBJECT_LOCK_DAYS) but no table notes their locks")
        self.store = store
        self._database = database
        self.references = references
        self.settings = settings

    def _session(self):
        return self._database().session()

    # -- the steps of a put ------------------------------------------------------------
    def open(self, key: str, owner_id: str) -> str:
        """Step 1: record (and commit) the intent to put ``key``; its id."""
        database = self._database()
        if writes_sqlite_elsewhere(database.engine):
            raise RuntimeError("an object is put before the worker's transaction writes: on SQLite the intent's "
                               "own transaction would wait for the worker's")
        intent_id = str(uuid.uuid4())
        with database.session() as session:
            _lock_key(session, key)
            session.execute(insert(OBJECT_INTENTS).values(id=intent_id, object_key=key, owner_id=owner_id[:64],
                                                          created_at=utcnow()))
            session.commit()
        return intent_id

    def learn_version(self, intent_id: str, version_id: str) -> None:
        with self._session() as session:
            session.execute(update(OBJECT_INTENTS).where(OBJECT_INTENTS.c.id == intent_id)
                            .values(version_id=version_id))
            session.commit()

    @staticmethod
    def settle(session: Session, intent_id: str) -> None:
        """Step 3, in the worker's transaction: the intent is done with. Gone
        already: the reconciler took the object back, so nothing may commit."""
        if session.execute(delete(OBJECT_INTENTS).where(OBJECT_INTENTS.c.id == intent_id)).rowcount != 1:
            raise Unavailable("storage", "object_taken_back: stored too long before its commit; try again")

    def lock(self, key: str, version_id: str | None, until: datetime, *, fresh: bool = False) -> datetime:
        """Step 4: lock the version (COMPLIANCE) and note it on the rows naming it. ``fresh``: the
        version was just put, unlocked (its retention is not read first; see ObjectStore.retain)."""
        locked = self.store.retain(key, version_id, until, fresh=fresh)
        locks = self.references.locks
        with self._session() as session:
            version = locks.version_id.is_(None) if version_id is None else locks.version_id == version_id
            session.execute(update(locks.key.table)
                            .where(locks.key == key, version, locks.retained_until.is_(None))
                            .values({locks.retained_until: naive(locked)}))
            session.commit()
        return locked

    # -- the reconciler ----------------------------------------------------------------
    def reconcile(self, older_than: timedelta | None = None, limit: int = RECONCILE_BATCH) -> Reconciled:
        """Take back the objects of intents older than ``older_than`` (default: the
        grace period) that no row names, and lock what is not locked yet."""
        cutoff = utcnow() - (self.settings.grace if older_than is None else older_than)
        with self._session() as session:
            stale = session.execute(
                select(OBJECT_INTENTS.c.id, OBJECT_INTENTS.c.object_key).where(OBJECT_INTENTS.c.created_at <= cutoff)
                .order_by(OBJECT_INTENTS.c.created_at).limit(limit)).all()
        counts = {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}
        for intent_id, key in stale:
            try:
                outcome = self._take_back(intent_id, key)
            except EsignError as exc:
                log.warning("object %s of intent %s not taken back yet: %s", key, intent_id, exc)
                counts["failed"] += 1
                continue
            if outcome:
                counts[outcome] += 1
        if self.settings.lock_days:
            locked, failed = self._lock_late(cutoff, limit)
            counts["locked"] += locked
            counts["failed"] += failed
        return Reconciled(**counts)

    def _take_back(self, intent_id: str, key: str) -> str | None:
        """One stale intent, in one transaction: 'removed', 'forgotten', or None
        when a worker settled it meanwhile."""
        with self._session() as session:
            _lock_key(session, key)
            # deleted first: it holds the intent (and, on SQLite, the write lock) until the end
            row = session.execute(delete(OBJECT_INTENTS).where(OBJECT_INTENTS.c.id == intent_id)
                                  .returning(OBJECT_INTENTS.c.version_id)).first()
            if row is None:
                session.rollback()
                return None
            # the version this intent's put made: as learnt, or (the answer was lost; or an unversioned
            # bucket, whose one object per key may have been put by another call since) by its metadata
            versions = ([row.version_id] if row.version_id
                        else self.store.versions_with(key, INTENT_METADATA, intent_id))
            orphans = [version for version in versions if not self._named(session, key, version)]
            if orphans and not self.store.versioned and session.execute(
                    select(func.count()).select_from(OBJECT_INTENTS)
                    .where(OBJECT_INTENTS.c.object_key == key)).scalar_one():
                orphans = []  # another call is putting the same bytes under this key: the object is theirs too
            for version in orphans:
                self.store.delete(key, version)
            session.commit()
        if not orphans:
            return "forgotten"  # a row names the object, or the put never happened
        log.warning("object %s (version %s) was stored for a change that never committed: deleted",
                    key, ", ".join(v or "-" for v in orphans))
        return "removed"

    def _named(self, session: Session, key: str, version_id: str | None) -> bool:
        """Whether a committed row names this version of ``key`` (or the key, for
        columns without a version, and rows that recorded none)."""
        for column in self.references.columns:
            condition = column.key == key
            if column.version_id is not None and version_id is not None:
                condition = condition & or_(column.version_id == version_id, column.version_id.is_(None))
            if session.execute(select(column.key).where(condition).limit(1)).first() is not None:
                return True
        return False

    def _lock_late(self, cutoff: datetime, limit: int) -> tuple[int, int]:
        """Lock the versions committed rows name that are not locked yet (the
        process stopped between a commit and its lock). (locked, failed)."""
        locks = self.references.locks
        with self._session() as session:
            unlocked = session.execute(
                select(locks.key, locks.version_id, func.min(locks.created_at))
                .where(locks.retained_until.is_(None), locks.created_at <= cutoff)
                .group_by(locks.key, locks.version_id).limit(limit)).all()
        locked = failed = 0
        for key, version_id, created_at in unlocked:
            try:
                self.lock(key, version_id, aware(created_at) + timedelta(days=self.settings.lock_days))
            except EsignError as exc:
                log.warning("object %s (version %s) not locked yet: %s", key, version_id, exc)
                failed += 1
                continue
            log.warning("object %s (version %s) was committed but not locked: locked now", key, version_id)
            locked += 1
        return locked, failed


class IntentStore:
    """What a worker of a service that puts through intents gets from
    :class:`~services.common.storage.Storage`: reads as the object store does;
    :meth:`put` takes the four steps, its commit half in the worker's unit of work."""

    def __init__(self, intents: ObjectIntents, unit: Callable[[], "UnitOfWork"]):
        self.intents = intents
        self.store = intents.store
        self._unit = unit

    def put(self, data: bytes, *, owner_id: str, prefix: str = "",
            content_type: str = "application/octet-stream") -> "StoredObject":
        """Store ``data`` for ``owner_id`` (the flow, the document ...); add the rows
        naming it to the worker's transaction, then commit that as usual."""
        unit = self._unit()
        started = now()
        intent_id = self.intents.open(self.store.key_of(data, prefix), owner_id)
        # the version it makes is not written to the intent (a transaction per object): the worker's commit
        # settles the intent, and the reconciler finds a stranded put's version by the intent's id in its
        # metadata (ObjectIntents._take_back)
        stored = self.store.put(data, prefix=prefix, content_type=content_type, retain_days=0,
                                metadata={INTENT_METADATA: intent_id})
        unit.before_commit(lambda session: self.intents.settle(session, intent_id))
        days = self.intents.settings.lock_days
        if days:  # measured from before the put: the reconciler's lock (from the row's time) is never shorter
            unit.after_commit(lambda: self.intents.lock(stored.key, stored.version_id, started + timedelta(days=days),
                                                        fresh=True))
        return stored

    def get(self, key: str, *, sha256: str | None = None, version_id: str | None = None) -> bytes:
        return self.store.get(key, sha256=sha256, version_id=version_id)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def ping(self) -> bool:
        return self.store.ping()

    def reconcile(self, older_than: timedelta | None = None) -> Reconciled:
        return self.intents.reconcile(older_than)


class ObjectReconciliation:
    """Entrypoints of a service whose ``storage`` puts through intents (mixed
    into it): the reconciler every minute, in one replica at a time (lease),
    and ``reconcile_objects_now`` for operations."""

    _holder = holder_id()

    @timer(interval=60)
    def reconcile_objects(self) -> int:
        if not acquire(self.db.session, "reconcile_objects", self._holder, timedelta(seconds=120)):
            return 0
        return self._reconcile_objects(None).removed

    @rpc
    def reconcile_objects_now(self, older_than_seconds: int | None = None) -> dict:
        """Operations: run the object reconciler at once, taking back objects of
        intents older than ``older_than_seconds`` (default: the configured grace
        period; an intent younger may belong to a call still running); what it
        did, counted."""
        if older_than_seconds is None:
            return self._reconcile_objects(None).to_dict()
        if not 0 <= older_than_seconds <= 86_400 * 365:
            raise InvalidInput("older_than_seconds", "range", "expected 0 to 31536000 seconds")
        return self._reconcile_objects(timedelta(seconds=older_than_seconds)).to_dict()

    def _reconcile_objects(self, older_than: timedelta | None) -> Reconciled:
        done = self.storage.reconcile(older_than)
        if done.removed:
            self.metrics.inc("orphan_objects_removed", "Stored objects no committed change named, deleted",
                             amount=done.removed)
        if done.locked:
            self.metrics.inc("objects_locked_late", "Stored objects locked by the reconciler, not after their commit",
                             amount=done.locked)
        if done.failed:
            self.metrics.inc("object_reconcile_failures", "Intents or locks the object reconciler left for later",
                             amount=done.failed)
        return done
