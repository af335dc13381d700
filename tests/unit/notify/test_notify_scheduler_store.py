"""The scheduler lease, the database-backed rate counters, settings and the clock,
on the notify schema in an SQLite file (the embedded default)."""
import datetime as dt
import hashlib

import pytest

from services.common.database import Database
from services.common.errors import InvalidInput
from services.common.lease import acquire as acquire_lease
from services.common.lease import release as release_lease
from services.notify.clock import OffsetFileClock, SystemClock, clock_from_config
from services.notify.models import RateEvent
from services.notify.rate_limit import RateLimits, SmsRateLimiter
from services.notify.rate_store import SqlRateCounterStore, admit
from services.notify.settings import NotifySettings
from services.notify.sms_templates import TemplateCategory

T0 = dt.datetime(2026, 3, 2, 2, 0)  # naive UTC, as the lease stores it


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'notify.db'}", None, "notify")
    database.migrate()
    yield database
    database.dispose()


def test_one_holder_at_a_time_until_the_lease_expires_or_is_released(db):
    ttl = dt.timedelta(seconds=10)
    with db.session() as a, db.session() as b:
        assert acquire_lease(a, "job", "replica-a", ttl, T0)
        assert not acquire_lease(b, "job", "replica-b", ttl, T0 + dt.timedelta(seconds=1))
        assert acquire_lease(a, "job", "replica-a", ttl, T0 + dt.timedelta(seconds=5))  # renewed to T0+15
        assert not acquire_lease(b, "job", "replica-b", ttl, T0 + dt.timedelta(seconds=14))
        assert acquire_lease(b, "job", "replica-b", ttl, T0 + dt.timedelta(seconds=16))  # a crashed: taken over
        assert not acquire_lease(a, "job", "replica-a", ttl, T0 + dt.timedelta(seconds=17))
        release_lease(b, "job", "replica-b")
        assert acquire_lease(a, "job", "replica-a", ttl, T0 + dt.timedelta(seconds=18))


def _limiter(store):
    return SmsRateLimiter(RateLimits(per_phone_per_minute=2, per_phone_per_hour=10, per_phone_per_day=20,
                                     global_limit=100), store,
                          phone_key=lambda phone: hashlib.sha256(phone.encode()).hexdigest())


def test_rate_counters_in_the_database_hold_the_limit_and_store_no_number(db):
    now = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.timezone.utc)
    results = []
    for second in range(4):
        with db.session() as session:
            store = SqlRateCounterStore(session)
            results.append(admit(_limiter(store), store, "13800138000", TemplateCategory.NOTICE,
                                 now + dt.timedelta(seconds=second)))
            session.commit()
    assert [r.allowed for r in results] == [True, True, False, False]
    assert results[2].reason == "phone_per_minute"
    assert results[2].not_before == now + dt.timedelta(minutes=1)
    with db.session() as session:
        keys = {event.key for event in session.query(RateEvent)}
        store = SqlRateCounterStore(session)
        later = admit(_limiter(store), store, "13800138000", TemplateCategory.NOTICE, now + dt.timedelta(minutes=1))
        assert later.allowed
    assert "global" in keys and not any("13800138000" in key for key in keys)


def test_one_admission_reads_once_and_writes_once_and_old_sends_are_dropped_apart(db):
    """Admitting a send counts it under the phone's key and the global key in one insert, after one
    read of both histories; history no window looks back to is dropped by the scheduler's housekeeping
    (forget_expired), not by each send, and what is dropped cannot change a decision."""
    from sqlalchemy import event

    now = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.timezone.utc)
    statements = []
    with db.session() as session:
        store = SqlRateCounterStore(session)
        limiter = _limiter(store)
        for days_ago in (3, 2):  # sends the day window no longer sees
            assert admit(limiter, store, "13800138000", TemplateCategory.NOTICE,
                         now - dt.timedelta(days=days_ago)).allowed
        session.commit()
        listen = lambda *args: statements.append(args[2].split()[0].upper())  # noqa: E731
        event.listen(session.get_bind(), "before_cursor_execute", listen)
        try:
            assert admit(limiter, store, "13800138000", TemplateCategory.NOTICE, now).allowed
        finally:
            event.remove(session.get_bind(), "before_cursor_execute", listen)
        assert statements.count("SELECT") == 1 and statements.count("INSERT") == 2  # the keys' upsert, the counts
        assert "DELETE" not in statements
        session.commit()
        assert session.query(RateEvent).count() == 6
        assert limiter.forget_expired(now + dt.timedelta(seconds=5)) == 5  # 2 old phone rows, 3 global ones
        session.commit()
        kept = [(e.key.startswith("phone:"), e.at) for e in session.query(RateEvent)]
        assert kept == [(True, now.replace(tzinfo=None))]
        # the decisions are the same: one more send this minute fits the per-minute limit of 2, a third does not
        assert admit(limiter, store, "13800138000", TemplateCategory.NOTICE, now + dt.timedelta(seconds=6)).allowed
        assert not admit(limiter, store, "13800138000", TemplateCategory.NOTICE, now + dt.timedelta(seconds=7)).allowed


def test_settings_come_from_config_with_checked_values():
    settings = NotifySettings.from_config({
        "RETRY": {"BASE_DELAY": 0.5, "MAX_ATTEMPTS": 3},
        "QUIET_HOURS": {"START": 1260, "END": "07:30"},  # YAML 1.1 reads an unquoted 21:00 as 1260
        "SCHEDULER": {"INTERVAL": "0.5"},
    })
    assert (settings.retry.base_delay, settings.retry.max_attempts) == (0.5, 3)
    assert (settings.quiet_hours.start, settings.quiet_hours.end) == (dt.time(21, 0), dt.time(7, 30))
    assert settings.reminders.quiet_hours == settings.quiet_hours
    assert settings.scheduler.interval == 0.5
    with pytest.raises(InvalidInput) as error:
        NotifySettings.from_config({"RATE_LIMITS": {"PER_PHONE_PER_MINUTE": -1}})
    assert error.value.field == "rate_limits.per_phone_per_minute"
    codes = NotifySettings.from_config({"RATE_LIMITS": {"CODE_PER_PHONE_PER_HOUR": 7}}).rate_limits
    assert (codes.code_per_phone_per_minute, codes.code_per_phone_per_hour, codes.code_per_phone_per_day) == (5, 7, 20)
    with pytest.raises(InvalidInput) as error:
        NotifySettings.from_config({"RATE_LIMITS": {"CODE_PER_PHONE_PER_DAY": 0}})
    assert error.value.field == "rate_limits.code_per_phone_per_day"
    with pytest.raises(InvalidInput) as error:
        NotifySettings.from_config({"REMINDERS": {"SEND_TIME": "noon"}})
    assert error.value.field == "reminders.send_time"


def test_the_offset_file_clock_moves_business_time(tmp_path):
    assert isinstance(clock_from_config({}), SystemClock)
    clock = clock_from_config({"CLOCK": {"OFFSET_FILE": str(tmp_path / "offset")}})
    assert isinstance(clock, OffsetFileClock)
    assert abs((clock.now() - SystemClock().now()).total_seconds()) < 5  # no file: no offset
    clock.set_offset(3 * 86400)
    assert 3 * 86400 - 5 < (clock.now() - SystemClock().now()).total_seconds() < 3 * 86400 + 5
    assert clock.now().tzinfo is not None
