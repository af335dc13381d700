"""Identity settings are read once; a bad value stops the service and names the setting."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.identity.settings import IdentitySettings
from services.identity.takeover import can_take_back


def test_defaults_are_the_strict_ones(tmp_path):
    settings = IdentitySettings.from_config({"DATA_DIR": str(tmp_path)})
    assert settings.proofing.provider == "registry"
    assert settings.proofing.registry_file == tmp_path / "identity-registry" / "registry.yaml"
    assert settings.liveness_required is True and settings.upload_allowed is False
    assert settings.step_up_level is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    assert settings.face_lock.max_failures == 5 and settings.face_lock.window == timedelta(minutes=15)
    assert settings.sessions.idle == timedelta(minutes=30) and settings.sessions.absolute == timedelta(hours=12)
    assert settings.otp_min_resend == timedelta(seconds=60)
    assert IdentitySettings.from_config({"OTP": {"MIN_RESEND_SECONDS": "5"}}).otp_min_resend == timedelta(seconds=5)


def test_the_step_up_level_follows_the_provider_and_liveness(tmp_path):
    relaxed = IdentitySettings.from_config({"DATA_DIR": str(tmp_path), "LIVENESS": {"REQUIRED": "false"}})
    assert relaxed.step_up_level is AssuranceLevel.AUTHORITY_FACE
    development = IdentitySettings.from_config({"PROOFING": {"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True}})
    assert development.step_up_level is AssuranceLevel.SELF_DECLARED


@pytest.mark.parametrize("config, field, rule", [
    ({"PROOFING": {"PROVIDER": "somebody"}}, "proofing.provider", "allowed_values"),
    ({"PROOFING": {"PROVIDER": "self_declared"}}, "proofing.provider", "self_declared_not_allowed"),
    ({"LIVENESS": {"REQUIRED": "maybe"}}, "liveness.required", "boolean"),
    ({"SESSIONS": {"IDLE_SECONDS": "-5"}}, "sessions.idle_seconds", "positive"),
    ({"WILLINGNESS": {"FACE_LOCK": {"MAX_FAILURES": "many"}}}, "willingness.face_lock.max_failures", "number"),
    ({"STEP_UP": "soon"}, "step_up", "mapping"),
    ({"FACES": {"THRESHOLD": "0,6"}}, "faces.threshold", "number"),
    ({"FACES": {"THRESHOLD": "1.2"}}, "faces.threshold", "range"),
    ({"FACES": {"WORKERS": "3"}}, "faces.workers", "range"),
    ({"FACES": {"MIN_FACE_PX": "big"}}, "faces.min_face_px", "number"),
    ({"LIVENESS": {"MIRRORED_INPUT": "ja"}}, "liveness.mirrored_input", "boolean"),
    ({"OTP": {"MIN_RESEND_SECONDS": "0"}}, "otp.min_resend_seconds", "positive"),
    ({"OTP": {"MIN_RESEND_SECONDS": "soon"}}, "otp.min_resend_seconds", "number"),
])
def test_bad_settings_are_named(config, field, rule, tmp_path):
    with pytest.raises(InvalidInput) as error:
        IdentitySettings.from_config(dict(config, DATA_DIR=str(tmp_path)))
    assert (error.value.field, error.value.rule) == (field, rule)


@pytest.mark.parametrize("level, holder, wins", [
    ("authority_face_liveness", "self_declared", True),
    ("authority_face_liveness", "authority_two_element", True),
    ("authority_face", "authority_two_element", True),
    ("authority_face", "authority_face", False),  # the same level keeps the number
    ("authority_face_liveness", "authority_face_liveness", False),
    ("authority_two_element", "self_declared", False),  # a name and number alone never win
    ("self_declared", "self_declared", False),
])
def test_who_may_take_an_id_number_back(level, holder, wins):
    assert can_take_back(AssuranceLevel(level), AssuranceLevel(holder)) is wins


def test_the_face_workers_get_the_checked_settings(tmp_path):
    from services.identity.face_pool import face_settings_from

    faces, liveness, workers = face_settings_from({"DATA_DIR": str(tmp_path), "FACES": {
        "THRESHOLD": "0.55", "WORKERS": "2", "MIN_FACE_PX": "90"}, "LIVENESS": {"MIRRORED_INPUT": "true"}})
    assert (faces.threshold, faces.min_face_px, workers, liveness.mirrored_input) == (0.55, 90, 2, True)
    assert liveness.face is faces
