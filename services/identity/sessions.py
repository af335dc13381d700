"""Sessions: who is logged in, recorded server-side so that a session can end.

A session is an opaque random token (256 bits, ``secrets.token_urlsafe``)
handed to the browser or API client once; only its SHA-256 is stored (a
random token needs no salt: it cannot be guessed from its hash). The gateway
resolves the token on every request (:meth:`Sessions.resolve`). A session
ends when

* the person logs out (``revoke``) or ends all their other sessions,
* it has not been used for SESSIONS.IDLE_SECONDS (30 minutes by default),
* SESSIONS.ABSOLUTE_SECONDS (12 hours) have passed since it began,
* the account is frozen (every session revoked, reason ``account_frozen``).

Last use is written at most once a minute, so a busy session does not cost a
database write per request; the idle timeout is therefore exact to a minute.
Refusals are ``Forbidden`` with ``session_invalid`` (unknown token),
``session_expired`` (idle or absolute) or ``session_revoked``.
"""
from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.common.clock import aware, iso, now, utcnow
from services.common.errors import Forbidden, NotFound
from services.common.reasons import Reason
from services.identity.models import Person, SessionRow
from services.identity.settings import SessionSettings

USER_AGENT_MAX = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OpenedSession:
    token: str  # give to the client once; never stored, never logged
    row: SessionRow

    def to_dict(self) -> dict:
        return {"session_id": self.row.id, "token": self.token, "expires_at": iso(self.row.expires_at)}


class Sessions:
    def __init__(self, session: Session, settings: SessionSettings):
        self.session = session
        self.settings = settings

    def open(self, person_id: str, user_agent: str | None) -> OpenedSession:
        token = secrets.token_urlsafe(32)
        moment = utcnow()
        row = SessionRow(id=str(uuid.uuid4()), token_hash=token_hash(token), person_id=person_id,
                         user_agent=(user_agent or "")[:USER_AGENT_MAX] or None, created_at=moment,
                         last_used_at=moment, expires_at=moment + self.settings.absolute)
        self.session.add(row)
        return OpenedSession(token, row)

    def resolve(self, token: str) -> tuple[SessionRow, str]:
        """The live session of ``token`` and its person's account status, in one query; its last
        use is recorded (at most once a minute)."""
        found = self.session.execute(
            select(SessionRow, Person.status).join(Person, Person.id == SessionRow.person_id)
            .where(SessionRow.token_hash == token_hash(token))).first() if isinstance(token, str) and token else None
        if found is None:
            raise Forbidden(Reason.SESSION_INVALID)
        row, status = found
        if row.revoked_at is not None:
            raise Forbidden(Reason.SESSION_REVOKED)
        moment = now()
        if aware(row.expires_at) <= moment or aware(row.last_used_at) + self.settings.idle <= moment:
            raise Forbidden(Reason.SESSION_EXPIRED)
        if aware(row.last_used_at) + self.settings.touch_every <= moment:
            self.session.execute(update(SessionRow).where(SessionRow.id == row.id)
                                 .values(last_used_at=moment.replace(tzinfo=None)))
        return row, status

    def listing(self, person_id: str, current_id: str | None = None) -> list[dict]:
        """The person's sessions that have not ended, newest first."""
        moment = utcnow()
        rows = self.session.execute(
            select(SessionRow).where(SessionRow.person_id == person_id, SessionRow.revoked_at.is_(None),
                                     SessionRow.expires_at > moment,
                                     SessionRow.last_used_at > moment - self.settings.idle)
            .order_by(SessionRow.created_at.desc())).scalars()
        return [{"session_id": row.id, "created_at": iso(row.created_at), "last_used_at": iso(row.last_used_at),
                 "expires_at": iso(row.expires_at), "user_agent": row.user_agent, "current": row.id == current_id}
                for row in rows]

    def revoke(self, person_id: str, session_id: str, reason: str = "logout") -> None:
        row = self.session.get(SessionRow, session_id) if isinstance(session_id, str) else None
        if row is None or row.person_id != person_id:
            raise NotFound("session", session_id if isinstance(session_id, str) else "")
        if row.revoked_at is None:
            row.revoked_at, row.revoked_reason = utcnow(), reason

    def revoke_all(self, person_id: str, reason: str, keep: str | None = None) -> int:
        """End every live session of the person (but ``keep``); how many ended."""
        query = update(SessionRow).where(SessionRow.person_id == person_id, SessionRow.revoked_at.is_(None))
        if keep is not None:
            query = query.where(SessionRow.id != keep)
        return self.session.execute(query.values(revoked_at=utcnow(), revoked_reason=reason)).rowcount
