"""Tencent Cloud FaceID provider against the local fake authority: real HTTP,
Tencent's real SDK and its TC3 signing, checked by the fake's own verifier,
and real face comparison with face_recognition's photos (obama, obama2,
obama3 one person; biden another)."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import time
from zoneinfo import ZoneInfo

import pytest
from nameko.exceptions import deserialize, serialize
from PIL import Image

from services.common.assurance import AssuranceLevel
from services.common.errors import EsignError, InvalidInput, Unavailable
from services.identity.faces import face_distance
from services.identity.proofing import AUTHORITY, SIMILARITY, CapturedFace, Claimant, FaceProof
from services.identity.proofing.tencent import (
    TencentFaceId,
    TencentFaceIdSettings,
    seconds_until_authority_midnight,
)
from tests.support.faces import remembering_face_engine
from tests.support.fake_tencent_faceid import FakeTencentFaceId, RegisteredPerson

PERSON = Claimant("欧巴马", "11010519610804001X")
NO_PHOTO = Claimant("李四", "110105198001010028")
UNKNOWN = Claimant("王五", "110105199001010011")
PERSONAL = (PERSON.name, PERSON.id_number, NO_PHOTO.name, NO_PHOTO.id_number, UNKNOWN.name, UNKNOWN.id_number)
SHANGHAI = ZoneInfo("Asia/Shanghai")


class OnceEngine:
    """The real engine, encoding each photo once for the module (fake and test share it)."""

    def __init__(self) -> None:
        self.engine = remembering_face_engine()  # dlib once per picture in the process (tests.support.faces)
        self._cache: dict[str, object] = {}

    def encode(self, image: bytes, field: str):
        key = hashlib.sha256(image).hexdigest()
        if key not in self._cache:
            self._cache[key] = self.engine.encode(image, field)
        return self._cache[key]


@pytest.fixture(scope="module")
def engine() -> OnceEngine:
    return OnceEngine()


@pytest.fixture(scope="module")
def authority(photo, engine):
    people = [RegisteredPerson(PERSON.name, PERSON.id_number, photo("obama")),
              RegisteredPerson(NO_PHOTO.name, NO_PHOTO.id_number, None)]
    with FakeTencentFaceId(people, engine=engine) as fake:
        yield fake


@pytest.fixture
def faceid(authority):
    authority.reset()
    return authority


@pytest.fixture(autouse=True)
def no_personal_data_in_logs(caplog):
    caplog.set_level(logging.DEBUG)  # the SDK's request dumps too, were they not filtered
    yield
    for value in PERSONAL:
        assert value not in caplog.text


def provider(fake: FakeTencentFaceId, clock=time.time, **overrides) -> TencentFaceId:
    options = dict(secret_id=fake.secret_id, secret_key=fake.secret_key, endpoint=fake.endpoint,
                   scheme="http", timeout_seconds=3)
    options.update(overrides)
    return TencentFaceId(TencentFaceIdSettings(**options), clock=clock)


def face(image: bytes, live: bool = False) -> CapturedFace:
    return CapturedFace(image=image, encoding=b"", live=live)


def refusal(call, *args) -> EsignError:
    """The typed error ``call`` raises, checked to carry no personal data."""
    with pytest.raises(EsignError) as caught:
        call(*args)
    error = caught.value
    shown = " ".join([str(error), repr(error), repr(error.args), repr(error.to_dict())])
    for value in PERSONAL:
        assert value not in shown
    return error


def expected_sim(engine: OnceEngine, reference: bytes, selfie: bytes) -> float:
    distance = face_distance(engine.encode(reference, "a"), engine.encode(selfie, "b"))
    return round(min(100.0, max(0.0, 100.0 - 50.0 * distance)), 2)


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


# --- IdCardVerification ---------------------------------------------------------------------

def test_registered_name_and_id_number_are_confirmed(faceid):
    adapter = provider(faceid)
    assert all(callable(getattr(adapter, m)) for m in ("verify_identity", "compare_face"))  # IdentityProofing
    check = adapter.verify_identity(PERSON)

    (call,) = faceid.received
    assert check.provider == "tencent_faceid" == adapter.name
    assert check.request_id == call.request_id
    assert check.level is AssuranceLevel.AUTHORITY_TWO_ELEMENT
    assert (call.action, call.body, call.outcome) == (
        "IdCardVerification", {"IdCard": PERSON.id_number, "Name": PERSON.name}, "0")
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["x-tc-version"] == "2018-03-01" and headers["x-tc-region"] == "ap-guangzhou"
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert headers["authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={faceid.secret_id}/{today}/faceid/tc3_request, ")
    assert adapter.max_level is AssuranceLevel.AUTHORITY_FACE_LIVENESS


@pytest.mark.parametrize("claimant, field, rule, result", [
    (Claimant("张三", PERSON.id_number), "id_number", "authority_mismatch", "-1"),
    (Claimant("张三", "1101051961080400"), "id_number", "authority_invalid_id", "-2"),
    (Claimant("张3", PERSON.id_number), "name", "authority_invalid_name", "-3"),
    (UNKNOWN, "id_number", "authority_no_record", "-5"),
])
def test_the_registry_answers_map_to_invalid_input(faceid, claimant, field, rule, result):
    error = refusal(provider(faceid).verify_identity, claimant)
    assert isinstance(error, InvalidInput)
    assert (error.field, error.rule) == (field, rule)
    assert claimant.name not in str(error) and claimant.id_number not in str(error)
    assert [c.outcome for c in faceid.received] == [result]


@pytest.mark.parametrize("result, field, rule", [
    ("-1", "id_number", "authority_mismatch"),
    ("-2", "id_number", "authority_invalid_id"),
    ("-3", "name", "authority_invalid_name"),
    ("-5", "id_number", "authority_no_record"),
])
def test_scripted_refusing_results_map_to_invalid_input(faceid, result, field, rule):
    faceid.script(PERSON.id_number, result=result)
    error = refusal(provider(faceid).verify_identity, PERSON)
    assert isinstance(error, InvalidInput) and (error.field, error.rule) == (field, rule)


@pytest.mark.parametrize("result", ["-4", "-6"])
def test_authority_outages_are_unavailable_for_a_minute(faceid, result):
    faceid.script(PERSON.id_number, result=result)
    error = refusal(provider(faceid).verify_identity, PERSON)
    assert isinstance(error, Unavailable)
    assert (error.system, error.reason, error.retry_after) == (AUTHORITY, "authority_unavailable", 60)


def test_daily_limit_waits_until_midnight_in_shanghai(faceid):
    late = dt.datetime(2025, 3, 1, 23, 58, 30, tzinfo=SHANGHAI).timestamp()
    faceid.script(PERSON.id_number, result="-7")
    error = refusal(provider(faceid, clock=lambda: late).verify_identity, PERSON)
    assert isinstance(error, Unavailable)
    assert (error.reason, error.retry_after) == ("daily_limit", 90)

    faceid.script(PERSON.id_number, result="-7")
    error = refusal(provider(faceid).verify_identity, PERSON)
    now = dt.datetime.now(SHANGHAI)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0), tzinfo=SHANGHAI)
    assert abs(error.retry_after - (midnight - now).total_seconds()) <= 2


def test_seconds_until_midnight_use_beijing_time_not_utc():
    # 16:00 UTC is 00:00 in Beijing: a whole Beijing day is left
    utc_4pm = dt.datetime(2025, 6, 30, 16, 0, tzinfo=dt.timezone.utc).timestamp()
    assert seconds_until_authority_midnight(utc_4pm) == 24 * 3600
    assert seconds_until_authority_midnight(utc_4pm - 1) == 1


# --- ImageRecognitionV2 with real faces ---------------------------------------------------------

@pytest.mark.parametrize("selfie", ["obama2", "obama3"])
def test_the_same_person_matches_the_authority_photo(faceid, photo, engine, selfie):
    proof = provider(faceid).compare_face(PERSON, face(photo(selfie), live=True), id_portrait=photo("biden"))

    (call,) = faceid.received
    sim = expected_sim(engine, photo("obama"), photo(selfie))
    assert isinstance(proof, FaceProof)
    assert proof.matched and sim >= 70
    assert proof.score == pytest.approx(sim, abs=0.01)
    assert (proof.provider, proof.request_id, proof.score_kind, proof.threshold) == (
        "tencent_faceid", call.request_id, SIMILARITY, 70.0)
    assert proof.level is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    # the uploaded ID portrait is never sent: the authority compares with its own photo
    assert call.action == "ImageRecognitionV2" and call.outcome == "Success"
    assert call.body == {"IdCard": PERSON.id_number, "Name": PERSON.name}
    assert call.image_bytes == len(photo(selfie))


def test_another_person_does_not_match(faceid, photo, engine):
    proof = provider(faceid).compare_face(PERSON, face(photo("biden")))
    sim = expected_sim(engine, photo("obama"), photo("biden"))
    assert not proof.matched and sim < 70
    assert proof.score == pytest.approx(sim, abs=0.01)
    assert proof.level is AssuranceLevel.AUTHORITY_FACE  # what a match would have proved without liveness
    assert [c.outcome for c in faceid.received] == ["FailedOperation.CompareLowSimilarity"]


def test_a_stricter_min_sim_refuses_what_tencent_calls_a_match(faceid, photo, engine):
    sim = expected_sim(engine, photo("obama"), photo("obama2"))
    proof = provider(faceid, min_sim=min(100.0, sim + 0.5)).compare_face(PERSON, face(photo("obama2")))
    assert not proof.matched and proof.score == pytest.approx(sim, abs=0.01)
    assert faceid.received[0].outcome == "Success"


def test_a_selfie_without_a_face_or_with_two(faceid, photo):
    blank = _jpeg(Image.new("RGB", (400, 300), (200, 180, 160)))
    error = refusal(provider(faceid).compare_face, PERSON, face(blank))
    assert isinstance(error, InvalidInput) and (error.field, error.rule) == ("selfie", "no_face")

    left, right = (Image.open(io.BytesIO(photo(n))).convert("RGB") for n in ("obama", "biden"))
    height = min(left.height, right.height)
    left, right = (im.resize((im.width * height // im.height, height)) for im in (left, right))
    pair = Image.new("RGB", (left.width + right.width, height))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    error = refusal(provider(faceid).compare_face, PERSON, face(_jpeg(pair)))
    assert isinstance(error, InvalidInput) and (error.field, error.rule) == ("selfie", "multiple_faces")


def test_the_registry_refusals_of_a_face_check(faceid, photo):
    selfie = face(photo("obama2"))
    cases = [
        (NO_PHOTO, ("selfie", "authority_no_photo")),
        (Claimant("张三", PERSON.id_number), ("id_number", "authority_mismatch")),
        (UNKNOWN, ("id_number", "authority_no_record")),
        (Claimant(PERSON.name, "11010519610804"), ("id_number", "authority_invalid_id")),
    ]
    for claimant, expected in cases:
        error = refusal(provider(faceid).compare_face, claimant, selfie)
        assert isinstance(error, InvalidInput) and (error.field, error.rule) == expected
    assert [c.outcome for c in faceid.received] == [
        "FailedOperation.IdPhotoNoExist", "FailedOperation.IdNameMisMatch",
        "FailedOperation.IdNoExistSystem", "FailedOperation.IdFormatError"]


# --- every vendor code, as Result and as a top-level error --------------------------------------

REFUSALS = {
    "FailedOperation.IdNameMisMatch": ("id_number", "authority_mismatch"),
    "FailedOperation.IdNoExistSystem": ("id_number", "authority_no_record"),
    "FailedOperation.IdFormatError": ("id_number", "authority_invalid_id"),
    "FailedOperation.NameFormatError": ("name", "authority_invalid_name"),
    "FailedOperation.IdPhotoNoExist": ("selfie", "authority_no_photo"),
    "FailedOperation.IdPhotoPoorQuality": ("selfie", "authority_photo_unusable"),
    "FailedOperation.LifePhotoDetectNoFaces": ("selfie", "no_face"),
    "FailedOperation.IncompleteFace": ("selfie", "no_face"),
    "FailedOperation.ActionNodetectFace": ("selfie", "no_face"),
    "FailedOperation.LifePhotoDetectFaces": ("selfie", "multiple_faces"),
    "FailedOperation.LifePhotoPoorQuality": ("selfie", "poor_quality"),
    "FailedOperation.ImageBlur": ("selfie", "poor_quality"),
    "FailedOperation.PoorImageQuality": ("selfie", "poor_quality"),
    "FailedOperation.LifePhotoSizeError": ("selfie", "poor_quality"),
    "FailedOperation.CoveredFace": ("selfie", "poor_quality"),
    "FailedOperation.ImageDecodeFailed": ("selfie", "corrupt_image"),
    "FailedOperation.EmptyImageError": ("selfie", "corrupt_image"),
    "FailedOperation.LifePhotoDetectFake": ("selfie", "not_live"),
}
OUTAGES = {
    "FailedOperation.CompareLibServiceUnavailable": ("authority_unavailable", 60),
    "FailedOperation.CompareSystemError": ("authority_unavailable", 60),
    "FailedOperation.DbError": ("authority_unavailable", 60),
    "FailedOperation.IdPhotoSystemNoanswer": ("authority_unavailable", 60),
    "FailedOperation.DetectEngineSystemError": ("authority_unavailable", 60),
    "FailedOperation.UnKnown": ("authority_unavailable", 60),
    "InternalError": ("authority_unavailable", 60),
    "FailedOperation.SomethingNew": ("authority_unavailable", 60),  # unknown codes are never a success
    "RequestLimitExceeded": ("rate_limited", 5),
    "FailedOperation.RequestLimitExceeded": ("rate_limited", 5),
    "LimitExceeded.IdCardVerification": ("rate_limited", 5),
}
CONFIGURATION = ["AuthFailure.UnauthorizedOperation", "UnauthorizedOperation.Arrears",
                 "UnauthorizedOperation.Nonactivated", "InvalidParameter", "InvalidParameterValue.RuleIdNotExist"]


@pytest.mark.parametrize("via", ["result", "error_code"])
@pytest.mark.parametrize("code", sorted(REFUSALS))
def test_face_check_refusals(faceid, photo, via, code):
    faceid.script(PERSON.id_number, **{via: code})
    error = refusal(provider(faceid).compare_face, PERSON, face(photo("obama2")))
    assert isinstance(error, InvalidInput)
    assert (error.field, error.rule) == REFUSALS[code]


@pytest.mark.parametrize("via", ["result", "error_code"])
@pytest.mark.parametrize("code", sorted(OUTAGES))
def test_face_check_outages(faceid, photo, via, code):
    faceid.script(PERSON.id_number, **{via: code})
    error = refusal(provider(faceid).compare_face, PERSON, face(photo("obama2")))
    assert isinstance(error, Unavailable)
    assert (error.system, error.reason, error.retry_after) == (AUTHORITY, *OUTAGES[code])


@pytest.mark.parametrize("via", ["result", "error_code"])
def test_face_check_daily_limit(faceid, photo, via):
    faceid.script(PERSON.id_number, **{via: "FailedOperation.IdentityAuthLimitExceeded"})
    at_noon = dt.datetime(2025, 3, 1, 12, 0, tzinfo=SHANGHAI).timestamp()
    error = refusal(provider(faceid, clock=lambda: at_noon).compare_face, PERSON, face(photo("obama2")))
    assert (error.reason, error.retry_after) == ("daily_limit", 12 * 3600)


@pytest.mark.parametrize("via", ["result", "error_code"])
def test_low_similarity_is_an_answer_not_an_error(faceid, photo, via):
    faceid.script(PERSON.id_number, **{via: "FailedOperation.CompareLowSimilarity"}, sim=41.5)
    proof = provider(faceid).compare_face(PERSON, face(photo("obama2")))
    assert not proof.matched
    assert proof.score == (41.5 if via == "result" else 0.0)  # a top-level error carries no Sim


@pytest.mark.parametrize("code", CONFIGURATION)
def test_configuration_errors_are_logged_by_code_and_not_retried(faceid, caplog, code):
    faceid.script(error_code=code)
    error = refusal(provider(faceid).verify_identity, PERSON)
    assert isinstance(error, Unavailable)
    assert (error.reason, error.retry_after) == ("configuration", None)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("services.")]
    assert len(errors) == 1 and code in errors[0].getMessage()
    assert "scripted failure" not in caplog.text  # the vendor's message is not logged, only its code


# --- signing, transport ---------------------------------------------------------------------

def test_a_wrong_secret_key_is_refused_by_the_authority(faceid, caplog):
    error = refusal(provider(faceid, secret_key="not-the-right-key-000000000000").verify_identity, PERSON)
    assert isinstance(error, Unavailable)
    assert (error.system, error.reason, error.retry_after) == (AUTHORITY, "configuration", None)
    assert [c.outcome for c in faceid.received] == ["AuthFailure.SignatureFailure"]
    assert "AuthFailure.SignatureFailure" in caplog.text
    assert "not-the-right-key" not in caplog.text and "not-the-right-key" not in str(error)


def test_an_unknown_secret_id_and_a_skewed_clock_are_refused(photo, engine):
    with FakeTencentFaceId(secret_id="AKIDanotherAccount000000000000000000") as other:
        error = refusal(provider(other, secret_id="AKIDfakeFaceIdSecretId00000000000000",
                                 secret_key=other.secret_key).verify_identity, PERSON)
        assert error.reason == "configuration"
        assert [c.outcome for c in other.received] == ["AuthFailure.SecretIdNotFound"]
    with FakeTencentFaceId(clock=lambda: time.time() + 900) as skewed:
        error = refusal(provider(skewed).verify_identity, PERSON)
        assert error.reason == "configuration"
        assert [c.outcome for c in skewed.received] == ["AuthFailure.SignatureExpire"]


def test_an_answer_slower_than_the_timeout(faceid):
    faceid.script(PERSON.id_number, delay=1.0)
    started = time.monotonic()
    error = refusal(provider(faceid, timeout_seconds=0.3).verify_identity, PERSON)
    assert time.monotonic() - started < 0.9
    assert isinstance(error, Unavailable)
    assert (error.system, error.reason, error.retry_after) == (AUTHORITY, "timeout", 30)


@pytest.mark.parametrize("behaviour", [
    {"http_status": 500}, {"http_status": 502}, {"raw_body": b"<html>upstream error</html>"},
])
def test_http_errors_and_answers_that_are_not_json(faceid, photo, behaviour):
    faceid.script(**behaviour)
    error = refusal(provider(faceid).compare_face, PERSON, face(photo("obama2")))
    assert isinstance(error, Unavailable)
    assert (error.reason, error.retry_after) == ("authority_unavailable", 30)


def test_an_authority_that_does_not_listen():
    fake = FakeTencentFaceId().start()
    adapter = provider(fake)
    fake.stop()  # nothing listens on that port any more
    error = refusal(adapter.verify_identity, PERSON)
    assert isinstance(error, Unavailable)
    assert error.reason in ("authority_unavailable", "timeout") and error.retry_after == 30


def test_unavailable_keeps_retry_after_across_rpc():
    # nameko rebuilds an exception from its args, sent as strings
    for sent, seconds in ((Unavailable(AUTHORITY, "daily_limit", 3600), 3600), (Unavailable("s3", "timeout"), None)):
        data = serialize(sent)
        data["exc_args"] = [str(a) for a in data["exc_args"]]
        rebuilt = deserialize(data)
        assert isinstance(rebuilt, Unavailable)
        assert (rebuilt.system, rebuilt.reason, rebuilt.retry_after) == (sent.system, sent.reason, seconds)
        assert rebuilt.to_dict()["retry_after"] == seconds


# --- settings -------------------------------------------------------------------------------

def test_settings_from_config(tmp_path, monkeypatch):
    (tmp_path / "id").write_text("AKIDfromFile\n")
    monkeypatch.setenv("TEST_FACEID_KEY", "keyFromEnvironment")
    settings = TencentFaceIdSettings.from_config({
        "SECRET_ID": {"file": str(tmp_path / "id")},
        "SECRET_KEY": {"env": "TEST_FACEID_KEY", "file": str(tmp_path / "absent")},
        "REGION": "ap-shanghai", "TIMEOUT_SECONDS": "4.5", "MIN_SIM": 80,
    })
    assert (settings.secret_id, settings.secret_key, settings.region) == (
        "AKIDfromFile", "keyFromEnvironment", "ap-shanghai")
    assert (settings.endpoint, settings.scheme, settings.timeout_seconds, settings.min_sim) == (
        "faceid.tencentcloudapi.com", "https", 4.5, 80.0)
    assert "keyFromEnvironment" not in repr(settings)
    defaults = TencentFaceIdSettings("AKIDx", "key")
    assert (defaults.region, defaults.timeout_seconds, defaults.min_sim) == ("ap-guangzhou", 10.0, 70.0)


@pytest.mark.parametrize("changes, field, rule", [
    ({"SECRET_KEY": {"env": "TEST_FACEID_UNSET"}}, "proofing.tencent.secret_key", "required"),
    ({"SECRET_ID": "AKIDinline"}, "proofing.tencent.secret_id", "secret_spec"),
    ({"REGION": "Guangzhou"}, "proofing.tencent.region", "format"),
    ({"ENDPOINT": "https://faceid.tencentcloudapi.com/"}, "proofing.tencent.endpoint", "host_format"),
    ({"SCHEME": "ftp"}, "proofing.tencent.scheme", "one_of"),
    ({"SCHEME": "http"}, "proofing.tencent.scheme", "https_required"),
    ({"TIMEOUT_SECONDS": "soon"}, "proofing.tencent.timeout_seconds", "number"),
    ({"TIMEOUT_SECONDS": 0}, "proofing.tencent.timeout_seconds", "range"),
    ({"MIN_SIM": 60}, "proofing.tencent.min_sim", "range"),
    ({"MIN_SIM": 101}, "proofing.tencent.min_sim", "range"),
    ({"MINSIM": 80}, "proofing.tencent.minsim", "unknown_setting"),
])
def test_bad_settings_are_refused_with_the_key(monkeypatch, changes, field, rule):
    monkeypatch.setenv("TEST_FACEID_ID", "AKIDx")
    monkeypatch.setenv("TEST_FACEID_KEY", "k3yValue")
    monkeypatch.delenv("TEST_FACEID_UNSET", raising=False)
    section = {"SECRET_ID": {"env": "TEST_FACEID_ID"}, "SECRET_KEY": {"env": "TEST_FACEID_KEY"}, **changes}
    with pytest.raises(InvalidInput) as err:
        TencentFaceIdSettings.from_config(section)
    assert (err.value.field, err.value.rule) == (field, rule)
    assert "k3yValue" not in str(err.value) and "AKIDx" not in str(err.value)


def test_plain_http_is_allowed_only_to_a_loopback_endpoint():
    assert TencentFaceIdSettings("AKIDx", "key", endpoint="127.0.0.1:8080", scheme="http").scheme == "http"
    assert TencentFaceIdSettings("AKIDx", "key", endpoint="localhost:8080", scheme="http").scheme == "http"
    with pytest.raises(InvalidInput):
        TencentFaceIdSettings("AKIDx", "key", endpoint="faceid.example.cn", scheme="http")

