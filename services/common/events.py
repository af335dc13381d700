"""The events each service emits (nameko events: exchange ``<source>.events``,
routing key = event type) and the payload each carries.

An event's ``data`` is one payload type of this module (:data:`PAYLOADS`):
the sender builds it and hands it to
:meth:`~services.common.outbox.UnitOfWork.emit`, which refuses any other type
(:class:`PayloadMismatch`), so a sender cannot send a member its event does
not declare; every receiver reads ``data`` back with :func:`parse`, which
refuses an undeclared member or one of the wrong type with
``InvalidInput("data.<member>", rule)``. The types describe the wire: ids,
hashes, words, and dates as ``YYYY-MM-DD`` text; what a receiver makes of
them (a date, an enum) is the receiver's business.

A payload sends every member it declares, null included. A member with a
default was left out by the senders before these types (the flows' signature
members, ``loan``, an SMS's ``error``): an event still in an outbox from
then parses the same.

Payloads name persons and documents by id; they never carry ID numbers,
phone numbers, faces, codes or keys.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.errors import InvalidInput

# identity
PERSON_VERIFIED = "person_verified"
CERTIFICATE_ISSUED = "certificate_issued"
CERTIFICATE_REVOKED = "certificate_revoked"
OTP_REQUESTED = "otp_requested"
#: a higher-assurance proof took an ID number back from the account that held it: that
#: account is frozen and its certificates revoked; signing cancels or marks its flows
IDENTITY_DISPUTED = "identity_disputed"
#: some or all of a person's sessions ended (logout, ended from another device, account frozen): the
#: gateway forgets the sessions it remembers for that person (services/gateway/session_cache.py)
SESSIONS_ENDED = "sessions_ended"

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
    "identity": (PERSON_VERIFIED, CERTIFICATE_ISSUED, CERTIFICATE_REVOKED, OTP_REQUESTED, IDENTITY_DISPUTED,
                 SESSIONS_ENDED),
    "documents": (DOCUMENT_CREATED, DOCUMENT_UPDATED, DOCUMENT_LOCKED),
    "signing": (
        FLOW_SENT, PARTY_JOINED, PARTY_SIGNED, FLOW_COMPLETED, FLOW_DECLINED, FLOW_EXPIRED,
        VOID_REQUESTED, VOID_REJECTED, FLOW_VOIDED, FLOW_CANCELLED, FLOW_IDENTITY_DISPUTED, SIGN_REMINDER,
        LOAN_REPAYMENT_RECORDED, LOAN_EXTENDED, LOAN_REPAID,
    ),
    "notify": (SMS_SENT, SMS_FAILED, SMS_GIVEN_UP),
}


class PayloadMismatch(TypeError):
    """An event was emitted with data that is not the payload type its event declares."""


class EventPayload(BaseModel):
    """The ``data`` of an event: frozen, refusing members it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_data(self) -> dict[str, Any]:
        """The event's ``data`` as it travels: JSON-able, every member, null included."""
        return self.model_dump(mode="json")


# -- identity ------------------------------------------------------------------------------------
class PersonVerified(EventPayload):
    person_id: str
    assurance_level: str


class CertificateIssued(EventPayload):
    person_id: str
    serial: str


class CertificateRevoked(EventPayload):
    serial: str
    person_id: str
    reason: str


class OtpRequested(EventPayload):
    """The phone and code are not in it: notify asks identity for them (``otp_message``)."""

    challenge_id: str
    purpose: str


class IdentityDisputed(EventPayload):
    """``person_id`` is the frozen account, ``replaced_by_person_id`` the one that took its ID number back."""

    person_id: str
    replaced_by_person_id: str
    revoked_serials: tuple[str, ...]
    reason: str


class SessionsEnded(EventPayload):
    """Sessions of ``person_id`` ended: ``reason`` ``logout``, ``revoked_by_person`` (ended from
    another of their devices) or ``account_frozen``. Which ones is not said: a gateway forgets all
    it remembers for the person and asks identity again."""

    person_id: str
    reason: str


# -- documents -----------------------------------------------------------------------------------
class DocumentCreated(EventPayload):
    document_id: str
    template_id: str


class DocumentUpdated(EventPayload):
    document_id: str
    change: Literal["values", "attachment", "rendered", "unlocked"]


class DocumentLocked(EventPayload):
    """The document is read-only while flow ``flow_id`` signs it."""

    document_id: str
    flow_id: str


# -- signing -------------------------------------------------------------------------------------
class Party(EventPayload):
    """A party of a flow, in signing order; ``person_id`` null: named by the document
    but not registered yet (notify reaches them by ``role``)."""

    person_id: str | None
    role: str


class InterestSchedule(EventPayload):
    """How a signed IOU's interest falls due, for notify's reminders: ``method``
    (``lump_sum``, ``monthly_interest``) and the days interest is due."""

    method: str
    interest_dates: tuple[str, ...]


class FlowEvent(EventPayload):
    """What every flow event says about its flow, and all that ``party_joined``,
    ``flow_expired`` and ``void_rejected`` say. A loan event (``loan_*``) names
    the IOU's flow; ``actor_person_id`` is who acted (null: the platform, as
    when a flow expires); ``next_person_id`` and ``next_role`` the party whose
    turn it is, if the flow waits for one."""

    flow_id: str
    document_id: str
    document_title: str
    document_sha256: str
    parties: tuple[Party, ...]
    initiator_person_id: str
    next_person_id: str | None
    next_role: str | None
    actor_person_id: str | None
    repayment_date: str | None  # the IOU's; null for other documents and for a statement's own flow
    reason: str | None  # why it was declined, cancelled or a void asked for
    state: str
    link: str  # the flow's page


