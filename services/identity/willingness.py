"""Willingness (意愿认证) and remote signing with the person's key.

Per signature: :meth:`Willingness.start` opens a check for exactly one
SHA-256 digest, by SMS code (sent to the registered phone) or by face (a
fresh liveness challenge); :meth:`Willingness.confirm` checks the code, or
the live face against the proofed one, and issues a single-use grant bound to
the person, the certificate serial and the digest (:mod:`.grants`);
:meth:`Willingness.sign_digest` claims the grant and signs with the key.

Face failures are counted **per person**, not per check
(:meth:`~services.identity.proofs.Proofs.count_failure`): 5 within 15 minutes
lock face checks for 15 minutes (``RateLimited("face_willingness_locked")``
with Retry-After), audited. A check also fails for good after
WILLINGNESS.MAX_FACE_ATTEMPTS.
"""
from __future__ import annotations

import uuid
from typing import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.common.clock import aware, iso, naive, now, utcnow
from services.common.errors import Forbidden, InvalidInput, NotFound, Unavailable
from services.common.keystore import KeyRef
from services.common.reasons import Reason
from services.common.wire import b64
from services.identity import audit, certificates, grants
from services.identity.faces import encoding_from_bytes, face_distance
from services.identity.models import SigningGrantRow, WillingnessCheck
from services.identity.people import People
from services.identity.person_keys import PersonKeys
from services.identity.phone_codes import PhoneCodes
from services.identity.proofs import Proofs
from services.identity.secrets import IdentityKeys
from services.identity.settings import IdentitySettings

METHODS = grants.METHODS
DOCUMENT_TITLE_MAX = 20  # notify's SMS title variable limit


