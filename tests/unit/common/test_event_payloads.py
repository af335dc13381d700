"""The contract between services: one payload type per event (services/common/events.py),
which a sender cannot go past and every payload the senders made before the types still meets;
a flow event's evidence leaf is the same bytes whichever of the two made it."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from services.common import events
from services.common.errors import InvalidInput
from services.common.outbox import OUTBOX, UnitOfWork, envelope
from services.signing import flow as F
from services.signing.evidence import LEAF_EXTRA_FIELDS, leaf_of
from services.signing.flow_store import FlowStore
from services.signing.log_records import canonical_json, utc_timestamp
from services.signing.models import FlowParty, FlowRow
from tests.support.sqlite import sqlite_session

LINK = "https://esign.example.cn/flows/f-1"
#: what every flow event said, as FlowStore built it before the payload types
OLD_FLOW = {
    "flow_id": "f-1", "document_id": "d-1", "document_title": "借条", "document_sha256": "a" * 64,
    "parties": [{"person_id": "p-lender", "role": "出借人"}, {"person_id": None, "role": "借款人"}],
    "initiator_person_id": "p-lender", "next_person_id": None, "next_role": "借款人", "actor_person_id": "p-lender",
    "repayment_date": "2027-06-15", "reason": None, "state": "waiting", "link": LINK,
}
SIGNATURE = {"certificate_serial": "5f3a9c", "willingness_method": "face", "signed_pdf_sha256": "b" * 64,
             "assurance_level": "authority_face_liveness"}
LOAN = {"loan": {"method": "monthly_interest", "interest_dates": ["2027-02-15", "2027-03-15"]}}
VOID_CONSENT = {"willingness_method": "sms", "statement_digest": "c" * 64, "statement_signature": "c2ln",
                "certificate_serial": "5f3a9c"}
DISPUTE = {"actor_person_id": None, "reason": "identity_disputed", "disputed_person_id": "p-lender",
           "dispute_reason": "identity_taken_back"}
STATEMENT = {"statement_flow_id": "f-2", "statement_sha256": "d" * 64}

#: (event type, data) as each sender made them before the payload types, every variant of each
OLD_PAYLOADS = [
    (events.FLOW_SENT, OLD_FLOW),
    (events.FLOW_SENT, dict(OLD_FLOW, **SIGNATURE)),  # a signature moved the flow on to the next party
    (events.PARTY_JOINED, OLD_FLOW),
    (events.PARTY_SIGNED, dict(OLD_FLOW, **SIGNATURE)),
    (events.PARTY_SIGNED, dict(OLD_FLOW, **SIGNATURE, **LOAN, state="completed", next_role=None)),
    (events.PARTY_SIGNED, dict(OLD_FLOW, **dict(SIGNATURE, certificate_serial=None))),
    (events.FLOW_COMPLETED, dict(OLD_FLOW, **SIGNATURE, **LOAN, state="completed", next_role=None)),
    (events.FLOW_COMPLETED, dict(OLD_FLOW, **SIGNATURE, state="completed", next_role=None, repayment_date=None)),
    (events.SIGN_REMINDER, dict(OLD_FLOW, actor_person_id="p-borrower", requester_person_id="p-borrower")),
    (events.FLOW_DECLINED, dict(OLD_FLOW, state="declined", reason="金额不对", decliner_person_id="p-lender")),
    (events.FLOW_EXPIRED, dict(OLD_FLOW, state="expired", actor_person_id=None)),
    (events.VOID_REQUESTED, dict(OLD_FLOW, **VOID_CONSENT, state="void_requested", reason="重复签署",
                                 requester_person_id="p-lender")),
    (events.VOID_REJECTED, dict(OLD_FLOW, state="completed")),
    (events.FLOW_VOIDED, dict(OLD_FLOW, **VOID_CONSENT, state="voided", reason="重复签署")),
    (events.FLOW_CANCELLED, dict(OLD_FLOW, **DISPUTE, state="cancelled")),
    (events.FLOW_IDENTITY_DISPUTED, dict(OLD_FLOW, **dict(DISPUTE, reason=None), state="completed")),
    (events.LOAN_REPAYMENT_RECORDED, dict(OLD_FLOW, **STATEMENT, state="completed")),
    (events.LOAN_REPAID, dict(OLD_FLOW, **STATEMENT, state="completed")),
    (events.LOAN_EXTENDED,
     dict(OLD_FLOW, **STATEMENT, **LOAN, state="completed", previous_repayment_date="2027-03-15")),
    (events.PERSON_VERIFIED, {"person_id": "p-1", "assurance_level": "authority_face_liveness"}),
    (events.CERTIFICATE_ISSUED, {"person_id": "p-1", "serial": "5f3a9c"}),
    (events.CERTIFICATE_REVOKED, {"serial": "5f3a9c", "person_id": "p-1", "reason": "privilege_withdrawn"}),
    (events.OTP_REQUESTED, {"challenge_id": "c-1", "purpose": "phone_confirmation"}),
    (events.SESSIONS_ENDED, {"person_id": "p-1", "reason": "logout"}),
    (events.IDENTITY_DISPUTED, {"person_id": "p-1", "replaced_by_person_id": "p-2", "revoked_serials": ["5f3a9c"],
                                "reason": "identity_taken_back"}),
    (events.DOCUMENT_CREATED, {"document_id": "d-1", "template_id": "iou"}),
    *((events.DOCUMENT_UPDATED, {"document_id": "d-1", "change": change})
      for change in ("values", "attachment", "rendered", "unlocked")),
    (events.DOCUMENT_LOCKED, {"document_id": "d-1", "flow_id": "f-1"}),
    (events.SMS_SENT, {"message_id": "m-1", "template": "sign_request", "ref_type": "flow", "ref_id": "f-1"}),
    (events.SMS_FAILED, {"message_id": "m-1", "template": "phone_code", "ref_type": "otp", "ref_id": "c-1",
                         "error": "rate_limited.phone_minute"}),
    (events.SMS_GIVEN_UP, {"message_id": "m-1", "template": "flow_voided", "ref_type": "rpc", "ref_id": None,
                           "error": "vendor_timeout"}),
]
CASE_IDS = [f"{event_type}-{n}" for n, (event_type, _) in enumerate(OLD_PAYLOADS)]


def test_every_event_has_a_payload_type_and_every_payload_type_an_event():
    known = {event_type for types in events.KNOWN_EVENTS.values() for event_type in types}
    assert set(events.PAYLOADS) == known
    assert all(issubclass(payload, events.EventPayload) for payload in events.PAYLOADS.values())
    platform = {event_type for service in ("identity", "documents", "signing", "notify")
                for event_type in events.KNOWN_EVENTS[service]}
    assert {event_type for event_type, _ in OLD_PAYLOADS} == platform  # every sender's event is tried below


@pytest.mark.parametrize("event_type, data", OLD_PAYLOADS, ids=CASE_IDS)
def test_what_the_senders_sent_before_the_types_still_parses_the_same(event_type, data):
    """An event still in an outbox from before the types (a deploy mid-flight) reaches its receivers."""
    sent = events.parse(event_type, json.loads(json.dumps(data)))
    again = sent.to_data()
    assert {name: again[name] for name in data} == data  # every member as it was
    assert all(again[name] is None for name in set(again) - set(data))  # those left out are null
    assert events.parse(event_type, again) == sent


@pytest.mark.parametrize("data, field, rule", [
    (dict(OLD_FLOW, surprise=1), "data.surprise", "extra_forbidden"),
    (dict(OLD_FLOW, document_title=7), "data.document_title", "string_type"),
    ({k: v for k, v in OLD_FLOW.items() if k != "link"}, "data.link", "missing"),
    (dict(OLD_FLOW, parties=[{"person_id": None}]), "data.parties.0.role", "missing"),
    (dict(OLD_FLOW, parties=[{"person_id": None, "role": "借款人", "phone": "13800138000"}]),
     "data.parties.0.phone", "extra_forbidden"),
    (["not", "a", "mapping"], "data", "model_type"),
])
def test_a_receiver_refuses_an_undeclared_member_or_a_wrong_type_naming_it(data, field, rule):
    with pytest.raises(InvalidInput) as error:
        events.parse(events.FLOW_EXPIRED, data)
    assert (error.value.field, error.value.rule) == (field, rule)


def test_a_member_one_event_declares_is_refused_on_another():
    with pytest.raises(InvalidInput) as error:  # a decliner on an event that is not a decline
        events.parse(events.FLOW_EXPIRED, dict(OLD_FLOW, decliner_person_id="p-lender"))
    assert (error.value.field, error.value.rule) == ("data.decliner_person_id", "extra_forbidden")
    with pytest.raises(InvalidInput) as error:  # a loan on a flow_sent, which never carries one
        events.parse(events.FLOW_SENT, dict(OLD_FLOW, **SIGNATURE, **LOAN))
    assert error.value.field == "data.loan"


# -- the sender's side -------------------------------------------------------------------------
@pytest.fixture
def unit():
    for session in sqlite_session(OUTBOX.metadata):
        yield UnitOfWork(session, publisher=None, service="signing")


def outbox_data(unit: UnitOfWork) -> list[dict]:
    return [json.loads(row)["data"] for row in unit.session.execute(select(OUTBOX.c.payload)).scalars()]


def test_emit_sends_the_payload_of_the_events_type_with_every_member(unit):
    expired = events.parse(events.FLOW_EXPIRED, dict(OLD_FLOW, state="expired", actor_person_id=None))
    unit.emit(events.FLOW_EXPIRED, expired)
    assert outbox_data(unit) == [expired.to_data()]


def test_emit_refuses_what_is_not_the_payload_type_of_its_event(unit):
    """A sender cannot emit a member its event's type does not declare: not in a dict, not in another type."""
    with pytest.raises(events.PayloadMismatch, match="flow_expired: expected FlowEvent, found dict"):
        unit.emit(events.FLOW_EXPIRED, dict(OLD_FLOW, surprise=1))
    declined = events.parse(events.FLOW_DECLINED, dict(OLD_FLOW, decliner_person_id="p-lender"))
    with pytest.raises(events.PayloadMismatch, match="flow_expired: expected FlowEvent, found FlowDeclined"):
        unit.emit(events.FLOW_EXPIRED, declined)  # a FlowEvent, and a decliner besides
    with pytest.raises(ValidationError, match="surprise"):  # nor can the type be built with one
        events.FlowEvent(**OLD_FLOW, surprise=1)
    assert outbox_data(unit) == []


