"""Which SMS each signing event asks for, and the payload contract."""
import datetime as dt

import pytest

from services.common import events
from services.common.errors import InvalidInput
from services.notify.notices import NAMED_PARTY, FlowEvent, notices_for
from services.notify.reminders import LoanTerms, RepaymentMethod

PARTIES = [{"person_id": "p-lender", "role": "lender"}, {"person_id": "p-borrower", "role": "borrower"}]


def flow(**extra) -> FlowEvent:
    return FlowEvent.from_payload({"flow_id": "f1", "document_id": "d1", "document_title": " 借条 ",
                                   "parties": PARTIES, "link": "https://e.cn/f/f1", **extra})


def test_flow_sent_asks_the_next_party_naming_the_initiator():
    (notice,) = notices_for(events.FLOW_SENT, flow(initiator_person_id="p-lender", next_person_id="p-borrower"))
    assert (notice.person_id, notice.template) == ("p-borrower", "sign_request")
    assert dict(notice.params) == {"document_title": "借条", "link": "https://e.cn/f/f1"}
    assert dict(notice.names) == {"initiator": "p-lender"}
    assert notice.persons == ("p-borrower", "p-lender")


def test_a_sign_reminder_asks_the_next_party_naming_who_reminded():
    (notice,) = notices_for(events.SIGN_REMINDER, flow(initiator_person_id="p-borrower", next_person_id="p-lender",
                                                       requester_person_id="p-borrower"))
    assert (notice.person_id, notice.template) == ("p-lender", "sign_request")
    assert dict(notice.names) == {"initiator": "p-borrower"}
    with pytest.raises(InvalidInput):  # who asked is part of the contract
        notices_for(events.SIGN_REMINDER, flow(next_person_id="p-lender"))


def test_the_initiator_is_not_asked_to_sign_what_they_just_sent():
    """The initiator signs first, in the session that sent the document: no sign_request to them
    (the next party, once they have signed, is asked as before)."""
    assert notices_for(events.FLOW_SENT, flow(initiator_person_id="p-lender", next_person_id="p-lender")) == ()


@pytest.mark.parametrize("event_type, template, extra, recipients", [
    (events.FLOW_COMPLETED, "flow_completed", {}, ["p-lender", "p-borrower"]),
    (events.VOID_REQUESTED, "void_requested", {"requester_person_id": "p-lender"}, ["p-borrower"]),
    (events.FLOW_VOIDED, "flow_voided", {}, ["p-lender", "p-borrower"]),
    (events.FLOW_DECLINED, "flow_declined", {"decliner_person_id": "p-borrower"}, ["p-lender"]),
    (events.FLOW_EXPIRED, "flow_expired", {}, ["p-lender", "p-borrower"]),
    (events.FLOW_CANCELLED, "flow_cancelled", {"disputed_person_id": "p-borrower"}, ["p-lender"]),
    (events.LOAN_EXTENDED, "loan_extended", {"repayment_date": "2027-09-15"}, ["p-lender", "p-borrower"]),
    (events.LOAN_REPAYMENT_RECORDED, "repayment_recorded", {"actor_person_id": "p-lender"}, ["p-borrower"]),
    (events.LOAN_REPAID, "loan_repaid", {"actor_person_id": "p-lender"}, ["p-lender", "p-borrower"]),
])
def test_each_event_reaches_the_parties_it_concerns(event_type, template, extra, recipients):
    notices = notices_for(event_type, flow(**extra))
    assert [n.person_id for n in notices] == recipients
    assert {n.template for n in notices} == {template}


def test_repayment_date_is_read_as_a_date():
    assert flow(repayment_date="2026-03-01").repayment_date == dt.date(2026, 3, 1)


def test_the_loan_terms_are_read_and_a_statement_flow_has_none():
    monthly = flow(repayment_date="2027-06-15", loan={"method": "monthly_interest",
                                                      "interest_dates": ["2027-02-15", "2027-03-15"]})
    assert monthly.loan == LoanTerms(RepaymentMethod.MONTHLY_INTEREST, (dt.date(2027, 2, 15), dt.date(2027, 3, 15)))
    assert flow(repayment_date="2027-06-15", loan={"method": "lump_sum", "interest_dates": []}).loan == \
        LoanTerms(RepaymentMethod.LUMP_SUM)
    statement = flow(repayment_date=None)
    assert (statement.repayment_date, statement.loan) == (None, None)


