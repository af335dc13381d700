"""Notices in notify's own workers (tests/support/service_worker.py), on SQLite
with the console SMS provider: each event a flow or identity announces becomes
one SMS of its template to the right numbers, names shown masked; the same
event delivered again sends nothing again; an unknown person or a broken
payload sends nothing; no number or code leaves in notify's own events.

Identity is a stub answering ``contact`` and ``otp_message``. How the events
reach notify over RabbitMQ, and the vendor, retries, limits and reminders over
time, are tests/integration/test_notify_service.py's."""
from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from services.common import events
from services.common.errors import Forbidden, InvalidInput, NotFound
from services.common.outbox import envelope
from services.notify.models import SmsMessage
from services.notify.service import NotifyService
from tests.support.flow_events import flow_event
from tests.support.service_worker import ServiceWorkers

LENDER, BORROWER = "person-lender", "person-borrower"
PHONES = {LENDER: "13800138001", BORROWER: "13900139002"}
CONTACTS = {LENDER: {"phone": PHONES[LENDER], "name": "王小明"}, BORROWER: {"phone": PHONES[BORROWER], "name": "李四"}}
OTPS = {"challenge-1": {"phone": "13700137003", "template": "phone_code", "params": {"code": "482913", "minutes": "5"}}}

#: (event, the handler it reaches, its data's extra members, template, numbers, source)
CASES = [
    (events.OTP_REQUESTED, "on_otp_requested", None, "phone_code", ["13700137003"], "identity"),
    (events.FLOW_SENT, "on_flow_sent", {"next_person_id": BORROWER}, "sign_request", [PHONES[BORROWER]], "signing"),
    (events.FLOW_COMPLETED, "on_flow_completed", {}, "flow_completed", sorted(PHONES.values()), "signing"),
    (events.VOID_REQUESTED, "on_void_requested", {"requester_person_id": LENDER}, "void_requested",
     [PHONES[BORROWER]], "signing"),
    (events.FLOW_VOIDED, "on_flow_voided", {}, "flow_voided", sorted(PHONES.values()), "signing"),
    (events.FLOW_DECLINED, "on_flow_declined", {"decliner_person_id": BORROWER}, "flow_declined",
     [PHONES[LENDER]], "signing"),
    (events.FLOW_EXPIRED, "on_flow_expired", {}, "flow_expired", sorted(PHONES.values()), "signing"),
    (events.FLOW_CANCELLED, "on_flow_cancelled", {"disputed_person_id": BORROWER, "reason": "identity_disputed"},
     "flow_cancelled", [PHONES[LENDER]], "signing"),
]


class Identity:
    def __init__(self):
        self.asked: list[str] = []

    def contact(self, person_id: str) -> dict:
        self.asked.append("contact")
        if person_id not in CONTACTS:
            raise NotFound("person", person_id)
        return CONTACTS[person_id]

    def contacts(self, person_ids: list) -> dict:
        self.asked.append("contacts")
        return {person_id: CONTACTS.get(person_id) for person_id in person_ids}

    def otp_message(self, challenge_id: str) -> dict:
        if challenge_id not in OTPS:
            raise Forbidden("otp_not_deliverable")
        return OTPS[challenge_id]


class Notify(ServiceWorkers):
    def __init__(self, folder, identity: Identity | None = None):
        self.outbox = folder / "sms-outbox.jsonl"
        super().__init__(NotifyService, folder, identity=identity or Identity(), documents=None,
                         config={"SMS": {"PROVIDER": "console", "OUTBOX_FILE": str(self.outbox)}})

    def lines(self, template: str | None = None) -> list[dict]:
        if not self.outbox.exists():
            return []
        lines = [json.loads(line) for line in self.outbox.read_text("utf-8").splitlines() if line.strip()]
        return [line for line in lines if template is None or line["template"] == template]

    def messages(self) -> list[SmsMessage]:
        with self.database().db.session() as session:
            return list(session.execute(select(SmsMessage).order_by(SmsMessage.created_at)).scalars())


