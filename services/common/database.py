"""Database access for every service: SQLAlchemy 2 engines, one schema per
service, Alembic migrations per service, and the nameko dependency that hands
each worker a :class:`UnitOfWork` (a session plus the transactional outbox).

PostgreSQL in deployment: each service lives in its own schema (the
connection's ``search_path`` is set to it, so models and migrations stay
schema-free). SQLite for the embedded default: one file per service.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import eventlet
from nameko.extensions import DependencyProvider
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from services.common import sqltrace
from services.common.config import REPO_ROOT, data_dir, setting_number

log = logging.getLogger(__name__)

# Alembic upgrades of one database from several threads of one process
# (tests run several containers) must not interleave.
_migrate_lock = threading.Lock()


# Writers of one SQLite file in one process take turns here, cooperatively.
# SQLite's own busy handler waits in C: under eventlet that blocks the whole
# process, so the greenthread holding the write lock can never finish and the
# waiter stalls for the full busy timeout, then fails 'database is locked'.
# The green lock is taken before a connection's first write (pysqlite opens
# its transaction there too; reads before it run outside any transaction) and
# dropped when that transaction ends. Other processes (the CLI, tests) are
# still arbitrated by SQLite's busy timeout.
_WRITE_STATEMENTS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH"})
_HOLDS = "esign_sqlite_writer"
_writer_locks: dict[str, "_WriterLock"] = {}
_writer_locks_guard = threading.Lock()


class _WriterLock:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # green once eventlet has monkey-patched threading
        self._owner: int | None = None

    def take(self, info: dict) -> None:
        if info.get(_HOLDS):
            return
        me = threading.get_ident()
        if self._owner == me:
            # this thread already writes through another connection: waiting
            # here would never end, so SQLite's busy timeout decides instead
            return
        self._lock.acquire()
        self._owner = me
        info[_HOLDS] = True

    def drop(self, info: dict) -> None:
        if info.pop(_HOLDS, False):
            self._owner = None
            self._lock.release()


def _writer_lock(path: str) -> _WriterLock:
    with _writer_locks_guard:
        return _writer_locks.setdefault(path, _WriterLock())


def writes_sqlite_elsewhere(engine: Engine) -> bool:
    """Whether this thread already writes ``engine``'s SQLite file through another
    connection: a write on a second connection would wait for itself (until the
    busy timeout) instead of for another writer. Always False on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return False
    lock = _writer_locks.get(engine.url.database or ":memory:")
    return lock is not None and lock._owner == threading.get_ident()


def _serialise_writers(engine: Engine, path: str) -> None:
    lock = _writer_lock(path)

    @event.listens_for(engine, "before_cursor_execute")
    def _before_write(conn, _cursor, statement, _parameters, _context, _executemany):
        words = statement.lstrip().split(None, 1)
        if words and words[0].upper() in _WRITE_STATEMENTS:
            lock.take(conn.info)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _transaction_ended(conn):
        lock.drop(conn.info)

    @event.listens_for(engine.pool, "reset")
    @event.listens_for(engine.pool, "close")
    @event.listens_for(engine.pool, "invalidate")
    def _connection_reset(_dbapi_conn, record, *_args):
        lock.drop(record.info)


