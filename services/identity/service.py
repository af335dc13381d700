"""The identity service: wires RPC and event entrypoints to the identity
domain (ID-number rules, phone codes, faces, CA, key vault, grants).

Flow of a person (docs: README 'Identity'):

1. ``request_phone_code`` / ``confirm_phone_code`` — the phone is theirs;
2. ``register`` — name, ID number, phone (with that confirmed code);
3. ``verify_face`` — ID portrait vs selfie (and, when ``LIVENESS.REQUIRED``,
   ``start_liveness`` / ``check_liveness``); success emits ``person_verified``;
4. ``issue_certificate`` — key generated and sealed here, certificate issued;
5. per signature: ``start_willingness`` → ``confirm_willingness`` (SMS code or
   selfie) → a single-use grant → ``sign_digest``.

Re-registration: an ID number registers once (``Conflict('id_number_registered')``).
A registered person who re-verifies (a new successful ``verify_face``) and asks
for a certificate again gets a new one, and the previous one is revoked as
``superseded`` in the same transaction; without a newer face check,
``issue_certificate`` returns the active certificate (idempotent).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography.x509.oid import NameOID
from nameko.dependency_providers import Config
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.errors import Conflict, Forbidden, InvalidInput, NotFound
from services.common.idnumber import parse_id_number
from services.common.masking import mask_id_number, mask_name, mask_phone
from services.common.outbox import utcnow
from services.common.phone import normalise_phone
from services.common.sealing import associated_data, from_text, to_text
from services.common.service_base import ServiceBase
from services.identity import audit, ca, certificates, grants, otp
from services.identity.ca_store import CaProvider, build_delegated_ocsp_response
from services.identity.face_pool import FacePool
from services.identity.faces import encoding_from_bytes, face_distance
from services.identity.liveness import Challenge, LandmarkLivenessEngine
from services.identity.models import (
    CrlNumber,
    LivenessChallenge,
    OtpChallenge,
    Person,
    SigningGrantRow,
    WillingnessCheck,
)
from services.identity.person_name import normalise_name
from services.identity.secrets import IdentityKeysProvider

log = logging.getLogger(__name__)

OTP_PURPOSES = ("phone_confirmation", "willingness")
WILLINGNESS_METHODS = grants.METHODS
ACTORS = ("person", "admin")
DOCUMENT_TITLE_MAX = 20  # notify's SMS title variable limit
FACE_DISTANCE_BUCKETS = (0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.2)


def aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def naive(value: datetime | None) -> datetime | None:
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value is not None else None


def iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def record_of(row: OtpChallenge) -> otp.OtpRecord:
    return otp.OtpRecord(
        purpose=row.purpose, subject=row.subject, salt=bytes.fromhex(row.salt),
        code_hash=bytes.fromhex(row.code_hash), issued_at=aware(row.created_at),
        expires_at=aware(row.expires_at), wrong_attempts=row.wrong_attempts,
        locked_until=aware(row.locked_until), used_at=aware(row.used_at),
    )


def decode_base64(value: str, field: str, max_bytes: int) -> bytes:
    """Binary RPC arguments are base64 text; the size is checked before decoding."""
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise InvalidInput(field, "max_bytes", f"expected at most {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(field, "base64", "expected base64-encoded bytes") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class IdentitySettings:
    """The service's policy knobs (config keys in brackets)."""

    max_image_bytes: int = 10 * 1024 * 1024  # FACES.MAX_IMAGE_BYTES
    liveness_required: bool = False  # LIVENESS.REQUIRED
    liveness_ttl: timedelta = timedelta(minutes=2)  # LIVENESS.CHALLENGE_TTL_SECONDS
    max_video_bytes: int = 20 * 1024 * 1024
    willingness_ttl: timedelta = timedelta(minutes=5)  # WILLINGNESS.TTL_SECONDS
    grant_ttl: timedelta = grants.DEFAULT_TTL  # WILLINGNESS.GRANT_TTL_SECONDS
    max_face_attempts: int = 3  # WILLINGNESS.MAX_FACE_ATTEMPTS
    phone_confirmation_valid: timedelta = timedelta(minutes=30)  # REGISTRATION.PHONE_CONFIRMATION_VALID_SECONDS
    person_validity: timedelta = ca.DEFAULT_PERSON_VALIDITY  # CA.PERSON_VALIDITY_DAYS

    @classmethod
    def from_config(cls, config: dict) -> "IdentitySettings":
        faces, live = config.get("FACES") or {}, config.get("LIVENESS") or {}
        will, reg, ca_cfg = config.get("WILLINGNESS") or {}, config.get("REGISTRATION") or {}, config.get("CA") or {}
        d = cls()
        return cls(
            max_image_bytes=int(faces.get("MAX_IMAGE_BYTES", d.max_image_bytes)),
            liveness_required=str(live.get("REQUIRED", False)).lower() in ("1", "true", "yes"),
            liveness_ttl=timedelta(seconds=float(live.get("CHALLENGE_TTL_SECONDS", d.liveness_ttl.total_seconds()))),
            willingness_ttl=timedelta(seconds=float(will.get("TTL_SECONDS", d.willingness_ttl.total_seconds()))),
            grant_ttl=timedelta(seconds=float(will.get("GRANT_TTL_SECONDS", d.grant_ttl.total_seconds()))),
            max_face_attempts=int(will.get("MAX_FACE_ATTEMPTS", d.max_face_attempts)),
            phone_confirmation_valid=timedelta(seconds=float(
                reg.get("PHONE_CONFIRMATION_VALID_SECONDS", d.phone_confirmation_valid.total_seconds()))),
            person_validity=timedelta(days=float(ca_cfg.get("PERSON_VALIDITY_DAYS", d.person_validity.days))),
        )


