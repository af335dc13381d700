"""The body of every service's Alembic ``env.py``.

Migrations run on the connection handed over by
:func:`services.common.database.upgrade` (already inside the service's schema on
PostgreSQL) or, for the ``alembic`` command line, on ``sqlalchemy.url``.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool


def run_migrations(target_metadata=None) -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=conn.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()
