"""The identity service: wires RPC and event entrypoints to the identity
domain (ID-number rules, phone codes, faces, CA, key vault, grants)."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.errors import Forbidden, InvalidInput, NotFound
from services.common.masking import mask_phone
from services.common.outbox import utcnow
from services.common.sealing import associated_data, from_text, to_text
from services.common.service_base import ServiceBase
from services.identity import otp
from services.identity.models import OtpChallenge
from services.common.phone import normalise_phone
from services.identity.secrets import IdentityKeysProvider

log = logging.getLogger(__name__)

OTP_PURPOSES = ("phone_confirmation", "willingness")


def aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def naive(value: datetime | None) -> datetime | None:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value is not None else None


def record_of(row: OtpChallenge) -> otp.OtpRecord:
    return otp.OtpRecord(
        purpose=row.purpose, subject=row.subject, salt=bytes.fromhex(row.salt),
        code_hash=bytes.fromhex(row.code_hash), issued_at=aware(row.created_at),
        expires_at=aware(row.expires_at), wrong_attempts=row.wrong_attempts,
        locked_until=aware(row.locked_until), used_at=aware(row.used_at),
    )


class IdentityService(ServiceBase):
    name = "identity"
    keys = IdentityKeysProvider()

    # -- phone codes ------------------------------------------------------
    @rpc
    def request_phone_code(self, phone: str, purpose: str = "phone_confirmation") -> dict:
        """Send a 6-digit code to ``phone``: the code is stored as a keyed hash
        (plus a sealed copy until the SMS vendor has it) and notify is told by
        an ``otp_requested`` event that carries no phone and no code."""
        if purpose not in OTP_PURPOSES:
            raise InvalidInput("purpose", "enum", f"expected one of {', '.join(OTP_PURPOSES)}")
        number = normalise_phone(phone)
        phone_index = self.keys.blind_index.digest("phone", number)
        now = datetime.now(timezone.utc)
        session = self.db.session
        history = session.execute(
            select(OtpChallenge).where(OtpChallenge.phone_index == phone_index,
                                       OtpChallenge.created_at > naive(now - timedelta(days=1)))
            .order_by(OtpChallenge.created_at.desc())
        ).scalars().all()
        previous = record_of(history[0]) if history else None
        issued = otp.issue(self.keys.otp, purpose, phone_index, now,
                           recent_sends=[aware(row.created_at) for row in history], previous=previous)
        challenge_id = str(uuid.uuid4())
        aad = associated_data("otp", challenge_id)
        session.add(OtpChallenge(
            id=challenge_id, purpose=purpose, phone_index=phone_index,
            phone_sealed=to_text(self.keys.keyring.seal(number.encode(), aad)),
            subject=issued.record.subject, salt=issued.record.salt.hex(),
            code_hash=issued.record.code_hash.hex(),
            code_sealed=to_text(self.keys.keyring.seal(issued.code.encode(), aad)),
            wrong_attempts=0, status="pending", created_at=naive(now),
            expires_at=naive(issued.record.expires_at),
        ))
        self.db.emit(events.OTP_REQUESTED, {"challenge_id": challenge_id, "purpose": purpose})
        self.db.commit()
        self.metrics.inc("otp_requested", "Phone codes requested", purpose=purpose)
        return {"challenge_id": challenge_id, "expires_at": issued.record.expires_at.isoformat(),
                "phone_masked": mask_phone(number)}

    @rpc
    def otp_message(self, challenge_id: str) -> dict:
        """For notify only: the phone and code of a pending challenge, so the
        code never travels in an event. Refused once delivered or expired."""
        row = self.db.session.get(OtpChallenge, challenge_id)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        if row.code_sealed is None or aware(row.expires_at) <= datetime.now(timezone.utc):
            raise Forbidden("otp_not_deliverable")
        aad = associated_data("otp", challenge_id)
        minutes = int((otp.DEFAULT_POLICY.ttl.total_seconds() + 59) // 60)
        template = "willingness_code" if row.purpose == "willingness" else "phone_code"
        return {
            "phone": self.keys.keyring.open(from_text(row.phone_sealed), aad).decode(),
            "template": template,
            "params": {"code": self.keys.keyring.open(from_text(row.code_sealed), aad).decode(),
                       "minutes": str(minutes)},
        }

    @rpc
    def confirm_phone_code(self, challenge_id: str, code: str) -> dict:
        row = self.db.session.get(OtpChallenge, challenge_id)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        result = otp.verify(self.keys.otp, record_of(row), code, datetime.now(timezone.utc))
        row.wrong_attempts = result.record.wrong_attempts
        row.locked_until = naive(result.record.locked_until)
        row.used_at = naive(result.record.used_at)
        if result.accepted:
            row.status = "confirmed"
            row.code_sealed = None
        self.db.commit()
        self.metrics.inc("otp_checks", "Phone code checks", outcome=result.outcome.value)
        result.require_accepted()
        return {"challenge_id": challenge_id, "confirmed": True}

    @handles_event("notify", events.SMS_SENT)
    def on_sms_sent(self, event: dict) -> None:
        """The code reached the SMS vendor: drop the sealed copy kept for delivery."""
        data = event["data"]
        if data.get("ref_type") != "otp":
            return
        row = self.db.session.get(OtpChallenge, data.get("ref_id"))
        if row is None:
            return
        row.delivered_at = utcnow()
        row.code_sealed = None
        if row.status == "pending":
            row.status = "delivered"