class IdentityService(ServiceBase):
    name = "identity"
    config = Config()
    keys = IdentityKeysProvider()
    authority = CaProvider()
    faces = FacePool()

    @property
    def settings(self) -> IdentitySettings:
        return IdentitySettings.from_config(self.config)

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
        challenge_id = self._send_code(purpose, number, phone_index, subject=phone_index)
        self.db.commit()
        self.metrics.inc("otp_requested", "Phone codes requested", purpose=purpose)
        row = self.db.session.get(OtpChallenge, challenge_id)
        return {"challenge_id": challenge_id, "expires_at": iso(row.expires_at),
                "phone_masked": mask_phone(number)}

    def _send_code(self, purpose: str, number: str, phone_index: str, subject: str) -> str:
        """Issue a code (rate limits per ``subject``) and emit ``otp_requested``; not committed."""
        now = datetime.now(timezone.utc)
        session = self.db.session
        history = session.execute(
            select(OtpChallenge).where(OtpChallenge.phone_index == phone_index, OtpChallenge.subject == subject,
                                       OtpChallenge.purpose == purpose,
                                       OtpChallenge.created_at > naive(now - timedelta(days=1)))
            .order_by(OtpChallenge.created_at.desc())
        ).scalars().all()
        previous = record_of(history[0]) if history else None
        issued = otp.issue(self.keys.otp, purpose, subject, now,
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
        return challenge_id

    @rpc
    def otp_message(self, challenge_id: str) -> dict:
        """For notify only: the phone and code of a pending challenge, so the
        code never travels in an event. Refused once delivered or expired.
        A willingness code's SMS names the document (``document_title``)."""
        row = self.db.session.get(OtpChallenge, challenge_id)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        if row.code_sealed is None or aware(row.expires_at) <= datetime.now(timezone.utc):
            raise Forbidden("otp_not_deliverable")
        aad = associated_data("otp", challenge_id)
        minutes = int((otp.DEFAULT_POLICY.ttl.total_seconds() + 59) // 60)
        params = {"code": self.keys.keyring.open(from_text(row.code_sealed), aad).decode(),
                  "minutes": str(minutes)}
        template = "phone_code"
        if row.purpose == "willingness":
            template = "willingness_code"
            check = self.db.session.execute(
                select(WillingnessCheck).where(WillingnessCheck.otp_challenge_id == challenge_id)).scalars().first()
            params["document_title"] = (check.document_title if check and check.document_title else "电子文件")
        return {"phone": self.keys.keyring.open(from_text(row.phone_sealed), aad).decode(),
                "template": template, "params": params}

    @rpc
    def confirm_phone_code(self, challenge_id: str, code: str) -> dict:
        # Locked: wrong-try counts and the confirmation must not be lost to a
        # concurrent check or to the delivery receipt (on_sms_sent).
        row = self.db.session.get(OtpChallenge, challenge_id, with_for_update=True)
        if row is None:
            raise NotFound("otp_challenge", challenge_id)
        result = otp.verify(self.keys.otp, record_of(row), code, datetime.now(timezone.utc))
        self._store_verification(row, result)
        self.db.commit()
        self.metrics.inc("otp_checks", "Phone code checks", outcome=result.outcome.value)
        result.require_accepted()
        return {"challenge_id": challenge_id, "confirmed": True}

    @staticmethod
    def _store_verification(row: OtpChallenge, result: otp.OtpVerification) -> None:
        row.wrong_attempts = result.record.wrong_attempts
        row.locked_until = naive(result.record.locked_until)
        row.used_at = naive(result.record.used_at)
        if result.accepted:
            row.status = "confirmed"
            row.code_sealed = None

    @handles_event("notify", events.SMS_SENT)
    def on_sms_sent(self, event: dict) -> None:
        """The code reached the SMS vendor: drop the sealed copy kept for delivery."""
        data = event["data"]
        if data.get("ref_type") != "otp":
            return
        challenge_id = data.get("ref_id")
        if not isinstance(challenge_id, str):
            return
        # Statements, not read-modify-write of a loaded row: a code confirmed
        # while this receipt was on its way must stay confirmed.
        session = self.db.session
        session.execute(update(OtpChallenge).where(OtpChallenge.id == challenge_id)
                        .values(delivered_at=utcnow(), code_sealed=None))
        session.execute(update(OtpChallenge).where(OtpChallenge.id == challenge_id, OtpChallenge.status == "pending")
                        .values(status="delivered"))

    # -- registration -----------------------------------------------------
    @rpc
    def register(self, name: str, id_number: str, phone: str, phone_challenge_id: str) -> dict:
        """Real-name registration. Rules: name per person_name, ID number per
        GB 11643-1999, mainland mobile; the phone must have been confirmed by
        ``phone_challenge_id`` (purpose phone_confirmation, within 30 minutes,
        unused); one person per ID number and per phone."""
        person_name = normalise_name(name)
        resident = parse_id_number(id_number)
        number = normalise_phone(phone)
        blind = self.keys.blind_index
        phone_index = blind.digest("phone", number)
        id_index = blind.digest("id_number", resident.number)
        session = self.db.session
        challenge = session.get(OtpChallenge, phone_challenge_id, with_for_update=True)
        if challenge is None:
            raise NotFound("otp_challenge", phone_challenge_id)
        if (challenge.purpose != "phone_confirmation" or challenge.status not in ("confirmed", "registered")
                or challenge.used_at is None
                or not hmac.compare_digest(challenge.phone_index, phone_index)):
            raise Forbidden("phone_not_confirmed")
        if aware(challenge.used_at) + self.settings.phone_confirmation_valid < datetime.now(timezone.utc):
            raise Forbidden("phone_confirmation_expired")
        self._refuse_duplicates(phone_challenge_id, id_index, phone_index)
        person_id = str(uuid.uuid4())
        seal = self.keys.keyring.seal
        now = utcnow()
        person = Person(
            id=person_id,
            name_sealed=to_text(seal(person_name.encode(), associated_data("person_name", person_id))),
            name_masked=mask_name(person_name),
            id_number_index=id_index,
            id_number_sealed=to_text(seal(resident.number.encode(), associated_data("id_number", person_id))),
            id_masked=mask_id_number(resident.number),
            phone_index=phone_index,
            phone_sealed=to_text(seal(number.encode(), associated_data("phone", person_id))),
            phone_masked=mask_phone(number),
            phone_challenge_id=phone_challenge_id, created_at=now, updated_at=now,
        )
        session.add(person)
        challenge.status = "registered"
        audit.record(session, "registration", "ok", person_id=person_id, method="sms",
                     name_masked=person.name_masked, id_masked=person.id_masked, phone_masked=person.phone_masked)
        try:
            self.db.commit()
        except DbIntegrityError:  # a concurrent registration won the unique index
            self.db.rollback()
            self._refuse_duplicates(phone_challenge_id, id_index, phone_index)
            raise Conflict("registration_conflict") from None
        self.metrics.inc("registrations", "Registrations by outcome", outcome="ok")
        log.info("person %s registered (%s, %s)", person_id, person.id_masked, person.phone_masked)
        return {"person_id": person_id, "name_masked": person.name_masked, "id_masked": person.id_masked,
                "phone_masked": person.phone_masked}

    @rpc
    def login(self, phone_challenge_id: str) -> dict:
        """The person whose registered phone a just-confirmed code proved
        (purpose phone_confirmation, within 30 minutes). A challenge logs in
        once; it is then marked ``logged_in``."""
        session = self.db.session
        challenge = session.get(OtpChallenge, phone_challenge_id, with_for_update=True)
        if challenge is None:
            raise NotFound("otp_challenge", phone_challenge_id)
        if challenge.purpose != "phone_confirmation" or challenge.status != "confirmed" or challenge.used_at is None:
            raise Forbidden("phone_not_confirmed")
        if aware(challenge.used_at) + self.settings.phone_confirmation_valid < datetime.now(timezone.utc):
            raise Forbidden("phone_confirmation_expired")
        person = session.execute(select(Person).where(Person.phone_index == challenge.phone_index)).scalar_one_or_none()
        if person is None:
            raise NotFound("person", "for this phone")
        challenge.status = "logged_in"
        audit.record(session, "login", "ok", person_id=person.id, method="sms")
        self.db.commit()
        return {"person_id": person.id, "name_masked": person.name_masked}

    def _refuse_duplicates(self, challenge_id: str, id_index: str, phone_index: str) -> None:
        session = self.db.session
        if session.execute(select(Person.id).where(Person.id_number_index == id_index)).first():
            self.metrics.inc("registrations", "Registrations by outcome", outcome="id_number_registered")
            raise Conflict("id_number_registered")
        if session.execute(select(Person.id).where(Person.phone_index == phone_index)).first():
            self.metrics.inc("registrations", "Registrations by outcome", outcome="phone_registered")
            raise Conflict("phone_registered")
        if session.execute(select(Person.id).where(Person.phone_challenge_id == challenge_id)).first():
            raise Forbidden("phone_challenge_used")

    def _person(self, person_id: str) -> Person:
        person = self.db.session.get(Person, person_id)
        if person is None:
            raise NotFound("person", person_id)
        return person

    #: a person's sealed fields: column and the associated data they were sealed with
    _SEALED = {"name": ("name_sealed", "person_name"), "id_number": ("id_number_sealed", "id_number"),
               "phone": ("phone_sealed", "phone")}

    def _unsealed(self, person: Person, field: str) -> str:
        """One of a person's sealed fields (``name``, ``id_number``, ``phone``) in clear."""
        column, context = self._SEALED[field]
        return self.keys.keyring.open(from_text(getattr(person, column)), associated_data(context, person.id)).decode()

    # -- faces ------------------------------------------------------------
    @rpc
    def verify_face(self, person_id: str, id_portrait: str, selfie: str) -> dict:
        """Compare the ID-card portrait with a selfie (one face each, distance
        under FACES.THRESHOLD), in the face process pool. On a match the
        portrait's face encoding is kept sealed (the images never are) and,
        once every required check passed, ``person_verified`` is emitted."""
        person = self._person(person_id)
        limit = self.settings.max_image_bytes
        portrait_bytes = decode_base64(id_portrait, "id_portrait", limit)
        selfie_bytes = decode_base64(selfie, "selfie", limit)
        session = self.db.session
        try:
            result = self.faces.compare(portrait_bytes, selfie_bytes)
        except InvalidInput as exc:
            audit.record(session, "face_check", f"{exc.field}:{exc.rule}", person_id=person_id, method="photo",
                         threshold=self.faces.threshold)
            self.db.commit()
            self.metrics.inc("face_checks", "Face checks by outcome", outcome="invalid_input")
            raise
        outcome = "matched" if result.matched else "not_matched"
        if result.matched:
            now = utcnow()
            person.face_encoding_sealed = to_text(self.keys.keyring.seal(
                result.portrait_encoding, associated_data("face_encoding", person_id)))
            person.face_verified_at = now
            person.updated_at = now
        audit.record(session, "face_check", outcome, person_id=person_id, method="photo",
                     score=round(result.distance, 4), threshold=result.threshold)
        if result.matched:
            self._emit_verified_if_complete(person)
        self.db.commit()
        self.metrics.inc("face_checks", "Face checks by outcome", outcome=outcome)
        self.metrics.observe("face_distance", result.distance, "Face-check distances",
                             buckets=FACE_DISTANCE_BUCKETS)
        return {"matched": result.matched, "distance": round(result.distance, 4), "threshold": result.threshold}

    def _emit_verified_if_complete(self, person: Person) -> None:
        if person.face_verified_at is None:
            return
        if self.settings.liveness_required and person.liveness_passed_at is None:
            return
        self.db.emit(events.PERSON_VERIFIED, {"person_id": person.id})

    def _registered_encoding(self, person: Person):
        if person.face_encoding_sealed is None:
            raise Forbidden("face_not_verified")
        return encoding_from_bytes(self.keys.keyring.open(
            from_text(person.face_encoding_sealed), associated_data("face_encoding", person.id)))

    @rpc
    def delete_face_data(self, person_id: str) -> dict:
        """Erase the person's face data (the sealed encoding; images are never
        kept). A later certificate or face willingness needs a new face check."""
        person = self._person(person_id)
        had = person.face_encoding_sealed is not None
        person.face_encoding_sealed = None
        person.updated_at = utcnow()
        audit.record(self.db.session, "face_data_deleted", "ok" if had else "nothing_stored", person_id=person_id)
        self.db.commit()
        return {"person_id": person_id, "deleted": had}

    # -- liveness ---------------------------------------------------------
    @rpc
    def start_liveness(self, person_id: str) -> dict:
        """A random head-turn challenge, single use, expiring (LIVENESS.CHALLENGE_TTL_SECONDS)."""
        person = self._person(person_id)
        if person.face_encoding_sealed is None:
            raise Forbidden("face_not_verified")
        settings = self.faces.liveness_settings
        challenge = LandmarkLivenessEngine(settings).new_challenge()  # no model is loaded for this
        now = utcnow()
        row = LivenessChallenge(id=str(uuid.uuid4()), person_id=person_id, actions=",".join(challenge.actions),
                                created_at=now, expires_at=now + self.settings.liveness_ttl)
        self.db.session.add(row)
        self.db.commit()
        return {"challenge_id": row.id, "actions": list(challenge.actions), "expires_at": iso(row.expires_at)}

    @rpc
    def check_liveness(self, person_id: str, challenge_id: str, frames: list[str] | None = None,
                       video: str | None = None) -> dict:
        """Judge frames (base64 images, in time order) or a short video against
        the challenge; the live face must also match the registered one. The
        challenge is spent by this call whatever the outcome."""
        if (frames is None) == (video is None):
            raise InvalidInput("frames", "one_of", "expected either frames or video")
        person = self._person(person_id)
        registered = self._registered_encoding(person)
        row = self.db.session.get(LivenessChallenge, challenge_id)
        if row is None or row.person_id != person_id:
            raise NotFound("liveness_challenge", challenge_id)
        if row.used_at is not None:
            raise Forbidden("liveness_challenge_used")
        if aware(row.expires_at) <= datetime.now(timezone.utc):
            raise Forbidden("liveness_challenge_expired")
        frame_bytes = [decode_base64(f, f"frames[{i}]", self.settings.max_image_bytes)
                       for i, f in enumerate(frames)] if frames is not None else None
        video_bytes = decode_base64(video, "video", self.settings.max_video_bytes) if video is not None else None
        claimed = self.db.session.execute(
            update(LivenessChallenge).where(LivenessChallenge.id == challenge_id, LivenessChallenge.used_at.is_(None))
            .values(used_at=utcnow())).rowcount
        self.db.commit()  # spent before the check runs: a failed attempt cannot be retried with it
        if claimed != 1:
            raise Forbidden("liveness_challenge_used")
        method = "video" if video is not None else "frames"
        challenge = Challenge(tuple(row.actions.split(",")))
        try:
            result = self.faces.check_liveness(challenge, frame_bytes, video_bytes)
        except InvalidInput as exc:
            self._finish_liveness(row, person, f"{exc.field}:{exc.rule}", method, None)
            raise
        reasons = list(result["reasons"])
        distance = None
        if result["encoding"] is not None:
            distance = face_distance(registered, encoding_from_bytes(result["encoding"]))
            if distance >= self.faces.threshold:
                reasons.append("face_mismatch")
        passed = result["passed"] and not reasons
        self._finish_liveness(row, person, "passed" if passed else "failed", method, distance, reasons)
        return {"passed": passed, "reasons": reasons}

    def _finish_liveness(self, row: LivenessChallenge, person: Person, outcome: str, method: str,
                         distance: float | None, reasons: list[str] | None = None) -> None:
        row = self.db.session.get(LivenessChallenge, row.id)
        row.outcome = outcome[:16]
        if outcome == "passed":
            person.liveness_passed_at = person.updated_at = utcnow()
            self._emit_verified_if_complete(person)
        audit.record(self.db.session, "liveness_check", outcome, person_id=person.id, method=method,
                     score=round(distance, 4) if distance is not None else None, threshold=self.faces.threshold,
                     challenge_id=row.id, reasons=reasons)
        self.db.commit()
        self.metrics.inc("liveness_checks", "Liveness checks by outcome",
                         outcome=outcome if outcome in ("passed", "failed") else "invalid_input")

    @rpc
    def person_status(self, person_id: str) -> dict:
        """Where a person stands in the real-name steps (masked, no secrets):
        face check, liveness (and whether it is required), the active
        certificate, and the next step: ``face``, ``liveness``, ``certificate``
        or ``ready``. Reading it changes nothing."""
        person = self._person(person_id)
        face_ok = person.face_verified_at is not None and person.face_encoding_sealed is not None
        liveness_ok = person.liveness_passed_at is not None
        current = certificates.active_certificate(self.db.session, person_id)
        latest = certificates.latest_certificate(self.db.session, person_id)
        reverify = current is None and latest is not None and face_ok and person.face_verified_at <= latest.issued_at
        if not face_ok or reverify:
            step = "face"
        elif self.settings.liveness_required and not liveness_ok:
            step = "liveness"
        elif current is None:
            step = "certificate"
        else:
            step = "ready"
        return {"person_id": person_id, "name_masked": person.name_masked, "id_masked": person.id_masked,
                "phone_masked": person.phone_masked, "face_verified": face_ok, "liveness_passed": liveness_ok,
                "liveness_required": self.settings.liveness_required, "next_step": step,
                "certificate": None if current is None else {
                    "serial": current.serial, "not_after": iso(current.not_after)}}

    # -- certificates -----------------------------------------------------
    @rpc
    def issue_certificate(self, person_id: str) -> dict:
        """Issue the person's signing certificate after registration and a
        face match (and liveness when LIVENESS.REQUIRED). Idempotent; after a
        newer face check a new certificate supersedes the active one; after a
        revocation a new certificate needs a new face check."""
        person = self._person(person_id)
        if person.face_verified_at is None or person.face_encoding_sealed is None:
            raise Forbidden("face_not_verified")
        if self.settings.liveness_required and person.liveness_passed_at is None:
            raise Forbidden("liveness_not_passed")
        session = self.db.session
        current = certificates.active_certificate(session, person_id)
        latest = certificates.latest_certificate(session, person_id)
        if latest is not None and person.face_verified_at <= latest.issued_at:
            if latest is current:
                return self._certificate_answer(current)
            raise Forbidden("reverification_required")  # revoked since: a new face check first
        keyring = self.keys.keyring
        name, id_number = self._unsealed(person, "name"), self._unsealed(person, "id_number")
        subject_serial = self.keys.blind_index.digest("certificate_subject", id_number)
        now = datetime.now(timezone.utc)
        issued = certificates.issue(self.authority.material, self.authority.points, keyring, name, subject_serial,
                                    self.settings.person_validity, now)
        if current is not None:
            self._revoke(current, "superseded", "service")
        row = certificates.Certificate(
            serial=issued.serial, person_id=person_id, certificate_pem=ca.certificate_to_pem(issued.certificate).decode(),
            private_key_sealed=issued.private_key_sealed, key_id=issued.key_id, status=certificates.ACTIVE,
            not_before=naive(issued.certificate.not_valid_before_utc), not_after=naive(issued.certificate.not_valid_after_utc),
            issued_at=utcnow(),
        )
        session.add(row)
        audit.record(session, "certificate_issued", "ok", person_id=person_id, serial=issued.serial,
                     key_id=issued.key_id, replaces=current.serial if current else None)
        self.db.emit(events.CERTIFICATE_ISSUED, {"person_id": person_id, "serial": issued.serial})
        self.db.commit()
        self.metrics.inc("certificates_issued", "Person certificates issued")
        return self._certificate_answer(row)

    def _certificate_answer(self, row) -> dict:
        return {"serial": row.serial, "certificate_pem": row.certificate_pem,
                "chain_pem": [ca.certificate_to_pem(self.authority.material.issuing.certificate).decode()]}

    def _revoke(self, row, reason: str, actor: str) -> None:
        row.status = certificates.REVOKED
        row.revoked_at = utcnow()
        row.revocation_reason = reason
        audit.record(self.db.session, "certificate_revoked", reason, person_id=row.person_id, actor=actor,
                     serial=row.serial)
        self.db.emit(events.CERTIFICATE_REVOKED, {"serial": row.serial, "person_id": row.person_id, "reason": reason})
        self.metrics.inc("certificates_revoked", "Person certificates revoked", reason=reason)

    @rpc
    def revoke_certificate(self, person_id: str, reason: str, actor: str = "person") -> dict:
        """Revoke the person's active certificate. ``reason``: an RFC 5280
        reason name — key_compromise for a reported loss, privilege_withdrawn
        for an admin action, cessation_of_operation for a closed account."""
        if reason not in certificates.REVOCATION_REASONS:
            raise InvalidInput("reason", "allowed_values", f"expected one of {', '.join(certificates.REVOCATION_REASONS)}")
        if actor not in ACTORS:
            raise InvalidInput("actor", "allowed_values", f"expected one of {', '.join(ACTORS)}")
        self._person(person_id)
        row = certificates.active_certificate(self.db.session, person_id)
        if row is None:
            raise NotFound("active_certificate", person_id)
        self._revoke(row, reason, actor)
        self.db.commit()
        return {"serial": row.serial, "revoked_at": iso(row.revoked_at), "reason": reason}

    @rpc
    def crl(self, ca_name: str = "issuing") -> dict:
        """The DER CRL (base64) of the issuing CA, fresh and numbered from the
        database; ``ca_name='root'`` gives the offline root's stored CRL."""
        if ca_name == "root":
            if self.authority.material.root_crl_der is None:
                raise NotFound("crl", "root")
            return {"crl_der": b64(self.authority.material.root_crl_der)}
        if ca_name != "issuing":
            raise InvalidInput("ca_name", "allowed_values", "expected issuing or root")
        number = CrlNumber(issued_at=utcnow())
        self.db.session.add(number)
        self.db.session.flush()
        revoked = certificates.revoked(self.db.session)
        crl = ca.build_crl(self.authority.material.issuing, revoked, crl_number=number.id)
        self.db.commit()
        return {"crl_der": b64(ca.crl_to_der(crl))}

    @rpc
    def ocsp(self, request_der: str) -> dict:
        """RFC 6960 OCSP for certificates of the issuing CA (base64 DER in and
        out), signed by the delegated OCSP responder."""
        request = decode_base64(request_der, "request_der", 16 * 1024)
        lookup = certificates.status_lookup(self.db.session, self.authority.material)
        return {"response_der": b64(build_delegated_ocsp_response(self.authority.material, request, lookup))}

    @rpc
    def certificate_status(self, serial: str) -> dict:
        """good / revoked (with time and reason) / unknown for a hex serial."""
        value = certificates.serial_int(serial.lower())
        row = self.db.session.get(certificates.Certificate, certificates.serial_hex(value))
        if row is None:
            known = self.authority.material.platform_status(value)
            return {"serial": certificates.serial_hex(value), "status": "good" if known else "unknown"}
        answer = {"serial": row.serial, "status": row.status if row.status == certificates.REVOKED else "good",
                  "person_id": row.person_id, "not_after": iso(row.not_after)}
        if row.status == certificates.REVOKED:
            answer.update(revoked_at=iso(row.revoked_at), reason=row.revocation_reason)
        return answer

    @rpc
    def report_profile(self, person_id: str) -> dict:
        """For the signing report (签约报告): the person's name, masked ID
        number and phone, every certificate (public fields) and how identity
        was checked (face score and threshold, liveness), from the audit trail."""
        person = self._person(person_id)
        name = self._unsealed(person, "name")
        records = audit.records_of(self.db.session, person_id)
        face = [r for r in records if r["action"] == "face_check" and r["outcome"] == "matched"]
        liveness = [r for r in records if r["action"] == "liveness_check"]
        rows = self.db.session.execute(select(certificates.Certificate)
                                       .where(certificates.Certificate.person_id == person_id)).scalars().all()
        certs = []
        for row in rows:
            parsed = ca.certificate_from_pem(row.certificate_pem.encode())
            certs.append({"serial": row.serial, "issuer": parsed.issuer.rfc4514_string(),
                          "subject_cn": parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                          "not_before": iso(row.not_before), "not_after": iso(row.not_after), "status": row.status})
        return {
            "person_id": person_id, "name": name, "id_number_masked": person.id_masked,
            "phone_masked": person.phone_masked, "registered_at": iso(person.created_at), "certificates": certs,
            "identity_check": {
                "id_verified": True, "checked_at": face[-1]["occurred_at"] if face else None,
                "face_distance": face[-1]["score"] if face else None,
                "face_threshold": face[-1]["threshold"] if face else None, "face_matched": bool(face),
                "liveness": liveness[-1]["outcome"] if liveness else "not_performed",
            },
        }

    @rpc
    def contact(self, person_id: str) -> dict:
        """For notify only (never exposed by the gateway): where to send a
        person's SMS and the name the message may address them by."""
        person = self._person(person_id)
        return {"phone": self._unsealed(person, "phone"), "name": self._unsealed(person, "name")}

    @rpc
    def party_details(self, person_id: str) -> dict:
        """For documents only (never exposed by the gateway): the real name, ID
        number and phone a receipt opened from this person's QR invite is
        filled with, so nobody types another person's identity."""
        person = self._person(person_id)
        return {field: self._unsealed(person, field) for field in ("name", "id_number", "phone")}

    # -- who a document names --------------------------------------------------
    def _named(self, name: str, id_number: str) -> tuple[str, str]:
        """(normalised name, ID-number blind index) of a party as a document names it."""
        return normalise_name(name), self.keys.blind_index.digest("id_number", parse_id_number(id_number).number)

    def _has_name(self, person: Person, name: str) -> bool:
        return hmac.compare_digest(self._unsealed(person, "name").encode(), name.encode())

    @rpc
    def person_matches(self, person_id: str, name: str, id_number: str) -> dict:
        """For signing only: is ``person_id`` the person a document names
        (real name and resident ID number, as registered)? Answers a yes or
        no, never what differs."""
        wanted_name, id_index = self._named(name, id_number)
        person = self._person(person_id)
        matches = hmac.compare_digest(person.id_number_index, id_index) and self._has_name(person, wanted_name)
        return {"person_id": person_id, "matches": bool(matches)}

    @rpc
    def find_person(self, name: str, id_number: str) -> dict:
        """For signing only: the registered person a document names (same
        real name and ID number), so a counterparty is bound to a flow by who
        they are rather than by an id the initiator types. NotFound when no
        such person has registered."""
        wanted_name, id_index = self._named(name, id_number)
        person = self.db.session.execute(select(Person).where(Person.id_number_index == id_index)).scalar_one_or_none()
        if person is None or not self._has_name(person, wanted_name):
            raise NotFound("person", "named by the document")
        return {"person_id": person.id}

    @rpc
    def current_certificate(self, person_id: str) -> dict:
        """The person's active signing certificate (public part) and chain."""
        self._person(person_id)
        row = certificates.active_certificate(self.db.session, person_id)
        if row is None:
            raise NotFound("active_certificate", person_id)
        return dict(self._certificate_answer(row), status="good", not_after=iso(row.not_after))

    @rpc
    def timestamp(self, request_der: str) -> dict:
        """The platform's RFC 3161 time-stamp authority (base64 DER TimeStampReq
        in, TimeStampResp out); served over HTTP by the gateway at /tsa."""
        request = decode_base64(request_der, "request_der", 4096)
        return {"response_der": b64(self.authority.tsa.respond(request))}

    @rpc
    def pki_certificates(self) -> dict:
        """Public CA material (PEM): root, issuing CA, TSA, OCSP responder, platform service."""
        m = self.authority.material
        pem = lambda cert: ca.certificate_to_pem(cert).decode()  # noqa: E731
        return {"root_pem": pem(m.root), "issuing_pem": pem(m.issuing.certificate), "tsa_pem": pem(m.tsa),
                "ocsp_pem": pem(m.ocsp_responder.certificate), "service_pem": pem(m.service)}

    # -- willingness and remote signing ----------------------------------
    @rpc
    def start_willingness(self, person_id: str, digest: str, method: str, document_title: str | None = None) -> dict:
        """意愿认证 for exactly one SHA-256 ``digest``: ``sms`` sends a
        willingness code to the registered phone; ``face`` expects a selfie
        in ``confirm_willingness``. Needs an active certificate."""
        try:
            document_digest = grants.normalise_digest(digest)
        except InvalidInput:
            raise InvalidInput("digest", "format", "expected a SHA-256 digest as 64 hex characters") from None
        if method not in WILLINGNESS_METHODS:
            raise InvalidInput("method", "allowed_values", f"expected one of {', '.join(WILLINGNESS_METHODS)}")
        title = document_title.strip() if document_title is not None else None
        if title is not None and not 1 <= len(title) <= DOCUMENT_TITLE_MAX:
            raise InvalidInput("document_title", "max_length", f"expected 1 to {DOCUMENT_TITLE_MAX} characters")
        person = self._person(person_id)
        certificate = certificates.active_certificate(self.db.session, person_id)
        if certificate is None:
            raise Forbidden("no_active_certificate")
        if method == "face" and person.face_encoding_sealed is None:
            raise Forbidden("face_not_verified")
        now = utcnow()
        check = WillingnessCheck(
            id=str(uuid.uuid4()), person_id=person_id, certificate_serial=certificate.serial,
            document_digest=document_digest, document_title=title, method=method, status="pending",
            failed_attempts=0, created_at=now, expires_at=now + self.settings.willingness_ttl,
        )
        if method == "sms":
            number = self._unsealed(person, "phone")
            # rate limits per (person, digest): one document's codes, not every signature of the day
            subject = self.keys.blind_index.digest("willingness", f"{person_id}:{document_digest}")
            check.otp_challenge_id = self._send_code("willingness", number, person.phone_index, subject)
        self.db.session.add(check)
        audit.record(self.db.session, "willingness_started", "ok", person_id=person_id, method=method,
                     willingness_id=check.id, digest=document_digest, serial=certificate.serial)
        self.db.commit()
        self.metrics.inc("willingness", "Willingness checks", method=method, outcome="started")
        return {"willingness_id": check.id, "method": method, "expires_at": iso(check.expires_at)}

    @rpc
    def confirm_willingness(self, willingness_id: str, code: str | None = None, selfie: str | None = None,
                            person_id: str | None = None) -> dict:
        """Check the SMS code or the selfie (against the registered face) and
        issue a single-use grant bound to the person, the certificate serial
        and the digest (WILLINGNESS.GRANT_TTL_SECONDS). ``person_id``, when
        given (the gateway gives the session's), must be the check's person."""
        session = self.db.session
        check = session.get(WillingnessCheck, willingness_id)
        if check is None or (person_id is not None and check.person_id != person_id):
            raise NotFound("willingness_check", willingness_id)
        if check.method == "sms" and code is None:
            raise InvalidInput("code", "required", "the sms method needs the code")
        if check.method == "face" and selfie is None:
            raise InvalidInput("selfie", "required", "the face method needs a selfie")
        if check.status != "pending":
            raise Forbidden("willingness_used" if check.status == "confirmed" else "willingness_failed")
        if aware(check.expires_at) <= datetime.now(timezone.utc):
            self._willingness_refused(check, "willingness_expired")
        score = None
        if check.method == "sms":
            row = session.get(OtpChallenge, check.otp_challenge_id, with_for_update=True)
            result = otp.verify(self.keys.otp, record_of(row), code, datetime.now(timezone.utc))
            self._store_verification(row, result)
            if not result.accepted:
                self._willingness_refused(check, f"otp_{result.outcome.value}")
        else:
            person = self._person(check.person_id)
            registered = self._registered_encoding(person)
            live = encoding_from_bytes(self.faces.encode(
                decode_base64(selfie, "selfie", self.settings.max_image_bytes), "selfie"))
            score = face_distance(registered, live)
            if score >= self.faces.threshold:
                check.failed_attempts += 1
                if check.failed_attempts >= self.settings.max_face_attempts:
                    check.status = "failed"
                self._willingness_refused(check, "face_mismatch", score)
        current = certificates.active_certificate(session, check.person_id)
        if current is None or current.serial != check.certificate_serial:
            self._willingness_refused(check, "certificate_changed")
        now = datetime.now(timezone.utc)
        issued = grants.new_grant(check.person_id, certificates.serial_int(check.certificate_serial),
                                  check.document_digest, check.method, now, self.settings.grant_ttl)
        claimed = session.execute(
            update(WillingnessCheck).where(WillingnessCheck.id == check.id, WillingnessCheck.status == "pending")
            .values(status="confirmed", confirmed_at=naive(now))).rowcount
        if claimed != 1:
            self.db.rollback()
            raise Forbidden("willingness_used")
        grant = issued.grant
        session.add(SigningGrantRow(
            token_hash=grant.token_hash, willingness_id=check.id, person_id=grant.person_id,
            certificate_serial=check.certificate_serial, document_digest=grant.document_digest,
            method=grant.method, issued_at=naive(grant.issued_at), expires_at=naive(grant.expires_at),
        ))
        audit.record(session, "willingness_checked", "ok", person_id=check.person_id, method=check.method,
                     score=round(score, 4) if score is not None else None,
                     threshold=self.faces.threshold if score is not None else None,
                     willingness_id=check.id, digest=check.document_digest, serial=check.certificate_serial)
        self.db.commit()
        self.metrics.inc("willingness", "Willingness checks", method=check.method, outcome="confirmed")
        return {"grant": issued.token, "expires_at": grant.expires_at.isoformat()}

    def _willingness_refused(self, check: WillingnessCheck, reason: str, score: float | None = None) -> None:
        audit.record(self.db.session, "willingness_checked", reason, person_id=check.person_id, method=check.method,
                     score=round(score, 4) if score is not None else None,
                     threshold=self.faces.threshold if score is not None else None,
                     willingness_id=check.id, digest=check.document_digest)
        self.db.commit()
        self.metrics.inc("willingness", "Willingness checks", method=check.method, outcome=reason)
        raise Forbidden(reason)

    @rpc
    def sign_digest(self, grant: str, person_id: str, digest: str) -> dict:
        """ECDSA-sign ``digest`` (64 hex, SHA-256) with the person's key, only
        with a valid, unused, unexpired grant of that person for that digest
        and a certificate that is not revoked. The grant is claimed atomically
        (UPDATE ... WHERE used_at IS NULL). Every attempt is audited."""
        session = self.db.session
        row = session.get(SigningGrantRow, grants.token_hash(grant)) if isinstance(grant, str) else None
        stored = None if row is None else grants.SigningGrant(
            token_hash=row.token_hash, person_id=row.person_id,
            certificate_serial=certificates.serial_int(row.certificate_serial),
            document_digest=row.document_digest, method=row.method,  # type: ignore[arg-type]
            issued_at=aware(row.issued_at), expires_at=aware(row.expires_at), used_at=aware(row.used_at))
        now = datetime.now(timezone.utc)
        try:
            grants.check_grant(stored, grant, person_id, digest, now)
            certificate = session.get(certificates.Certificate, row.certificate_serial)
            if certificate is None or certificate.status != certificates.ACTIVE:
                raise Forbidden("certificate_revoked")
            claimed = session.execute(
                update(SigningGrantRow).where(SigningGrantRow.token_hash == row.token_hash,
                                              SigningGrantRow.used_at.is_(None))
                .values(used_at=naive(now))).rowcount
            if claimed != 1:
                raise Forbidden("grant_replayed")
        except Forbidden as refused:
            self.db.rollback()
            audit.record(session, "sign_digest", refused.reason, person_id=person_id, actor="service",
                         method=row.method if row else None, digest=digest[:64],
                         willingness_id=row.willingness_id if row else None)
            self.db.commit()
            self.metrics.inc("sign_digest", "Remote signatures by outcome", outcome=refused.reason)
            raise
        key = certificates.private_key(self.keys.keyring, certificate)
        signature = grants.sign_digest(key, bytes.fromhex(row.document_digest))
        audit.record(session, "sign_digest", "ok", person_id=person_id, actor="service", method=row.method,
                     digest=row.document_digest, serial=certificate.serial, willingness_id=row.willingness_id)
        self.db.commit()
        self.metrics.inc("sign_digest", "Remote signatures by outcome", outcome="ok")
        return dict(self._certificate_answer(certificate), signature=b64(signature))

    # -- audit ------------------------------------------------------------
    @rpc
    def audit_records(self, person_id: str) -> list:
        """The person's audit trail, oldest first (ids and masked values only)."""
        self._person(person_id)
        return audit.records_of(self.db.session, person_id)
