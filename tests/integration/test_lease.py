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