def test_the_flow_store_builds_each_events_type_and_refuses_a_member_it_does_not_declare():
    store = FlowStore(lambda: None, storage=None, metrics=None, public_url="https://esign.example.cn")
    row = FlowRow(id="f-1", document_id="d-1", document_sha256="a" * 64, title="借条", initiator_person_id="p-lender",
                  repayment_date="2027-06-15")
    parties = [FlowParty(position=0, person_id="p-lender", role="出借人", signature_field="Party1"),
               FlowParty(position=1, person_id=None, role="借款人", signature_field="Party2")]
    moment = datetime(2027, 1, 5, tzinfo=timezone.utc)
    flow = F.send(F.new_flow("f-1", "d-1", "a" * 64, [F.Party(p.person_id, p.role, p.signature_field) for p in parties],
                             moment + timedelta(days=3), moment), moment).flow
    sent = store.event_payload(events.FLOW_SENT, row, parties, flow, "p-lender")
    assert type(sent) is events.FlowSent and sent.to_data() == dict(
        OLD_FLOW, next_person_id="p-lender", next_role="出借人",
        certificate_serial=None, willingness_method=None, signed_pdf_sha256=None, assurance_level=None)
    with pytest.raises(ValidationError, match="loan"):  # flow_sent carries no loan
        store.event_payload(events.FLOW_SENT, row, parties, flow, "p-lender", **LOAN)
    with pytest.raises(ValidationError, match="requester_person_id"):  # a sign_reminder names who asked
        store.event_payload(events.SIGN_REMINDER, row, parties, flow, "p-lender")


