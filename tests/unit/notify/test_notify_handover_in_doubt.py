"""Notify's delivery log when the process or its database dies around the
vendor call (services/notify/delivery.py, "A handover in doubt").

The crashes are made where they happen in production: the vendor (the real
console provider, an outbox file) takes the message, and then the commit
that records it fails as a crashed database fails it, or the worker dies
before the vendor call. The scheduler's next tick, once the attempt's claim
has run out, must ask the vendor instead of sending again: each SMS reaches
its person exactly once, and the delivery log knows it.
"""
from __future__ import annotations

import datetime as dt
import os
import random

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from services.common import events
from services.common.clock import utcnow
from services.common.database import Database
from services.common.errors import InvalidInput
from services.common.outbox import OUTBOX, UnitOfWork
from services.common.sealing import BlindIndex, Keyring
from services.notify.delivery import DeliveryLog, SmsChannel
from services.notify.models import SmsMessage
from services.notify.providers import Handover, HandoverState, TransientSmsError
from services.notify.providers.console import ConsoleSettings, ConsoleSmsProvider, read_outbox
from services.notify.settings import NotifySettings
from services.notify.sms_templates import SmsTemplateCatalog
from tests.support.service_worker import RecordingPublisher

PHONE = "13800138001"
CATALOG = SmsTemplateCatalog.load()


class Metrics:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def inc(self, name, documentation, **labels):
        key = labels.get("outcome", name)
        self.counts[key] = self.counts.get(key, 0) + 1

    def observe(self, *args, **kwargs):
        pass


class CrashingUnit(UnitOfWork):
    """A unit of work whose database goes away when told: the next commit fails
    as a commit on a crashed server does, and nothing of that transaction stays."""

    crash_next_commit = False

    def commit(self) -> None:
        if self.crash_next_commit:
            self.crash_next_commit = False
            self.session.rollback()
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        super().commit()


class Vendor:
    """The console provider, with hooks: ``after_send`` runs once the line is written,
    ``before_send`` before; ``answer`` replaces the provider's own check."""

    def __init__(self, path):
        self.inner = ConsoleSmsProvider(ConsoleSettings(outbox_path=str(path)))
        self.name = "console"
        self.before_send = self.after_send = None
        self.answer: Handover | None = None
        self.checks = 0

    def send(self, phone, template, params, text, reference=None):
        if self.before_send:
            hook, self.before_send = self.before_send, None
            hook()
        result = self.inner.send(phone, template, params, text, reference=reference)
        if self.after_send:
            hook, self.after_send = self.after_send, None
            hook()
        return result

    def check(self, phone, reference, since):
        self.checks += 1
        return self.answer or self.inner.check(phone, reference, since)

    def lines(self):
        return read_outbox(self.inner.outbox_path)


class Daytime:
    """Business time at 10:00 in China, so no reminder waits out quiet hours."""

    def now(self) -> dt.datetime:
        return dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.timezone.utc)


class WorkerDied(BaseException):
    """What a SIGKILL looks like from inside: nothing after this line runs."""


@pytest.fixture
def env(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'notify.db'}", None, "notify")
    database.migrate()
    vendor = Vendor(tmp_path / "outbox.jsonl")
    settings = NotifySettings.from_config({"RETRY": {"CLAIM_SECONDS": 60, "IN_FLIGHT_RECHECK_SECONDS": 30,
                                                     "IN_FLIGHT_LIMIT_SECONDS": 600}})
    channel = SmsChannel(CATALOG, vendor, "console", Keyring({"k1": os.urandom(32)}, "k1"),
                         BlindIndex(os.urandom(32)), settings, random.Random(7))
    published, metrics = RecordingPublisher(), Metrics()
    sessions = []

    def worker() -> tuple[DeliveryLog, CrashingUnit]:
        """A fresh worker, as after a restart: its own session."""
        session = database.sessionmaker()
        sessions.append(session)
        unit = CrashingUnit(session, published, "notify")
        return DeliveryLog(unit, channel, Daytime(), metrics), unit

    class Env:
        pass

    e = Env()
    e.database, e.vendor, e.channel, e.published, e.metrics, e.worker = (
        database, vendor, channel, published, metrics, worker)

    def message(message_id):
        with database.session() as session:
            return session.get(SmsMessage, message_id)

    def claims_run_out(**extra):
        """Time passes: every claim has run out (and ``extra`` columns are set on every message)."""
        with database.session() as session:
            session.execute(update(SmsMessage).values(claimed_until=utcnow() - dt.timedelta(seconds=1), **extra))
            session.commit()

    def emitted(event_type):
        with database.session() as session:
            return [row for row in session.execute(OUTBOX.select().where(OUTBOX.c.event_type == event_type))]

    e.message, e.claims_run_out, e.emitted = message, claims_run_out, emitted
    yield e
    for session in sessions:
        session.close()
    database.dispose()


