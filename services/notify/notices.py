"""Which SMS a signing event asks for, and to whom.

The signing service's events name persons and documents by id; this module
reads such a payload (a :class:`services.common.events.FlowEvent`) into
:class:`FlowFacts` (with notify's own rules: ids fit a dedupe key, a party not
registered yet is reached by role, dates are dates) and turns it into
:class:`Notice` values: a recipient (a person id), a template, the template
values the event gives, and the values that are a person's name (resolved
through identity's ``contact``). Who gets what:

==================  ===================  =====================================
event               template             recipients
==================  ===================  =====================================
flow_sent           sign_request         ``next_person_id`` (initiator named),
                                         unless that is the initiator, who is
                                         signing the document they just sent
sign_reminder       sign_request         ``next_person_id`` (催签: the requester named)
flow_completed      flow_completed       every party (+ repayment reminders)
void_requested      void_requested       every party but the requester
flow_voided         flow_voided          every party (reminders cancelled)
flow_declined       flow_declined        every party but the decliner
flow_expired        flow_expired         every party
flow_cancelled      flow_cancelled       every party but the one whose
                                         identity was disputed
loan_extended       loan_extended        every party (the new repayment date;
                                         reminders planned anew)
loan_repayment_     repayment_recorded   every party but the lender who
recorded                                 confirmed it (``actor_person_id``)
loan_repaid         loan_repaid          every party (reminders cancelled)
==================  ===================  =====================================

Pure: no database, no RPC.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, TypeVar

from services.common import events
from services.common.errors import InvalidInput
from services.notify.reminders import LoanTerms, RepaymentMethod

#: ids are opaque, but bounded and printable (they go into dedupe keys and logs)
_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}\Z")


#: recipient key of a party the document names who has not registered yet:
#: their number comes from the document (documents.party_contact), by role
NAMED_PARTY = "named:"

T = TypeVar("T")


@dataclass(frozen=True)
class FlowParty:
    person_id: str  # a person id, or NAMED_PARTY + role for a party not registered yet
    role: str


@dataclass(frozen=True)
class FlowFacts:
    """What notify reads of a flow event's payload. The members only some
    events' types declare (``requester_person_id``, ``loan`` …) are read by
    name: None where the event's type has no such member."""

    flow_id: str
    document_title: str
    parties: tuple[FlowParty, ...]
    document_id: str
    link: str
    initiator_person_id: str
    next_person_id: str | None
    requester_person_id: str | None
    decliner_person_id: str | None
    disputed_person_id: str | None
    actor_person_id: str | None
    repayment_date: dt.date | None
    loan: LoanTerms | None

    @property
    def person_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.person_id for p in self.parties))

    @classmethod
    def of(cls, event: events.FlowEvent) -> "FlowFacts":
        """``InvalidInput`` naming the member when an id breaks notify's rule (:data:`_ID`),
        the title is blank, there are no parties or a date is not YYYY-MM-DD."""
        if not event.parties:
            raise InvalidInput("data.parties", "required", "expected a non-empty list of {person_id, role}")
        parties = []
        for index, party in enumerate(event.parties):
            if party.person_id is None and party.role:
                parties.append(FlowParty(NAMED_PARTY + party.role, party.role))
                continue
            parties.append(FlowParty(_id(party.person_id, f"data.parties.{index}.person_id"), party.role))
        if not event.document_title.strip():
            raise InvalidInput("data.document_title", "required", "expected the document title")
        members = dict(event)
        return cls(
            flow_id=_id(event.flow_id, "data.flow_id"),
            document_title=event.document_title.strip(),
            parties=tuple(parties),
            document_id=_id(event.document_id, "data.document_id"),
            link=event.link,
            initiator_person_id=_id(event.initiator_person_id, "data.initiator_person_id"),
            next_person_id=_optional_id(event.next_person_id, "next_person_id") or _named_role(event.next_role),
            requester_person_id=_optional_id(members.get("requester_person_id"), "requester_person_id"),
            decliner_person_id=_optional_id(members.get("decliner_person_id"), "decliner_person_id"),
            disputed_person_id=_optional_id(members.get("disputed_person_id"), "disputed_person_id"),
            actor_person_id=_optional_id(event.actor_person_id, "actor_person_id"),
            repayment_date=None if event.repayment_date is None else _date(event.repayment_date,
                                                                           "data.repayment_date"),
            loan=_loan(members.get("loan")),
        )