@pytest.fixture
def notify(tmp_path):
    workers = Notify(tmp_path)
    yield workers
    workers.stop()


def data_of(event_type: str, extra: dict | None, flow_id: str = "f1") -> dict:
    if extra is None:
        return {"challenge_id": "challenge-1", "purpose": "phone_confirmation"}
    return flow_event(event_type, flow_id, [(LENDER, "lender"), (BORROWER, "borrower")],
                      **{"link": f"https://esign.example.cn/f/{flow_id}", **extra})


def test_each_event_sends_one_message_of_its_template_to_the_right_numbers_once(notify):
    handled = []
    for event_type, handler, extra, template, numbers, source in CASES:
        event = envelope(source, event_type, data_of(event_type, extra))
        notify.call(handler, event)
        handled.append((handler, event))
        assert sorted(line["phone"] for line in notify.lines(template)) == numbers, template

    by_template = {line["template"]: line for line in notify.lines()}
    assert by_template["phone_code"]["params"]["code"] == "482913"
    assert by_template["sign_request"]["params"]["initiator"] == "王**"  # names are shown masked
    assert by_template["sign_request"]["params"]["link"] == "https://esign.example.cn/f/f1"
    assert by_template["void_requested"]["params"]["requester"] == "王**"
    assert by_template["flow_declined"]["params"]["decliner"] == "李*"
    assert by_template["flow_cancelled"]["params"] == {"document_title": "借条"}  # names nobody
    assert len(notify.lines()) == 11

    for handler, event in handled:  # every event delivered again: handled, nothing sent again
        notify.call(handler, event)
    assert len(notify.lines()) == 11

    messages = notify.messages()
    assert len(messages) == 11 and {m.status for m in messages} == {"sent"}
    assert all(m.recipient_sealed is None and m.next_attempt_at is None for m in messages)
    assert all("*" in m.phone_masked for m in messages)
    otp = next(m for m in messages if m.template_id == "phone_code")
    assert (otp.ref_type, otp.ref_id) == ("otp", "challenge-1")
    sent = [event["data"] for event in notify.events(events.SMS_SENT)]
    assert len(sent) == 11 and {"message_id", "template", "ref_type", "ref_id"} <= set(sent[0])
    numbers = [*PHONES.values(), "13700137003", "482913"]
    assert not any(n in json.dumps(data) for data in sent for n in numbers)  # no number or code in events
    status = notify.call("delivery_status", message_id=otp.id)
    assert status["status"] == "sent" and status["phone_masked"] == "137****7003" and status["attempts"] == 1


def test_an_unknown_person_or_a_broken_payload_sends_nothing(notify):
    notify.call("on_flow_sent", envelope("signing", events.FLOW_SENT,
                                         data_of(events.FLOW_SENT, {"next_person_id": "nobody"}, "f9")))
    notify.call("on_flow_sent", envelope("signing", events.FLOW_SENT, {"flow_id": "f9"}))  # no parties, no title
    notify.call("on_otp_requested", envelope("identity", events.OTP_REQUESTED,
                                             {"challenge_id": "challenge-gone", "purpose": "phone_confirmation"}))
    assert notify.lines() == [] and notify.messages() == []


def test_a_flows_notice_asks_identity_once_for_every_party(tmp_path):
    """Both parties' phones in one ``contacts`` call (identity.contact ×4 per IOU flow before); an
    identity without ``contacts`` (older, or a test's stand-in) is asked for each with ``contact``."""

    class OlderIdentity(Identity):
        def contacts(self, person_ids):
            self.asked.append("contacts")
            raise InvalidInput("method", "unknown_method", "identity has no RPC method 'contacts'")

    for identity, asked in ((Identity(), ["contacts"]), (OlderIdentity(), ["contacts", "contact", "contact"])):
        folder = tmp_path / type(identity).__name__
        folder.mkdir()
        notify = Notify(folder, identity)
        try:
            notify.call("on_flow_completed", envelope("signing", events.FLOW_COMPLETED,
                                                      data_of(events.FLOW_COMPLETED, {})))
            assert identity.asked == asked
            assert sorted(line["phone"] for line in notify.lines("flow_completed")) == sorted(PHONES.values())
        finally:
            notify.stop()


