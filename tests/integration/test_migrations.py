"""Each service's Alembic migrations build exactly the tables its models
declare, on PostgreSQL and on SQLite, and running them twice is harmless."""
from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData

from services.common.database import Database
from services.common.object_intents import OBJECT_INTENTS

pytestmark = pytest.mark.integration
IGNORED_TABLES = {"outbox", "processed_events", "leases", "alembic_version"}  # shared tables, defined in common
#: shared tables defined in common that a service's migrations must build exactly as common defines them
SHARED_TABLES = {"documents": (OBJECT_INTENTS,), "signing": (OBJECT_INTENTS,)}


@pytest.mark.parametrize("service", ["identity", "documents", "signing", "notify"])
def test_migrations_match_models(service, db_url_for):
    url, schema = db_url_for(service)
    database = Database(url, schema, service)
    database.migrate()
    database.migrate()  # idempotent: a restart does not fail or change anything
    metadata = MetaData()
    for table in importlib.import_module(f"services.{service}.models").Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    for table in SHARED_TABLES.get(service, ()):
        table.to_metadata(metadata)
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = [entry for entry in compare_metadata(context, metadata)
                if not _mentions_ignored(entry)]
    database.dispose()
    assert diff == []


def _mentions_ignored(entry) -> bool:
    item = entry[0] if isinstance(entry, list) else entry
    for part in item:
        names = {getattr(part, "name", None), getattr(getattr(part, "table", None), "name", None), part}
        if names & IGNORED_TABLES:
            return True
    return False


def test_signing_0006_keeps_waiting_flows_signable_and_frees_cancelled_documents(db_url_for):
    """Flows from before assurance levels required none (self_declared); a
    cancelled flow no longer holds its document against a new flow."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from services.common.database import upgrade

    url, schema = db_url_for("signing")
    database = Database(url, schema, "signing")
    upgrade(database.engine, "signing", "signing_0005")
    columns = ("id, document_id, document_sha256, title, state, current_index, initiator_person_id, expires_at, "
               "void_confirmed_by, current_pdf_key, current_pdf_sha256, created_at, updated_at")
    insert = text(f"INSERT INTO flows ({columns}) VALUES (:id, :doc, :sha, 't', :state, 0, 'p1', "
                  "'2030-01-01 00:00:00', '[]', 'k', :sha, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    with database.engine.begin() as conn:
        conn.execute(insert, dict(id="old", doc="d1", sha="a" * 64, state="waiting"))
    database.migrate()
    with database.engine.begin() as conn:
        assert conn.execute(text("SELECT required_assurance, disputed_at FROM flows WHERE id = 'old'")).one() \
            == ("self_declared", None)
        conn.execute(text("UPDATE flows SET state = 'cancelled' WHERE id = 'old'"))
        conn.execute(insert, dict(id="new", doc="d1", sha="a" * 64, state="waiting"))  # the document is free again
    with pytest.raises(IntegrityError), database.engine.begin() as conn:
        conn.execute(insert, dict(id="third", doc="d1", sha="a" * 64, state="waiting"))  # but one live flow only
    database.dispose()


def test_notify_0004_lets_a_flow_have_several_reminders_of_a_kind_and_a_downgrade_keeps_the_latest(db_url_for):
    """Before 0004 a flow had one reminder per person and kind; now one per day (``expires_at``), so the
    weekly overdue reminders fit. The old schema holds one per kind again: a downgrade keeps the latest."""
    import datetime as dt

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from services.common.database import migrations_dir, upgrade

    url, schema = db_url_for("notify")
    database = Database(url, schema, "notify")
    upgrade(database.engine, "notify", "notify_0003")
    insert = text("INSERT INTO reminders (id, flow_id, person_id, kind, send_at, expires_at, status, params, "
                  "created_at, updated_at) VALUES (:id, 'iou', 'p1', :kind, :send_at, :expires_at, :status, '{}', "
                  "'2027-01-01 00:00:00', '2027-01-01 00:00:00')")

    def row(id, kind, day, status):  # 09:00 in China, expiring at the end of that day (naive UTC)
        day = dt.datetime.fromisoformat(day)
        return dict(id=id, kind=kind, send_at=day + dt.timedelta(hours=1), expires_at=day + dt.timedelta(hours=16),
                    status=status)
    with database.engine.begin() as conn:
        conn.execute(insert, row("soon-old", "due_soon", "2027-03-12", "cancelled"))
    database.migrate()
    with database.engine.begin() as conn:
        conn.execute(insert, row("soon-new", "due_soon", "2027-03-19", "scheduled"))
        for week, day in enumerate(("2027-03-16", "2027-03-23")):
            conn.execute(insert, row(f"overdue-{week}", "overdue", day, "scheduled"))
    with pytest.raises(IntegrityError), database.engine.begin() as conn:  # but one a day
        conn.execute(insert, row("overdue-again", "overdue", "2027-03-23", "scheduled"))

    config = Config()
    config.set_main_option("script_location", str(migrations_dir("notify")))
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "notify_0003")
    with database.engine.begin() as conn:
        assert conn.execute(text("SELECT id FROM reminders")).scalars().all() == ["soon-new"]
    database.dispose()


ENSURE_AT = """
import sys, time
from services.common.database import ensure_schema
url, at, schemas = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
time.sleep(max(0.0, at - time.time()))
for schema in schemas:
    ensure_schema(url, schema)
"""


def test_replicas_creating_the_schema_at_the_same_moment_all_start(pg_schemas):
    """Two replicas of esign up --scale failed on "duplicate key ... pg_namespace_nspname_index":
    CREATE SCHEMA IF NOT EXISTS is not safe against a concurrent twin."""
    import subprocess
    import sys
    import time

    from tests.conftest import PG_URL

    schemas = [pg_schemas.new("racing") for _ in range(20)]
    at = time.time() + 1.5  # every process started and imported by then
    processes = [subprocess.Popen([sys.executable, "-c", ENSURE_AT, PG_URL, str(at), *schemas],
                                  stderr=subprocess.PIPE, text=True) for _ in range(4)]
    failures = [p.communicate(timeout=60)[1][-500:] for p in processes if p.wait(60) != 0]
    assert failures == []
