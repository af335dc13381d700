"""Identity proofing by Tencent Cloud FaceID (人脸核身), API version 2018-03-01,
through Tencent's own SDK (``tencentcloud-sdk-python-faceid``, ``FaceidClient``).

Two actions, as Tencent documents them:

``IdCardVerification`` (身份信息认证: name + ID number, "two elements")
    ``Result`` ``"0"`` the two belong together; ``"-1"`` they do not;
    ``"-2"`` invalid ID number; ``"-3"`` invalid name; ``"-4"`` the ID
    registry is failing; ``"-5"`` no such ID number; ``"-6"`` the authority's
    system is being upgraded; ``"-7"`` the day's verification limit is reached.
``ImageRecognitionV2`` (照片人脸核身: a photo against the authority's ID photo)
    ``Sim`` 0-100 and ``Result`` ``"Success"`` or a ``FailedOperation.*`` code;
    Tencent calls 70 or more the same person (a false accept in a thousand).

The SDK signs every request with TC3-HMAC-SHA256 (Tencent's "Signature v3")
and does not retry (its default ``NoopRetryer``): the person retries, after
``retry_after``. A vendor code arrives either as ``Result`` or as a top-level
``Response.Error`` (the SDK raises ``TencentCloudSDKException``); both are read
through the same table:

=========================================================  =======================================
Tencent answer                                             ours
=========================================================  =======================================
``IdNameMisMatch`` / ``-1``                                ``InvalidInput(id_number, authority_mismatch)``
``IdFormatError`` / ``-2``                                 ``InvalidInput(id_number, authority_invalid_id)``
``NameFormatError`` / ``-3``                               ``InvalidInput(name, authority_invalid_name)``
``IdNoExistSystem`` / ``-5``                               ``InvalidInput(id_number, authority_no_record)``
``IdPhotoNoExist``                                         ``InvalidInput(selfie, authority_no_photo)``
``IdPhotoPoorQuality``                                     ``InvalidInput(selfie, authority_photo_unusable)``
``LifePhotoDetectNoFaces``, ``IncompleteFace``,            ``InvalidInput(selfie, no_face)``
``ActionNodetectFace``
``LifePhotoDetectFaces``                                   ``InvalidInput(selfie, multiple_faces)``
``LifePhotoPoorQuality``, ``ImageBlur``,                   ``InvalidInput(selfie, poor_quality)``
``PoorImageQuality``, ``LifePhotoSizeError``,
``CoveredFace``
``ImageSizeTooLarge``                                      ``InvalidInput(selfie, max_bytes)``
``ImageDecodeFailed``, ``EmptyImageError``                 ``InvalidInput(selfie, corrupt_image)``
``LifePhotoDetectFake``                                    ``InvalidInput(selfie, not_live)``
``CompareLowSimilarity``                                   ``FaceProof(matched=False)``, Sim or 0
``-4``, ``-6``, ``CompareLibServiceUnavailable``,          ``Unavailable(authority_unavailable)``, 60 s
``CompareSystemError``, ``DbError``,
``IdPhotoSystemNoanswer``, ``DetectEngineSystemError``,
``UnKnown``, ``InternalError*``, any unknown code
``-7``, ``IdentityAuthLimitExceeded``                      ``Unavailable(daily_limit)``, until 00:00 Beijing time
``RequestLimitExceeded``, ``LimitExceeded.*``              ``Unavailable(rate_limited)``, 5 s
``AuthFailure.*``, ``UnauthorizedOperation.*``,            ``Unavailable(configuration)``, no retry time;
``InvalidParameter*``, ``MissingParameter*`` ...           logged as an error (the code only)
timeout                                                    ``Unavailable(timeout)``, 30 s
network error, HTTP error, a body that is not its JSON     ``Unavailable(authority_unavailable)``, 30 s
=========================================================  =======================================

(``FailedOperation.`` is left off the codes above.) Names, ID numbers and
images are never logged, raised or shown by ``repr``; the SDK's DEBUG log,
which prints whole requests, is filtered out.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import models
from tencentcloud.faceid.v20180301.faceid_client import FaceidClient

from services.common.assurance import AssuranceLevel
from services.common.config import SecretMissing, read_secret
from services.common.errors import EsignError, InvalidInput, Unavailable
from services.common.tencent_cloud import caused_by_timeout, is_vendor_answer, quiet_sdk_request_dumps
from services.identity.proofing import (
    AUTHORITY,
    SIMILARITY,
    CapturedFace,
    Claimant,
    FaceProof,
    IdentityCheck,
    level_for_face,
)

log = logging.getLogger(__name__)

PROVIDER = "tencent_faceid"
DEFAULT_ENDPOINT = "faceid.tencentcloudapi.com"
DEFAULT_REGION = "ap-guangzhou"
#: Tencent's own threshold for "same person" (Sim 0-100)
TENCENT_SAME_PERSON_SIM = 70.0
#: the SDK's logger; at DEBUG it writes whole requests (name, ID number, image)
#: FaceID's day (and so its daily limit) follows Beijing time
AUTHORITY_ZONE = ZoneInfo("Asia/Shanghai")

ID_CARD_VERIFICATION = "IdCardVerification"
IMAGE_RECOGNITION = "ImageRecognitionV2"
MATCHED = "Success"
LOW_SIMILARITY = "FailedOperation.CompareLowSimilarity"

NETWORK_RETRY_AFTER = 30
OUTAGE_RETRY_AFTER = 60
RATE_RETRY_AFTER = 5

_CONFIG_KEYS = ("SECRET_ID", "SECRET_KEY", "REGION", "ENDPOINT", "SCHEME", "TIMEOUT_SECONDS", "MIN_SIM")
_REGION = re.compile(r"[a-z]{2,}(-[a-z0-9]+)+\Z")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?\Z")


# --- settings ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TencentFaceIdSettings:
    """How to reach FaceID. ``endpoint`` is a host (``host:port`` for a local
    fake), as the SDK's HttpProfile wants it; ``scheme`` may be ``http`` only
    for a loopback endpoint, since requests carry ID numbers and faces."""

    secret_id: str
    secret_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    endpoint: str = DEFAULT_ENDPOINT
    scheme: str = "https"
    timeout_seconds: float = 10.0
    #: Sim at or above which a face is the person's; Tencent's 70 or stricter
    min_sim: float = TENCENT_SAME_PERSON_SIM

    def __post_init__(self) -> None:
        for name in ("secret_id", "secret_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _setting_error(name, "required", "expected a non-empty value, found none")
            if value.strip() != value or any(ch.isspace() for ch in value):
                raise _setting_error(name, "format", "expected a value without spaces, found spaces")
        if not _REGION.match(self.region):
            raise _setting_error("region", "format", "expected a region such as ap-guangzhou")
        if not _HOST.match(self.endpoint):
            raise _setting_error("endpoint", "host_format", "expected a host name or host:port, without scheme or path")
        if self.scheme not in ("https", "http"):
            raise _setting_error("scheme", "one_of", "expected https or http")
        if self.scheme == "http" and not _is_loopback(self.endpoint):
            raise _setting_error("scheme", "https_required", "expected https for any endpoint but a loopback one")
        if not 0 < self.timeout_seconds <= 120:
            raise _setting_error("timeout_seconds", "range", "expected more than 0 and at most 120 seconds")
        # below Tencent's own 70 more strangers would pass as the person
        if not TENCENT_SAME_PERSON_SIM <= self.min_sim <= 100:
            raise _setting_error("min_sim", "range", f"expected {TENCENT_SAME_PERSON_SIM:g} to 100")

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "TencentFaceIdSettings":
        """From the ``PROOFING.TENCENT`` mapping::

            TENCENT:
              SECRET_ID: {env: TENCENT_FACEID_SECRET_ID, file: /run/secrets/tencent-faceid-secret-id}
              SECRET_KEY: {env: TENCENT_FACEID_SECRET_KEY, file: /run/secrets/tencent-faceid-secret-key}
              REGION: ap-guangzhou          # optional, as the rest
              ENDPOINT: faceid.tencentcloudapi.com
              SCHEME: https
              TIMEOUT_SECONDS: 10
              MIN_SIM: 70
        """
        section = dict(section or {})
        unknown = sorted(set(section) - set(_CONFIG_KEYS))
        if unknown:
            raise _setting_error(unknown[0].lower(), "unknown_setting", f"expected one of {', '.join(_CONFIG_KEYS)}")
        options: dict[str, Any] = {
            "secret_id": _secret(section.get("SECRET_ID"), "secret_id", "tencent-faceid-secret-id"),
            "secret_key": _secret(section.get("SECRET_KEY"), "secret_key", "tencent-faceid-secret-key"),
        }
        for key in ("REGION", "ENDPOINT", "SCHEME"):
            if section.get(key) not in (None, ""):
                options[key.lower()] = str(section[key]).strip()
        for key in ("TIMEOUT_SECONDS", "MIN_SIM"):
            if section.get(key) not in (None, ""):
                options[key.lower()] = _number(section[key], key.lower())
        return cls(**options)


def _setting_error(name: str, rule: str, message: str) -> InvalidInput:
    return InvalidInput(f"proofing.tencent.{name}", rule, message)


def _secret(spec: Any, name: str, secret_name: str) -> str:
    if spec is not None and not isinstance(spec, Mapping):
        raise _setting_error(name, "secret_spec", "expected a mapping with env and/or file")
    try:
        return read_secret(spec, secret_name).decode("utf-8")
    except SecretMissing as exc:  # names the variable and file, never a value
        raise _setting_error(name, "required", str(exc)) from None
    except UnicodeDecodeError:
        raise _setting_error(name, "format", "expected UTF-8 text, found other bytes") from None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise _setting_error(name, "number", "expected a number, found a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _setting_error(name, "number", f"expected a number, found {type(value).__name__}") from None
    if not math.isfinite(number):
        raise _setting_error(name, "number", "expected a finite number")
    return number


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 else endpoint
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- what Tencent's answers mean -----------------------------------------------------------

@dataclass(frozen=True)
class _Refusal:
    """The person's input was refused: ``InvalidInput(field, rule, expected...)``."""

    field: str
    rule: str
    message: str


