"""The signing flow state machine: every allowed and every refused transition."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.errors import Conflict, Forbidden, InvalidInput
from services.signing import flow as F

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
SHA = "a" * 64


def parties(n=2):
    return [F.Party(f"p{i}", f"role{i}", f"sig_{i}") for i in range(n)]


def draft(n=2, hours=24):
    return F.new_flow("f1", "d1", SHA, parties(n), NOW + timedelta(hours=hours), NOW)


def completed(n=2):
    flow = F.send(draft(n), NOW).flow
    for i in range(n):
        flow = F.sign(flow, f"p{i}", NOW).flow
    return flow


def test_two_parties_sign_in_order_to_completion():
    t = F.send(draft(), NOW)
    assert t.flow.state is F.FlowState.WAITING and t.flow.current_party.person_id == "p0"
    assert t.events == (events.FLOW_SENT,)
    t = F.sign(t.flow, "p0", NOW)
    assert t.events == (events.PARTY_SIGNED, events.FLOW_SENT)
    assert t.flow.current_party.person_id == "p1" and t.flow.parties[0].signed_at == NOW
    t = F.sign(t.flow, "p1", NOW + timedelta(minutes=5))
    assert t.flow.state is F.FlowState.COMPLETED and t.events == (events.PARTY_SIGNED, events.FLOW_COMPLETED)
    assert t.flow.ended_at == NOW + timedelta(minutes=5)


def test_n_parties_are_possible():
    assert completed(4).state is F.FlowState.COMPLETED


@pytest.mark.parametrize("person,reason", [("p1", "not_your_turn"), ("stranger", "not_a_party")])
def test_only_the_party_whose_turn_it_is_may_sign(person, reason):
    flow = F.send(draft(), NOW).flow
    with pytest.raises(Forbidden) as error:
        F.sign(flow, person, NOW)
    assert error.value.reason == reason


def test_signing_twice_is_refused():
    flow = F.sign(F.send(draft(), NOW).flow, "p0", NOW).flow
    with pytest.raises(Forbidden):
        F.sign(flow, "p0", NOW)


def test_signing_a_draft_or_after_expiry_is_refused():
    with pytest.raises(Conflict) as early:
        F.sign(draft(), "p0", NOW)
    assert (early.value.reason, early.value.message) == ("flow_draft", "expected waiting")
    flow = F.send(draft(hours=1), NOW).flow
    with pytest.raises(Conflict) as error:
        F.sign(flow, "p0", NOW + timedelta(hours=2))
    assert error.value.reason == "flow_expired"


def test_decline_by_an_unsigned_party_needs_a_reason():
    flow = F.sign(F.send(draft(), NOW).flow, "p0", NOW).flow
    with pytest.raises(Forbidden) as error:
        F.decline(flow, "p0", "changed my mind", NOW)
    assert error.value.reason == "already_signed"
    with pytest.raises(InvalidInput) as missing:
        F.decline(flow, "p1", "  ", NOW)
    assert (missing.value.field, missing.value.rule) == ("reason", "required")
    with pytest.raises(InvalidInput) as long_reason:
        F.decline(flow, "p1", "字" * 201, NOW)
    assert long_reason.value.rule == "max_chars"
    t = F.decline(flow, "p1", "金额不对", NOW)
    assert t.flow.state is F.FlowState.DECLINED and t.flow.reason == "金额不对"
    assert t.events == (events.FLOW_DECLINED,)


def test_expiry_only_after_the_deadline():
    flow = F.send(draft(hours=1), NOW).flow
    with pytest.raises(Conflict):
        F.expire(flow, NOW)
    t = F.expire(flow, NOW + timedelta(hours=1))
    assert t.flow.state is F.FlowState.EXPIRED and t.events == (events.FLOW_EXPIRED,)


@pytest.mark.parametrize("final", ["declined", "expired", "voided", "cancelled"])
def test_no_transition_from_a_final_state(final):
    flow = F.send(draft(hours=1), NOW).flow
    if final == "declined":
        flow = F.decline(flow, "p0", "no", NOW).flow
    elif final == "expired":
        flow = F.expire(flow, NOW + timedelta(hours=2)).flow
    elif final == "cancelled":
        flow = F.cancel(flow, F.IDENTITY_DISPUTED, NOW).flow
    else:
        flow = F.request_void(completed(), "p0", "还清了").flow
        flow = F.confirm_void(flow, "p1", NOW).flow
    assert flow.final
    for attempt in (lambda: F.send(flow, NOW), lambda: F.sign(flow, "p0", NOW),
                    lambda: F.decline(flow, "p1", "x", NOW), lambda: F.expire(flow, NOW + timedelta(days=9)),
                    lambda: F.request_void(flow, "p0", "x"), lambda: F.confirm_void(flow, "p1", NOW),
                    lambda: F.reject_void(flow, "p1"), lambda: F.cancel(flow, "x", NOW)):
        with pytest.raises(Conflict):
            attempt()


def test_void_by_mutual_consent():
    t = F.request_void(completed(), "p1", "借款已还清")
    assert t.flow.state is F.FlowState.VOID_REQUESTED and t.events == (events.VOID_REQUESTED,)
    with pytest.raises(Forbidden) as own:
        F.confirm_void(t.flow, "p1", NOW)
    assert own.value.reason == "void_requester_cannot_confirm"
    with pytest.raises(Forbidden):
        F.confirm_void(t.flow, "stranger", NOW)
    done = F.confirm_void(t.flow, "p0", NOW)
    assert done.flow.state is F.FlowState.VOIDED and done.events == (events.FLOW_VOIDED,)


def test_void_rejected_goes_back_to_completed():
    requested = F.request_void(completed(), "p0", "想作废").flow
    t = F.reject_void(requested, "p1")
    assert t.flow.state is F.FlowState.COMPLETED and t.flow.void_requested_by is None
    assert t.events == (events.VOID_REJECTED,)


def test_void_with_three_parties_needs_every_other_party():
    requested = F.request_void(completed(3), "p0", "作废").flow
    partial = F.confirm_void(requested, "p1", NOW)
    assert partial.flow.state is F.FlowState.VOID_REQUESTED and partial.events == ()
    with pytest.raises(Conflict):
        F.confirm_void(partial.flow, "p1", NOW)
    assert F.confirm_void(partial.flow, "p2", NOW).flow.state is F.FlowState.VOIDED


def test_void_only_from_completed_and_only_by_a_party():
    with pytest.raises(Conflict):
        F.request_void(F.send(draft(), NOW).flow, "p0", "x")
    with pytest.raises(Forbidden):
        F.request_void(completed(), "stranger", "x")


@pytest.mark.parametrize("kwargs,field,rule", [
    (dict(parties=parties(1)), "parties", "min_items"),
    (dict(parties=[F.Party("p", "a", "s1"), F.Party("p", "b", "s2")]), "parties", "unique_person"),
    (dict(parties=[F.Party("a", "a", "s"), F.Party("b", "b", "s")]), "parties", "unique_signature_field"),
    (dict(document_sha256="xyz"), "document_sha256", "sha256_hex"),
    (dict(expires_at=NOW), "expires_at", "future"),
])
def test_new_flow_rules(kwargs, field, rule):
    args = dict(flow_id="f", document_id="d", document_sha256=SHA, parties=parties(),
                expires_at=NOW + timedelta(days=1), now=NOW)
    args.update(kwargs)
    with pytest.raises(InvalidInput) as error:
        F.new_flow(**args)
    assert (error.value.field, error.value.rule) == (field, rule)


def test_a_named_party_who_registers_later_joins_then_signs():
    unbound = [F.Party("p0", "出借人", "sig_0"), F.Party(None, "借款人", "sig_1")]
    flow = F.send(F.new_flow("f1", "d1", SHA, unbound, NOW + timedelta(hours=1), NOW), NOW).flow
    flow = F.sign(flow, "p0", NOW).flow
    assert flow.current_party.person_id is None
    with pytest.raises(Forbidden):  # nobody signs an open place
        F.sign(flow, "p1", NOW)
    joined = F.join(flow, 1, "p1", NOW)
    assert joined.events == (events.PARTY_JOINED,) and joined.flow.parties[1].person_id == "p1"
    with pytest.raises(Conflict) as taken:
        F.join(joined.flow, 1, "p2", NOW)
    assert taken.value.reason == "party_taken"
    with pytest.raises(Conflict) as twice:
        F.join(joined.flow, 1, "p0", NOW)
    assert twice.value.reason == "already_a_party"
    with pytest.raises(Conflict):  # not after expiry
        F.join(flow, 1, "p1", NOW + timedelta(hours=2))
    assert F.sign(joined.flow, "p1", NOW).flow.state is F.FlowState.COMPLETED


def test_the_initiator_is_always_a_registered_person():
    with pytest.raises(InvalidInput) as error:
        F.new_flow("f1", "d1", SHA, [F.Party(None, "a", "sig_0"), F.Party("p1", "b", "sig_1")],
                   NOW + timedelta(hours=1), NOW)
    assert (error.value.field, error.value.rule) == ("parties.0.person_id", "required")


# --- cancelling, and identity disputes ----------------------------------------------


@pytest.mark.parametrize("start", ["draft", "waiting", "waiting_after_one_signature"])
def test_an_unfinished_flow_is_cancelled(start):
    flow = draft()
    if start != "draft":
        flow = F.send(flow, NOW).flow
    if start == "waiting_after_one_signature":
        flow = F.sign(flow, "p0", NOW).flow
    t = F.cancel(flow, F.IDENTITY_DISPUTED, NOW + timedelta(minutes=1))
    assert t.events == (events.FLOW_CANCELLED,)
    assert t.flow.state is F.FlowState.CANCELLED and t.flow.final
    assert t.flow.reason == "identity_disputed" and t.flow.ended_at == NOW + timedelta(minutes=1)
    assert t.flow.current_party is None


def test_cancel_needs_a_reason_and_an_unfinished_flow():
    with pytest.raises(InvalidInput) as missing:
        F.cancel(F.send(draft(), NOW).flow, " ", NOW)
    assert (missing.value.field, missing.value.rule) == ("reason", "required")
    for ended in (completed(), F.request_void(completed(), "p0", "还清了").flow):
        with pytest.raises(Conflict) as error:
            F.cancel(ended, F.IDENTITY_DISPUTED, NOW)
        assert (error.value.reason, error.value.message) == (f"flow_{ended.state.value}", "expected draft or waiting")


def test_a_dispute_cancels_a_flow_still_being_signed():
    flow = F.sign(F.send(draft(), NOW).flow, "p0", NOW).flow
    t = F.dispute_identity(flow, "p0", "identity_taken_over", NOW)
    assert t.events == (events.FLOW_CANCELLED,)
    assert t.flow.state is F.FlowState.CANCELLED and t.flow.reason == "identity_disputed"
    assert (t.flow.disputed_person_id, t.flow.disputed_at, t.flow.dispute_reason) == ("p0", NOW, "identity_taken_over")


@pytest.mark.parametrize("ended", ["completed", "void_requested", "voided", "declined", "expired"])
def test_a_dispute_marks_an_ended_flow_and_keeps_its_state(ended):
    if ended == "completed":
        flow = completed()
    elif ended == "void_requested":
        flow = F.request_void(completed(), "p1", "还清了").flow
    elif ended == "voided":
        flow = F.confirm_void(F.request_void(completed(), "p1", "还清了").flow, "p0", NOW).flow
    elif ended == "declined":
        flow = F.decline(F.send(draft(), NOW).flow, "p1", "金额不对", NOW).flow
    else:
        flow = F.expire(F.send(draft(hours=1), NOW).flow, NOW + timedelta(hours=1)).flow
    later = NOW + timedelta(days=3)
    t = F.dispute_identity(flow, "p1", "identity_taken_over", later)
    assert t.events == (events.FLOW_IDENTITY_DISPUTED,)
    assert t.flow.state is flow.state and t.flow.reason == flow.reason and t.flow.ended_at == flow.ended_at
    assert ((t.flow.disputed_person_id, t.flow.disputed_at, t.flow.dispute_reason)
            == ("p1", later, "identity_taken_over"))


def test_the_first_dispute_stays_on_record():
    marked = F.dispute_identity(completed(), "p0", "identity_taken_over", NOW).flow
    again = F.dispute_identity(marked, "p1", "identity_taken_over", NOW + timedelta(days=1))
    assert again.events == () and again.flow == marked
    cancelled = F.dispute_identity(F.send(draft(), NOW).flow, "p1", "identity_taken_over", NOW).flow
    assert F.dispute_identity(cancelled, "p1", "identity_taken_over", NOW).events == ()
    assert F.dispute_identity(cancelled, "p0", "identity_taken_over", NOW).flow == cancelled


def test_a_dispute_of_someone_else_is_refused():
    with pytest.raises(Forbidden) as error:
        F.dispute_identity(completed(), "stranger", "identity_taken_over", NOW)
    assert error.value.reason == "not_a_party"


# --- identity assurance ---------------------------------------------------------


def test_a_flow_requires_the_platform_minimum_or_more():
    minimum = AssuranceLevel.AUTHORITY_FACE
    assert F.required_assurance(None, minimum) is AssuranceLevel.AUTHORITY_FACE
    assert F.required_assurance("authority_face_liveness", minimum) is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    assert F.required_assurance("authority_face", minimum) is AssuranceLevel.AUTHORITY_FACE


@pytest.mark.parametrize("requested, rule", [
    ("authority_two_element", "below_platform_minimum"),
    ("self_declared", "below_platform_minimum"),
    ("passport", "allowed_values"),
    ("", "allowed_values"),
])
def test_a_weaker_or_unknown_level_is_refused(requested, rule):
    with pytest.raises(InvalidInput) as error:
        F.required_assurance(requested, AssuranceLevel.AUTHORITY_FACE)
    assert (error.value.field, error.value.rule) == ("required_assurance", rule)


def test_a_party_signs_only_with_a_certificate_of_the_flows_level():
    flow = F.new_flow("f1", "d1", SHA, parties(), NOW + timedelta(hours=1), NOW, AssuranceLevel.AUTHORITY_FACE)
    assert flow.required_assurance is AssuranceLevel.AUTHORITY_FACE
    assert F.check_assurance(flow, AssuranceLevel.AUTHORITY_FACE) is AssuranceLevel.AUTHORITY_FACE
    assert F.check_assurance(flow, AssuranceLevel.AUTHORITY_FACE_LIVENESS) is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    for weaker in (AssuranceLevel.AUTHORITY_TWO_ELEMENT, AssuranceLevel.SELF_DECLARED, None):
        with pytest.raises(Forbidden) as error:
            F.check_assurance(flow, weaker)
        assert error.value.reason == "assurance_too_low"


def test_a_certificate_stating_no_level_counts_as_self_declared():
    assert draft().required_assurance is AssuranceLevel.SELF_DECLARED  # flows from before levels
    assert F.check_assurance(draft(), None) is AssuranceLevel.SELF_DECLARED