def queue(env, template="sign_request", params=None, ref_type="flow", ref_id="flow-1") -> str:
    log, unit = env.worker()
    params = params or {"document_title": "借条", "initiator": "王小明", "link": "https://esign.example.cn/f/1"}
    message = log.record(dedupe_key=f"{ref_id}:{template}", phone=PHONE, template_id=template, params=params,
                         ref_type=ref_type, ref_id=ref_id)
    unit.commit()
    return message.id, log, unit, params


def test_the_database_crashing_after_the_vendor_took_it_records_it_and_sends_nothing_again(env):
    message_id, log, unit, params = queue(env)
    env.vendor.after_send = lambda: setattr(unit, "crash_next_commit", True)
    with pytest.raises(OperationalError):
        log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    assert len(env.vendor.lines()) == 1
    left = env.message(message_id)
    assert left.status == "sending" and left.vendor_message_id is None  # the "sent" never committed

    scheduler, _ = env.worker()
    assert scheduler.retry_due(otp_lookup=None, limit=10) == 0  # its claim still runs: not touched
    assert env.vendor.checks == 0
    env.claims_run_out()
    scheduler.retry_due(otp_lookup=None, limit=10)

    lines = env.vendor.lines()
    assert len(lines) == 1, "sent twice"
    settled = env.message(message_id)
    assert (settled.status, settled.recovery, settled.vendor_message_id) == ("sent", "vendor_accepted",
                                                                            lines[0]["message_id"])
    assert settled.recipient_sealed is None and settled.attempts == 1
    assert len(env.emitted(events.SMS_SENT)) == 1
    assert env.metrics.counts.get("recovered_accepted") == 1


def test_a_worker_killed_before_the_vendor_call_has_its_message_sent_once(env):
    message_id, log, _, params = queue(env)

    def die():
        raise WorkerDied()

    env.vendor.before_send = die
    with pytest.raises(WorkerDied):
        log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    assert env.vendor.lines() == [] and env.message(message_id).status == "sending"

    env.claims_run_out()
    scheduler, _ = env.worker()
    scheduler.retry_due(otp_lookup=None, limit=10)
    lines = env.vendor.lines()
    assert len(lines) == 1 and lines[0]["reference"] == message_id
    settled = env.message(message_id)
    assert (settled.status, settled.recovery, settled.attempts) == ("sent", "vendor_not_accepted", 2)
    assert settled.vendor_message_id == lines[0]["message_id"]


def test_a_read_timeout_is_checked_with_the_vendor_not_sent_again(env):
    message_id, log, _, params = queue(env)

    def timed_out():
        raise TransientSmsError("timeout", "no answer", maybe_accepted=True)

    env.vendor.after_send = timed_out  # the vendor took it; its answer never came back
    log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    doubt = env.message(message_id)
    assert (doubt.status, doubt.last_error) == ("sending", "in_doubt.timeout")

    scheduler, _ = env.worker()
    scheduler.retry_due(otp_lookup=None, limit=10)
    assert env.vendor.checks == 0  # checked after the recheck interval, not at once
    env.claims_run_out()
    scheduler.retry_due(otp_lookup=None, limit=10)
    assert len(env.vendor.lines()) == 1
    assert (env.message(message_id).status, env.message(message_id).recovery) == ("sent", "vendor_accepted")