def test_the_loan_notices_carry_the_new_date_and_the_link():
    notices = notices_for(events.LOAN_EXTENDED, flow(repayment_date="2027-09-15", previous_repayment_date="2027-06-15",
                                                     statement_flow_id="f2"))
    assert {tuple(n.params.items()) for n in notices} == {(("document_title", "借条"), ("due_date", "2027-09-15"))}
    (recorded,) = notices_for(events.LOAN_REPAYMENT_RECORDED, flow(actor_person_id="p-lender"))
    assert dict(recorded.params) == {"document_title": "借条", "link": "https://e.cn/f/f1"}
    with pytest.raises(InvalidInput) as error:  # without the new date there is nothing to tell
        notices_for(events.LOAN_EXTENDED, flow())
    assert error.value.field == "data.repayment_date"
    with pytest.raises(InvalidInput) as error:  # without the lender notify could not leave them out
        notices_for(events.LOAN_REPAYMENT_RECORDED, flow())
    assert error.value.field == "data.actor_person_id"


@pytest.mark.parametrize("payload, field", [
    ({"document_title": "借条", "parties": PARTIES}, "data.flow_id"),
    ({"flow_id": "f1", "parties": PARTIES}, "data.document_title"),
    ({"flow_id": "f1", "document_title": "借条", "parties": []}, "data.parties"),
    ({"flow_id": "f1", "document_title": "借条", "parties": [{"person_id": "has space"}]}, "data.parties[0].person_id"),
    ({"flow_id": "x" * 65, "document_title": "借条", "parties": PARTIES}, "data.flow_id"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES, "repayment_date": "soon"}, "data.repayment_date"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES, "loan": "monthly"}, "data.loan"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES, "loan": {"method": "weekly"}}, "data.loan.method"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES,
      "loan": {"method": "monthly_interest", "interest_dates": "2027-02-15"}}, "data.loan.interest_dates"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES,
      "loan": {"method": "monthly_interest", "interest_dates": ["2027-02-15", "Feb"]}}, "data.loan.interest_dates[1]"),
    ({"flow_id": "f1", "document_title": "借条", "parties": PARTIES, "actor_person_id": "a b"}, "data.actor_person_id"),
])
def test_contract_breaches_name_the_field(payload, field):
    with pytest.raises(InvalidInput) as error:
        FlowEvent.from_payload(payload)
    assert error.value.field == field


def test_an_event_without_the_person_it_needs_is_refused():
    with pytest.raises(InvalidInput) as error:
        notices_for(events.FLOW_SENT, flow(initiator_person_id="p-lender"))
    assert error.value.field == "data.next_person_id"
    with pytest.raises(InvalidInput) as error:
        notices_for(events.FLOW_COMPLETED, FlowEvent.from_payload(
            {"flow_id": "f1", "document_title": "借条", "parties": PARTIES}))
    assert error.value.field == "data.link"


def test_a_party_not_registered_yet_is_reached_by_role():
    """Signing names an unregistered counterparty by role only; notify asks
    documents for the number the document gives that role."""
    unbound = [{"person_id": "p-lender", "role": "出借人"}, {"person_id": None, "role": "借款人"}]
    event = FlowEvent.from_payload({"flow_id": "f1", "document_id": "d1", "document_title": "借条", "parties": unbound,
                                    "link": "https://e.cn/f/f1", "initiator_person_id": "p-lender",
                                    "next_person_id": None, "next_role": "借款人"})
    (notice,) = notices_for(events.FLOW_SENT, event)
    assert notice.person_id == NAMED_PARTY + "借款人" and notice.template == "sign_request"
    expired = notices_for(events.FLOW_EXPIRED, event)
    assert [n.person_id for n in expired] == ["p-lender", NAMED_PARTY + "借款人"]
    with pytest.raises(InvalidInput) as error:  # a null person needs its role
        FlowEvent.from_payload({"flow_id": "f1", "document_title": "借条", "parties": [{"person_id": None}]})
    assert error.value.field == "data.parties[0].person_id"


def test_a_flow_cancelled_over_a_disputed_identity_tells_the_others_only_its_title():
    notices = notices_for(events.FLOW_CANCELLED, flow(disputed_person_id="p-lender", reason="identity_disputed"))
    assert [(n.person_id, n.template) for n in notices] == [("p-borrower", "flow_cancelled")]
    assert dict(notices[0].params) == {"document_title": "借条"} and dict(notices[0].names) == {}
    with pytest.raises(InvalidInput) as error:  # without it notify could not leave the disputed person out
        notices_for(events.FLOW_CANCELLED, flow())
    assert error.value.field == "data.disputed_person_id"
