"""Leases on real databases: one holder at a time, renewal, takeover after expiry."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.common.database import Database
from services.common.lease import acquire, release

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 28, 12, 0, 0)
TTL = timedelta(seconds=30)


def test_one_holder_at_a_time_and_takeover_after_expiry(db_url_for):
    url, schema = db_url_for("signing")
    database = Database(url, schema, "signing")
    database.migrate()
    with database.session() as session:
        assert acquire(session, "expiry", "a", TTL, T0)
        assert not acquire(session, "expiry", "b", TTL, T0 + timedelta(seconds=10))
        assert acquire(session, "expiry", "a", TTL, T0 + timedelta(seconds=20))  # renewal
        assert not acquire(session, "expiry", "b", TTL, T0 + timedelta(seconds=45))  # renewed until 50 s
        assert acquire(session, "expiry", "b", TTL, T0 + timedelta(seconds=51))  # a crashed: b takes over
        assert not acquire(session, "expiry", "a", TTL, T0 + timedelta(seconds=52))
        assert acquire(session, "other-job", "a", TTL, T0)  # leases are per job
        release(session, "expiry", "b")
        assert acquire(session, "expiry", "a", TTL, T0 + timedelta(seconds=53))
    database.dispose()


def test_the_metrics_say_who_holds_and_count_takeovers(db_url_for):
    """esign_lease_held follows this process's last attempt; esign_lease_taken_total counts
    takeovers, not renewals (a replica test sums them over the replicas)."""
    from services.common.lease import LEASE_HELD, LEASE_TAKEN

    url, schema = db_url_for("signing")
    database = Database(url, schema, "signing")
    database.migrate()
    held, taken = LEASE_HELD.labels("metered"), LEASE_TAKEN.labels("metered")
    before = taken._value.get()
    with database.session() as session:
        assert acquire(session, "metered", "a", TTL, T0)
        assert held._value.get() == 1 and taken._value.get() == before + 1
        assert acquire(session, "metered", "a", TTL, T0 + timedelta(seconds=10))  # renewal
        assert taken._value.get() == before + 1
        assert not acquire(session, "metered", "b", TTL, T0 + timedelta(seconds=20))
        assert held._value.get() == 0
        assert acquire(session, "metered", "b", TTL, T0 + timedelta(seconds=41))  # a's ran out at 40 s
        assert held._value.get() == 1 and taken._value.get() == before + 2
        release(session, "metered", "b")
        assert held._value.get() == 0
    database.dispose()