def test_a_code_in_doubt_is_checked_by_its_sealed_number_without_asking_identity(env):
    asked = []
    otp = {"phone": PHONE, "template": "phone_code", "params": {"code": "551203", "minutes": "5"}}
    message_id, log, unit, params = queue(env, template="phone_code", params=otp["params"], ref_type="otp",
                                          ref_id="challenge-1")
    env.vendor.after_send = lambda: setattr(unit, "crash_next_commit", True)
    with pytest.raises(OperationalError):
        log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    env.claims_run_out()
    scheduler, _ = env.worker()
    scheduler.retry_due(otp_lookup=lambda challenge: asked.append(challenge) or otp, limit=10)
    assert asked == [] and len(env.vendor.lines()) == 1
    assert env.message(message_id).status == "sent"


@pytest.mark.parametrize("template, params, after_the_limit", [
    ("phone_code", {"code": "551203", "minutes": "5"}, "outcome_unknown"),
    ("due_today", {"document_title": "借条", "due_date": "2026-12-31"}, "outcome_unknown"),
    ("sign_request", {"document_title": "借条", "initiator": "王小明", "link": "https://esign.example.cn/f/1"}, "sent"),
])
def test_a_vendor_that_cannot_tell_is_asked_until_the_limit_then_the_category_decides(
        env, template, params, after_the_limit):
    message_id, log, unit, params = queue(env, template=template, params=params,
                                          ref_type="otp" if template == "phone_code" else "flow")
    env.vendor.after_send = lambda: setattr(unit, "crash_next_commit", True)
    with pytest.raises(OperationalError):
        log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    env.vendor.answer = Handover(HandoverState.UNKNOWN, detail="no_report_yet")
    scheduler, _ = env.worker()

    env.claims_run_out()
    scheduler.retry_due(otp_lookup=lambda _: {"phone": PHONE, "template": template, "params": params}, limit=10)
    waiting = env.message(message_id)
    assert (waiting.status, waiting.last_error, env.vendor.checks) == ("sending", "in_doubt.no_report_yet", 1)
    assert waiting.claimed_until > utcnow() + dt.timedelta(seconds=25)  # asked again in 30 s

    env.claims_run_out(in_flight_since=utcnow() - dt.timedelta(seconds=601))  # ten minutes on, still unknown
    scheduler.retry_due(otp_lookup=lambda _: {"phone": PHONE, "template": template, "params": params}, limit=10)
    settled = env.message(message_id)
    assert settled.status == after_the_limit
    if after_the_limit == "sent":  # a notice is owed: the second copy is the lesser harm
        assert settled.recovery == "resent_outcome_unknown" and len(env.vendor.lines()) == 2
    else:
        assert (settled.recovery, settled.last_error) == ("outcome_unknown", "outcome_unknown.no_report_yet")
        assert len(env.vendor.lines()) == 1 and settled.recipient_sealed is None
        assert len(env.emitted(events.SMS_GIVEN_UP)) == 1


def test_a_retry_after_a_transient_error_goes_back_to_the_queue(env):
    message_id, log, _, params = queue(env)

    def refused():
        raise TransientSmsError("InternalError.Timeout", "vendor busy")

    env.vendor.before_send = refused
    log.deliver(log.session.get(SmsMessage, message_id), PHONE, params)
    retried = env.message(message_id)
    assert (retried.status, retried.attempts, retried.last_error) == ("queued", 1, "InternalError.Timeout")


def test_settings_name_a_bad_doubt_setting_and_refuse_a_claim_shorter_than_the_vendor_calls():
    with pytest.raises(InvalidInput) as err:
        NotifySettings.from_config({"RETRY": {"IN_FLIGHT_RECHECK_SECONDS": -1}})
    assert (err.value.field, err.value.rule) == ("retry.in_flight_recheck_seconds", "positive")
    scheduler = NotifySettings.from_config({"RETRY": {"CLAIM_SECONDS": 20}}).scheduler
    scheduler.require_outlasting(10.0)
    with pytest.raises(InvalidInput) as err:
        scheduler.require_outlasting(13.0)  # a 3 s connect + 10 s read timeout
    assert (err.value.field, err.value.rule) == ("retry.claim_seconds", "longer_than_vendor_calls")
