"""Which SMS a signing event asks for, and to whom.

The signing service's events name persons and documents by id; this module
reads such a payload into a :class:`FlowEvent` (checking the contract
described in :mod:`services.notify.service`) and turns it into
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
class FlowEvent:
    flow_id: str
    document_title: str
    parties: tuple[FlowParty, ...]
    document_id: str | None = None
    link: str | None = None
    initiator_person_id: str | None = None
    next_person_id: str | None = None
    requester_person_id: str | None = None
    decliner_person_id: str | None = None
    disputed_person_id: str | None = None
    actor_person_id: str | None = None
    repayment_date: dt.date | None = None
    loan: LoanTerms | None = None

    @property
    def person_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.person_id for p in self.parties))

    @classmethod
    def from_payload(cls, data: Any) -> "FlowEvent":
        if not isinstance(data, Mapping):
            raise InvalidInput("data", "type", "expected the event's data mapping")
        raw_parties = data.get("parties")
        if not isinstance(raw_parties, list) or not raw_parties:
            raise InvalidInput("data.parties", "required", "expected a non-empty list of {person_id, role}")
        parties = []
        for index, party in enumerate(raw_parties):
            if not isinstance(party, Mapping):
                raise InvalidInput(f"data.parties[{index}]", "type", "expected {person_id, role}")
            role = party.get("role")
            if party.get("person_id") is None and isinstance(role, str) and role:
                parties.append(FlowParty(NAMED_PARTY + role, role))
                continue
            parties.append(FlowParty(_id(party.get("person_id"), f"data.parties[{index}].person_id"),
                                     str(role or "")))
        title = data.get("document_title")
        if not isinstance(title, str) or not title.strip():
            raise InvalidInput("data.document_title", "required", "expected the document title")
        link = data.get("link")
        if link is not None and not isinstance(link, str):
            raise InvalidInput("data.link", "type", "expected a URL")
        repayment = data.get("repayment_date")
        return cls(
            flow_id=_id(data.get("flow_id"), "data.flow_id"),
            document_title=title.strip(),
            parties=tuple(parties),
            document_id=_optional_id(data, "document_id"),
            link=link,
            initiator_person_id=_optional_id(data, "initiator_person_id"),
            next_person_id=_optional_id(data, "next_person_id") or _named_role(data.get("next_role")),
            requester_person_id=_optional_id(data, "requester_person_id"),
            decliner_person_id=_optional_id(data, "decliner_person_id"),
            disputed_person_id=_optional_id(data, "disputed_person_id"),
            actor_person_id=_optional_id(data, "actor_person_id"),
            repayment_date=None if repayment is None else _date(repayment, "data.repayment_date"),
            loan=_loan(data.get("loan")),
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


def notices_for(event_type: str, flow: FlowEvent) -> tuple[Notice, ...]:
    """The notices ``event_type`` asks for (see the module table)."""
    title = {"document_title": flow.document_title}
    everyone = flow.person_ids
    if event_type == events.FLOW_SENT:
        next_person = _required(flow.next_person_id, "next_person_id")
        initiator = _required(flow.initiator_person_id, "initiator_person_id")
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


def _link(flow: FlowEvent) -> str:
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


def _loan(value: Any) -> LoanTerms | None:
    """``loan`` of an IOU's flow_completed and loan_extended; statement flows have none."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput("data.loan", "type", "expected {method, interest_dates}")
    try:
        method = RepaymentMethod(value.get("method"))
    except ValueError:
        raise InvalidInput("data.loan.method", "one_of",
                           f"expected one of {[m.value for m in RepaymentMethod]}") from None
    dates = value.get("interest_dates") or []
    if not isinstance(dates, list):
        raise InvalidInput("data.loan.interest_dates", "type", "expected a list of YYYY-MM-DD")
    return LoanTerms(method, tuple(_date(day, f"data.loan.interest_dates[{index}]") for index, day in enumerate(dates)))


def _named_role(role: Any) -> str | None:
    return NAMED_PARTY + role if isinstance(role, str) and role else None


def _optional_id(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return None if value is None else _id(value, f"data.{name}")
