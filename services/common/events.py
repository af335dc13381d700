"""Names of the events each service emits (nameko events: exchange
``<source>.events``, routing key = event type).

Payloads name persons and documents by id; they never carry ID numbers,
phone numbers, faces, codes or keys.
"""
from __future__ import annotations

# identity
PERSON_VERIFIED = "person_verified"
CERTIFICATE_ISSUED = "certificate_issued"
CERTIFICATE_REVOKED = "certificate_revoked"
OTP_REQUESTED = "otp_requested"
#: a higher-assurance proof took an ID number back from the account that held it: that
#: account is frozen and its certificates revoked; signing cancels or marks its flows
IDENTITY_DISPUTED = "identity_disputed"

# documents
DOCUMENT_CREATED = "document_created"
DOCUMENT_UPDATED = "document_updated"
DOCUMENT_LOCKED = "document_locked"

# signing
FLOW_SENT = "flow_sent"
PARTY_JOINED = "party_joined"  # a named counterparty registered after the flow started, and took their place
PARTY_SIGNED = "party_signed"
FLOW_COMPLETED = "flow_completed"
FLOW_DECLINED = "flow_declined"
FLOW_EXPIRED = "flow_expired"
VOID_REQUESTED = "void_requested"
VOID_REJECTED = "void_rejected"
FLOW_VOIDED = "flow_voided"
FLOW_CANCELLED = "flow_cancelled"  # an unfinished flow ended because a party's identity was disputed
FLOW_IDENTITY_DISPUTED = "flow_identity_disputed"  # an ended flow marked: a party's identity was disputed
#: 催签: a party asked that the one whose turn it is be reminded to sign (at most once a day a flow)
SIGN_REMINDER = "sign_reminder"
# the life of a signed IOU (services/signing/loan.py); each names the IOU's flow (flow_id) and the
# statement's own signed flow (statement_flow_id: a 还款确认书 or a 借款展期协议)
#: the lender confirmed a repayment; principal is still outstanding
LOAN_REPAYMENT_RECORDED = "loan_repayment_recorded"
#: the parties agreed a new repayment date (repayment_date; previous_repayment_date) and perhaps rate
LOAN_EXTENDED = "loan_extended"
#: the lender confirmed the repayment that settled the loan: its reminders end
LOAN_REPAID = "loan_repaid"

# notify
SMS_SENT = "sms_sent"
SMS_FAILED = "sms_failed"
SMS_GIVEN_UP = "sms_given_up"

KNOWN_EVENTS: dict[str, tuple[str, ...]] = {
    "identity": (PERSON_VERIFIED, CERTIFICATE_ISSUED, CERTIFICATE_REVOKED, OTP_REQUESTED, IDENTITY_DISPUTED),
    "documents": (DOCUMENT_CREATED, DOCUMENT_UPDATED, DOCUMENT_LOCKED),
    "signing": (
        FLOW_SENT, PARTY_JOINED, PARTY_SIGNED, FLOW_COMPLETED, FLOW_DECLINED, FLOW_EXPIRED,
        VOID_REQUESTED, VOID_REJECTED, FLOW_VOIDED, FLOW_CANCELLED, FLOW_IDENTITY_DISPUTED, SIGN_REMINDER,
        LOAN_REPAYMENT_RECORDED, LOAN_EXTENDED, LOAN_REPAID,
    ),
    "notify": (SMS_SENT, SMS_FAILED, SMS_GIVEN_UP),
}


def register_events(service: str, *event_types: str) -> None:
    """Let a service (or a test service) declare further events it emits."""
    KNOWN_EVENTS[service] = tuple(dict.fromkeys(KNOWN_EVENTS.get(service, ()) + event_types))
