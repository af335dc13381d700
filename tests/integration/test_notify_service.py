"""The notify service on real RabbitMQ and PostgreSQL: an event from the
broker becomes exactly one SMS (each event's notice is
tests/unit/notify/test_notify_worker.py's), the Tencent adapter retries a
failing vendor (a local fake that checks TC3-HMAC-SHA256 signatures itself), rate limits hold under a burst,
reminders fire on the right days of a moved clock, once, across replicas and
restarts, and not after a void; an IOU's extension plans them anew and its
repayment ends them.

Identity is stood in for by :class:`IdentityStandIn` (defined here): it
implements the two RPCs notify calls, ``contact`` and ``otp_message``.
"""
from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import eventlet
import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.common import events
from services.common.database import Database
from services.common.entrypoints import rpc
from services.common.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.common.lease import LEASES
from services.common.outbox import OUTBOX, envelope
from services.notify.clock import OffsetFileClock
from services.notify.models import Reminder, SmsMessage
from services.notify.scheduler import SCHEDULER_LEASE, SchedulerLease
from services.notify.service import NotifyService
from tests.support.fake_tencent_sms import FakeTencentSms
from tests.support.flow_events import flow_event
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CHINA = ZoneInfo("Asia/Shanghai")
LENDER, BORROWER = "person-lender", "person-borrower"
PHONES = {LENDER: "13800138001", BORROWER: "13900139002"}

# What the stand-in identity knows; each test fills it.
CONTACTS: dict[str, dict] = {}
OTPS: dict[str, dict] = {}
OTP_LOOKUPS: list[str] = []


class IdentityStandIn:
    """The identity RPCs notify depends on, over real RabbitMQ."""

    name = "identity"

    @rpc
    def contact(self, person_id: str) -> dict:
        if person_id not in CONTACTS:
            raise NotFound("person", person_id)
        return CONTACTS[person_id]

    @rpc
    def otp_message(self, challenge_id: str) -> dict:
        OTP_LOOKUPS.append(challenge_id)
        if challenge_id not in OTPS:
            raise Forbidden("otp_not_deliverable")
        return OTPS[challenge_id]