@dataclass(frozen=True)
class _Outage:
    """The authority cannot answer now: ``Unavailable(AUTHORITY, reason, retry_after)``."""

    reason: str
    retry_after: int | None
    until_midnight: bool = False  # the daily limit: retry when Beijing's day turns


_MISMATCH = _Refusal("id_number", "authority_mismatch",
                     "expected a name and ID number that belong together at the authority, found that they do not")
_INVALID_ID = _Refusal("id_number", "authority_invalid_id",
                       "expected an ID number the authority accepts, found one it calls malformed")
_INVALID_NAME = _Refusal("name", "authority_invalid_name",
                         "expected a name the authority accepts, found one it calls malformed")
_NO_RECORD = _Refusal("id_number", "authority_no_record",
                      "expected an ID number on the authority's records, found none")
_NO_FACE = _Refusal("selfie", "no_face", "expected one whole face, the authority found none")
_POOR = _Refusal("selfie", "poor_quality",
                 "expected a sharp, uncovered, complete face, the authority found it unusable")
_CORRUPT = _Refusal("selfie", "corrupt_image", "expected an image the authority can decode, found one it cannot")
_AUTHORITY_DOWN = _Outage("authority_unavailable", OUTAGE_RETRY_AFTER)
_DAILY_LIMIT = _Outage("daily_limit", None, until_midnight=True)
_RATE_LIMITED = _Outage("rate_limited", RATE_RETRY_AFTER)
_CONFIGURATION = _Outage("configuration", None)