class FlowSent(FlowEvent):
    """The flow waits for its next party: sent, or moved on by a signature,
    which it then names as :class:`SignatureEvent` does."""

    certificate_serial: str | None = None
    willingness_method: str | None = None
    signed_pdf_sha256: str | None = None
    assurance_level: str | None = None


class SignatureEvent(FlowEvent):
    """``party_signed`` and the ``flow_completed`` of the last signature: the
    signature's certificate, how willingness was proven (``sms``, ``face``),
    the PDF it made and the assurance level the certificate states. ``loan``:
    the last signature of an IOU (the loan starts)."""

    certificate_serial: str | None
    willingness_method: str
    signed_pdf_sha256: str
    assurance_level: str
    loan: InterestSchedule | None = None


class SignReminder(FlowEvent):
    """催签: ``requester_person_id`` asked that the next party be reminded."""

    requester_person_id: str


class VoidConsent(FlowEvent):
    """``flow_voided``, and what :class:`VoidRequested` adds to: the void
    statement the actor signed (its digest and signature), with the
    certificate and willingness method."""

    willingness_method: str
    statement_digest: str
    statement_signature: str
    certificate_serial: str | None


class VoidRequested(VoidConsent):
    requester_person_id: str


class FlowDeclined(FlowEvent):
    decliner_person_id: str


class FlowDisputed(FlowEvent):
    """``flow_cancelled`` and ``flow_identity_disputed``: whose identity was disputed, and why (a listed word)."""

    disputed_person_id: str
    dispute_reason: str


class LoanStatement(FlowEvent):
    """A statement about a signed IOU took effect (``loan_repayment_recorded``,
    ``loan_repaid``): the statement's own flow and its signed PDF."""

    statement_flow_id: str
    statement_sha256: str


class LoanExtended(LoanStatement):
    """The IOU's new ``repayment_date`` in force, the one it replaced, and when its interest now falls due."""

    previous_repayment_date: str | None
    loan: InterestSchedule


# -- notify --------------------------------------------------------------------------------------
class SmsOutcome(EventPayload):
    """How an SMS ended (``sms_sent``, ``sms_failed``, ``sms_given_up``) and what it
    was for: ``ref_type`` ``otp`` with the challenge id, ``flow`` with the flow id,
    or ``rpc``; ``error`` the vendor's or notify's code when it was not sent."""

    message_id: str
    template: str
    ref_type: str | None
    ref_id: str | None
    error: str | None = None


#: the payload type of each event type
PAYLOADS: dict[str, type[EventPayload]] = {
    PERSON_VERIFIED: PersonVerified, CERTIFICATE_ISSUED: CertificateIssued, CERTIFICATE_REVOKED: CertificateRevoked,
    OTP_REQUESTED: OtpRequested, IDENTITY_DISPUTED: IdentityDisputed, SESSIONS_ENDED: SessionsEnded,
    DOCUMENT_CREATED: DocumentCreated, DOCUMENT_UPDATED: DocumentUpdated, DOCUMENT_LOCKED: DocumentLocked,
    FLOW_SENT: FlowSent, PARTY_JOINED: FlowEvent, PARTY_SIGNED: SignatureEvent, FLOW_COMPLETED: SignatureEvent,
    FLOW_DECLINED: FlowDeclined, FLOW_EXPIRED: FlowEvent, VOID_REQUESTED: VoidRequested, VOID_REJECTED: FlowEvent,
    FLOW_VOIDED: VoidConsent, FLOW_CANCELLED: FlowDisputed, FLOW_IDENTITY_DISPUTED: FlowDisputed,
    SIGN_REMINDER: SignReminder, LOAN_REPAYMENT_RECORDED: LoanStatement, LOAN_EXTENDED: LoanExtended,
    LOAN_REPAID: LoanStatement,
    SMS_SENT: SmsOutcome, SMS_FAILED: SmsOutcome, SMS_GIVEN_UP: SmsOutcome,
}


def data_of(event_type: str, payload: EventPayload) -> dict[str, Any]:
    """The ``data`` of an ``event_type`` event: ``payload``, which must be of the
    type the event declares (a subclass would carry members the event does not)."""
    declared = PAYLOADS.get(event_type)
    if declared is None or type(payload) is not declared:
        expected = declared.__name__ if declared else "no payload (the event has no payload type)"
        raise PayloadMismatch(f"{event_type}: expected {expected}, found {type(payload).__name__}")
    return payload.to_data()


def parse(event_type: str, data: Any) -> EventPayload:
    """An ``event_type`` event's ``data`` as its payload type; ``InvalidInput``
    naming ``data.<member>`` when it is not one."""
    try:
        return PAYLOADS[event_type].model_validate(data)
    except ValidationError as exc:
        raise InvalidInput.first_of(exc.errors(), "data") from None


def register_events(service: str, payloads: Mapping[str, type[EventPayload]]) -> None:
    """Let a service (or a test service) declare further events it emits, with their payload types."""
    KNOWN_EVENTS[service] = tuple(dict.fromkeys(KNOWN_EVENTS.get(service, ()) + tuple(payloads)))
    PAYLOADS.update(payloads)
