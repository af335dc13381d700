"""Taking a squatted ID number back.

An ID number registers once, so whoever registers first with someone else's
name and ID number would lock the real person out. The rule: when an account
registered with an ID number that another, *weaker* account holds proves its
face against the authority's photo (``authority_face`` or better, and above
the holder's level), the new proof wins:

* the holder is frozen (``frozen_reason = identity_taken_back``): its sessions
  end, its certificates are revoked (``privilege_withdrawn``: CRL and OCSP
  show it), and it can no longer log in;
* ``identity_disputed`` is announced, so signing cancels the holder's
  unfinished flows and marks its ended ones ``disputed_identity``;
* the new account becomes ``active`` and holds the ID number.

Both accounts' audit trails record it. A holder at the same or a higher level
keeps the number: the newcomer gets ``Conflict("id_number_registered")``.
"""
from __future__ import annotations

from typing import Callable

from services.common import events
from services.common.assurance import AssuranceLevel
from services.common.clock import utcnow
from services.common.errors import Conflict
from services.common.reasons import Reason
from services.identity import audit
from services.identity.certificates import PersonCertificates
from services.identity.models import ACTIVE, FROZEN, Person
from services.identity.people import People
from services.identity.sessions import Sessions

REASON = "identity_taken_back"


def can_take_back(level: AssuranceLevel, holder_level: AssuranceLevel) -> bool:
    """Whether a proof at ``level`` wins the ID number from a holder at ``holder_level``."""
    return level.at_least(AssuranceLevel.AUTHORITY_FACE) and level.rank > holder_level.rank


def take_back(people: People, person: Person, level: AssuranceLevel, certificates: PersonCertificates,
              sessions: Sessions, emit: Callable[[str, events.EventPayload], str]) -> Person | None:
    """Make ``person`` (pending) the active holder of its ID number after a
    proof at ``level``; answers the frozen former holder, if there was one."""
    session = people.session
    holder = people.holder_of(person.id_number_index)
    if holder is not None and holder.id != person.id:
        if not can_take_back(level, people.level(holder)):
            raise Conflict(Reason.ID_NUMBER_REGISTERED)
        moment = utcnow()
        holder.status, holder.frozen_at, holder.frozen_reason, holder.updated_at = FROZEN, moment, REASON, moment
        session.flush()  # the holder leaves the unique index of active accounts before the new one enters
        revoked = certificates.revoke_all(holder.id, "privilege_withdrawn", "service")
        ended = sessions.revoke_all(holder.id, "account_frozen")
        audit.record(session, "account_frozen", REASON, person_id=holder.id, actor="service",
                     replaced_by=person.id, revoked_serials=revoked, sessions_ended=ended)
        audit.record(session, "identity_taken_back", "ok", person_id=person.id, actor="service",
                     frozen_person=holder.id, level=level.value)
        emit(events.IDENTITY_DISPUTED, events.IdentityDisputed(
            person_id=holder.id, replaced_by_person_id=person.id, revoked_serials=tuple(revoked), reason=REASON))
        emit(events.SESSIONS_ENDED, events.SessionsEnded(person_id=holder.id, reason="account_frozen"))
    else:
        holder = None
    person.status = ACTIVE
    person.updated_at = utcnow()
    session.flush()
    return holder
