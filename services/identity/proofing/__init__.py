"""Identity proofing: an authority says whether a name and ID number belong
together, and whether a face is the face on that person's ID record.

This is the step Tencent E-Sign performs with Tencent Cloud FaceID
(人脸核身): the platform never trusts an "ID portrait" the person uploads;
the selfie is compared with the **authority's** photo for the name and ID
number the person claims. Which authority answers is configuration
(``PROOFING.PROVIDER``), like notify's SMS providers:

``tencent_faceid`` (:mod:`.tencent`)
    Tencent Cloud FaceID API 2018-03-01 through Tencent's own SDK:
    ``IdCardVerification`` (two elements) and ``ImageRecognitionV2`` (selfie
    against the authority's ID photo, ``Sim`` 0-100, same person at 70 or more).
``registry`` (:mod:`.registry`)
    The embedded default: a registry file of people (name, ID number,
    reference photo), compared with face_recognition. ``./dev up`` ships a
    demo registry; tests write their own.
``self_declared`` (:mod:`.self_declared`)
    The old behaviour, for development only: no authority; a face is compared
    with an ID portrait the person uploads. Refused unless
    ``PROOFING.ALLOW_SELF_DECLARED`` is true, and everything it vouches for is
    recorded as ``self_declared``.

Every provider answers with the same values and raises the same typed
errors, so the service never asks which provider it holds:

* :class:`IdentityCheck` / :class:`FaceProof` on success;
* ``InvalidInput("id_number", "authority_mismatch")`` (name and ID number do
  not belong together), ``InvalidInput("id_number", "authority_no_record")``,
  ``InvalidInput("id_number", "authority_invalid_id")``,
  ``InvalidInput("name", "authority_invalid_name")``,
  ``InvalidInput("selfie", "authority_no_photo")`` (the authority has no photo
  for this record), ``InvalidInput("selfie", <face rule>)`` for an unusable
  selfie (``no_face``, ``multiple_faces``, ``poor_quality``);
* ``Unavailable("identity_authority", reason, retry_after)`` when the
  authority is down, times out, or the daily limit is reached: nothing is
  recorded, and the person may try again after ``retry_after`` seconds.

A face that does not match is not an error: :class:`FaceProof` says
``matched=False`` with the score, so the service can audit it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.common.assurance import AssuranceLevel

AUTHORITY = "identity_authority"  # the system named by Unavailable

#: scores: a similarity (FaceID's Sim, 0-100, higher is closer) or a distance (face_recognition, lower is closer)
SIMILARITY = "similarity"
DISTANCE = "distance"


@dataclass(frozen=True)
class Claimant:
    """Who the person says they are. Personal data: never logged."""

    name: str
    id_number: str

    def __repr__(self) -> str:  # never print the ID number by accident
        return "Claimant(<personal data>)"


@dataclass(frozen=True)
class CapturedFace:
    """A face the person presented. ``image``: the JPEG/PNG a remote authority
    is sent (a selfie, or the best frame of a live capture); ``encoding``: our
    own engine's 128-d encoding of that face (the mean over the live frames),
    as bytes; ``live``: it came through a passed liveness challenge."""

    image: bytes
    encoding: bytes
    live: bool

    def __repr__(self) -> str:
        return f"CapturedFace(live={self.live}, <face data>)"


@dataclass(frozen=True)
class IdentityCheck:
    """The authority confirmed that the name and ID number belong together."""

    provider: str
    request_id: str | None
    level: AssuranceLevel  # authority_two_element, or self_declared for the development provider


@dataclass(frozen=True)
class FaceProof:
    """Outcome of comparing a face with the authority's photo for a claimant."""

    provider: str
    request_id: str | None
    score: float
    score_kind: str  # SIMILARITY or DISTANCE
    threshold: float
    matched: bool
    level: AssuranceLevel  # what a match proves: authority_face(_liveness), or self_declared

    def to_audit(self) -> dict:
        return {"provider": self.provider, "request_id": self.request_id, "score": round(self.score, 4),
                "score_kind": self.score_kind, "threshold": self.threshold, "matched": self.matched,
                "level": self.level.value}


class IdentityProofing(Protocol):
    """What the identity service needs from an identity-proofing provider."""

    #: the provider's name as configured and recorded (``tencent_faceid``, ``registry``, ``self_declared``)
    name: str
    #: the highest level a proof by this provider can reach
    max_level: AssuranceLevel

    def verify_identity(self, claimant: Claimant) -> IdentityCheck:
        """Two-element check: do the name and ID number belong together?"""

    def compare_face(self, claimant: Claimant, face: CapturedFace, id_portrait: bytes | None = None) -> FaceProof:
        """Is ``face`` the face the authority holds for ``claimant``? ``id_portrait``
        is read only by the development provider (``self_declared``)."""


def level_for_face(authority: bool, live: bool) -> AssuranceLevel:
    """The level a matched face proves."""
    if not authority:
        return AssuranceLevel.SELF_DECLARED
    return AssuranceLevel.AUTHORITY_FACE_LIVENESS if live else AssuranceLevel.AUTHORITY_FACE
