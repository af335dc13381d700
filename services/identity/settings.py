"""The identity service's settings, read once from its nameko config.

Each section of ``config.yaml`` becomes a frozen value; a bad value raises
:class:`~services.common.errors.InvalidInput` naming the setting
(``liveness.required``, ``proofing.provider`` ...), so a misconfigured replica
stops at start-up instead of misjudging people later.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

from services.common.assurance import AssuranceLevel
from services.common.config import REPO_ROOT, data_dir, setting_flag, setting_number
from services.common.errors import InvalidInput
from services.identity import ca, grants, otp
from services.identity.faces import DEFAULT_THRESHOLD

PROVIDERS = ("registry", "tencent_faceid", "self_declared")


@dataclass(frozen=True)
class ProofingSettings:
    """Who vouches for a person's identity (see :mod:`services.identity.proofing`)."""

    provider: str = "registry"
    allow_self_declared: bool = False
    registry_file: Path | None = None  # the registry provider's file
    tencent: Mapping[str, Any] = field(default_factory=dict)  # PROOFING.TENCENT, read by the provider


@dataclass(frozen=True)
class FaceLockSettings:
    """Face willingness failures per person: ``max_failures`` within ``window``
    lock face willingness for ``lock``."""

    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class SessionSettings:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    #: last use is written at most this often (a write per request would cost every request)
    touch_every: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class IdentitySettings:
    """The service's policy knobs (config keys in brackets)."""

    proofing: ProofingSettings = field(default_factory=ProofingSettings)
    max_image_bytes: int = 10 * 1024 * 1024  # FACES.MAX_IMAGE_BYTES
    face_threshold: float = DEFAULT_THRESHOLD  # FACES.THRESHOLD: the largest face distance that is a match
    min_face_px: int = 80  # FACES.MIN_FACE_PX
    face_workers: int = 1  # FACES.WORKERS: face worker processes, 1 or 2
    mirrored_input: bool = False  # LIVENESS.MIRRORED_INPUT: the capture is mirrored (left and right swapped)
    #: a selfie file may stand in for a live capture (FACES.ALLOW_UPLOAD); proofs are then authority_face
    upload_allowed: bool = False
    liveness_required: bool = True  # LIVENESS.REQUIRED: proofing and face willingness need a live capture
    liveness_ttl: timedelta = timedelta(minutes=2)  # LIVENESS.CHALLENGE_TTL_SECONDS
    max_video_bytes: int = 20 * 1024 * 1024
    willingness_ttl: timedelta = timedelta(minutes=5)  # WILLINGNESS.TTL_SECONDS
    grant_ttl: timedelta = grants.DEFAULT_TTL  # WILLINGNESS.GRANT_TTL_SECONDS
    max_face_attempts: int = 3  # WILLINGNESS.MAX_FACE_ATTEMPTS (per check)
    face_lock: FaceLockSettings = field(default_factory=FaceLockSettings)  # WILLINGNESS.FACE_LOCK
    phone_confirmation_valid: timedelta = timedelta(minutes=30)  # REGISTRATION.PHONE_CONFIRMATION_VALID_SECONDS
    #: a proof unlocks one step-up (certificate, phone change) within this time (STEP_UP.WINDOW_SECONDS)
    step_up_window: timedelta = timedelta(minutes=10)
    person_validity: timedelta = ca.DEFAULT_PERSON_VALIDITY  # CA.PERSON_VALIDITY_DAYS
    sessions: SessionSettings = field(default_factory=SessionSettings)  # SESSIONS
    #: a new code to the same phone, for the same purpose, at most this often (OTP.MIN_RESEND_SECONDS)
    otp_min_resend: timedelta = otp.DEFAULT_POLICY.min_resend_interval

    @property
    def step_up_level(self) -> AssuranceLevel:
        """The level a proof must reach to change who can sign: what this
        platform's provider and liveness policy can reach at best."""
        if self.proofing.provider == "self_declared":
            return AssuranceLevel.SELF_DECLARED
        return AssuranceLevel.AUTHORITY_FACE_LIVENESS if self.liveness_required else AssuranceLevel.AUTHORITY_FACE

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "IdentitySettings":
        faces, live = _section(config, "FACES"), _section(config, "LIVENESS")
        will, reg, ca_cfg = _section(config, "WILLINGNESS"), _section(config, "REGISTRATION"), _section(config, "CA")
        proof, sessions, step = _section(config, "PROOFING"), _section(config, "SESSIONS"), _section(config, "STEP_UP")
        codes = _section(config, "OTP")
        lock = will.get("FACE_LOCK") or {}
        d = cls()
        provider = str(proof.get("PROVIDER") or "registry")
        if provider not in PROVIDERS:
            raise InvalidInput("proofing.provider", "allowed_values", f"expected one of {', '.join(PROVIDERS)}")
        allow_self = setting_flag(proof, "ALLOW_SELF_DECLARED", False, "proofing.allow_self_declared")
        if provider == "self_declared" and not allow_self:
            raise InvalidInput("proofing.provider", "self_declared_not_allowed",
                               "self_declared identities are for development only: set PROOFING.ALLOW_SELF_DECLARED")
        registry = proof.get("REGISTRY_FILE") or None
        registry_file = None
        if registry:
            registry_file = Path(str(registry))
            registry_file = registry_file if registry_file.is_absolute() else REPO_ROOT / registry_file
        elif provider == "registry":
            registry_file = data_dir(dict(config)) / "identity-registry" / "registry.yaml"
        return cls(
            proofing=ProofingSettings(provider=provider, allow_self_declared=allow_self, registry_file=registry_file,
                                      tencent=dict(proof.get("TENCENT") or {})),
            max_image_bytes=int(setting_number(faces, "MAX_IMAGE_BYTES", d.max_image_bytes, "faces.max_image_bytes")),
            face_threshold=_fraction(faces, "THRESHOLD", d.face_threshold, "faces.threshold"),
            min_face_px=int(setting_number(faces, "MIN_FACE_PX", d.min_face_px, "faces.min_face_px")),
            face_workers=_workers(faces),
            mirrored_input=setting_flag(live, "MIRRORED_INPUT", d.mirrored_input, "liveness.mirrored_input"),
            upload_allowed=setting_flag(faces, "ALLOW_UPLOAD", d.upload_allowed, "faces.allow_upload"),
            liveness_required=setting_flag(live, "REQUIRED", d.liveness_required, "liveness.required"),
            liveness_ttl=_seconds(live, "CHALLENGE_TTL_SECONDS", d.liveness_ttl, "liveness.challenge_ttl_seconds"),
            willingness_ttl=_seconds(will, "TTL_SECONDS", d.willingness_ttl, "willingness.ttl_seconds"),
            grant_ttl=_seconds(will, "GRANT_TTL_SECONDS", d.grant_ttl, "willingness.grant_ttl_seconds"),
            max_face_attempts=int(setting_number(will, "MAX_FACE_ATTEMPTS", d.max_face_attempts,
                                          "willingness.max_face_attempts")),
            face_lock=FaceLockSettings(
                max_failures=int(setting_number(lock, "MAX_FAILURES", d.face_lock.max_failures,
                                         "willingness.face_lock.max_failures")),
                window=_seconds(lock, "WINDOW_SECONDS", d.face_lock.window, "willingness.face_lock.window_seconds"),
                lock=_seconds(lock, "LOCK_SECONDS", d.face_lock.lock, "willingness.face_lock.lock_seconds"),
            ),
            phone_confirmation_valid=_seconds(reg, "PHONE_CONFIRMATION_VALID_SECONDS", d.phone_confirmation_valid,
                                              "registration.phone_confirmation_valid_seconds"),
            step_up_window=_seconds(step, "WINDOW_SECONDS", d.step_up_window, "step_up.window_seconds"),
            person_validity=timedelta(days=setting_number(ca_cfg, "PERSON_VALIDITY_DAYS", d.person_validity.days,
                                                   "ca.person_validity_days")),
            sessions=SessionSettings(
                idle=_seconds(sessions, "IDLE_SECONDS", d.sessions.idle, "sessions.idle_seconds"),
                absolute=_seconds(sessions, "ABSOLUTE_SECONDS", d.sessions.absolute, "sessions.absolute_seconds"),
            ),
            otp_min_resend=_seconds(codes, "MIN_RESEND_SECONDS", d.otp_min_resend, "otp.min_resend_seconds"),
        )


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(name.lower(), "mapping", "expected a section of settings")
    return value




def _fraction(section: Mapping[str, Any], key: str, default: float, name: str) -> float:
    value = setting_number(section, key, default, name)
    if not value < 1:
        raise InvalidInput(name, "range", "expected a number between 0 and 1")
    return value


def _workers(faces: Mapping[str, Any]) -> int:
    value = setting_number(faces, "WORKERS", 1, "faces.workers")
    if value not in (1, 2):  # each holds the face models (about 100 MB); a third buys nothing on 2 cores
        raise InvalidInput("faces.workers", "range", "expected 1 or 2")
    return int(value)


def _seconds(section: Mapping[str, Any], key: str, default: timedelta, name: str) -> timedelta:
    return timedelta(seconds=setting_number(section, key, default.total_seconds(), name))


