"""Which SMS each signing event asks for, and notify's own rules on its payload."""
import datetime as dt

import pytest

from services.common import events
from services.common.errors import InvalidInput
from services.notify.notices import NAMED_PARTY, FlowFacts, notices_for
from services.notify.reminders import LoanTerms, RepaymentMethod
from tests.support.flow_events import flow_event

PARTIES = [("p-lender", "lender"), ("p-borrower", "borrower")]


def data(event_type: str, flow_id: str = "f1", parties=PARTIES, **members) -> dict:
    return flow_event(event_type, flow_id, parties,
                      **{"document_id": "d1", "document_title": " 借条 ", "link": "https://e.cn/f/f1", **members})


def facts(event_type: str, **members) -> FlowFacts:
    return FlowFacts.of(events.parse(event_type, data(event_type, **members)))


def notices(event_type: str, **members):
    return notices_for(event_type, facts(event_type, **members))


def test_flow_sent_asks_the_next_party_naming_the_initiator():
    (notice,) = notices(events.FLOW_SENT, next_person_id="p-borrower")
    assert (notice.person_id, notice.template) == ("p-borrower", "sign_request")
    assert dict(notice.params) == {"document_title": "借条", "link": "https://e.cn/f/f1"}
    assert dict(notice.names) == {"initiator": "p-lender"}
    assert notice.persons == ("p-borrower", "p-lender")


def test_a_sign_reminder_asks_the_next_party_naming_who_reminded():
    (notice,) = notices(events.SIGN_REMINDER, next_person_id="p-borrower", requester_person_id="p-lender")
    assert (notice.person_id, notice.template) == ("p-borrower", "sign_request")
    assert dict(notice.names) == {"initiator": "p-lender"}
    with pytest.raises(InvalidInput) as error:  # who asked is part of the contract
        events.parse(events.SIGN_REMINDER, data(events.FLOW_SENT, next_person_id="p-borrower"))
    assert (error.value.field, error.value.rule) == ("data.requester_person_id", "missing")


def test_the_initiator_is_not_asked_to_sign_what_they_just_sent():
    """The initiator signs first, in the session that sent the document: no sign_request to them
    (the next party, once they have signed, is asked as before)."""
    assert notices(events.FLOW_SENT, next_person_id="p-lender") == ()


@pytest.mark.parametrize("event_type, template, members, recipients", [
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
def test_each_event_reaches_the_parties_it_concerns(event_type, template, members, recipients):
    sent = notices(event_type, **members)
    assert [n.person_id for n in sent] == recipients
    assert {n.template for n in sent} == {template}


def test_repayment_date_is_read_as_a_date():
    assert facts(events.FLOW_COMPLETED, repayment_date="2026-03-01").repayment_date == dt.date(2026, 3, 1)


def test_the_loan_terms_are_read_and_a_statement_flow_has_none():
    monthly = facts(events.FLOW_COMPLETED, repayment_date="2027-06-15", loan=events.InterestSchedule(
        method="monthly_interest", interest_dates=("2027-02-15", "2027-03-15")))
    assert monthly.loan == LoanTerms(RepaymentMethod.MONTHLY_INTEREST, (dt.date(2027, 2, 15), dt.date(2027, 3, 15)))
    lump_sum = events.InterestSchedule(method="lump_sum", interest_dates=())
    assert facts(events.LOAN_EXTENDED, repayment_date="2027-06-15", loan=lump_sum).loan == \
        LoanTerms(RepaymentMethod.LUMP_SUM)
    statement = facts(events.FLOW_COMPLETED, repayment_date=None)
    assert (statement.repayment_date, statement.loan) == (None, None)
    assert facts(events.FLOW_EXPIRED).loan is None  # its type has no loan


def test_the_loan_notices_carry_the_new_date_and_the_link():
    extended = notices(events.LOAN_EXTENDED, repayment_date="2027-09-15", previous_repayment_date="2027-06-15",
                       statement_flow_id="f2")
    assert {tuple(n.params.items()) for n in extended} == {(("document_title", "借条"), ("due_date", "2027-09-15"))}
    (recorded,) = notices(events.LOAN_REPAYMENT_RECORDED, actor_person_id="p-lender")
    assert dict(recorded.params) == {"document_title": "借条", "link": "https://e.cn/f/f1"}
    with pytest.raises(InvalidInput) as error:  # without the new date there is nothing to tell
        notices(events.LOAN_EXTENDED)
    assert error.value.field == "data.repayment_date"
    with pytest.raises(InvalidInput) as error:  # without the lender notify could not leave them out
        notices(events.LOAN_REPAYMENT_RECORDED)
    assert error.value.field == "data.actor_person_id"


@pytest.mark.parametrize("members, field", [
    ({"flow_id": "x" * 65}, "data.flow_id"),
    ({"document_title": "  "}, "data.document_title"),
    ({"parties": [], "initiator_person_id": "p-lender"}, "data.parties"),
    ({"parties": [("has space", "lender")], "initiator_person_id": "p-lender"}, "data.parties.0.person_id"),
    ({"repayment_date": "soon"}, "data.repayment_date"),
    ({"actor_person_id": "a b"}, "data.actor_person_id"),
    ({"loan": events.InterestSchedule(method="weekly", interest_dates=())}, "data.loan.method"),
    ({"loan": events.InterestSchedule(method="monthly_interest", interest_dates=("2027-02-15", "Feb"))},
     "data.loan.interest_dates.1"),
])
def test_what_breaks_notifys_own_rules_names_the_member(members, field):
    with pytest.raises(InvalidInput) as error:
        facts(events.FLOW_COMPLETED, **members)
    assert error.value.field == field


def test_an_event_without_the_person_it_needs_is_refused():
    with pytest.raises(InvalidInput) as error:
        notices(events.FLOW_SENT)
    assert error.value.field == "data.next_person_id"


def test_a_party_not_registered_yet_is_reached_by_role():
    """Signing names an unregistered counterparty by role only; notify asks
    documents for the number the document gives that role."""
    unbound = [("p-lender", "出借人"), (None, "借款人")]
    sent = events.parse(events.FLOW_SENT, flow_event(events.FLOW_SENT, "f1", unbound, next_role="借款人"))
    (notice,) = notices_for(events.FLOW_SENT, FlowFacts.of(sent))
    assert notice.person_id == NAMED_PARTY + "借款人" and notice.template == "sign_request"
    expired = events.parse(events.FLOW_EXPIRED, flow_event(events.FLOW_EXPIRED, "f1", unbound))
    assert [n.person_id for n in notices_for(events.FLOW_EXPIRED, FlowFacts.of(expired))] == \
        ["p-lender", NAMED_PARTY + "借款人"]
    with pytest.raises(InvalidInput) as error:  # a null person needs its role
        FlowFacts.of(events.parse(events.FLOW_EXPIRED, flow_event(events.FLOW_EXPIRED, "f1", [("p-lender", "出借人"),
                                                                                            (None, "")])))
    assert error.value.field == "data.parties.1.person_id"


def test_a_flow_cancelled_over_a_disputed_identity_tells_the_others_only_its_title():
    sent = notices(events.FLOW_CANCELLED, disputed_person_id="p-lender", reason="identity_disputed")
    assert [(n.person_id, n.template) for n in sent] == [("p-borrower", "flow_cancelled")]
    assert dict(sent[0].params) == {"document_title": "借条"} and dict(sent[0].names) == {}