def calls(entrypoint: str) -> float:
    """How often notify's ``entrypoint`` has run in this process (any outcome)."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "esign_entrypoint_calls":
            continue
        for sample in metric.samples:
            if (sample.name.endswith("_total") and sample.labels.get("service") == "notify"
                    and sample.labels.get("entrypoint") == entrypoint):
                total += sample.value
    return total


def wait_for_calls(entrypoint: str, more: int, since: float | None = None) -> None:
    start = calls(entrypoint) if since is None else since
    assert wait_for(lambda: calls(entrypoint) >= start + more), f"{entrypoint} did not run {more} more times"


def sms_total(**labels) -> float:
    return REGISTRY.get_sample_value("esign_sms_total", {"service": "notify", **labels}) or 0.0


class NotifyEnv:
    """Configs, containers and observations of one test's notify."""

    def __init__(self, service_config, run_container, tmp_path: Path, backend: str, amqp_users: dict, dispatch_as):
        self.run_container = run_container
        self.tmp_path = tmp_path
        self.outbox = tmp_path / "sms-outbox.jsonl"
        self.clock = OffsetFileClock(tmp_path / "clock-offset")
        secrets_dir = tmp_path / "notify-secrets"
        self.config = service_config(
            "notify", backend,
            SMS={"PROVIDER": "console", "OUTBOX_FILE": str(self.outbox)},
            SECRETS={"KEK": {"file": str(secrets_dir / "kek")},
                     "PHONE_INDEX_KEY": {"file": str(secrets_dir / "phone-index")},
                     "GENERATE_MISSING": True},
            CLOCK={"OFFSET_FILE": str(self.clock.path)},
            SCHEDULER={"INTERVAL": 0.1, "LEASE_SECONDS": 2},
            RETRY={"BASE_DELAY": 0.1, "MAX_DELAY": 0.3, "MAX_ATTEMPTS": 4, "CLAIM_SECONDS": 5,
                   "IN_FLIGHT_RECHECK_SECONDS": 0.5},
            RATE_LIMITS={"PER_PHONE_PER_MINUTE": 10, "PER_PHONE_PER_HOUR": 50, "PER_PHONE_PER_DAY": 100,
                         "GLOBAL_LIMIT": 100, "GLOBAL_PERIOD_SECONDS": 1},
            IDENTITY={"RPC_TIMEOUT": 5},
        )
        # the stand-in answers as identity, with identity's broker user; events come from their owners
        self.identity = run_container(IdentityStandIn, dict(self.config, AMQP_URI=amqp_users["identity"]))
        self.dispatch = lambda source, *event: dispatch_as(source)(source, *event)
        database = self.config["DATABASE"]
        self.db = Database(database["URL"], database["SCHEMA"], "notify")

    def start(self, **overrides):
        return self.run_container(NotifyService, {**self.config, **overrides})

    def lines(self, template: str | None = None) -> list[dict]:
        if not self.outbox.exists():
            return []
        lines = [json.loads(line) for line in self.outbox.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [line for line in lines if template is None or line["template"] == template]

    def send_flow_event(self, event_type: str, flow_id: str, **members) -> dict:
        """A flow event of the lender and the borrower, as signing sends it."""
        return self.send_event(event_type, flow_data(event_type, flow_id, **members))

    def send_event(self, event_type: str, data: dict, source: str = "signing") -> dict:
        event = envelope(source, event_type, data)
        self.dispatch(source, event_type, event)
        return event

    def redeliver(self, event: dict) -> None:
        self.dispatch(event["source"], event["event_type"], event)

    def move_clock_to(self, moment: dt.datetime) -> None:
        self.clock.set_offset((moment - dt.datetime.now(dt.timezone.utc)).total_seconds())

    def messages(self) -> list[SmsMessage]:
        with self.db.session() as session:
            return list(session.execute(select(SmsMessage).order_by(SmsMessage.created_at)).scalars())

    def reminders(self, flow_id: str) -> list[Reminder]:
        with self.db.session() as session:
            return list(session.execute(select(Reminder).where(Reminder.flow_id == flow_id)).scalars())

    def emitted(self, event_type: str) -> list[dict]:
        with self.db.session() as session:
            rows = session.execute(select(OUTBOX.c.payload).where(OUTBOX.c.event_type == event_type)).scalars()
            return [json.loads(row)["data"] for row in rows]


@pytest.fixture
def notify_env(service_config, run_container, tmp_path, request, amqp_users, dispatch_as):
    """Notify's test surroundings on PostgreSQL, or on SQLite (the embedded
    default) for a test marked ``@pytest.mark.parametrize("notify_env", ["sqlite"], indirect=True)``."""
    CONTACTS.clear()
    OTPS.clear()
    OTP_LOOKUPS.clear()
    CONTACTS.update({LENDER: {"phone": PHONES[LENDER], "name": "王小明"},
                     BORROWER: {"phone": PHONES[BORROWER], "name": "李四"}})
    env = NotifyEnv(service_config, run_container, tmp_path, getattr(request, "param", "postgresql"), amqp_users,
                    dispatch_as)
    yield env
    env.db.dispose()


def flow_data(event_type: str, flow_id: str, **members) -> dict:
    return flow_event(event_type, flow_id, [(LENDER, "lender"), (BORROWER, "borrower")],
                      **{"link": f"https://esign.example.cn/f/{flow_id}", **members})


def recipients(lines: list[dict]) -> list[str]:
    return sorted(line["phone"] for line in lines)


def china_time(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, 0), tzinfo=CHINA)


# --- events ------------------------------------------------------------------------------
# Each event's notice, its numbers and masked names, and redelivery sending nothing again are
# tests/unit/notify/test_notify_worker.py's (notify's workers on SQLite); here, over the broker:


def test_an_event_from_the_broker_becomes_its_notice_once(notify_env):
    env = notify_env
    env.start()
    event = env.send_flow_event(events.FLOW_SENT, "f1", next_person_id=BORROWER)
    lines = wait_for(lambda: env.lines("sign_request"))
    assert [line["phone"] for line in lines] == [PHONES[BORROWER]]
    since = calls("on_flow_sent")
    env.redeliver(event)
    wait_for_calls("on_flow_sent", 1, since=since)
    assert len(env.lines()) == 1 and len(env.emitted(events.SMS_SENT)) == 1


