"""The identity service with Tencent Cloud FaceID as the authority: the real
adapter on Tencent's SDK, over HTTP to a local fake FaceID that checks every
request's TC3 signature, action, version and body
(tests/support/fake_tencent_faceid.py), on real RabbitMQ and PostgreSQL.

Registration, a live proof (the best frame of the capture goes to
ImageRecognitionV2) and a certificate; issue 9's attack refused by the
authority's photo; FaceID down, slow or over its daily limit answered with a
typed Unavailable and retry advice, and nothing kept."""
from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from services.common.database import Database
from services.common.errors import Unavailable
from services.identity.models import Person
from services.identity.service import IdentityService
from tests.support import codes, liveness_clip
from tests.support.faces import face_path
from tests.support.fake_tencent_faceid import FakeTencentFaceId, RegisteredPerson

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not liveness_clip.available(), reason="needs short_clip.mp4 (ESIGN_FACES_DIR)")]

ID_A = "11010519491231002X"
ID_B = "440524188001010014"


@pytest.fixture
def faceid():
    people = [RegisteredPerson("张三", ID_A, liveness_clip.reference_photo()),
              RegisteredPerson("李四", ID_B, face_path("obama").read_bytes())]
    with FakeTencentFaceId(people) as fake:
        yield fake


@pytest.fixture
def faceid_timeout() -> float:
    """Seconds identity waits for FaceID: room for the fake's face comparison on a busy machine."""
    return 15


@pytest.fixture
def identity(service_config, run_container, rpc_proxy, faceid, faceid_timeout, tmp_path):
    secrets = tmp_path / "tencent"
    secrets.mkdir()
    (secrets / "id").write_text(faceid.secret_id)
    (secrets / "key").write_text(faceid.secret_key)
    container = run_container(IdentityService, service_config("identity", PROOFING={
        "PROVIDER": "tencent_faceid",
        "TENCENT": {"SECRET_ID": {"file": str(secrets / "id")}, "SECRET_KEY": {"file": str(secrets / "key")},
                    "ENDPOINT": faceid.endpoint, "SCHEME": "http", "TIMEOUT_SECONDS": faceid_timeout}}))

    cfg = container.config["DATABASE"]
    database = Database(cfg["URL"], cfg["SCHEMA"], "identity")

    def confirmed(phone: str) -> str:
        before = len(codes.sent(database))
        challenge = rpc_proxy.identity.request_phone_code(phone=phone)["challenge_id"]
        code = codes.message(rpc_proxy, database, phone, "phone_code", before)["params"]["code"]
        rpc_proxy.identity.confirm_phone_code(challenge_id=challenge, code=code)
        return challenge

    def register(name: str, id_number: str, phone: str, challenge: str | None = None) -> dict:
        return rpc_proxy.identity.register(name=name, id_number=id_number, phone=phone,
                                           phone_challenge_id=challenge or confirmed(phone))

    register.confirmed = confirmed

    def prove(person: str) -> dict:
        challenge = rpc_proxy.identity.start_liveness(person_id=person)
        frames = [base64.b64encode(f).decode() for f in liveness_clip.frames_for(challenge["actions"])]
        return rpc_proxy.identity.proof_face(person_id=person, challenge_id=challenge["challenge_id"], frames=frames)

    yield rpc_proxy, register, prove, database
    database.dispose()


def test_faceid_vouches_for_the_person_and_the_certificate_says_so(identity, faceid):
    rpc, register, prove, _ = identity
    person = register("张三", ID_A, "13800138000")
    assert person["assurance_level"] == "authority_two_element"
    proof = prove(person["person_id"])
    assert proof["matched"] and proof["provider"] == "tencent_faceid"
    assert proof["score_kind"] == "similarity" and proof["score"] >= proof["threshold"] == 70
    assert proof["assurance_level"] == "authority_face_liveness"
    issued = rpc.identity.issue_certificate(person_id=person["person_id"], proof_id=proof["proof_id"])
    assert issued["assurance_level"] == "authority_face_liveness"
    profile = rpc.identity.report_profile(person_id=person["person_id"], serial=issued["serial"])
    check = profile["identity_check"]
    assert check["provider"] == "tencent_faceid" and check["liveness"] == "passed"
    actions = [(call.action, call.outcome) for call in faceid.received]
    assert actions == [("IdCardVerification", "0"), ("ImageRecognitionV2", "Success")]
    assert check["request_id"] == faceid.received[-1].request_id  # the authority's own request id is kept
    assert faceid.received[-1].image_bytes > 10_000  # one frame of the live capture, not the frames


def test_the_attack_is_refused_by_the_authoritys_photo(identity, faceid):
    """The attacker (the performer, live) registers as 李四, whose ID photo is obama.jpg."""
    rpc, register, prove, _ = identity
    attacker = register("李四", ID_B, "13900139000")
    answer = prove(attacker["person_id"])
    assert answer["liveness_passed"] and not answer["matched"] and answer["proof_id"] is None
    assert answer["score"] < 70 and faceid.received[-1].outcome == "FailedOperation.CompareLowSimilarity"
    status = rpc.identity.person_status(person_id=attacker["person_id"])
    assert status["face_verified"] is False and status["next_step"] == "proofing"


@pytest.mark.parametrize("faceid_timeout", [2])  # the delay of 3 s outlasts it
@pytest.mark.parametrize("behaviour, reason, retry", [
    ({"result": "-4"}, "authority_unavailable", 60),
    ({"result": "-7"}, "daily_limit", None),
    ({"http_status": 500}, "authority_unavailable", 30),
    ({"delay": 3.0}, "timeout", 30),
])
def test_faceid_down_slow_or_over_its_limit_is_unavailable_and_nothing_is_kept(identity, faceid, behaviour,
                                                                               reason, retry, faceid_timeout):
    rpc, register, _, database = identity
    faceid.script(ID_A, **behaviour)
    challenge = register.confirmed("13800138000")
    with pytest.raises(Unavailable) as down:
        register("张三", ID_A, "13800138000", challenge)
    assert down.value.system == "identity_authority" and down.value.reason == reason
    if retry is None:  # the daily limit: until the next midnight in Shanghai
        assert 0 < down.value.retry_after <= 24 * 3600
    else:
        assert down.value.retry_after == retry
    with database.session() as session:
        assert session.execute(select(func.count()).select_from(Person)).scalar_one() == 0
    # the same registration goes through once FaceID answers again (the phone code is still good)
    assert register("张三", ID_A, "13800138000", challenge)["assurance_level"] == "authority_two_element"
