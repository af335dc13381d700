"""The SMS rate counters on PostgreSQL: check-and-count is atomic across replicas.

Two sessions (as two notify replicas) admit a send to the same phone at once, with one slot left:
the second must wait for the first's row lock and then see its count, so exactly one is allowed.
"""
import datetime as dt
import hashlib
import threading

from services.common.database import Database
from services.notify.rate_limit import RateLimits, SmsRateLimiter
from services.notify.rate_store import SqlRateCounterStore, admit
from services.notify.sms_templates import TemplateCategory
from tests.conftest import PG_URL

NOW = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.timezone.utc)


def _limiter(store, per_minute=1):
    return SmsRateLimiter(RateLimits(per_phone_per_minute=per_minute, per_phone_per_hour=10, per_phone_per_day=20,
                                     global_limit=100), store,
                          phone_key=lambda phone: hashlib.sha256(phone.encode()).hexdigest())


def test_two_replicas_admitting_the_last_slot_at_once_send_one(pg_schemas):
    database = Database(PG_URL, pg_schemas.new("notify"), "notify")
    database.migrate()
    try:
        with database.session() as session:  # an earlier send: the key rows exist, as they mostly do
            store = SqlRateCounterStore(session)
            assert admit(_limiter(store), store, "13800138000", TemplateCategory.NOTICE,
                         NOW - dt.timedelta(minutes=2)).allowed
            session.commit()
        first_locked, release_first = threading.Event(), threading.Event()
        results = {}

        def replica(name, hold):
            with database.session() as session:
                store = SqlRateCounterStore(session)
                results[name] = admit(_limiter(store), store, "13800138000", TemplateCategory.NOTICE, NOW)
                if hold:
                    first_locked.set()
                    release_first.wait(10)  # keeps its row locks, as a replica between check and commit
                session.commit()

        a = threading.Thread(target=replica, args=("a", True))
        a.start()
        assert first_locked.wait(10)
        b = threading.Thread(target=replica, args=("b", False))
        b.start()
        b.join(0.5)
        assert b.is_alive(), "the second replica must wait for the first one's lock, not read past it"
        release_first.set()
        a.join(10)
        b.join(10)
        assert results["a"].allowed and not results["b"].allowed, results
        assert results["b"].reason == "phone_per_minute"
    finally:
        database.dispose()