def transactions_of(notify: Notify, handler: str, event: dict) -> list[list[str]]:
    """The statements of notify's database in each transaction ``handler`` committed while handling
    ``event``, and at each commit the SMS the vendor (the console provider) had been handed so far."""
    from sqlalchemy import event as sql_event

    engine = notify.database().db.engine
    transactions: list[list[str]] = [[]]

    def statement(_conn, _cursor, text, *_rest):
        table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", text)
        transactions[-1].append(f"{text.split()[0]} {table.group(1) if table else ''}".strip())

    def commit(_conn):
        transactions[-1].append(f"COMMIT with {len(notify.lines())} sent")
        transactions.append([])

    sql_event.listen(engine, "before_cursor_execute", statement)
    sql_event.listen(engine, "commit", commit)
    try:
        notify.call(handler, event)
    finally:
        sql_event.remove(engine, "before_cursor_execute", statement)
        sql_event.remove(engine, "commit", commit)
    return [t for t in transactions if t]


def test_a_code_is_recorded_attempted_and_its_event_marked_in_one_commit_before_the_vendor_has_it(notify):
    """One transaction holds the event's mark, the message, its rate count and its first attempt (the row
    written once, as 'sending'); the vendor is called after it commits; its outcome is the second. Four
    transactions before: the intent, the attempt, the outcome, the mark, and the mark read first."""
    event = envelope("identity", events.OTP_REQUESTED, data_of(events.OTP_REQUESTED, None))
    first, second, *rest = transactions_of(notify, "on_otp_requested", event)
    assert rest == []
    assert first[0] == "INSERT processed_events" and "SELECT processed_events" not in first
    assert first.count("INSERT sms_messages") == 1 and "UPDATE sms_messages" not in first
    assert "INSERT sms_rate_events" in first and first[-1] == "COMMIT with 0 sent"
    assert second[-1] == "COMMIT with 1 sent" and "UPDATE sms_messages" in second and "INSERT outbox" in second
    [message] = notify.messages()
    assert (message.status, message.attempts) == ("sent", 1)

    # delivered again: the one insert finds the mark, and nothing else is done or committed
    assert transactions_of(notify, "on_otp_requested", event) == [["INSERT processed_events"]]
    assert len(notify.lines()) == 1


def test_a_notice_to_two_parties_commits_both_intents_with_the_first_attempt(notify):
    event = envelope("signing", events.FLOW_COMPLETED, data_of(events.FLOW_COMPLETED, {}))
    transactions = transactions_of(notify, "on_flow_completed", event)
    assert [t[-1] for t in transactions] == ["COMMIT with 0 sent", "COMMIT with 1 sent", "COMMIT with 1 sent",
                                             "COMMIT with 2 sent"]
    assert transactions[0].count("INSERT sms_messages") == 2 and transactions[0][0] == "INSERT processed_events"
    assert {m.status for m in notify.messages()} == {"sent"} and len(notify.messages()) == 2


def test_a_notice_whose_first_attempt_fails_midway_leaves_nothing_and_is_handled_again(tmp_path):
    """Nothing is committed before the first attempt's commit: a failure before it (the database, the
    limiter) rolls the mark and every message back, and the event delivered again sends them all."""
    notify = Notify(tmp_path)
    try:
        event = envelope("signing", events.FLOW_COMPLETED, data_of(events.FLOW_COMPLETED, {}))
        import services.notify.delivery as delivery

        real_admit = delivery.admit

        def broken_admit(*args, **kwargs):
            raise RuntimeError("the database went away")

        delivery.admit = broken_admit
        try:
            with pytest.raises(RuntimeError):
                notify.call("on_flow_completed", event)
        finally:
            delivery.admit = real_admit
        assert notify.messages() == [] and notify.lines() == []
        notify.call("on_flow_completed", event)
        assert sorted(line["phone"] for line in notify.lines("flow_completed")) == sorted(PHONES.values())
    finally:
        notify.stop()