# -- the evidence leaves --------------------------------------------------------------------------
def leaf_before_the_types(event: dict) -> dict:
    """services.signing.evidence.leaf_of as it was, reading the data as sent."""
    data = event["data"]
    record = {
        "event_id": event["event_id"], "flow_id": data["flow_id"], "event_type": event["event_type"],
        "document_hash": data.get("signed_pdf_sha256") or data.get("document_sha256"),
        "party_id": data.get("actor_person_id"), "certificate_serial": data.get("certificate_serial"),
        "willingness_method": data.get("willingness_method"),
        "willingness_outcome": "passed" if data.get("willingness_method") else None,
        "timestamp": utc_timestamp(datetime.fromisoformat(event["occurred_at"])),
    }
    record.update({name: data[name] for name in LEAF_EXTRA_FIELDS if data.get(name) is not None})
    return record


FLOW_CASES = [(event_type, data) for event_type, data in OLD_PAYLOADS if "flow_id" in data and "link" in data]


@pytest.mark.parametrize("event_type, data", FLOW_CASES, ids=[f"{t}-{n}" for n, (t, _) in enumerate(FLOW_CASES)])
def test_a_flow_events_leaf_is_the_same_bytes_as_before_the_types(event_type, data):
    old = envelope("signing", event_type, copy.deepcopy(data))
    new = dict(old, data=events.parse(event_type, data).to_data())  # the same event, sent by the typed sender
    expected = canonical_json(leaf_before_the_types(old))
    assert canonical_json(leaf_of(old)) == expected
    assert canonical_json(leaf_of(new)) == expected


def test_a_signatures_leaf_names_the_signature():
    event = envelope("signing", events.PARTY_SIGNED, dict(OLD_FLOW, **SIGNATURE))
    event["occurred_at"] = "2027-01-05T08:00:00+00:00"
    assert canonical_json(leaf_of(event)) == (
        '{"assurance_level":"authority_face_liveness","certificate_serial":"5f3a9c","document_hash":"' + "b" * 64
        + '","event_id":"' + event["event_id"] + '","event_type":"party_signed","flow_id":"f-1",'
        '"party_id":"p-lender","timestamp":"2027-01-05T08:00:00Z","willingness_method":"face",'
        '"willingness_outcome":"passed"}').encode()