# --- send_sms ------------------------------------------------------------------------------

def test_send_sms_validates_and_dedupes(notify_env, rpc_proxy):
    env = notify_env
    env.start()
    notify = rpc_proxy.notify
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="13800138001", template="flow_voided", params={})
    assert (error.value.field, error.value.rule) == ("params.document_title", "missing_variable")
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="13800138001", template="flow_voided", params={"document_title": "借款1000元"})
    assert (error.value.field, error.value.rule) == ("params.document_title", "looks_like_amount")
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="13800138001", template="no_such", params={})
    assert (error.value.field, error.value.rule) == ("template", "unknown_template")
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="13800138001", template="phone_code", params={"code": "123456", "minutes": "5"})
    assert (error.value.field, error.value.rule) == ("template", "code_template")
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="12345", template="flow_voided", params={"document_title": "借条"})
    assert error.value.field == "phone"
    with pytest.raises(InvalidInput) as error:
        notify.send_sms(phone="13800138001", template="flow_voided", params=["借条"])
    assert error.value.field == "params"
    assert env.messages() == []

    first = notify.send_sms(phone="138 0013 8001", template="flow_voided", params={"document_title": "借条"},
                            dedupe_key="k1")
    assert first["status"] == "sent"
    again = notify.send_sms(phone="13800138001", template="flow_voided", params={"document_title": "借条"},
                            dedupe_key="k1")
    assert again == first
    with pytest.raises(Conflict):
        notify.send_sms(phone="13900139002", template="flow_voided", params={"document_title": "借条"},
                        dedupe_key="k1")
    assert len(env.lines()) == 1 and env.lines()[0]["text"] == "【电子签】《借条》已经各方确认作废，不再具有效力。"
    with pytest.raises(NotFound):
        notify.delivery_status(message_id=str(uuid.uuid4()))


@pytest.mark.parametrize("notify_env", ["postgresql", "sqlite"], indirect=True)
def test_a_burst_over_rpc_is_held_to_the_per_minute_limit(notify_env, amqp_uri):
    env = notify_env
    env.start(RATE_LIMITS={"PER_PHONE_PER_MINUTE": 3, "PER_PHONE_PER_HOUR": 50, "PER_PHONE_PER_DAY": 100,
                           "GLOBAL_LIMIT": 100, "GLOBAL_PERIOD_SECONDS": 1})
    before = sms_total(template="flow_expired", provider="console", outcome="rate_limited")

    def send(index: int) -> dict:
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as proxy:  # one proxy per greenthread
            return proxy.notify.send_sms(phone="13800138001", template="flow_expired",
                                         params={"document_title": f"借条{index}"})

    pool = eventlet.GreenPool(8)
    answers = list(pool.imap(send, range(8)))
    # notices are owed to the person: the limit holds them back instead of dropping them
    assert sorted(a["status"] for a in answers) == ["queued"] * 5 + ["sent"] * 3
    # this burst's own template: an event an earlier test left on the test broker's durable queue (a
    # sign_request of flow f1, seen under the full suite's load) reaches this notify when it starts
    assert len(env.lines("flow_expired")) == 3
    # another number is not affected by the first one's limit
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30) as proxy:
        assert proxy.notify.send_sms(phone="13900139002", template="flow_expired",
                                     params={"document_title": "借条"})["status"] == "sent"
    assert sms_total(template="flow_expired", provider="console", outcome="rate_limited") == before + 5
    held = [m for m in env.messages() if m.status == "queued"]
    assert len(held) == 5 and all(m.last_error == "deferred.phone_per_minute" for m in held)
    assert all(m.next_attempt_at is not None for m in held)
    assert env.emitted(events.SMS_FAILED) == []
    # and they go out, still within the limit, as the minutes pass
    env.move_clock_to(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61))
    assert wait_for(lambda: len(env.lines()) == 3 + 1 + 3, timeout=20)  # three more in the next minute
    env.move_clock_to(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=122))
    assert wait_for(lambda: len(env.lines()) == 3 + 1 + 5, timeout=20)
    with env.db.engine.connect() as conn:  # counters are keyed by a hash, not the number
        keys = [row[0] for row in conn.exec_driver_sql("SELECT key FROM sms_rate_keys")]
    assert "global" in keys and not any("13800138001" in key for key in keys)