#: IdCardVerification's Result codes
ID_CARD_RESULTS: dict[str, _Refusal | _Outage] = {
    "-1": _MISMATCH,
    "-2": _INVALID_ID,
    "-3": _INVALID_NAME,
    "-4": _AUTHORITY_DOWN,
    "-5": _NO_RECORD,
    "-6": _AUTHORITY_DOWN,
    "-7": _DAILY_LIMIT,
}

#: FaceID's error codes (tencentcloud/faceid/v20180301/errorcodes.py), as Result or as Response.Error
VENDOR_CODES: dict[str, _Refusal | _Outage] = {
    "FailedOperation.IdNameMisMatch": _MISMATCH,
    "FailedOperation.IdNoExistSystem": _NO_RECORD,
    "FailedOperation.IdFormatError": _INVALID_ID,
    "FailedOperation.NameFormatError": _INVALID_NAME,
    "FailedOperation.IdPhotoNoExist": _Refusal(
        "selfie", "authority_no_photo", "expected the authority to hold an ID photo for this person, found none"),
    "FailedOperation.IdPhotoPoorQuality": _Refusal(
        "selfie", "authority_photo_unusable", "expected an ID photo the authority can compare, found it unusable"),
    "FailedOperation.LifePhotoDetectNoFaces": _NO_FACE,
    "FailedOperation.IncompleteFace": _NO_FACE,
    "FailedOperation.ActionNodetectFace": _NO_FACE,
    "FailedOperation.LifePhotoDetectFaces": _Refusal(
        "selfie", "multiple_faces", "expected one face, the authority found several"),
    "FailedOperation.LifePhotoPoorQuality": _POOR,
    "FailedOperation.ImageBlur": _POOR,
    "FailedOperation.PoorImageQuality": _POOR,
    "FailedOperation.LifePhotoSizeError": _POOR,
    "FailedOperation.CoveredFace": _POOR,
    "FailedOperation.ImageSizeTooLarge": _Refusal(
        "selfie", "max_bytes", "expected an image within the authority's size limit, found a larger one"),
    "FailedOperation.ImageDecodeFailed": _CORRUPT,
    "FailedOperation.EmptyImageError": _CORRUPT,
    "FailedOperation.LifePhotoDetectFake": _Refusal(
        "selfie", "not_live", "expected a photo of a live person, the authority found a likely fake"),
    "FailedOperation.CompareLibServiceUnavailable": _AUTHORITY_DOWN,
    "FailedOperation.CompareSystemError": _AUTHORITY_DOWN,
    "FailedOperation.DbError": _AUTHORITY_DOWN,
    "FailedOperation.IdPhotoSystemNoanswer": _AUTHORITY_DOWN,
    "FailedOperation.DetectEngineSystemError": _AUTHORITY_DOWN,
    "FailedOperation.UnKnown": _AUTHORITY_DOWN,
    "FailedOperation.IdentityAuthLimitExceeded": _DAILY_LIMIT,
    "FailedOperation.RequestLimitExceeded": _RATE_LIMITED,
    "RequestLimitExceeded": _RATE_LIMITED,
}

