"""Leases: a periodic job (expiring flows, sending reminders, publishing
checkpoints) runs in exactly one replica at a time, even when the service is
scaled out. The holder renews its lease on every run; if it crashes, the
lease runs out and the next replica to try takes the job over.

One ``leases`` table per service database (created by the service's
migrations with :func:`create_lease_table`); acquiring is a single atomic
UPDATE (or INSERT for a job never run), so it works the same on PostgreSQL
and SQLite.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.metrics import counter, gauge

#: 1 while this process holds the lease (after its last attempt), else 0: summed over the
#: replicas of a service, never more than 1 for long (a holder that stalls past its TTL is the
#: exception, and its next attempt sets it back to 0)
LEASE_HELD = gauge("esign_lease_held", "Whether this process holds the job's lease", ("lease",))
LEASE_TAKEN = counter("esign_lease_taken_total", "Times this process took a lease another held or none had",
                      ("lease",))

def _columns() -> list:
    return [
        Column("name", String(40), primary_key=True),
        Column("holder", String(80), nullable=False),
        Column("expires_at", DateTime, nullable=False),
    ]


LEASES = Table("leases", MetaData(), *_columns())


def create_lease_table(op) -> None:
    """For a service's Alembic migration."""
    op.create_table("leases", *_columns())


def holder_id() -> str:
    """Names this process: host, pid and a random part (pids repeat across containers)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(session: Session, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
    """Take or renew the lease ``name`` for ``ttl``; True when ``holder`` has it.
    Commits its own short transaction."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    held = LEASE_HELD.labels(name)
    renewed = session.execute(
        update(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder).values(expires_at=now + ttl)
    ).rowcount
    if renewed:
        session.commit()
        held.set(1)
        return True
    taken = session.execute(
        update(LEASES).where(LEASES.c.name == name, LEASES.c.expires_at < now)
        .values(holder=holder, expires_at=now + ttl)
    ).rowcount
    if not taken:
        try:
            session.execute(insert(LEASES).values(name=name, holder=holder, expires_at=now + ttl))
        except IntegrityError:  # someone else holds it
            session.rollback()
            held.set(0)
            return False
    session.commit()
    held.set(1)
    LEASE_TAKEN.labels(name).inc()
    return True


def release(session: Session, name: str, holder: str) -> None:
    session.execute(update(LEASES).where(LEASES.c.name == name, LEASES.c.holder == holder)
                    .values(expires_at=datetime(1970, 1, 1)))
    session.commit()
    LEASE_HELD.labels(name).set(0)