def dialect_insert(session: Session):
    """The INSERT of the session's dialect (PostgreSQL or SQLite), which has
    ``on_conflict_do_nothing`` and ``on_conflict_do_update``."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def database_url(config: dict[str, Any], service: str) -> str:
    """The service's database URL; an empty setting means the embedded
    SQLite file ``<DATA_DIR>/<service>.db``."""
    url = (config.get("DATABASE") or {}).get("URL")
    if url:
        return str(url)
    return f"sqlite:///{data_dir(config) / (service + '.db')}"


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg2 here: SQLAlchemy 2.1 would pick
    psycopg 3, while psycopg2 is the driver measured cooperative under
    eventlet's monkey-patching."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


#: how long a statement waits for a lock on PostgreSQL (SQLite waits busy_timeout)
LOCK_TIMEOUT_MS = 10_000


def make_engine(url: str, schema: str | None = None, lock_timeout_ms: int = LOCK_TIMEOUT_MS, **kwargs: Any) -> Engine:
    """An engine whose connections see only ``schema`` on PostgreSQL, and wait at
    most ``lock_timeout_ms`` for a lock."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _serialise_writers(engine, engine.url.database or ":memory:")

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # a worker waits at most LOCK_TIMEOUT for a row another holds (a crashed or stuck
    # worker's locks must not hold up every other one): then Unavailable, retry later
    options = [f"-clock_timeout={int(lock_timeout_ms)}"]
    if schema:
        options.append(f"-csearch_path={schema}")
    engine = create_engine(url, connect_args={"options": " ".join(options)}, **kwargs)
    _ping_after_idle(engine)
    return engine


#: a pooled connection back in use within this many seconds is not pinged first
PING_AFTER_IDLE_SECONDS = 2.0


def _ping_after_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, but only for a connection idle in the pool for
    :data:`PING_AFTER_IDLE_SECONDS` or more: a ``SELECT 1`` round trip on every checkout was
    5-6% of each service's CPU under load (bench/full_flow.py --profile), and a connection
    used a moment ago is alive. A dead one found by the ping is replaced before the worker
    sees it (the pool retries on ``DisconnectionError``); one that died within the window
    (the database restarted under load) fails its first statement, which SQLAlchemy reports
    as a disconnect and answers by discarding every connection of the pool made before it:
    that one unit of work fails as ``OperationalError`` (a transient error to the callers,
    services/common/entrypoints.py), the next gets a fresh connection."""
    idle_seconds = PING_AFTER_IDLE_SECONDS

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _idle_from_now(_dbapi_conn, record) -> None:  # made just now, or back in the pool
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            _ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is gone: {type(exc).__name__}") from exc


def _ping(dbapi_conn) -> None:
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("SELECT 1")
    finally:
        cursor.close()


def ensure_schema(url: str, schema: str | None) -> None:
    """Create the service's PostgreSQL schema if it is missing. Replicas starting at once each
    try: ``IF NOT EXISTS`` does not stop two at the same moment (the second fails on the
    catalogue's unique index: seen with ``esign up --scale``), so an advisory lock on the
    schema's name makes them take turns."""
    if not schema or url.startswith("sqlite"):
        return
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "schema:" + schema})
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()


def migrations_dir(service: str) -> Path:
    return REPO_ROOT / "services" / service / "migrations"


def upgrade(engine: Engine, service: str, revision: str = "head", directory: Path | None = None) -> None:
    """Run the service's Alembic migrations up to ``revision``.

    On PostgreSQL an advisory lock keyed by the service name serialises
    replicas that start at the same moment.
    """
    # imported here: Alembic is 0.4 s of imports that only a migration needs (every tool and test
    # that imports this module for a session or an engine paid it)
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(directory or migrations_dir(service)))
    with _migrate_lock, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL lock_timeout = 0"))  # another replica's migration may take a while
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": "migrate:" + service})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


#: pooled connections kept open beyond a service's workers: the after-commit publishes, the outbox
#: relay, timers and the evidence log's integration each check one out beside the workers
POOL_HEADROOM = 5
#: connections a pool may open beyond its size at a peak, closed again when given back
POOL_OVERFLOW = 5


