"""The registry provider (the embedded authority) and the development
provider, on real photos: the registry's reference photo decides, never a
portrait the person supplies; every refusal names the field and the rule and
carries no personal data."""
from __future__ import annotations

import pytest

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.identity.faces import encoding_to_bytes
from services.identity.proofing import CapturedFace, Claimant
from services.identity.proofing.registry import RegistryProofing, append_entry, read_registry
from services.identity.proofing.self_declared import SelfDeclaredProofing
from tests.support.faces import remembering_face_engine
from tests.support.registry import write_registry

ID_A = "11010519491231002X"
ID_B = "440524188001010014"
ID_C = "440524198001010013"


@pytest.fixture(scope="module")
def engine():
    """dlib's answers, each picture detected once in the process (tests.support.faces): the
    proofing is tested here, not the detection (tests/unit/identity/test_faces.py)."""
    return remembering_face_engine()


@pytest.fixture(scope="module")
def encode(engine):
    calls = []

    def run(image: bytes, field: str) -> bytes:
        calls.append(field)
        return encoding_to_bytes(engine.encode(image, field))

    run.calls = calls
    return run


@pytest.fixture
def registry(tmp_path, encode):
    path = write_registry(tmp_path / "registry", [("张三", ID_A, "obama"), ("李四", ID_B, None)])
    return RegistryProofing(path, encode, threshold=0.6)


def face(encode, photo, name, live=False) -> CapturedFace:
    image = photo(name)
    return CapturedFace(image, encode(image, "selfie"), live)


def test_two_elements_are_checked_against_the_registry(registry):
    check = registry.verify_identity(Claimant("张三", ID_A))
    assert check.level is AssuranceLevel.AUTHORITY_TWO_ELEMENT and check.request_id.startswith("registry-")
    with pytest.raises(InvalidInput) as mismatch:
        registry.verify_identity(Claimant("张四", ID_A))
    assert (mismatch.value.field, mismatch.value.rule) == ("id_number", "authority_mismatch")
    with pytest.raises(InvalidInput) as unknown:
        registry.verify_identity(Claimant("王五", ID_C))
    assert (unknown.value.field, unknown.value.rule) == ("id_number", "authority_no_record")
    for error in (mismatch.value, unknown.value):
        assert ID_A not in str(error) and ID_C not in str(error) and "张" not in str(error)


def test_the_reference_photo_decides(registry, encode, photo):
    same = registry.compare_face(Claimant("张三", ID_A), face(encode, photo, "obama2", live=True))
    assert same.matched and same.score < 0.6 and same.score_kind == "distance"
    assert same.level is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    upload = registry.compare_face(Claimant("张三", ID_A), face(encode, photo, "obama3"))
    assert upload.matched and upload.level is AssuranceLevel.AUTHORITY_FACE
    other = registry.compare_face(Claimant("张三", ID_A), face(encode, photo, "biden", live=True))
    assert not other.matched and other.score >= 0.6
    # an "ID portrait" the person brings is ignored: only the authority's photo counts
    ignored = registry.compare_face(Claimant("张三", ID_A), face(encode, photo, "biden", live=True),
                                    id_portrait=photo("biden"))
    assert not ignored.matched
    assert encode.calls.count("reference_photo") == 1  # the reference is encoded once


def test_no_photo_and_bad_registries_are_named(registry, encode, photo, tmp_path):
    with pytest.raises(InvalidInput) as no_photo:
        registry.compare_face(Claimant("李四", ID_B), face(encode, photo, "obama"))
    assert (no_photo.value.field, no_photo.value.rule) == ("selfie", "authority_no_photo")
    bad = tmp_path / "bad.yaml"
    bad.write_text("people:\n  - name: 张三\n    id_number: 110105194912310021\n", "utf-8")
    with pytest.raises(InvalidInput) as malformed:
        read_registry(bad)
    assert (malformed.value.field, malformed.value.rule) == ("registry.people.0.id_number", "check_digit")
    with pytest.raises(InvalidInput) as missing:
        RegistryProofing(tmp_path / "none.yaml", encode, 0.6).verify_identity(Claimant("张三", ID_A))
    assert missing.value.rule == "missing"


def test_entries_added_are_seen_without_a_restart(registry, tmp_path):
    import os
    import time

    with pytest.raises(InvalidInput):
        registry.verify_identity(Claimant("王五", ID_C))
    append_entry(registry.path, "王五", ID_C, None)
    os.utime(registry.path, (time.time() + 5, time.time() + 5))  # a new modification time, even within a second
    assert registry.verify_identity(Claimant("王五", ID_C)).level is AssuranceLevel.AUTHORITY_TWO_ELEMENT
    assert oct(registry.path.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(InvalidInput) as twice:
        append_entry(registry.path, "王五", ID_C, None)
    assert twice.value.rule == "unique"


def test_self_declared_compares_with_the_persons_own_portrait_and_says_so(encode, photo):
    provider = SelfDeclaredProofing(encode, 0.6)
    assert provider.verify_identity(Claimant("任何人", ID_A)).level is AssuranceLevel.SELF_DECLARED
    # the attack: someone else's name, their own face twice
    proof = provider.compare_face(Claimant("张三", ID_A), face(encode, photo, "biden", live=True),
                                  id_portrait=photo("biden"))
    assert proof.matched and proof.level is AssuranceLevel.SELF_DECLARED
    with pytest.raises(InvalidInput) as no_portrait:
        provider.compare_face(Claimant("张三", ID_A), face(encode, photo, "biden"))
    assert (no_portrait.value.field, no_portrait.value.rule) == ("id_portrait", "required")
    assert "ID" not in repr(Claimant("张三", ID_A)) and ID_A not in repr(Claimant("张三", ID_A))