def test_a_person_with_notices_held_back_still_gets_the_code_to_sign(notify_env):
    """Four documents waiting for the borrower fill the notices' per-minute budget (3 here); the
    willingness code for signing one of them is not held back by them: codes have their own."""
    env = notify_env
    env.start(RATE_LIMITS={"PER_PHONE_PER_MINUTE": 3, "PER_PHONE_PER_HOUR": 50, "PER_PHONE_PER_DAY": 100,
                           "CODE_PER_PHONE_PER_MINUTE": 3, "GLOBAL_LIMIT": 100, "GLOBAL_PERIOD_SECONDS": 1})
    for n in range(4):
        env.send_flow_event(events.FLOW_SENT, f"waiting-{n}", next_person_id=BORROWER)
    assert wait_for(lambda: len([m for m in env.messages() if m.template_id == "sign_request"]) == 4)
    assert wait_for(lambda: len(env.lines("sign_request")) == 3)
    # the fourth is queued from its insert on; wait until the sender has tried it and held it back
    held = wait_for(lambda: [m for m in env.messages()
                             if m.template_id == "sign_request" and m.status == "queued" and m.last_error])
    assert [m.last_error for m in held] == ["deferred.phone_per_minute"]

    OTPS["willingness-1"] = {"phone": PHONES[BORROWER], "template": "willingness_code",
                             "params": {"document_title": "借条", "code": "604211", "minutes": "5"}}
    env.send_event(events.OTP_REQUESTED, {"challenge_id": "willingness-1", "purpose": "willingness"}, "identity")
    [code] = wait_for(lambda: env.lines("willingness_code"))
    assert (code["phone"], code["params"]["code"]) == (PHONES[BORROWER], "604211")
    assert len(env.lines("sign_request")) == 3  # the fourth notice still waits for its minute


# --- Tencent Cloud SMS against the local fake vendor -------------------------------------

@pytest.fixture
def tencent_vendor():
    with FakeTencentSms() as vendor:
        yield vendor


def tencent_config(env: NotifyEnv, vendor: FakeTencentSms) -> dict:
    secrets_dir = env.tmp_path / "tencent"
    secrets_dir.mkdir()
    (secrets_dir / "id").write_text(vendor.secret_id)
    (secrets_dir / "key").write_text(vendor.secret_key)
    template_ids = {name: str(1000 + index) for index, name in enumerate(
        ["phone_code", "willingness_code", "sign_request", "flow_completed", "due_soon", "due_today",
         "void_requested", "flow_voided", "flow_declined", "flow_expired", "flow_cancelled",
         "overdue", "interest_due", "loan_extended", "repayment_recorded", "loan_repaid"])}
    vendor.templates = {"1000": 2, "1007": 1, "1009": 1}  # phone_code, flow_voided, flow_expired
    return {"SMS": {"PROVIDER": "tencent", "SIGN_NAME": "电子签", "TENCENT": {
        "ENDPOINT": vendor.endpoint, "REGION": "ap-guangzhou", "SDK_APP_ID": vendor.sms_sdk_app_id,
        "SECRET_ID": {"file": str(secrets_dir / "id")}, "SECRET_KEY": {"file": str(secrets_dir / "key")},
        "TEMPLATE_IDS": template_ids, "CONNECT_TIMEOUT": 1, "READ_TIMEOUT": 1.5}}}


