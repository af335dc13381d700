"""Each service's Alembic migrations build exactly the tables its models
declare, on PostgreSQL and on SQLite, and running them twice is harmless."""
from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.common.database import Database

pytestmark = pytest.mark.integration
IGNORED_TABLES = {"outbox", "processed_events", "leases", "alembic_version"}  # shared tables, defined in common


@pytest.mark.parametrize("service", ["identity", "documents", "signing", "notify"])
def test_migrations_match_models(service, db_url_for):
    url, schema = db_url_for(service)
    database = Database(url, schema, service)
    database.migrate()
    database.migrate()  # idempotent: a restart does not fail or change anything
    metadata = importlib.import_module(f"services.{service}.models").Base.metadata
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
