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