def test_tencent_vendor_500s_are_retried_until_sent(notify_env, tencent_vendor, rpc_proxy):
    env, vendor = notify_env, tencent_vendor
    env.start(**tencent_config(env, vendor))
    vendor.script("13800138001", http_status=500, times=2)
    retried = sms_total(template="flow_voided", provider="tencent", outcome="retried")
    answer = rpc_proxy.notify.send_sms(phone="13800138001", template="flow_voided",
                                       params={"document_title": "借条"})
    assert answer["status"] == "queued"
    status = wait_for(lambda: (s := rpc_proxy.notify.delivery_status(message_id=answer["message_id"]))
                      ["status"] == "sent" and s)
    assert status["attempts"] == 3 and status["vendor_message_id"].startswith("2433:")
    assert [r.outcome for r in vendor.received] == ["http_500", "http_500", "Ok"]  # signature checked each time
    assert len(vendor.delivered) == 1
    delivered = vendor.delivered[0]
    assert (delivered.phone, delivered.template_id, delivered.params) == ("+8613800138001", "1007", ["借条"])
    assert sms_total(template="flow_voided", provider="tencent", outcome="retried") == retried + 2
    latency = REGISTRY.get_sample_value("esign_sms_vendor_latency_seconds_count",
                                        {"service": "notify", "provider": "tencent"})
    assert latency and latency >= 3
    message = next(m for m in env.messages() if m.id == answer["message_id"])
    assert message.recipient_sealed is None

    # a code is not stored for its retry: identity is asked for it again
    OTPS["challenge-r"] = {"phone": "13700137003", "template": "phone_code",
                           "params": {"code": "551203", "minutes": "5"}}
    vendor.script("13700137003", http_status=502)
    env.send_event(events.OTP_REQUESTED, {"challenge_id": "challenge-r", "purpose": "phone_confirmation"},
                   source="identity")
    assert wait_for(lambda: len(vendor.delivered) == 2)
    assert (vendor.delivered[1].template_id, vendor.delivered[1].params) == ("1000", ["551203", "5"])
    assert OTP_LOOKUPS == ["challenge-r", "challenge-r"]


def test_tencent_permanent_error_is_not_retried_and_outages_give_up(notify_env, tencent_vendor, rpc_proxy):
    env, vendor = notify_env, tencent_vendor
    env.start(**tencent_config(env, vendor))
    vendor.script("13800138001", status_code="FailedOperation.PhoneNumberInBlacklist")
    answer = rpc_proxy.notify.send_sms(phone="13800138001", template="flow_voided",
                                       params={"document_title": "借条"})
    assert answer["status"] == "failed"

    vendor.script("13900139002", http_status=503, times=10)
    given_up = rpc_proxy.notify.send_sms(phone="13900139002", template="flow_expired",
                                         params={"document_title": "借条"})
    assert given_up["status"] == "queued"
    status = wait_for(lambda: (s := rpc_proxy.notify.delivery_status(message_id=given_up["message_id"]))
                      ["status"] == "given_up" and s)
    assert status["attempts"] == 4 and status["last_error"] == "http_503"
    wait_for_calls("run_scheduler", 5)
    failed = rpc_proxy.notify.delivery_status(message_id=answer["message_id"])
    assert (failed["status"], failed["attempts"], failed["last_error"]) == (
        "failed", 1, "FailedOperation.PhoneNumberInBlacklist")
    outcomes = [r.outcome for r in vendor.received]
    assert outcomes == ["FailedOperation.PhoneNumberInBlacklist"] + ["http_503"] * 4
    assert [d["message_id"] for d in env.emitted(events.SMS_GIVEN_UP)] == [given_up["message_id"]]
    assert [d["message_id"] for d in env.emitted(events.SMS_FAILED)] == [answer["message_id"]]
    assert vendor.delivered == []


def test_a_vendor_answer_lost_to_a_timeout_is_checked_with_the_vendor_not_sent_twice(
        notify_env, tencent_vendor, rpc_proxy):
    env, vendor = notify_env, tencent_vendor
    env.start(**tencent_config(env, vendor))
    vendor.script("13800138001", delay=2.5)  # longer than the read timeout; the vendor still takes it
    answer = rpc_proxy.notify.send_sms(phone="13800138001", template="flow_voided",
                                       params={"document_title": "借条"})
    assert answer["status"] == "sending"  # in doubt: the request went out, its answer did not come back
    status = wait_for(lambda: (s := rpc_proxy.notify.delivery_status(message_id=answer["message_id"]))
                      ["status"] == "sent" and s, timeout=30)
    assert len(vendor.delivered) == 1, "sent twice"
    assert (status["recovery"], status["attempts"]) == ("vendor_accepted", 1)
    assert status["vendor_message_id"] == vendor.delivered[0].serial_no
    assert vendor.delivered[0].session_context == answer["message_id"]
    pulls = [r for r in vendor.received if r.headers.get("X-TC-Action") == "PullSmsSendStatusByPhoneNumber"]
    assert len(pulls) >= 1
    assert [d["message_id"] for d in env.emitted(events.SMS_SENT)] == [answer["message_id"]]