#: families of codes, by prefix, after the exact codes above
VENDOR_PREFIXES: tuple[tuple[str, _Outage], ...] = (
    ("LimitExceeded", _RATE_LIMITED),
    ("RequestLimitExceeded", _RATE_LIMITED),
    ("InternalError", _AUTHORITY_DOWN),
    # our request or our account is wrong: a person retrying cannot help
    ("AuthFailure", _CONFIGURATION),
    ("UnauthorizedOperation", _CONFIGURATION),
    ("InvalidParameter", _CONFIGURATION),  # also InvalidParameterValue.*
    ("MissingParameter", _CONFIGURATION),
    ("UnknownParameter", _CONFIGURATION),
    ("UnsupportedOperation", _CONFIGURATION),
    ("InvalidAction", _CONFIGURATION),
    ("NoSuchVersion", _CONFIGURATION),
)


def meaning_of(action: str, code: str) -> _Refusal | _Outage | None:
    """What a Result or error code of ``action`` means; None for one we do not know."""
    if action == ID_CARD_VERIFICATION and code in ID_CARD_RESULTS:
        return ID_CARD_RESULTS[code]
    if code in VENDOR_CODES:
        return VENDOR_CODES[code]
    for prefix, outage in VENDOR_PREFIXES:
        if code.startswith(prefix):
            return outage
    return None


def seconds_until_authority_midnight(now: float) -> int:
    """Seconds from ``now`` (Unix time) to the next 00:00 in Beijing, when
    FaceID's daily limit starts again."""
    today = dt.datetime.fromtimestamp(now, AUTHORITY_ZONE).date()
    midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0), tzinfo=AUTHORITY_ZONE)
    return max(1, math.ceil(midnight.timestamp() - now))


# --- the SDK -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Answer:
    """A Result or a top-level error code, normalised."""

    code: str
    request_id: str | None
    sim: float | None = None


def _client(settings: TencentFaceIdSettings) -> FaceidClient:
    http = HttpProfile(protocol=settings.scheme, endpoint=settings.endpoint, reqTimeout=settings.timeout_seconds)
    # ClientProfile's defaults are what we want: TC3-HMAC-SHA256, no region
    # breaker, NoopRetryer (a retry is the person's, after retry_after).
    return FaceidClient(Credential(settings.secret_id, settings.secret_key), settings.region,
                        ClientProfile(httpProfile=http))


# --- the provider ------------------------------------------------------------------------