class Willingness:
    def __init__(self, session: Session, people: People, codes: PhoneCodes, proofs: Proofs, keys: IdentityKeys,
                 settings: IdentitySettings, metrics, threshold: float, commit: Callable[[], None],
                 person_keys: PersonKeys):
        self.person_keys = person_keys
        self.session = session
        self.people = people
        self.codes = codes
        self.proofs = proofs
        self.keys = keys
        self.settings = settings
        self.metrics = metrics
        self.threshold = threshold
        self.commit = commit

    # -- start -------------------------------------------------------------------------
    def start(self, person_id: str, digest: str, method: str, document_title: str | None) -> dict:
        try:
            document_digest = grants.normalise_digest(digest)
        except InvalidInput:
            raise InvalidInput("digest", "format", "expected a SHA-256 digest as 64 hex characters") from None
        if method not in METHODS:
            raise InvalidInput("method", "allowed_values", f"expected one of {', '.join(METHODS)}")
        title = document_title.strip() if document_title is not None else None
        if title is not None and not 1 <= len(title) <= DOCUMENT_TITLE_MAX:
            raise InvalidInput("document_title", "max_length", f"expected 1 to {DOCUMENT_TITLE_MAX} characters")
        person = self.people.active(person_id)
        certificate = certificates.active_certificate(self.session, person_id)
        if certificate is None:
            raise Forbidden(Reason.NO_ACTIVE_CERTIFICATE)
        if method == "face":
            self.people.face(person)  # Forbidden("face_not_verified") if no proofed face is kept
            self.proofs.refuse_if_locked(person, Reason.FACE_WILLINGNESS_LOCKED)
        moment = utcnow()
        check = WillingnessCheck(
            id=str(uuid.uuid4()), person_id=person_id, certificate_serial=certificate.serial,
            document_digest=document_digest, document_title=title, method=method, status="pending",
            failed_attempts=0, created_at=moment, expires_at=moment + self.settings.willingness_ttl,
        )
        challenge = None
        if method == "sms":
            number = self.people.unsealed(person, "phone")
            # send limits per (person, digest): one document's codes, not every signature of the day
            subject = self.keys.blind_index.digest("willingness", f"{person_id}:{document_digest}")
            check.otp_challenge_id = self.codes.send("willingness", number, person.phone_index, subject).id
        else:
            challenge = self.proofs.new_challenge(person_id, "willingness", check.id)
            check.liveness_challenge_id = challenge.id
        self.session.add(check)
        audit.record(self.session, "willingness_started", "ok", person_id=person_id, method=method,
                     willingness_id=check.id, digest=document_digest, serial=certificate.serial)
        return {"willingness_id": check.id, "method": method, "expires_at": iso(check.expires_at),
                "challenge": self.proofs.challenge_answer(challenge) if challenge is not None else None}

    def new_challenge(self, willingness_id: str, person_id: str) -> dict:
        """Another liveness challenge for a pending face check (the last one was spent)."""
        check = self._pending(willingness_id, person_id)
        if check.method != "face":
            raise InvalidInput("willingness_id", "face_method", "only a face check takes a liveness challenge")
        self.proofs.refuse_if_locked(self.people.get(check.person_id), Reason.FACE_WILLINGNESS_LOCKED)
        challenge = self.proofs.new_challenge(check.person_id, "willingness", check.id)
        check.liveness_challenge_id = challenge.id
        return self.proofs.challenge_answer(challenge)

    def _pending(self, willingness_id: str, person_id: str | None) -> WillingnessCheck:
        check = self.session.get(WillingnessCheck, willingness_id) if isinstance(willingness_id, str) else None
        if check is None or (person_id is not None and check.person_id != person_id):
            raise NotFound("willingness_check", willingness_id if isinstance(willingness_id, str) else "")
        if check.status != "pending":
            raise Forbidden(Reason.WILLINGNESS_USED if check.status == "confirmed" else Reason.WILLINGNESS_FAILED)
        return check

    # -- confirm ---------------------------------------------------------------------------
    def confirm(self, willingness_id: str, code: str | None, selfie: str | None, frames: list[str] | None,
                video: str | None, person_id: str | None) -> dict:
        check = self.session.get(WillingnessCheck, willingness_id) if isinstance(willingness_id, str) else None
        if check is None or (person_id is not None and check.person_id != person_id):
            raise NotFound("willingness_check", willingness_id if isinstance(willingness_id, str) else "")
        if check.method == "sms" and code is None:
            raise InvalidInput("code", "required", "the sms method needs the code")
        if check.method == "face" and selfie is None and frames is None and video is None:
            raise InvalidInput("frames", "required", "the face method needs a live capture")
        check = self._pending(willingness_id, person_id)
        if aware(check.expires_at) <= now():
            self._refused(check, Reason.WILLINGNESS_EXPIRED)
        score = None
        if check.method == "sms":
            result = self.codes.check(check.otp_challenge_id, code)
            if not result.accepted:
                self._refused(check, result.refusal)
        else:
            score = self._confirm_face(check, selfie, frames, video)
        current = certificates.active_certificate(self.session, check.person_id)
        if current is None or current.serial != check.certificate_serial:
            self._refused(check, Reason.CERTIFICATE_CHANGED)
        moment = now()
        issued = grants.new_grant(check.person_id, certificates.serial_int(check.certificate_serial),
                                  check.document_digest, check.method, moment, self.settings.grant_ttl)
        claimed = self.session.execute(
            update(WillingnessCheck).where(WillingnessCheck.id == check.id, WillingnessCheck.status == "pending")
            .values(status="confirmed", confirmed_at=naive(moment))).rowcount
        if claimed != 1:
            self.session.rollback()
            raise Forbidden(Reason.WILLINGNESS_USED)
        grant = issued.grant
        self.session.add(SigningGrantRow(
            token_hash=grant.token_hash, willingness_id=check.id, person_id=grant.person_id,
            certificate_serial=check.certificate_serial, document_digest=grant.document_digest,
            method=grant.method, issued_at=naive(grant.issued_at), expires_at=naive(grant.expires_at),
        ))
        audit.record(self.session, "willingness_checked", "ok", person_id=check.person_id, method=check.method,
                     score=round(score, 4) if score is not None else None,
                     threshold=self.threshold if score is not None else None,
                     willingness_id=check.id, digest=check.document_digest, serial=check.certificate_serial)
        self.metrics.inc("willingness", "Willingness checks", method=check.method, outcome="confirmed")
        return {"grant": issued.token, "expires_at": grant.expires_at.isoformat()}

    def _confirm_face(self, check: WillingnessCheck, selfie, frames, video) -> float:
        person = self.people.get(check.person_id)
        self.proofs.refuse_if_locked(person, Reason.FACE_WILLINGNESS_LOCKED)
        live_frames = frames is not None or video is not None
        capture = self.proofs.capture(check.person_id, "willingness",
                                      check.liveness_challenge_id if live_frames else None,
                                      frames, video, selfie, willingness_id=check.id)
        if not capture.passed:
            self._face_failed(check, Reason.LIVENESS_FAILED, None, capture.reasons)
        score = face_distance(self.people.face(person), encoding_from_bytes(capture.face.encoding))
        if score >= self.threshold:
            self._face_failed(check, Reason.FACE_MISMATCH, score)
        return score

    # -- failures ----------------------------------------------------------------------------
    def _face_failed(self, check: WillingnessCheck, reason: Reason, score: float | None,
                     reasons: tuple[str, ...] = ()) -> None:
        check = self.session.get(WillingnessCheck, check.id)  # the capture committed: reload
        check.failed_attempts += 1
        if check.failed_attempts >= self.settings.max_face_attempts:
            check.status = "failed"
        self.proofs.count_failure(check.person_id)
        self._refused(check, reason, score, reasons)

    def _refused(self, check: WillingnessCheck, reason: Reason, score: float | None = None,
                 reasons: tuple[str, ...] = ()) -> None:
        audit.record(self.session, "willingness_checked", reason, person_id=check.person_id, method=check.method,
                     score=round(score, 4) if score is not None else None,
                     threshold=self.threshold if score is not None else None,
                     willingness_id=check.id, digest=check.document_digest, reasons=list(reasons) or None)
        self.commit()
        self.metrics.inc("willingness", "Willingness checks", method=check.method, outcome=reason)
        raise Forbidden(reason)

    # -- signing -------------------------------------------------------------------------------
    def sign_digest(self, grant: str, person_id: str, digest: str) -> tuple[certificates.Certificate, str]:
        """ECDSA-sign ``digest`` with the person's key, only with a valid, unused,
        unexpired grant of that person for that digest and an active
        certificate: the one place where the grant is checked, claimed (atomically)
        and the key used (:meth:`~services.identity.person_keys.PersonKeys.sign_digest`,
        on the token or through the KEK). Every attempt is audited, a signature with
        the grant's id (``grant_id``, the stored hash of its token) and the key's id
        on the token; a token fault (``Unavailable('key_store', reason)``) leaves the
        grant unspent. Answers the certificate and the signature (base64); not committed."""
        row = self.session.get(SigningGrantRow, grants.token_hash(grant)) if isinstance(grant, str) else None
        stored = None if row is None else grants.SigningGrant(
            token_hash=row.token_hash, person_id=row.person_id,
            certificate_serial=certificates.serial_int(row.certificate_serial),
            document_digest=row.document_digest, method=row.method,  # type: ignore[arg-type]
            issued_at=aware(row.issued_at), expires_at=aware(row.expires_at), used_at=aware(row.used_at))
        moment = now()
        try:
            claimed = grants.check_grant(stored, grant, person_id, digest, moment)
            certificate = self.session.get(certificates.Certificate, row.certificate_serial)
            if certificate is None or certificate.status != certificates.ACTIVE:
                raise Forbidden(Reason.CERTIFICATE_REVOKED)
            taken = self.session.execute(
                update(SigningGrantRow).where(SigningGrantRow.token_hash == row.token_hash,
                                              SigningGrantRow.used_at.is_(None))
                .values(used_at=naive(moment))).rowcount
            if taken != 1:
                raise Forbidden(Reason.GRANT_REPLAYED)
        except Forbidden as refused:
            self.session.rollback()
            audit.record(self.session, "sign_digest", refused.reason, person_id=person_id, actor="service",
                         method=row.method if row else None, digest=digest[:64] if isinstance(digest, str) else None,
                         willingness_id=row.willingness_id if row else None)
            self.commit()
            self.metrics.inc("sign_digest", "Remote signatures by outcome", outcome=refused.reason)
            raise
        used = {"grant_id": row.token_hash, "willingness_id": row.willingness_id, "serial": certificate.serial,
                "digest": row.document_digest}
        if certificate.key_ref is not None:
            used["token_key_id"] = KeyRef.from_text(certificate.key_ref).key_id
        try:
            signature = self.person_keys.sign_digest(certificate, claimed, bytes.fromhex(row.document_digest))
        except Unavailable as unavailable:  # the token: the grant stays unspent, the attempt is audited
            self.session.rollback()
            outcome = f"{unavailable.system}_{unavailable.reason}"
            audit.record(self.session, "sign_digest", outcome, person_id=person_id, actor="service",
                         method=row.method, **used)
            self.commit()
            self.metrics.inc("sign_digest", "Remote signatures by outcome", outcome=outcome)
            raise
        audit.record(self.session, "sign_digest", "ok", person_id=person_id, actor="service", method=row.method,
                     **used)
        self.metrics.inc("sign_digest", "Remote signatures by outcome", outcome="ok")
        return certificate, b64(signature)
