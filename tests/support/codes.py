"""SMS codes read as notify reads them, without notify: the challenge from
identity's ``otp_requested`` event (its outbox table), the phone and code from
identity's ``otp_message`` RPC. For tests of identity alone; the SMS that
carries the code is notify's tests'."""
from __future__ import annotations

import json

from sqlalchemy import select

from services.common.events import OTP_REQUESTED
from services.common.outbox import OUTBOX
from services.common.phone import normalise_phone


def sent(db) -> list[str]:
    """The challenges identity asked to be sent, oldest first (``db``: identity's Database)."""
    with db.session() as session:
        payloads = session.execute(select(OUTBOX.c.payload).where(OUTBOX.c.event_type == OTP_REQUESTED)
                                   .order_by(OUTBOX.c.id)).scalars()
        return [json.loads(payload)["data"]["challenge_id"] for payload in payloads]


def message(rpc, db, phone: str, template: str, count_before: int) -> dict:
    """The SMS of the newest challenge since ``count_before`` for ``phone``, as notify gets it
    from ``otp_message``: ``{phone, template, params}``."""
    number = normalise_phone(phone)
    for challenge in reversed(sent(db)[count_before:]):
        found = rpc.identity.otp_message(challenge_id=challenge)
        if found["phone"] == number and found["template"] == template:
            return found
    raise AssertionError(f"identity sent no {template} code to {phone}")
