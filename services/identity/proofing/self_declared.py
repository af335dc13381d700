"""The development-only provider: nobody vouches for the person.

The name and ID number pass if their form is valid (GB 11643 checksum,
checked before any provider is asked); a face is compared with an "ID
portrait" the person uploads themselves. Anyone who knows a name and ID
number can pass this with their own face twice, which is why the settings
refuse it unless ``PROOFING.ALLOW_SELF_DECLARED`` is true, and why every
level it gives is ``self_declared``: certificates, reports and ``esign
verify`` say so.
"""
from __future__ import annotations

from typing import Callable

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.identity.faces import encoding_from_bytes, face_distance
from services.identity.proofing import DISTANCE, CapturedFace, Claimant, FaceProof, IdentityCheck

PROVIDER = "self_declared"


class SelfDeclaredProofing:
    name = PROVIDER
    max_level = AssuranceLevel.SELF_DECLARED

    def __init__(self, encode: Callable[[bytes, str], bytes], threshold: float):
        self._encode = encode
        self.threshold = threshold

    def verify_identity(self, claimant: Claimant) -> IdentityCheck:
        return IdentityCheck(PROVIDER, None, AssuranceLevel.SELF_DECLARED)

    def compare_face(self, claimant: Claimant, face: CapturedFace, id_portrait: bytes | None = None) -> FaceProof:
        if id_portrait is None:
            raise InvalidInput("id_portrait", "required",
                               "self-declared proofing compares the face with an ID portrait")
        portrait = encoding_from_bytes(self._encode(id_portrait, "id_portrait"))
        distance = face_distance(portrait, encoding_from_bytes(face.encoding))
        return FaceProof(PROVIDER, None, distance, DISTANCE, self.threshold, distance < self.threshold,
                         AssuranceLevel.SELF_DECLARED)