class TencentFaceId:
    """:class:`~services.identity.proofing.IdentityProofing` by Tencent Cloud FaceID."""

    name = PROVIDER
    max_level = AssuranceLevel.AUTHORITY_FACE_LIVENESS

    def __init__(self, settings: TencentFaceIdSettings, *, clock: Callable[[], float] = time.time):
        self.settings = settings
        self._clock = clock  # for retry_after only; the SDK stamps requests with the real time
        self._client = _client(settings)
        quiet_sdk_request_dumps()

    def verify_identity(self, claimant: Claimant) -> IdentityCheck:
        request = models.IdCardVerificationRequest()
        request.IdCard = claimant.id_number
        request.Name = claimant.name
        answer = self._ask(ID_CARD_VERIFICATION, self._client.IdCardVerification, request)
        if answer.code == "0":
            return IdentityCheck(self.name, answer.request_id, AssuranceLevel.AUTHORITY_TWO_ELEMENT)
        raise self._error(ID_CARD_VERIFICATION, answer)

    def compare_face(self, claimant: Claimant, face: CapturedFace, id_portrait: bytes | None = None) -> FaceProof:
        # id_portrait is not read: the authority compares with its own ID photo
        request = models.ImageRecognitionV2Request()
        request.IdCard = claimant.id_number
        request.Name = claimant.name
        request.ImageBase64 = base64.b64encode(face.image).decode("ascii")
        answer = self._ask(IMAGE_RECOGNITION, self._client.ImageRecognitionV2, request)
        if answer.code == MATCHED and answer.sim is None:
            log.warning("Tencent FaceID %s said Success without Sim (request %s)", IMAGE_RECOGNITION, answer.request_id)
            raise Unavailable(AUTHORITY, "authority_unavailable", NETWORK_RETRY_AFTER)
        if answer.code in (MATCHED, LOW_SIMILARITY):
            sim = answer.sim if answer.sim is not None else 0.0
            # a low similarity is an answer, not an error: the service audits it
            return FaceProof(self.name, answer.request_id, sim, SIMILARITY, self.settings.min_sim,
                             answer.code == MATCHED and sim >= self.settings.min_sim,
                             level_for_face(True, face.live))
        raise self._error(IMAGE_RECOGNITION, answer)

    def _ask(self, action: str, call: Callable[[Any], Any], request: Any) -> _Answer:
        """Send one request; a top-level error code comes back as an answer too."""
        try:
            response = call(request)
        except TencentCloudSDKException as exc:
            if is_vendor_answer(exc):
                return _Answer(str(exc.code), exc.requestId)
            raise self._transport_error(action, exc) from None
        result = getattr(response, "Result", None)
        if result in (None, ""):
            log.warning("Tencent FaceID %s answered without Result (request %s)", action, response.RequestId)
            raise Unavailable(AUTHORITY, "authority_unavailable", NETWORK_RETRY_AFTER)
        sim = getattr(response, "Sim", None)
        return _Answer(str(result), response.RequestId, float(sim) if sim is not None else None)

    def _transport_error(self, action: str, exc: TencentCloudSDKException) -> Unavailable:
        if caused_by_timeout(exc):
            log.warning("Tencent FaceID %s: no answer within %g s", action, self.settings.timeout_seconds)
            return Unavailable(AUTHORITY, "timeout", NETWORK_RETRY_AFTER)
        cause = exc.__context__
        log.warning("Tencent FaceID %s failed: %s", action, type(cause).__name__ if cause else exc.code)
        return Unavailable(AUTHORITY, "authority_unavailable", NETWORK_RETRY_AFTER)

    def _error(self, action: str, answer: _Answer) -> EsignError:
        meaning = meaning_of(action, answer.code)
        if meaning is None:
            log.error("Tencent FaceID %s answered an unknown code %s (request %s)", action, answer.code,
                      answer.request_id)
            return Unavailable(AUTHORITY, "authority_unavailable", OUTAGE_RETRY_AFTER)
        if isinstance(meaning, _Refusal):
            log.info("Tencent FaceID %s refused: %s (request %s)", action, answer.code, answer.request_id)
            return InvalidInput(meaning.field, meaning.rule, f"{meaning.message} (FaceID {answer.code})")
        if meaning is _CONFIGURATION:
            log.error("Tencent FaceID %s refused our request: %s (request %s); check PROOFING.TENCENT",
                      action, answer.code, answer.request_id)
        else:
            log.warning("Tencent FaceID %s unavailable: %s (request %s)", action, answer.code, answer.request_id)
        retry_after = seconds_until_authority_midnight(self._clock()) if meaning.until_midnight else meaning.retry_after
        return Unavailable(AUTHORITY, meaning.reason, retry_after)