@dataclass(frozen=True)
class Notice:
    """One SMS to send: ``params`` as given, ``names`` maps a template
    variable to the person id whose name fills it."""

    person_id: str
    template: str
    params: Mapping[str, str] = field(default_factory=dict, hash=False)
    names: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def persons(self) -> tuple[str, ...]:
        return (self.person_id, *self.names.values())


def notices_for(event_type: str, flow: FlowFacts) -> tuple[Notice, ...]:
    """The notices ``event_type`` asks for (see the module table)."""
    title = {"document_title": flow.document_title}
    everyone = flow.person_ids
    if event_type == events.FLOW_SENT:
        next_person = _required(flow.next_person_id, "next_person_id")
        initiator = flow.initiator_person_id
        if next_person == initiator:  # they sent it and sign it now: no "X invites you to sign" from themselves
            return ()
        return (_notice(next_person, "sign_request", {**title, "link": _link(flow)}, {"initiator": initiator}),)
    if event_type == events.SIGN_REMINDER:
        next_person = _required(flow.next_person_id, "next_person_id")
        requester = _required(flow.requester_person_id, "requester_person_id")
        return (_notice(next_person, "sign_request", {**title, "link": _link(flow)}, {"initiator": requester}),)
    if event_type == events.FLOW_COMPLETED:
        return tuple(_notice(p, "flow_completed", {**title, "link": _link(flow)}) for p in everyone)
    if event_type == events.VOID_REQUESTED:
        requester = _required(flow.requester_person_id, "requester_person_id")
        return tuple(_notice(p, "void_requested", {**title, "link": _link(flow)}, {"requester": requester})
                     for p in everyone if p != requester)
    if event_type == events.FLOW_VOIDED:
        return tuple(_notice(p, "flow_voided", title) for p in everyone)
    if event_type == events.FLOW_DECLINED:
        decliner = _required(flow.decliner_person_id, "decliner_person_id")
        return tuple(_notice(p, "flow_declined", title, {"decliner": decliner}) for p in everyone if p != decliner)
    if event_type == events.FLOW_EXPIRED:
        return tuple(_notice(p, "flow_expired", title) for p in everyone)
    if event_type == events.FLOW_CANCELLED:
        # the frozen account's holder is not the person the others signed with: they are not told
        disputed = _required(flow.disputed_person_id, "disputed_person_id")
        return tuple(_notice(p, "flow_cancelled", title) for p in everyone if p != disputed)
    if event_type == events.LOAN_EXTENDED:
        new_date = _required(flow.repayment_date, "repayment_date")
        return tuple(_notice(p, "loan_extended", {**title, "due_date": new_date.isoformat()}) for p in everyone)
    if event_type == events.LOAN_REPAYMENT_RECORDED:
        lender = _required(flow.actor_person_id, "actor_person_id")  # who confirmed the repayment needs no SMS
        return tuple(_notice(p, "repayment_recorded", {**title, "link": _link(flow)}) for p in everyone if p != lender)
    if event_type == events.LOAN_REPAID:
        return tuple(_notice(p, "loan_repaid", title) for p in everyone)
    raise InvalidInput("event_type", "one_of", f"notify sends nothing for {event_type!r}")


def _notice(person_id: str, template: str, params: Mapping[str, str], names: Mapping[str, str] | None = None) -> Notice:
    return Notice(person_id, template, MappingProxyType(dict(params)), MappingProxyType(dict(names or {})))


def _link(flow: FlowFacts) -> str:
    return _required(flow.link, "link")


def _required(value: T | None, name: str) -> T:
    if not value:
        raise InvalidInput(f"data.{name}", "required", f"this event needs {name}")
    return value


def _id(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInput(field_name, "id_format", "expected an id of 1-64 characters A-Z a-z 0-9 . _ : -")
    return value


def _date(value: Any, field_name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(field_name, "date_format", "expected YYYY-MM-DD") from None


def _loan(schedule: events.InterestSchedule | None) -> LoanTerms | None:
    """``loan`` of an IOU's flow_completed and loan_extended; statement flows have none."""
    if schedule is None:
        return None
    try:
        method = RepaymentMethod(schedule.method)
    except ValueError:
        raise InvalidInput("data.loan.method", "one_of",
                           f"expected one of {[m.value for m in RepaymentMethod]}") from None
    return LoanTerms(method, tuple(_date(day, f"data.loan.interest_dates.{index}")
                                   for index, day in enumerate(schedule.interest_dates)))


def _named_role(role: str | None) -> str | None:
    return NAMED_PARTY + role if role else None


def _optional_id(value: str | None, name: str) -> str | None:
    return None if value is None else _id(value, f"data.{name}")