# --- reminders ---------------------------------------------------------------------------

def _iou_due_in(days: int) -> dt.date:
    return dt.datetime.now(CHINA).date() + dt.timedelta(days=days)


#: reminders of an IOU due in 10 days, per party: due_soon, due_today and five weekly overdue ones
PER_PARTY = 7


def statuses(reminders: list[Reminder]) -> dict[str, list[str]]:
    """Each kind's statuses, sorted."""
    found: dict[str, list[str]] = {}
    for reminder in reminders:
        found.setdefault(reminder.kind, []).append(reminder.status)
    return {kind: sorted(values) for kind, values in found.items()}


def test_reminders_fire_on_the_right_days_once_and_not_after_a_void(notify_env):
    env = notify_env
    env.start()
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-1", repayment_date=due.isoformat())
    env.send_flow_event(events.FLOW_COMPLETED, "iou-2", repayment_date=due.isoformat())
    assert wait_for(lambda: [len(env.reminders(f)) for f in ("iou-1", "iou-2")] == [2 * PER_PARTY] * 2)
    env.send_flow_event(events.FLOW_VOIDED, "iou-2")
    assert wait_for(lambda: {r.status for r in env.reminders("iou-2")} == {"cancelled"})
    assert wait_for(lambda: len(env.lines("flow_voided")) == 2)

    env.move_clock_to(china_time(due - dt.timedelta(days=4), 10))  # the day before due_soon: nothing
    wait_for_calls("run_scheduler", 3)
    assert env.lines("due_soon") == []

    env.move_clock_to(china_time(due - dt.timedelta(days=3), 10))
    lines = wait_for(lambda: len(env.lines("due_soon")) >= 2 and env.lines("due_soon"))
    assert recipients(lines) == sorted(PHONES.values())
    assert lines[0]["params"] == {"document_title": "借条", "due_date": f"{due.year}年{due.month}月{due.day}日",
                                  "days": "3"}
    wait_for_calls("run_scheduler", 5)
    assert len(env.lines("due_soon")) == 2 and env.lines("due_today") == []

    env.move_clock_to(china_time(due, 10))
    lines = wait_for(lambda: len(env.lines("due_today")) >= 2 and env.lines("due_today"))
    assert recipients(lines) == sorted(PHONES.values())
    wait_for_calls("run_scheduler", 5)
    assert len(env.lines("due_soon")) == 2 and len(env.lines("due_today")) == 2  # only iou-1's, once each
    assert statuses(env.reminders("iou-1")) == {"due_soon": ["sent"] * 2, "due_today": ["sent"] * 2,
                                                "overdue": ["scheduled"] * 10}
    assert all(r.message_id for r in env.reminders("iou-1") if r.status == "sent")


def test_reminders_wait_out_quiet_hours(notify_env):
    env = notify_env
    env.start()
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-q", repayment_date=due.isoformat())
    assert wait_for(lambda: len(env.reminders("iou-q")) == 2 * PER_PARTY)
    env.move_clock_to(china_time(due - dt.timedelta(days=3), 22))  # due since 09:00, but it is night
    wait_for_calls("run_scheduler", 5)
    assert env.lines("due_soon") == []
    env.move_clock_to(china_time(due - dt.timedelta(days=2), 8) + dt.timedelta(minutes=1))
    assert wait_for(lambda: [r.status for r in env.reminders("iou-q")].count("expired") == 2)  # its day is over
    env.move_clock_to(china_time(due, 10))
    assert wait_for(lambda: len(env.lines("due_today")) == 2)
    assert env.lines("due_soon") == []
    assert statuses(env.reminders("iou-q")) == {"due_soon": ["expired"] * 2, "due_today": ["sent"] * 2,
                                                "overdue": ["scheduled"] * 10}


