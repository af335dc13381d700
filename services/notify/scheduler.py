"""Exactly one scheduler across notify replicas: a lease in the database.

Every replica ticks (:class:`SchedulerTimer`, a nameko timer whose interval
comes from ``SCHEDULER.INTERVAL``), but a tick does work only while its
replica holds the ``notify-scheduler`` row of the ``leases`` table. Taking
or renewing the lease is one atomic statement::

    UPDATE leases SET holder = :me, expires_at = :now + ttl
     WHERE name = :name AND (expires_at < :now OR holder = :me)

so of two replicas racing for an expired lease exactly one updates the row
(the database serialises the two updates and re-checks the condition). The
first replica ever inserts the row; a concurrent insert loses on the primary
key. The holder renews at every tick; a holder that crashes stops renewing
and another replica takes over once ``expires_at`` passes; a holder that
stops cleanly releases the lease at once.

Lease times are host-clock UTC (they say whether a process is alive, which
a moved business clock must not change); hosts are assumed NTP-synchronised
to well within the lease time. A tick that outlives the lease may overlap
with the next holder's; the delivery log's per-message claims and unique
dedupe keys keep that from sending anything twice.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from nameko.extensions import DependencyProvider
from nameko.timer import Timer
from sqlalchemy.orm import Session

from services.common.lease import acquire, holder_id, release
from services.notify.settings import NotifySettings

log = logging.getLogger(__name__)

SCHEDULER_LEASE = "notify-scheduler"


class SchedulerTimer(Timer):
    """A nameko timer whose interval is ``SCHEDULER.INTERVAL`` from config."""

    def __init__(self, **kwargs):
        super().__init__(interval=1.0, **kwargs)

    def setup(self) -> None:
        self.interval = NotifySettings.from_config(self.container.config).scheduler.interval


scheduled = SchedulerTimer.decorator


class SchedulerLease(DependencyProvider):
    """This replica's identity as a lease holder. A worker asks
    ``held(session)``; the lease is released when the container stops."""

    def __init__(self, name: str = SCHEDULER_LEASE, db_attr: str = "db"):
        self.name = name
        self.db_attr = db_attr

    def setup(self) -> None:
        self.holder = holder_id()
        self.ttl = timedelta(seconds=NotifySettings.from_config(self.container.config).scheduler.lease_seconds)

    def stop(self) -> None:
        # Entrypoints (the timer) stop and workers finish before dependencies
        # stop, so no tick runs after this release.
        database = next((d for d in self.container.dependencies if d.attr_name == self.db_attr), None)
        if database is None:
            return
        try:
            with database.db.session() as session:
                release(session, self.name, self.holder)
        except Exception as exc:  # the lease then simply expires
            log.warning("releasing the %s lease failed: %s", self.name, type(exc).__name__)

    def get_dependency(self, worker_ctx) -> "HeldLease":
        return HeldLease(self.name, self.holder, self.ttl)


class HeldLease:
    def __init__(self, name: str, holder: str, ttl: timedelta):
        self.name = name
        self.holder = holder
        self.ttl = ttl

    def held(self, session: Session) -> bool:
        return acquire(session, self.name, self.holder, self.ttl)
