"""The rate limiter's send history in the notify database.

:class:`SqlRateCounterStore` implements
:class:`~services.notify.rate_limit.RateCounterStore` over the
``sms_rate_events`` table. Keys never hold a phone number: the limiter's
``phone_key`` is a keyed hash (:class:`~services.common.sealing.BlindIndex`,
domain ``sms-rate-phone``), so the table cannot be read back into numbers.

Check-and-record must be atomic across replicas, or two replicas could each
see the last free slot. :func:`admit` therefore first locks one row per key
(``sms_rate_keys``) in key order, then lets the limiter check and record,
then commits:

* PostgreSQL: ``INSERT ... ON CONFLICT DO UPDATE`` makes the row exist or
  updates it, and either way holds its row lock until the commit;
* SQLite: the insert's write lock serialises every writer of the file, and
  is taken before the first read, so the read sees the latest counts.

Times are business time (the service's :mod:`~services.notify.clock`),
stored naive UTC.
"""
from __future__ import annotations

import datetime as dt
from typing import Mapping, Sequence

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.orm import Session

from services.common.clock import aware, naive
from services.common.database import dialect_insert
from services.notify.models import RateEvent, RateKey
from services.notify.rate_limit import GLOBAL_KEY, SendPermission, SmsRateLimiter
from services.notify.sms_templates import TemplateCategory


class SqlRateCounterStore:
    def __init__(self, session: Session):
        self.session = session

    def history(self, since_by_key: Mapping[str, dt.datetime]) -> dict[str, Sequence[dt.datetime]]:
        """One query for every key (``ix_sms_rate_events_key_at`` serves each branch)."""
        found: dict[str, list[dt.datetime]] = {key: [] for key in since_by_key}
        if not since_by_key:
            return found
        wanted = or_(*(and_(RateEvent.key == key, RateEvent.at > naive(since))
                       for key, since in since_by_key.items()))
        for key, at in self.session.execute(select(RateEvent.key, RateEvent.at).where(wanted).order_by(RateEvent.at)):
            found[key].append(aware(at))
        return found

    def count(self, keys: Sequence[str], at: dt.datetime) -> None:
        self.session.execute(insert(RateEvent.__table__), [{"key": key, "at": naive(at)} for key in keys])

    def forget(self, global_before: dt.datetime, phones_before: dt.datetime) -> int:
        return self.session.execute(delete(RateEvent).where(or_(
            and_(RateEvent.key == GLOBAL_KEY, RateEvent.at < naive(global_before)),
            and_(RateEvent.key != GLOBAL_KEY, RateEvent.at < naive(phones_before))))).rowcount

    def lock(self, keys: Sequence[str], now: dt.datetime) -> None:
        """Lock one row per key, in key order (so two admissions cannot deadlock), in one statement:
        an upsert that updates the row when it exists holds its row lock until the commit, as
        SELECT FOR UPDATE would; PostgreSQL takes the rows of one VALUES list in their order."""
        statement = dialect_insert(self.session)(RateKey).values(
            [{"key": key, "updated_at": naive(now)} for key in sorted(set(keys))])
        self.session.execute(statement.on_conflict_do_update(index_elements=["key"],
                                                             set_={"updated_at": statement.excluded.updated_at}))


def admit(limiter: SmsRateLimiter, store: SqlRateCounterStore, phone: str, category: TemplateCategory,
          now: dt.datetime) -> SendPermission:
    """Check and, if allowed, count one send to ``phone``, under the key locks.
    The caller commits (which releases the locks)."""
    store.lock(limiter.keys(phone, category), now)
    return limiter.acquire(phone, category, now)
