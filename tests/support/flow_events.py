"""The data of a signing flow event as signing sends it, for tests that hand
events to a receiver: every member its type (services/common/events.py)
requires, those a test does not care about filled with plausible values.
Who acted, asked or declined is never made up: a test names them."""
from __future__ import annotations

from services.common import events

#: the state a flow is in after each event
STATE_AFTER = {
    events.FLOW_SENT: "waiting", events.PARTY_JOINED: "waiting", events.PARTY_SIGNED: "waiting",
    events.SIGN_REMINDER: "waiting", events.FLOW_COMPLETED: "completed", events.FLOW_DECLINED: "declined",
    events.FLOW_EXPIRED: "expired", events.VOID_REQUESTED: "void_requested", events.VOID_REJECTED: "completed",
    events.FLOW_VOIDED: "voided", events.FLOW_CANCELLED: "cancelled", events.FLOW_IDENTITY_DISPUTED: "completed",
    events.LOAN_REPAYMENT_RECORDED: "completed", events.LOAN_EXTENDED: "completed", events.LOAN_REPAID: "completed",
}

#: members some events' types require besides those of every flow event (persons aside)
FILLERS = {
    "certificate_serial": "5f3a9c", "willingness_method": "sms", "signed_pdf_sha256": "b" * 64,
    "assurance_level": "self_declared", "statement_digest": "c" * 64, "statement_signature": "c2lnbmF0dXJl",
    "dispute_reason": "identity_taken_back", "statement_flow_id": "statement-1", "statement_sha256": "d" * 64,
    "previous_repayment_date": None, "loan": events.InterestSchedule(method="lump_sum", interest_dates=()),
}


def flow_event(event_type: str, flow_id: str, parties: list[tuple[str | None, str]], **members) -> dict:
    """``parties`` as (person id or None, role), in signing order; the first initiated the flow."""
    payload_type = events.PAYLOADS[event_type]
    given = dict(
        dict(flow_id=flow_id, document_id=f"doc-{flow_id}", document_title="借条", document_sha256="a" * 64,
             parties=tuple(events.Party(person_id=person_id, role=role) for person_id, role in parties),
             next_person_id=None, next_role=None, actor_person_id=None, repayment_date=None, reason=None,
             state=STATE_AFTER[event_type], link=f"https://esign.example.cn/flows/{flow_id}"), **members)
    if "initiator_person_id" not in given:
        given["initiator_person_id"] = parties[0][0]
    filled = {name: FILLERS[name] for name, field in payload_type.model_fields.items()
              if field.is_required() and name not in given and name in FILLERS}
    return payload_type(**given, **filled).to_data()
