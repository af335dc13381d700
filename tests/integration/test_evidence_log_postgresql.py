"""The evidence log's unit tests (tests/unit/signing/test_evidence_log.py) on
PostgreSQL: every test there that takes a store (``store``, ``log``, ``sql_log``
or ``database``) runs here again, its store a fresh schema on this machine's
server. The unit tests run the same code on memory and SQLite, with no server."""
from __future__ import annotations

import inspect
import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from services.signing.evidence_log import EvidenceLog, SqlLogStore
from services.signing.models import EVIDENCE_LOG_TABLES, Base
from tests.conftest import PG_URL
from tests.unit.signing import test_evidence_log as unit

pytestmark = pytest.mark.integration

STORE_FIXTURES = {"store", "log", "sql_log", "database"}

# the unit module's tests that take a store, collected here under the same names
for _name, _test in vars(unit).items():
    if _name.startswith("test_") and STORE_FIXTURES & set(inspect.signature(_test).parameters):
        globals()[_name] = _test

signer = unit.signer
log = unit.log


def _psycopg2(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def postgres_db():
    """``(engine, url, schema)``: a schema of its own with the log's tables, dropped after the test."""
    url = _psycopg2(PG_URL)
    schema = "test_evidence_log_" + uuid.uuid4().hex[:10]
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    Base.metadata.create_all(engine, tables=EVIDENCE_LOG_TABLES)
    try:
        yield engine, url, schema
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(postgres_db):
    return SqlLogStore(sessionmaker(postgres_db[0]))


@pytest.fixture
def database(postgres_db):
    return postgres_db


@pytest.fixture
def sql_log(postgres_db, signer):
    return EvidenceLog(SqlLogStore(sessionmaker(postgres_db[0])), signer, clock=lambda: unit.FIXED_NOW)


def test_every_store_test_of_the_unit_module_runs_here():
    """A test added there with a store is picked up here; the selection is not empty."""
    picked = {name for name in globals() if name.startswith("test_") and name != inspect.currentframe().f_code.co_name}
    assert len(picked) >= 10, picked
    assert "test_appenders_in_several_processes_get_one_consistent_tree" in picked