class Database:
    """Engine and session factory of one service's database.

    ``pool_size`` (PostgreSQL): connections kept open. It should cover what a service checks out at
    once under load: SQLAlchemy's default of 5 did not, so the pool opened and closed a connection
    (a new server process) for nearly every checkout past the fifth (3% of identity's samples under
    the full-flow load were ``psycopg2.connect``). A connection opened is kept only once needed."""

    def __init__(self, url: str, schema: str | None, service: str, migrations: Path | None = None,
                 lock_timeout_ms: int = LOCK_TIMEOUT_MS, pool_size: int | None = None):
        self.migrations = migrations
        self.url = url
        self.schema = schema
        self.service = service
        ensure_schema(url, schema)
        pooled = {} if pool_size is None or url.startswith("sqlite") else {
            "pool_size": pool_size, "max_overflow": POOL_OVERFLOW}
        self.engine = make_engine(url, schema, lock_timeout_ms=lock_timeout_ms, **pooled)
        if sqltrace.enabled():
            sqltrace.install(self.engine, service)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_config(cls, config: dict[str, Any], service: str, pool_size: int | None = None) -> "Database":
        """``DATABASE.POOL_SIZE`` overrides ``pool_size`` (None: SQLAlchemy's default, for tools)."""
        settings = config.get("DATABASE") or {}
        migrations = settings.get("MIGRATIONS")  # another Alembic directory than services/<name>/migrations
        if settings.get("POOL_SIZE") not in (None, ""):
            pool_size = int(setting_number(settings, "POOL_SIZE", 0, "database.pool_size"))
        return cls(database_url(config, service), settings.get("SCHEMA") or service, service,
                   Path(migrations) if migrations else None,
                   int(settings.get("LOCK_TIMEOUT_MS") or LOCK_TIMEOUT_MS), pool_size=pool_size)

    def migrate(self) -> None:
        upgrade(self.engine, self.service, directory=self.migrations)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self.sessionmaker()
        try:
            yield session
        finally:
            session.close()

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    def dispose(self) -> None:
        self.engine.dispose()


class DatabaseProvider(DependencyProvider):
    """nameko dependency: sets up the service's database (migrating it to the
    newest schema) and gives each worker a :class:`~services.common.outbox.UnitOfWork`.

    The unit of work's ``commit()`` commits the worker's changes together with
    the events it emitted, then publishes those events; events whose publication
    failed are published by the outbox relay that this provider runs.
    """

    def __init__(self, relay_interval: float | None = None):
        self.relay_interval = relay_interval
        self.units: dict[Any, Any] = {}

    def setup(self) -> None:
        from services.common.outbox import OutboxPublisher, OutboxRelay, PublishedMarks

        config = self.container.config
        self.db = Database.from_config(config, self.container.service_name,
                                       pool_size=self.container.max_workers + POOL_HEADROOM)
        self.db.migrate()
        self.publisher = OutboxPublisher(config, self.container.service_name)
        interval = self.relay_interval
        if interval is None:
            interval = float((config.get("OUTBOX") or {}).get("RELAY_INTERVAL", 1.0))
        self.relay = OutboxRelay(self.db, self.publisher, interval)
        self.marks = PublishedMarks(self.db.sessionmaker)

    def start(self) -> None:
        self.container.spawn_managed_thread(self.relay.run)
        self.container.spawn_managed_thread(self.marks.run)

    def stop(self) -> None:
        self.relay.stop()
        self.marks.stop()
        self.db.dispose()

    def kill(self) -> None:
        self.relay.stop()
        self.marks.stop(flush=False)

    def get_dependency(self, worker_ctx):
        from services.common.outbox import UnitOfWork

        unit = UnitOfWork(self.db.sessionmaker(), self.publisher, self.container.service_name,
                          background=eventlet.spawn_n, sessions=self.db.sessionmaker, marks=self.marks)
        self.units[worker_ctx] = unit
        if sqltrace.enabled():
            sqltrace.set_entry(worker_ctx.entrypoint.method_name)
        return unit

    def worker_teardown(self, worker_ctx) -> None:
        unit = self.units.pop(worker_ctx, None)
        if unit is None:
            return
        try:
            unit.close()
        except Exception as exc:  # noqa: BLE001 - an error here would kill the whole container
            # closing rolls back; on a connection the database dropped (a restart) that fails, and
            # nameko lets an error in a teardown end the container while the process stays up.
            # The connection is discarded; the worker's answer was given already.
            log.warning("%s: closing a worker's session failed (%s); its connection is discarded",
                        self.container.service_name, type(exc).__name__)
            try:
                unit.session.invalidate()
            except Exception:  # noqa: BLE001
                pass
