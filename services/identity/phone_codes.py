"""Phone codes: a 6-digit code proves a person holds a phone, for
registration, login, a phone change, or one willingness check (:mod:`.otp`
holds the rules: keyed hash, expiry, wrong-try lock, send limits).

The code is stored as a keyed hash, plus a sealed copy only until the SMS
vendor has it: identity emits ``otp_requested`` (ids only) and notify asks
:meth:`PhoneCodes.message` for the number and code over RPC, so a code never
travels in an event. A confirmed code is good for one registration, login or
phone change within REGISTRATION.PHONE_CONFIRMATION_VALID_SECONDS.
"""
from __future__ import annotations

import hmac
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Callable

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from services.common import events
from services.common.clock import aware, naive, now, utcnow
from services.common.errors import Forbidden, InvalidInput, NotFound
from services.common.reasons import Reason
from services.common.sealing import associated_data, from_text, to_text
from services.identity import otp
from services.identity.models import OtpChallenge, WillingnessCheck
from services.identity.secrets import IdentityKeys

PURPOSES = ("phone_confirmation", "willingness")
#: a confirmed phone_confirmation code becomes one of these when it is used
USED_FOR = ("registered", "logged_in", "phone_changed")


def record_of(row: OtpChallenge) -> otp.OtpRecord:
    return otp.OtpRecord(
        purpose=row.purpose, subject=row.subject, salt=bytes.fromhex(row.salt),
        code_hash=bytes.fromhex(row.code_hash), issued_at=aware(row.created_at),
        expires_at=aware(row.expires_at), wrong_attempts=row.wrong_attempts,
        locked_until=aware(row.locked_until), used_at=aware(row.used_at),
    )


class PhoneCodes:
    def __init__(self, session: Session, keys: IdentityKeys, emit: Callable[[str, events.EventPayload], str],
                 min_resend: timedelta = otp.DEFAULT_POLICY.min_resend_interval):
        self.session = session
        self.keys = keys
        self.emit = emit
        self.min_resend = min_resend  # identity's OTP.MIN_RESEND_SECONDS

    def send(self, purpose: str, number: str, phone_index: str, subject: str) -> OtpChallenge:
        """Issue a code (send limits per ``subject``) and emit ``otp_requested``; not committed."""
        if purpose not in PURPOSES:
            raise InvalidInput("purpose", "enum", f"expected one of {', '.join(PURPOSES)}")
        moment = now()
        history = self.session.execute(
            select(OtpChallenge).where(OtpChallenge.phone_index == phone_index, OtpChallenge.subject == subject,
                                       OtpChallenge.purpose == purpose,
                                       OtpChallenge.created_at > naive(moment - timedelta(days=1)))
            .order_by(OtpChallenge.created_at.desc())
        ).scalars().all()
        previous = record_of(history[0]) if history else None
        policy = otp.PHONE_CONFIRMATION_POLICY if purpose == "phone_confirmation" else otp.DEFAULT_POLICY
        policy = replace(policy, min_resend_interval=self.min_resend)
        issued = otp.issue(self.keys.otp, purpose, subject, moment,
                           recent_sends=[aware(row.created_at) for row in history], previous=previous, policy=policy)
        challenge_id = str(uuid.uuid4())
        aad = associated_data("otp", challenge_id)
        row = OtpChallenge(
            id=challenge_id, purpose=purpose, phone_index=phone_index,
            phone_sealed=to_text(self.keys.keyring.seal(number.encode(), aad)),
            subject=issued.record.subject, salt=issued.record.salt.hex(),
            code_hash=issued.record.code_hash.hex(),
            code_sealed=to_text(self.keys.keyring.seal(issued.code.encode(), aad)),
            wrong_attempts=0, status="pending", created_at=naive(moment),
            expires_at=naive(issued.record.expires_at),
        )
        self.session.add(row)
        self.emit(events.OTP_REQUESTED, events.OtpRequested(challenge_id=challenge_id, purpose=purpose))
        return row

    def message(self, challenge_id: str) -> dict:
        """For notify: the phone and code of a pending challenge. Refused once
        delivered or expired. A willingness code's SMS names the document."""
        row = self.session.get(OtpChallenge, challenge_id)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        if row.code_sealed is None or aware(row.expires_at) <= now():
            raise Forbidden(Reason.OTP_NOT_DELIVERABLE)
        aad = associated_data("otp", challenge_id)
        minutes = int((otp.DEFAULT_POLICY.ttl.total_seconds() + 59) // 60)
        params = {"code": self.keys.keyring.open(from_text(row.code_sealed), aad).decode(), "minutes": str(minutes)}
        template = "phone_code"
        if row.purpose == "willingness":
            template = "willingness_code"
            check = self.session.execute(
                select(WillingnessCheck).where(WillingnessCheck.otp_challenge_id == challenge_id)).scalars().first()
            params["document_title"] = check.document_title if check and check.document_title else "电子文件"
        return {"phone": self.keys.keyring.open(from_text(row.phone_sealed), aad).decode(),
                "template": template, "params": params}

    def number_of(self, row: OtpChallenge) -> str:
        """The phone number a challenge was sent to."""
        return self.keys.keyring.open(from_text(row.phone_sealed), associated_data("otp", row.id)).decode()

    def check(self, challenge_id: str, code: str) -> otp.OtpVerification:
        """Check a code against its challenge (row locked: wrong-try counts and
        the confirmation must not be lost to a concurrent check or to the
        delivery receipt). Not committed; the caller commits, then acts on it."""
        row = self.session.get(OtpChallenge, challenge_id, with_for_update=True)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        result = otp.verify(self.keys.otp, record_of(row), code, now())
        row.wrong_attempts = result.record.wrong_attempts
        row.locked_until = naive(result.record.locked_until)
        row.used_at = naive(result.record.used_at)
        if result.accepted:
            row.status = "confirmed"
            row.code_sealed = None
        return result

    def delivered(self, challenge_id: str) -> None:
        """The vendor has the code: drop the sealed copy. Statements, not a
        loaded row: a code confirmed meanwhile must stay confirmed."""
        self.session.execute(update(OtpChallenge).where(OtpChallenge.id == challenge_id).values(
            delivered_at=utcnow(), code_sealed=None,
            status=case((OtpChallenge.status == "pending", "delivered"), else_=OtpChallenge.status)))

    def confirmed(self, challenge_id: str, valid: timedelta, phone_index: str | None = None,
                  allow_used: bool = False) -> OtpChallenge:
        """A phone_confirmation code confirmed within ``valid`` and not used yet
        (for ``phone_index`` when given), locked for the caller to mark used.
        ``allow_used``: a used one is answered too, for a caller that has a more
        telling refusal to give first (registration: ``phone_registered``)."""
        challenge = self.session.get(OtpChallenge, challenge_id, with_for_update=True, populate_existing=True)
        if challenge is None:
            raise NotFound("otp_challenge", challenge_id)
        if (challenge.purpose != "phone_confirmation" or challenge.status not in ("confirmed", *USED_FOR)
                or challenge.used_at is None
                or (phone_index is not None and not hmac.compare_digest(challenge.phone_index, phone_index))):
            raise Forbidden(Reason.PHONE_NOT_CONFIRMED)
        if challenge.status in USED_FOR and not allow_used:
            raise Forbidden(Reason.PHONE_CHALLENGE_USED)
        if challenge.status == "confirmed" and aware(challenge.used_at) + valid < now():
            raise Forbidden(Reason.PHONE_CONFIRMATION_EXPIRED)
        return challenge
