"""Proving who a person is: a live capture, then the authority's comparison.

1. :meth:`Proofs.new_challenge` issues an active liveness challenge (head
   turns, :mod:`.liveness`), single use, expiring (LIVENESS.CHALLENGE_TTL_SECONDS),
   for proofing or for one face willingness check.
2. :meth:`Proofs.capture` spends the challenge, then judges the frames (or a
   short video) in the face worker pool. What comes out is the live face:
   the mean encoding of the frames and the most frontal frame. A selfie file
   stands in for a live capture only where FACES.ALLOW_UPLOAD allows it and
   LIVENESS.REQUIRED does not forbid it; its proofs reach ``authority_face``
   at most.
3. :meth:`Proofs.prove` asks the configured provider to compare that face with
   the authority's photo for the person's name and ID number. A match raises
   the person's assurance level, keeps the live face (sealed) for later face
   willingness checks, and is recorded as an :class:`IdentityProof`.
4. Failed face checks are counted **per person**, proofing and willingness
   alike, under the person's row lock: WILLINGNESS.FACE_LOCK.MAX_FAILURES (5)
   within WINDOW_SECONDS (15 minutes) lock the person's face checks for
   LOCK_SECONDS (``RateLimited``, with Retry-After), and the lock is audited.
   It stops fishing for a challenge a recording happens to perform, and
   spending the authority's (paid) comparisons on someone else's face.
5. A matched proof is a **step-up**: it unlocks one change of who can sign
   (a certificate, a phone change) within STEP_UP.WINDOW_SECONDS, spent by
   :meth:`Proofs.consume`. A session token alone can therefore replace no
   face, phone or certificate: each needs the authority to see the person's
   face again.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.common.assurance import AssuranceLevel
from services.common.clock import aware, iso, naive, now, utcnow
from services.common.errors import Forbidden, InvalidInput, NotFound, RateLimited
from services.common.reasons import Reason
from services.common.wire import decode_base64
from services.identity import audit
from services.identity.face_pool import FaceWorkers
from services.identity.faces import encoding_from_bytes, face_distance
from services.identity.liveness import Challenge, LandmarkLivenessEngine
from services.identity.models import IdentityProof, LivenessChallenge, Person
from services.identity.people import People
from services.identity.proofing import CapturedFace, IdentityProofing
from services.identity.settings import IdentitySettings

PURPOSES = ("proofing", "willingness")
FACE_DISTANCE_BUCKETS = (0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.2)


@dataclass(frozen=True)
class Capture:
    """What the person presented: the live face (``face``; None when liveness
    failed), how (``frames``, ``video``, ``selfie``) and the liveness verdict."""

    face: CapturedFace | None
    method: str
    reasons: tuple[str, ...] = ()
    liveness_audit: dict | None = None
    challenge_id: str | None = None

    @property
    def passed(self) -> bool:
        return self.face is not None


class Proofs:
    def __init__(self, session: Session, people: People, faces: FaceWorkers, provider: IdentityProofing,
                 settings: IdentitySettings, metrics, commit: Callable[[], None]):
        self.session = session
        self.people = people
        self.faces = faces
        self.provider = provider
        self.settings = settings
        self.metrics = metrics
        self.commit = commit

    # -- liveness challenges -------------------------------------------------------
    def new_challenge(self, person_id: str, purpose: str = "proofing",
                      willingness_id: str | None = None) -> LivenessChallenge:
        challenge = LandmarkLivenessEngine(self.faces.liveness_settings).new_challenge()  # loads no model
        moment = utcnow()
        row = LivenessChallenge(id=str(uuid.uuid4()), person_id=person_id, purpose=purpose,
                                willingness_id=willingness_id, actions=",".join(challenge.actions),
                                created_at=moment, expires_at=moment + self.settings.liveness_ttl)
        self.session.add(row)
        return row

    def challenge_answer(self, row: LivenessChallenge) -> dict:
        live = self.faces.liveness_settings
        return {"challenge_id": row.id, "actions": row.actions.split(","),
                "expires_at": aware(row.expires_at).isoformat(),
                "frames_min": live.min_frames, "frames_max": live.max_frames,
                "upload_allowed": self.upload_allowed}

    @property
    def upload_allowed(self) -> bool:
        return self.settings.upload_allowed or not self.settings.liveness_required

    def _spend(self, person_id: str, challenge_id: str, purpose: str, willingness_id: str | None) -> Challenge:
        row = self.session.get(LivenessChallenge, challenge_id) if isinstance(challenge_id, str) else None
        if (row is None or row.person_id != person_id or row.purpose != purpose
                or (willingness_id is not None and row.willingness_id != willingness_id)):
            raise NotFound("liveness_challenge", challenge_id if isinstance(challenge_id, str) else "")
        if row.used_at is not None:
            raise Forbidden(Reason.LIVENESS_CHALLENGE_USED)
        if aware(row.expires_at) <= now():
            raise Forbidden(Reason.LIVENESS_CHALLENGE_EXPIRED)
        claimed = self.session.execute(
            update(LivenessChallenge).where(LivenessChallenge.id == row.id, LivenessChallenge.used_at.is_(None))
            .values(used_at=utcnow())).rowcount
        self.commit()  # spent before the check runs: a failed attempt cannot be retried with it
        if claimed != 1:
            raise Forbidden(Reason.LIVENESS_CHALLENGE_USED)
        return Challenge(tuple(row.actions.split(",")))

    # -- capture ----------------------------------------------------------------------
    def capture(self, person_id: str, purpose: str, challenge_id: str | None, frames: list[str] | None,
                video: str | None, selfie: str | None, willingness_id: str | None = None) -> Capture:
        """The live face the person presents (checks every argument first)."""
        given = [name for name, value in (("frames", frames), ("video", video), ("selfie", selfie))
                 if value is not None]
        if not given:
            raise InvalidInput("frames", "required", "expected the frames of a live capture (or a short video)")
        if len(given) > 1:
            raise InvalidInput(given[1], "one_of", "expected one of frames, video or selfie")
        if selfie is not None:
            if not self.upload_allowed:
                raise InvalidInput("selfie", "liveness_required",
                                   "expected a live capture (frames or video), not a file")
            image = decode_base64(selfie, "selfie", self.settings.max_image_bytes)
            return Capture(CapturedFace(image, self.faces.encode(image, "selfie"), live=False), "selfie")
        if not isinstance(challenge_id, str) or not challenge_id:
            raise InvalidInput("challenge_id", "required", "a live capture answers a liveness challenge")
        if frames is not None and not isinstance(frames, list):
            raise InvalidInput("frames", "list", "expected a list of base64 images")
        live = self.faces.liveness_settings
        if frames is not None and not live.min_frames <= len(frames) <= live.max_frames:
            raise InvalidInput("frames", "count",
                               f"expected {live.min_frames} to {live.max_frames} frames, found {len(frames)}")
        frame_bytes = [decode_base64(f, f"frames[{i}]", self.settings.max_image_bytes)
                       for i, f in enumerate(frames)] if frames is not None else None
        video_bytes = decode_base64(video, "video", self.settings.max_video_bytes) if video is not None else None
        challenge = self._spend(person_id, challenge_id, purpose, willingness_id)
        method = "frames" if frames is not None else "video"
        result = self.faces.check_liveness(challenge, frame_bytes, video_bytes)
        self.metrics.inc("liveness_checks", "Liveness checks by outcome", purpose=purpose,
                         outcome="passed" if result["passed"] else "failed")
        if not result["passed"] or result["encoding"] is None:
            return Capture(None, method, tuple(result["reasons"]), result["audit"], challenge_id)
        face = CapturedFace(result["best_frame"], result["encoding"], live=True)
        return Capture(face, method, (), result["audit"], challenge_id)

    # -- proof --------------------------------------------------------------------------
    def prove(self, person: Person, capture: Capture,
              id_portrait: bytes | None = None) -> tuple[IdentityProof, tuple[str, ...]]:
        """Compare the captured face with the authority's photo; record the proof
        (matched or not) and, on a match, raise the person's level and keep the face.
        Answers the proof and the reasons it did not match (empty on a match)."""
        proof = self.provider.compare_face(self.people.claimant(person), capture.face, id_portrait)
        matched, reasons = proof.matched, () if proof.matched else ("face_mismatch",)
        if matched and not proof.level.authority_checked and person.face_encoding_sealed is not None:
            # no authority here: a new face must at least be the face already proofed
            if face_distance(self.people.face(person),
                             encoding_from_bytes(capture.face.encoding)) >= self.faces.threshold:
                matched, reasons = False, ("face_mismatch_registered",)
        moment = utcnow()
        row = IdentityProof(id=str(uuid.uuid4()), person_id=person.id, provider=proof.provider,
                            request_id=(proof.request_id or "")[:64] or None, level=proof.level.value, matched=matched,
                            live=capture.face.live, score=proof.score, score_kind=proof.score_kind,
                            threshold=proof.threshold, liveness_challenge_id=capture.challenge_id, created_at=moment)
        self.session.add(row)
        if matched:
            person.face_encoding_sealed = self.people.seal(person.id, "face", capture.face.encoding)
            person.face_verified_at = person.updated_at = moment
            if capture.face.live:
                person.liveness_passed_at = moment
            if proof.level.rank >= self.people.level(person).rank:
                person.assurance_level = proof.level.value
                person.proofing_provider, person.proofing_request_id = row.provider, row.request_id
                person.proofed_at = moment
        audit.record(self.session, "face_proof", "matched" if matched else reasons[0], person_id=person.id,
                     method=capture.method, score=round(proof.score, 4), threshold=proof.threshold,
                     provider=proof.provider, request_id=row.request_id, level=proof.level.value, proof_id=row.id,
                     challenge_id=capture.challenge_id)
        self.metrics.inc("face_proofs", "Face proofs by provider and outcome", provider=proof.provider,
                         outcome="matched" if matched else "not_matched")
        if proof.score_kind == "distance":
            self.metrics.observe("face_distance", proof.score, "Face-proof distances", buckets=FACE_DISTANCE_BUCKETS)
        return row, reasons

    def record_failed_capture(self, person: Person, capture: Capture) -> None:
        audit.record(self.session, "liveness_check", "failed", person_id=person.id, method=capture.method,
                     challenge_id=capture.challenge_id, reasons=list(capture.reasons))

    # -- failures ------------------------------------------------------------------------------
    def count_failure(self, person_id: str) -> None:
        """One more failed face check of the person, under their row lock; the one
        that reaches the limit locks their face checks and is audited. Not committed."""
        person = self.people.get(person_id, lock=True)
        moment = now()
        if person.face_locked_until is not None and aware(person.face_locked_until) > moment:
            return  # locked already: failures while locked do not extend it
        lock = self.settings.face_lock
        since = aware(person.face_failures_since)
        if since is None or since + lock.window <= moment:
            person.face_failures, person.face_failures_since = 1, naive(moment)
        else:
            person.face_failures += 1
        if person.face_failures >= lock.max_failures:
            person.face_locked_until = naive(moment + lock.lock)
            audit.record(self.session, "face_checks_locked", "locked", person_id=person_id, actor="service",
                         failures=person.face_failures, until=iso(person.face_locked_until))
            self.metrics.inc("face_willingness_locks", "Persons whose face checks were locked")
            person.face_failures, person.face_failures_since = 0, None

    @staticmethod
    def refuse_if_locked(person: Person, reason: Reason) -> None:
        until = aware(person.face_locked_until)
        moment = now()
        if until is not None and until > moment:
            raise RateLimited(reason, int((until - moment).total_seconds()) + 1)

    # -- step-up ------------------------------------------------------------------------------
    def consume(self, person_id: str, proof_id: str | None, purpose: str) -> IdentityProof:
        """Spend a fresh matched proof on one change of who can sign (``purpose``:
        ``certificate``, ``phone_change``). Not committed."""
        if proof_id is None:
            raise Forbidden(Reason.STEP_UP_REQUIRED)
        row = self.session.get(IdentityProof, proof_id) if isinstance(proof_id, str) else None
        if row is None or row.person_id != person_id:
            raise NotFound("identity_proof", proof_id if isinstance(proof_id, str) else "")
        if not row.matched:
            raise Forbidden(Reason.STEP_UP_REQUIRED)
        if not AssuranceLevel(row.level).at_least(self.settings.step_up_level):
            raise Forbidden(Reason.STEP_UP_LEVEL_TOO_LOW)
        if aware(row.created_at) + self.settings.step_up_window <= now():
            raise Forbidden(Reason.STEP_UP_EXPIRED)
        claimed = self.session.execute(
            update(IdentityProof).where(IdentityProof.id == row.id, IdentityProof.consumed_at.is_(None))
            .values(consumed_at=utcnow(), consumed_for=purpose)).rowcount
        if claimed != 1:
            raise Forbidden(Reason.STEP_UP_USED)
        audit.record(self.session, "step_up", purpose, person_id=person_id, proof_id=row.id, level=row.level)
        return row