@pytest.mark.parametrize("notify_env", ["postgresql", "sqlite"], indirect=True)
def test_two_replicas_send_a_due_reminder_once_and_a_crashed_holder_is_replaced(notify_env):
    env = notify_env
    replicas = [env.start(), env.start()]
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-r", repayment_date=due.isoformat())
    assert wait_for(lambda: len(env.reminders("iou-r")) == 2 * PER_PARTY)
    env.move_clock_to(china_time(due - dt.timedelta(days=3), 10))
    assert wait_for(lambda: len(env.lines("due_soon")) == 2)
    wait_for_calls("run_scheduler", 10)
    assert len(env.lines("due_soon")) == 2

    def holder() -> str:
        with env.db.session() as session:
            return session.execute(select(LEASES.c.holder).where(LEASES.c.name == SCHEDULER_LEASE)).scalar_one()

    holders = {_lease_holder(container): container for container in replicas}
    assert holder() in holders
    crashed = holders.pop(holder())
    crashed.kill()  # no clean release: the lease must expire
    survivor = _lease_holder(next(iter(holders.values())))
    env.move_clock_to(china_time(due, 10))
    assert wait_for(lambda: len(env.lines("due_today")) == 2)
    assert holder() == survivor
    wait_for_calls("run_scheduler", 5)
    assert len(env.lines("due_today")) == 2 and len(env.lines("due_soon")) == 2


def _lease_holder(container) -> str:
    return next(d for d in container.dependencies if isinstance(d, SchedulerLease)).holder


def test_a_reminder_due_while_notify_was_down_is_sent_once_on_restart(notify_env):
    env = notify_env
    first = env.start()
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-d", repayment_date=due.isoformat())
    assert wait_for(lambda: len(env.reminders("iou-d")) == 2 * PER_PARTY)
    first.stop()

    env.move_clock_to(china_time(due - dt.timedelta(days=3), 15))
    second = env.start()
    assert wait_for(lambda: len(env.lines("due_soon")) == 2)
    wait_for_calls("run_scheduler", 5)
    second.stop()
    third = env.start()  # a second restart finds nothing left to send
    wait_for_calls("run_scheduler", 5)
    assert len(env.lines("due_soon")) == 2
    third.stop()

    env.move_clock_to(china_time(due + dt.timedelta(days=1), 10))  # down over the whole repayment day
    env.start()
    assert wait_for(lambda: statuses(env.reminders("iou-d")) == {
        "due_soon": ["sent"] * 2, "due_today": ["expired"] * 2, "overdue": ["scheduled"] * 8 + ["sent"] * 2})
    assert env.lines("due_today") == []


# --- a signed IOU's life: extensions, repayments ----------------------------------------------

