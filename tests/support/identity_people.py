"""People in identity's own workers (tests/support/service_worker.py): registered
with a confirmed phone, proofed (the proof recorded directly, as a live registry
proof records it), certified, and asking for signing grants by SMS code read as
notify reads it (``otp_message`` of the challenge)."""
from __future__ import annotations

import uuid
from datetime import datetime

from services.common.assurance import AssuranceLevel
from services.identity.models import IdentityProof, WillingnessCheck
from tests.support.service_worker import ServiceWorkers

#: identity's config for these helpers: no face authority to ask, codes resent within a second
IDENTITY_CONFIG = {"PROOFING": {"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True},
                   "PUBLIC_URL": "http://127.0.0.1:8000", "CA": {"PERSON_VALIDITY_DAYS": 30},
                   "OTP": {"MIN_RESEND_SECONDS": 1}}
#: valid GB 11643 numbers (check digits right), distinct phones
PEOPLE = [("张三", "11010519491231002X", "13800138000"), ("李四", "440524188001010014", "13900139000"),
          ("王五", "110101199003074477", "13700137000"), ("赵六", "110101198001010037", "13600136000"),
          ("钱七", "110101198505050016", "13500135000"), ("孙八", "110105197707070024", "13300133000")]


def code_sent(identity: ServiceWorkers, challenge_id: str) -> str:
    """The code of a phone challenge, as notify reads it (``otp_message``)."""
    return identity.call("otp_message", challenge_id=challenge_id)["params"]["code"]


def proof(identity: ServiceWorkers, person_id: str) -> str:
    proof_id = str(uuid.uuid4())
    with identity.database().db.session() as session:  # what a live registry proof records
        session.add(IdentityProof(id=proof_id, person_id=person_id, provider="registry",
                                  level=AssuranceLevel.AUTHORITY_FACE_LIVENESS.value, matched=True, live=True,
                                  score=0.3, score_kind="distance", threshold=0.6, created_at=datetime.utcnow()))
        session.commit()
    return proof_id


def registered(identity: ServiceWorkers, person: tuple[str, str, str]) -> str:
    name, id_number, phone = person
    challenge = identity.call("request_phone_code", phone=phone)["challenge_id"]
    identity.call("confirm_phone_code", challenge_id=challenge, code=code_sent(identity, challenge))
    return identity.call("register", name=name, id_number=id_number, phone=phone,
                         phone_challenge_id=challenge)["person_id"]


def certify(identity: ServiceWorkers, person_id: str) -> str:
    """A new certificate for the person (a step-up proof first); its serial."""
    return identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))["serial"]


def grant_for(identity: ServiceWorkers, person_id: str, digest: bytes) -> str:
    started = identity.call("start_willingness", person_id=person_id, digest=digest.hex(), method="sms")
    with identity.database().db.session() as session:
        challenge = session.get(WillingnessCheck, started["willingness_id"]).otp_challenge_id
    return identity.call("confirm_willingness", willingness_id=started["willingness_id"],
                         code=code_sent(identity, challenge))["grant"]
