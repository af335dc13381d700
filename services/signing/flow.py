"""The signing flow: who signs a document, in what order, and what may happen
to it afterwards. A pure state machine; the service persists it.

States::

    draft ──send──► waiting(k) ──sign by party k──► waiting(k+1) … ──► completed
      │               │ │ │                                               │
      │               │ │ └──decline by an unsigned party──► declined      request_void
      │               │ └──expiry passed──► expired                        ▼
      └───────────────┴──a party's identity disputed──► cancelled
                                                   completed ◄──reject── void_requested
                                                                            │ confirm by
                                                                            ▼ another party
                                                                          voided

``declined``, ``expired``, ``voided`` and ``cancelled`` are final. Every
transition is checked here (only the party whose turn it is may sign; only a
party may decline, request or confirm a void; the requester cannot confirm
their own request; a party signs or consents to a void only with a
certificate of at least the flow's identity assurance level) and returns a
new :class:`Flow` plus the events it causes, so the caller can store both in
one transaction: a failure midway leaves the flow where it was.

Identity disputes (identity's ``identity_disputed``: an authority-proofed
person took an ID number back from the account that held it) end or mark
every flow of the frozen account (:func:`dispute_identity`): a flow still
being signed (draft, waiting) is cancelled, since nobody can tell who signed
so far; a flow that has ended, or that is completed and waiting on a void
request, keeps its state (its signatures were made and stay evidence) and is
marked disputed, once, with a ``flow_identity_disputed`` event.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum

from services.common import events
from services.common.assurance import AssuranceLevel, parse_level
from services.common.errors import Conflict, Forbidden, InvalidInput
from services.common.reasons import Reason


class FlowState(str, Enum):
    DRAFT = "draft"
    WAITING = "waiting"
    COMPLETED = "completed"
    DECLINED = "declined"
    EXPIRED = "expired"
    VOID_REQUESTED = "void_requested"
    VOIDED = "voided"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({FlowState.DECLINED, FlowState.EXPIRED, FlowState.VOIDED, FlowState.CANCELLED})
#: states in which a flow is still being signed: a disputed identity cancels these
UNFINISHED_STATES = frozenset({FlowState.DRAFT, FlowState.WAITING})
MAX_REASON_CHARS = 200
#: the reason a flow cancelled by an identity dispute carries
IDENTITY_DISPUTED = "identity_disputed"


@dataclass(frozen=True)
class Party:
    person_id: str | None  # None: the person the document names has not registered yet (see join)
    role: str  # as the document names it: 出借人, 借款人, 房东 …
    signature_field: str
    signed_at: datetime | None = None


@dataclass(frozen=True)
class Flow:
    id: str
    document_id: str
    document_sha256: str
    parties: tuple[Party, ...]
    expires_at: datetime
    state: FlowState = FlowState.DRAFT
    current: int = 0  # index of the party whose turn it is while waiting
    reason: str | None = None  # decline or void reason
    void_requested_by: str | None = None
    void_confirmed_by: tuple[str, ...] = ()
    ended_at: datetime | None = None
    #: the weakest identity assurance a party's certificate may state to sign or consent to a void
    required_assurance: AssuranceLevel = AssuranceLevel.SELF_DECLARED
    #: set once when a party's identity was disputed (see dispute_identity)
    disputed_person_id: str | None = None
    disputed_at: datetime | None = None
    dispute_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def current_party(self) -> Party | None:
        return self.parties[self.current] if self.state is FlowState.WAITING else None

    def party(self, person_id: str) -> Party:
        for party in self.parties:
            if party.person_id == person_id:
                return party
        raise Forbidden(Reason.NOT_A_PARTY)


@dataclass(frozen=True)
class Transition:
    flow: Flow
    events: tuple[str, ...] = field(default=())


def new_flow(flow_id: str, document_id: str, document_sha256: str, parties: list[Party],
             expires_at: datetime, now: datetime,
             required_assurance: AssuranceLevel = AssuranceLevel.SELF_DECLARED, min_parties: int = 2) -> Flow:
    """A draft flow. The initiator is the first party; at least two parties
    (``min_parties`` 1: a statement its maker alone signs, a 还款确认书),
    each person and each signature field once."""
    if len(parties) < min_parties:
        raise InvalidInput("parties", "min_items", f"expected at least {min_parties} parties, found {len(parties)}")
    if parties[0].person_id is None:
        raise InvalidInput("parties.0.person_id", "required", "the initiator is a registered person")
    people = [p.person_id for p in parties if p.person_id is not None]
    if len(set(people)) != len(people):
        raise InvalidInput("parties", "unique_person", "each person signs once")
    fields_ = [p.signature_field for p in parties]
    if len(set(fields_)) != len(fields_):
        raise InvalidInput("parties", "unique_signature_field", "each party needs its own signature field")
    if len(document_sha256) != 64 or any(c not in "0123456789abcdef" for c in document_sha256):
        raise InvalidInput("document_sha256", "sha256_hex", "expected 64 lower-case hex characters")
    if expires_at <= now:
        raise InvalidInput("expires_at", "future", "expected an expiry after now")
    return Flow(flow_id, document_id, document_sha256, tuple(parties), expires_at,
                required_assurance=required_assurance)


def required_assurance(requested: str | None, platform_minimum: AssuranceLevel) -> AssuranceLevel:
    """The level a new flow requires: the platform's minimum, or a higher one
    the initiator asks for; never a lower one."""
    if requested is None:
        return platform_minimum
    level = parse_level(requested, "required_assurance")
    if not level.at_least(platform_minimum):
        raise InvalidInput("required_assurance", "below_platform_minimum",
                           f"expected {platform_minimum.value} or higher, found {level.value}")
    return level


def check_assurance(flow: Flow, level: AssuranceLevel | None) -> AssuranceLevel:
    """The level a party's certificate states, if the flow accepts it;
    ``Forbidden('assurance_too_low')`` otherwise. A certificate stating no
    level predates levels and vouches for nothing more than self_declared."""
    stated = level or AssuranceLevel.SELF_DECLARED
    if not stated.at_least(flow.required_assurance):
        raise Forbidden(Reason.ASSURANCE_TOO_LOW)
    return stated


#: the reason of a refusal for the state a flow is in
STATE_REASONS = {
    FlowState.DRAFT: Reason.FLOW_DRAFT,
    FlowState.WAITING: Reason.FLOW_WAITING,
    FlowState.COMPLETED: Reason.FLOW_COMPLETED,
    FlowState.DECLINED: Reason.FLOW_DECLINED,
    FlowState.EXPIRED: Reason.FLOW_EXPIRED,
    FlowState.VOID_REQUESTED: Reason.FLOW_VOID_REQUESTED,
    FlowState.VOIDED: Reason.FLOW_VOIDED,
    FlowState.CANCELLED: Reason.FLOW_CANCELLED,
}


def state_conflict(state: FlowState | str, *expected: FlowState | str) -> Conflict:
    """The refusal of an action that needs a flow in one of the ``expected``
    states: the reason names the state it is in, the message those it needs
    (in the order of :class:`FlowState`, whatever the order given)."""
    needed = {FlowState(s) for s in expected}
    names = " or ".join(s.value for s in FlowState if s in needed)
    return Conflict(STATE_REASONS[FlowState(state)], f"expected {names}")


def _require_state(flow: Flow, *allowed: FlowState) -> None:
    if flow.state not in allowed:
        raise state_conflict(flow.state, *allowed)


def _reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("reason", "required", "a reason is required")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidInput("reason", "max_chars", f"reason too long: {len(text)} > {MAX_REASON_CHARS}")
    return text


#: what a statement about a signed IOU changes (services/signing/loans.py), as events of the IOU's flow
LOAN_EVENTS = frozenset({events.LOAN_REPAYMENT_RECORDED, events.LOAN_EXTENDED, events.LOAN_REPAID})
#: every event a transition of a flow can carry (the flow_events counter's label values)
TRANSITION_EVENTS = (events.FLOW_SENT, events.PARTY_JOINED, events.PARTY_SIGNED, events.FLOW_COMPLETED,
                     events.FLOW_DECLINED, events.FLOW_EXPIRED, events.FLOW_CANCELLED, events.FLOW_IDENTITY_DISPUTED,
                     events.VOID_REQUESTED, events.FLOW_VOIDED, events.VOID_REJECTED, *sorted(LOAN_EVENTS))


def loan_event(flow: Flow, event: str) -> Transition:
    """A statement about a signed IOU (a repayment, an extension) took effect:
    the IOU stays as it is (completed, or completed with a void asked for)
    and the event records the change."""
    if event not in LOAN_EVENTS:
        raise ValueError(f"not a loan event: {event}")
    _require_state(flow, FlowState.COMPLETED, FlowState.VOID_REQUESTED)
    return Transition(flow, (event,))


def send(flow: Flow, now: datetime) -> Transition:
    _require_state(flow, FlowState.DRAFT)
    if now >= flow.expires_at:
        raise Conflict(Reason.FLOW_EXPIRED)
    return Transition(replace(flow, state=FlowState.WAITING, current=0), (events.FLOW_SENT,))


def join(flow: Flow, position: int, person_id: str, now: datetime) -> Transition:
    """The person the document names for the party at ``position`` (checked
    by the caller against their real-name identity) takes that place."""
    _require_state(flow, FlowState.WAITING)
    if now >= flow.expires_at:
        raise Conflict(Reason.FLOW_EXPIRED)
    if any(party.person_id == person_id for party in flow.parties):
        raise Conflict(Reason.ALREADY_A_PARTY)
    if flow.parties[position].person_id is not None:
        raise Conflict(Reason.PARTY_TAKEN)
    parties = list(flow.parties)
    parties[position] = replace(parties[position], person_id=person_id)
    return Transition(replace(flow, parties=tuple(parties)), (events.PARTY_JOINED,))


def _turn(flow: Flow, person_id: str, now: datetime) -> Party:
    """The party whose turn it is in a waiting, unexpired flow ``person_id`` is a party of."""
    _require_state(flow, FlowState.WAITING)
    if now >= flow.expires_at:
        raise Conflict(Reason.FLOW_EXPIRED)
    flow.party(person_id)  # Forbidden('not_a_party') for outsiders
    return flow.parties[flow.current]


def check_turn(flow: Flow, person_id: str, now: datetime) -> Party:
    """The party whose turn it is, or the reason this person may not sign now."""
    party = _turn(flow, person_id, now)
    if party.person_id != person_id:
        raise Forbidden(Reason.NOT_YOUR_TURN)
    return party


def check_reminder(flow: Flow, person_id: str, now: datetime) -> Party:
    """催签: the party whose turn it is, for another party of a waiting flow to have reminded."""
    party = _turn(flow, person_id, now)
    if party.person_id == person_id:
        raise Forbidden(Reason.YOUR_TURN)  # nobody reminds themselves: they sign
    return party


def sign(flow: Flow, person_id: str, now: datetime) -> Transition:
    check_turn(flow, person_id, now)
    parties = list(flow.parties)
    parties[flow.current] = replace(parties[flow.current], signed_at=now)
    if flow.current + 1 < len(parties):
        moved = replace(flow, parties=tuple(parties), current=flow.current + 1)
        return Transition(moved, (events.PARTY_SIGNED, events.FLOW_SENT))
    done = replace(flow, parties=tuple(parties), state=FlowState.COMPLETED, ended_at=now)
    return Transition(done, (events.PARTY_SIGNED, events.FLOW_COMPLETED))


def decline(flow: Flow, person_id: str, reason: str, now: datetime) -> Transition:
    _require_state(flow, FlowState.WAITING)
    party = flow.party(person_id)
    if party.signed_at is not None:
        raise Forbidden(Reason.ALREADY_SIGNED)
    declined = replace(flow, state=FlowState.DECLINED, reason=_reason(reason), ended_at=now)
    return Transition(declined, (events.FLOW_DECLINED,))


def expire(flow: Flow, now: datetime) -> Transition:
    _require_state(flow, FlowState.DRAFT, FlowState.WAITING)
    if now < flow.expires_at:
        raise Conflict(Reason.FLOW_NOT_EXPIRED)
    return Transition(replace(flow, state=FlowState.EXPIRED, ended_at=now), (events.FLOW_EXPIRED,))


def cancel(flow: Flow, reason: str, now: datetime) -> Transition:
    """The platform ends a flow still being signed (no party acts): final."""
    _require_state(flow, *UNFINISHED_STATES)
    cancelled = replace(flow, state=FlowState.CANCELLED, reason=_reason(reason), ended_at=now)
    return Transition(cancelled, (events.FLOW_CANCELLED,))


def dispute_identity(flow: Flow, person_id: str, dispute_reason: str, now: datetime) -> Transition:
    """A party's identity was disputed (see the module docstring): cancel an
    unfinished flow, mark an ended one. A flow cancelled or marked already
    stays as it is, without events: the first dispute is the one on record."""
    flow.party(person_id)  # Forbidden('not_a_party')
    if flow.state is FlowState.CANCELLED or flow.disputed_person_id is not None:
        return Transition(flow)
    disputed = dict(disputed_person_id=person_id, disputed_at=now, dispute_reason=_reason(dispute_reason))
    if flow.state in UNFINISHED_STATES:
        cancelled = cancel(flow, IDENTITY_DISPUTED, now)
        return Transition(replace(cancelled.flow, **disputed), cancelled.events)
    return Transition(replace(flow, **disputed), (events.FLOW_IDENTITY_DISPUTED,))


def request_void(flow: Flow, person_id: str, reason: str) -> Transition:
    _require_state(flow, FlowState.COMPLETED)
    flow.party(person_id)
    requested = replace(flow, state=FlowState.VOID_REQUESTED, reason=_reason(reason),
                        void_requested_by=person_id)
    return Transition(requested, (events.VOID_REQUESTED,))


def _other_party(flow: Flow, person_id: str) -> None:
    flow.party(person_id)
    if person_id == flow.void_requested_by:
        raise Forbidden(Reason.VOID_REQUESTER_CANNOT_CONFIRM)


def confirm_void(flow: Flow, person_id: str, now: datetime) -> Transition:
    """Every party other than the requester must confirm; the last one voids."""
    _require_state(flow, FlowState.VOID_REQUESTED)
    _other_party(flow, person_id)
    if person_id in flow.void_confirmed_by:
        raise Conflict(Reason.VOID_ALREADY_CONFIRMED)
    confirmed = flow.void_confirmed_by + (person_id,)
    others = {p.person_id for p in flow.parties} - {flow.void_requested_by}
    if set(confirmed) < others:
        return Transition(replace(flow, void_confirmed_by=confirmed), ())
    voided = replace(flow, state=FlowState.VOIDED, void_confirmed_by=confirmed, ended_at=now)
    return Transition(voided, (events.FLOW_VOIDED,))


def reject_void(flow: Flow, person_id: str) -> Transition:
    _require_state(flow, FlowState.VOID_REQUESTED)
    _other_party(flow, person_id)
    back = replace(flow, state=FlowState.COMPLETED, void_requested_by=None, void_confirmed_by=(), reason=None)
    return Transition(back, (events.VOID_REJECTED,))


def void_statement(flow_id: str, document_sha256: str, action: str, person_id: str, reason: str | None) -> str:
    """The digest a person signs to request or confirm a void: SHA-256 of a
    canonical JSON statement naming the flow, the document and the action
    (``request_void`` or ``confirm_void``); the signature is the proof of consent."""
    statement = json.dumps({"action": action, "document_sha256": document_sha256, "flow_id": flow_id,
                            "person_id": person_id, "reason": reason}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(statement.encode("utf-8")).hexdigest()