def shown(day: dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def monthly_iou(due: dt.date, months: int) -> dict:
    """``loan`` of a monthly-interest IOU: interest every 30 days up to the repayment date."""
    dates = [due - dt.timedelta(days=30 * n) for n in range(months - 1, -1, -1)]
    return {"method": "monthly_interest", "interest_dates": [day.isoformat() for day in dates]}


def test_an_extension_cancels_what_was_planned_and_plans_again_from_the_new_date(notify_env):
    env = notify_env
    env.start()
    due = _iou_due_in(100)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-m", repayment_date=due.isoformat(), loan=monthly_iou(due, 4))
    env.send_flow_event(events.FLOW_COMPLETED, "statement-1", repayment_date=None)  # a 还款确认书: no reminders
    assert wait_for(lambda: len(env.lines("flow_completed")) == 4)
    # per party: interest 3 days before the three interest dates ahead of the repayment date, then the usual
    assert wait_for(lambda: statuses(env.reminders("iou-m")) == {
        "interest_due": ["scheduled"] * 6, "due_soon": ["scheduled"] * 2, "due_today": ["scheduled"] * 2,
        "overdue": ["scheduled"] * 10})
    assert env.reminders("statement-1") == []
    interest_before = {r.id for r in env.reminders("iou-m") if r.kind == "interest_due"}

    new_due = due + dt.timedelta(days=30)
    env.send_flow_event(
        events.LOAN_EXTENDED, "iou-m", repayment_date=new_due.isoformat(), previous_repayment_date=due.isoformat(),
        statement_flow_id="statement-2", actor_person_id=LENDER, loan=monthly_iou(new_due, 5))
    lines = wait_for(lambda: len(env.lines("loan_extended")) == 2 and env.lines("loan_extended"))
    assert recipients(lines) == sorted(PHONES.values())
    assert lines[0]["text"] == f"【电子签】《借条》已展期，新的还款日为{shown(new_due)}。"

    reminders = env.reminders("iou-m")
    assert statuses(reminders) == {
        "interest_due": ["scheduled"] * 8,  # the old date is an interest date now
        "due_soon": ["cancelled"] * 2 + ["scheduled"] * 2, "due_today": ["cancelled"] * 2 + ["scheduled"] * 2,
        "overdue": ["cancelled"] * 10 + ["scheduled"] * 10}
    scheduled = [r for r in reminders if r.status == "scheduled"]
    assert interest_before <= {r.id for r in scheduled}  # the interest days it kept: cancelled, scheduled again
    china_day = {r.kind: r.expires_at.replace(tzinfo=dt.timezone.utc).astimezone(CHINA).date() - dt.timedelta(days=1)
                 for r in sorted(scheduled, key=lambda r: r.send_at)}  # each kind's last day
    assert china_day == {"interest_due": due - dt.timedelta(days=3), "due_soon": new_due - dt.timedelta(days=3),
                         "due_today": new_due, "overdue": new_due + dt.timedelta(days=29)}
    assert {json.loads(r.params)["due_date"] for r in scheduled if r.kind != "interest_due"} == {new_due.isoformat()}


def test_a_part_repayment_tells_the_borrower_and_the_repayment_that_settles_it_ends_the_reminders(notify_env):
    env = notify_env
    env.start()
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-p", repayment_date=due.isoformat(),
                        loan={"method": "lump_sum", "interest_dates": []})
    assert wait_for(lambda: len(env.reminders("iou-p")) == 2 * PER_PARTY)

    env.send_flow_event(events.LOAN_REPAYMENT_RECORDED, "iou-p", repayment_date=due.isoformat(),
                        statement_flow_id="receipt-1", actor_person_id=LENDER)
    [line] = wait_for(lambda: env.lines("repayment_recorded"))
    assert line["phone"] == PHONES[BORROWER]  # the lender confirmed it: no SMS to them
    assert line["text"] == "【电子签】《借条》：出借人已确认收到您的一笔还款，查看：https://esign.example.cn/f/iou-p"
    assert {r.status for r in env.reminders("iou-p")} == {"scheduled"}

    env.send_flow_event(events.LOAN_REPAID, "iou-p", repayment_date=due.isoformat(),
                        statement_flow_id="receipt-2", actor_person_id=LENDER)
    lines = wait_for(lambda: len(env.lines("loan_repaid")) == 2 and env.lines("loan_repaid"))
    assert recipients(lines) == sorted(PHONES.values())
    assert lines[0]["text"] == "【电子签】《借条》的借款已全部还清，感谢您守约。"
    assert {r.status for r in env.reminders("iou-p")} == {"cancelled"}
    env.move_clock_to(china_time(due + dt.timedelta(days=1), 10))
    wait_for_calls("run_scheduler", 5)
    assert env.lines("overdue") == [] and len(env.lines()) == 2 + 1 + 2


def test_an_overdue_reminder_due_by_a_moved_clock_is_sent_with_its_text_and_a_stale_one_is_dropped(notify_env):
    env = notify_env
    env.start()
    due = _iou_due_in(10)
    env.send_flow_event(events.FLOW_COMPLETED, "iou-o", repayment_date=due.isoformat())
    assert wait_for(lambda: len(env.reminders("iou-o")) == 2 * PER_PARTY)

    env.move_clock_to(china_time(due + dt.timedelta(days=8), 10))  # the second week's; the first week's day is over
    lines = wait_for(lambda: len(env.lines("overdue")) >= 2 and env.lines("overdue"))
    assert recipients(lines) == sorted(PHONES.values())
    assert lines[0]["text"] == f"【电子签】《借条》约定的还款日{shown(due)}已过，借款尚未还清，请尽快履行。"
    wait_for_calls("run_scheduler", 5)
    assert len(env.lines("overdue")) == 2
    assert statuses(env.reminders("iou-o"))["overdue"] == ["expired"] * 2 + ["scheduled"] * 6 + ["sent"] * 2
