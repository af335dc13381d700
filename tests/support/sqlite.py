"""A service's tables in an in-memory SQLite database, for unit tests of the
code that reads and writes them (the services run the same SQLAlchemy on
SQLite in single-machine deployments)."""
from __future__ import annotations

from typing import Iterator

from sqlalchemy import MetaData, create_engine
from sqlalchemy.orm import Session


def sqlite_session(metadata: MetaData) -> Iterator[Session]:
    """A session on a fresh in-memory database with ``metadata``'s tables (a fixture body: ``yield from``)."""
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()
