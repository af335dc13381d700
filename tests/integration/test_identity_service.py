"""The identity service end to end over real RabbitMQ and PostgreSQL, reading
each SMS code as notify would (the challenge from identity's ``otp_requested``
event, the phone and code from ``otp_message``: notify is not started; its
delivery is tests/integration/test_notify_service.py's), a local identity
registry as the authority (tests/support/registry.py) and real faces: the
stage clip's performer shown live (tests/support/liveness_clip.py) and the real
photos (tests/support/faces.py).

Registration (two-element check by the authority) → live face proof against
the authority's photo → certificate stating the assurance level (checked by
``openssl verify``) → revocation in CRL and OCSP; the attack of issue 9
(registering as someone else with your own face) refused; a stolen session
cannot replace the face, issue a certificate or pass face willingness; face
failures lock per person; sessions end; a squatted ID number is taken back;
willingness by SMS code and by live face; misuse of grants; conflicts."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from datetime import timedelta

import eventlet
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import select, update

from services.common.assurance import AssuranceLevel, level_of_certificate
from services.common.database import Database
from services.common.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited
from services.common.outbox import OUTBOX
from services.identity.models import Certificate, IdentityProof, Person, SessionRow, SigningGrantRow
from services.identity.service import IdentityService
from tests.support import codes, liveness_clip
from tests.support.faces import face_path
from tests.support.registry import PERFORMER, photo_bytes, write_registry
from tests.support.softhsm import SEALED_KEYS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

# GB 11643-1999's own examples, and numbers made valid with its check character
ID_A = "11010519491231002X"
ID_B = "440524188001010014"
ID_C = "440524198001010013"
ID_D = "110101199003071233"
ID_E = "320102198511114560"  # in nobody's registry
PHONE_A = "13800138000"
PHONE_B = "13900139000"
PHONE_C = "13700137000"
PHONE_D = "13600136000"

#: the authority's records: name, ID number, whose face is on the ID photo
REGISTRY = (("张三", ID_A, PERFORMER), ("李四", ID_B, "obama"), ("王五", ID_C, PERFORMER),
            ("买买提·艾力", ID_D, PERFORMER))

needs_clip = pytest.mark.skipif(not liveness_clip.available(),
                                reason="short_clip.mp4 exists only in the shared faces folder (ESIGN_FACES_DIR)")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def photo(name: str) -> str:
    return b64(face_path(name).read_bytes())


def live_frames(actions) -> list[str]:
    return [b64(frame) for frame in liveness_clip.frames_for(actions)]


class Platform:
    """An identity container, its database, and the codes it asks notify to send."""

    def __init__(self, container, rpc):
        self.identity_container = container
        self.rpc = rpc
        cfg = self.identity_container.config["DATABASE"]
        self.db = Database(cfg["URL"], cfg["SCHEMA"], "identity")

    def sent(self) -> list[str]:
        """The challenges identity asked to be sent, oldest first (its ``otp_requested`` events)."""
        return codes.sent(self.db)

    def message(self, phone: str, template: str, count_before: int) -> dict:
        return codes.message(self.rpc, self.db, phone, template, count_before)

    def code_for(self, phone: str, template: str, count_before: int) -> str:
        return self.message(phone, template, count_before)["params"]["code"]

    def confirmed_phone(self, phone: str) -> str:
        self.allow_resend()
        before = len(self.sent())
        challenge = self.rpc.identity.request_phone_code(phone=phone)
        code = self.code_for(phone, "phone_code", before)
        self.rpc.identity.confirm_phone_code(challenge_id=challenge["challenge_id"], code=code)
        return challenge["challenge_id"]

    def allow_resend(self) -> None:
        """A minute passes: a phone may be sent another code (one a minute per phone)."""
        from services.identity.models import OtpChallenge

        with self.db.session() as session:
            session.execute(update(OtpChallenge).values(created_at=OtpChallenge.created_at - timedelta(minutes=1)))
            session.commit()

    def register(self, name: str, id_number: str, phone: str) -> dict:
        return self.rpc.identity.register(name=name, id_number=id_number, phone=phone,
                                          phone_challenge_id=self.confirmed_phone(phone), user_agent="pytest")

    def prove_live(self, person: str, **extra) -> dict:
        """The performer in front of the camera, doing what the challenge asks."""
        challenge = self.rpc.identity.start_liveness(person_id=person)
        return self.rpc.identity.proof_face(person_id=person, challenge_id=challenge["challenge_id"],
                                            frames=live_frames(challenge["actions"]), **extra)

    def certified(self, name: str, id_number: str, phone: str) -> tuple[str, dict]:
        person = self.register(name, id_number, phone)["person_id"]
        proof = self.prove_live(person)
        assert proof["matched"], proof
        return person, self.rpc.identity.issue_certificate(person_id=person, proof_id=proof["proof_id"])

    def face_grant(self, person: str, digest: str, actions=None) -> dict:
        started = self.rpc.identity.start_willingness(person_id=person, digest=digest, method="face")
        frames = live_frames(actions or started["challenge"]["actions"])
        return self.rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], frames=frames,
                                                     person_id=person)

    def events(self) -> list[dict]:
        with self.db.session() as session:
            return [json.loads(p) for p in session.execute(select(OUTBOX.c.payload)).scalars()]


@pytest.fixture
def start_platform(service_config, run_container, rpc_proxy, tmp_path):
    platforms = []

    def start(registry=REGISTRY, database=None, **identity_overrides) -> Platform:
        secrets_dir = tmp_path / "secrets"
        registry_file = write_registry(tmp_path / f"registry-{len(platforms)}", registry)
        overrides = {
            "SECRETS": {"KEK": {"file": str(secrets_dir / "kek")},
                        "BLIND_INDEX_KEY": {"file": str(secrets_dir / "blind")},
                        "OTP_KEY": {"file": str(secrets_dir / "otp")}, "GENERATE_MISSING": True},
            "PUBLIC_URL": "http://esign.test",
            "PROOFING": {"PROVIDER": "registry", "REGISTRY_FILE": str(registry_file)},
        }
        overrides.update(identity_overrides)
        config = service_config("identity", **overrides)
        if database is not None:
            config["DATABASE"] = database
        platform = Platform(run_container(IdentityService, config), rpc_proxy)
        platforms.append(platform)
        return platform

    yield start
    for platform in platforms:
        platform.db.dispose()


@pytest.fixture
def platform(start_platform) -> Platform:
    return start_platform()


def _openssl_verify(tmp_path, pki: dict, cert_pem: str) -> str:
    (tmp_path / "root.pem").write_text(pki["root_pem"])
    (tmp_path / "issuing.pem").write_text(pki["issuing_pem"])
    (tmp_path / "person.pem").write_text(cert_pem)
    result = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted",
                             str(tmp_path / "issuing.pem"), str(tmp_path / "person.pem")],
                            capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def _ocsp_status(rpc, cert: x509.Certificate, issuer: x509.Certificate, responder_pem: str):
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    answer = rpc.identity.ocsp(request_der=b64(request.public_bytes(serialization.Encoding.DER)))
    response = ocsp.load_der_ocsp_response(base64.b64decode(answer["response_der"]))
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    responder = x509.load_pem_x509_certificate(responder_pem.encode())
    # signed by the delegated responder, whose certificate rides along
    assert response.certificates[0] == responder
    responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                  ec.ECDSA(response.signature_hash_algorithm))
    return response


def _revocation_data(rpc, pki: dict, serials: list[str]) -> dict:
    """identity's revocation_data, each OCSP response checked as _ocsp_status checks one, and
    the root's CRL; the status of each certificate it answers for, by serial."""
    answer = rpc.identity.revocation_data(serials=serials)
    root = x509.load_pem_x509_certificate(pki["root_pem"].encode())
    [crl_der] = answer["crl_der"]
    assert x509.load_der_x509_crl(base64.b64decode(crl_der)).is_signature_valid(root.public_key())
    responder = x509.load_pem_x509_certificate(pki["ocsp_pem"].encode())
    statuses = {}
    for der in answer["ocsp_der"]:
        response = ocsp.load_der_ocsp_response(base64.b64decode(der))
        assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
        assert response.certificates[0] == responder
        responder.public_key().verify(response.signature, response.tbs_response_bytes,
                                      ec.ECDSA(response.signature_hash_algorithm))
        statuses[response.serial_number] = response.certificate_status
    return statuses


@needs_clip
def test_registration_live_proof_certificate_and_revocation(platform, tmp_path):
    rpc = platform.rpc
    registered = platform.register("买买提·艾力", ID_D, "+86 138-0013-8000")
    assert registered["id_masked"] == "1101**********1233"
    assert registered["phone_masked"] == "138****8000"
    assert registered["name_masked"] == "买*****"
    assert registered["assurance_level"] == "authority_two_element" and registered["status"] == "active"
    person = registered["person_id"]
    assert rpc.identity.session_person(token=registered["session"]["token"])["person_id"] == person
    assert rpc.identity.person_status(person_id=person)["next_step"] == "proofing"

    with pytest.raises(Forbidden) as early:  # a session alone issues nothing
        rpc.identity.issue_certificate(person_id=person)
    assert early.value.reason == "step_up_required"

    proof = platform.prove_live(person)
    assert proof["matched"] is True and proof["liveness_passed"] is True and proof["provider"] == "registry"
    assert proof["assurance_level"] == "authority_face_liveness"
    assert proof["score_kind"] == "distance" and proof["score"] < proof["threshold"] == 0.6
    assert rpc.identity.person_status(person_id=person)["next_step"] == "certificate"

    issued = rpc.identity.issue_certificate(person_id=person, proof_id=proof["proof_id"])
    assert issued["assurance_level"] == "authority_face_liveness"
    assert rpc.identity.issue_certificate(person_id=person)["serial"] == issued["serial"]  # reading it issues nothing
    with pytest.raises(Forbidden) as spent:  # a proof steps up once
        rpc.identity.issue_certificate(person_id=person, proof_id=proof["proof_id"])
    assert spent.value.reason == "step_up_used"
    assert rpc.identity.person_status(person_id=person)["next_step"] == "ready"
    pki = rpc.identity.pki_certificates()
    assert ": OK" in _openssl_verify(tmp_path, pki, issued["certificate_pem"])
    assert issued["chain_pem"] == [pki["issuing_pem"]]
    cert = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
    assert level_of_certificate(cert) is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    assert format(cert.serial_number, "x") == issued["serial"]
    subject_serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value
    assert len(subject_serial) == 64 and ID_D not in subject_serial and ID_D not in issued["certificate_pem"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "买买提·艾力"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert "http://esign.test/pki/ocsp" in [d.access_location.value for d in aia]
    crl_dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert crl_dp[0].full_name[0].value == "http://esign.test/pki/crl"

    issuer = x509.load_pem_x509_certificate(pki["issuing_pem"].encode())
    assert _ocsp_status(rpc, cert, issuer, pki["ocsp_pem"]).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert rpc.identity.certificate_status(serial=issued["serial"])["status"] == "good"
    tsa = x509.load_pem_x509_certificate(pki["tsa_pem"].encode())
    assert _revocation_data(rpc, pki, [issued["serial"]]) == {
        cert.serial_number: ocsp.OCSPCertStatus.GOOD, tsa.serial_number: ocsp.OCSPCertStatus.GOOD}
    with pytest.raises(NotFound):  # no certificate of this CA has it
        rpc.identity.revocation_data(serials=["7fffffff"])
    for bad in ([], ["xyz"], "abc", ["1"] * 17):
        with pytest.raises(InvalidInput) as refused:
            rpc.identity.revocation_data(serials=bad)
        assert refused.value.field.startswith("serials")

    revoked = rpc.identity.revoke_certificate(person_id=person, reason="key_compromise")
    assert revoked["serial"] == issued["serial"]
    crl = x509.load_der_x509_crl(base64.b64decode(rpc.identity.crl()["crl_der"]))
    assert crl.is_signature_valid(issuer.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    response = _ocsp_status(rpc, cert, issuer, pki["ocsp_pem"])
    assert response.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert _revocation_data(rpc, pki, [issued["serial"]])[cert.serial_number] == ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason == x509.ReasonFlags.key_compromise
    status = rpc.identity.certificate_status(serial=issued["serial"])
    assert status["status"] == "revoked" and status["reason"] == "key_compromise"
    with pytest.raises(NotFound):
        rpc.identity.revoke_certificate(person_id=person, reason="key_compromise")
    # a new certificate needs a new proof
    with pytest.raises(Forbidden) as again:
        rpc.identity.issue_certificate(person_id=person)
    assert again.value.reason == "step_up_required"
    second = rpc.identity.issue_certificate(person_id=person, proof_id=platform.prove_live(person)["proof_id"])
    assert second["serial"] != issued["serial"]
    # a new proof while a certificate is active: the new certificate supersedes it
    third = rpc.identity.issue_certificate(person_id=person, proof_id=platform.prove_live(person)["proof_id"])
    assert rpc.identity.certificate_status(serial=second["serial"])["reason"] == "superseded"
    assert rpc.identity.certificate_status(serial=third["serial"])["status"] == "good"

    trail = rpc.identity.audit_records(person_id=person)
    actions = [(r["action"], r["outcome"]) for r in trail]
    assert actions[:2] == [("identity_check", "ok"), ("registration", "ok")]
    proofs = [r for r in trail if r["action"] == "face_proof"]
    assert proofs[0]["score"] == proof["score"] and proofs[0]["threshold"] == 0.6
    assert proofs[0]["refs"]["provider"] == "registry" and proofs[0]["refs"]["request_id"].startswith("registry-")
    assert ("certificate_revoked", "key_compromise") in actions and ("certificate_revoked", "superseded") in actions
    assert [o for a, o in actions if a == "step_up"] == ["certificate"] * 3
    assert ID_D not in json.dumps(trail, ensure_ascii=False) and PHONE_A not in json.dumps(trail)

    published = platform.events()
    types = [e["event_type"] for e in published]
    assert types.count("certificate_issued") == 3 and types.count("certificate_revoked") == 2
    assert "person_verified" in types and "otp_requested" in types
    assert all(e["data"].get("person_id") == person for e in published if e["event_type"] != "otp_requested")
    text = json.dumps(published, ensure_ascii=False)
    for secret in (ID_D, PHONE_A, "买买提", registered["session"]["token"]):
        assert secret not in text


def test_the_authority_refuses_unknown_and_mismatched_identities_and_nothing_is_kept(platform):
    with pytest.raises(InvalidInput) as unknown:
        platform.register("赵六", ID_E, PHONE_A)
    assert (unknown.value.field, unknown.value.rule) == ("id_number", "authority_no_record")
    with pytest.raises(InvalidInput) as mismatch:
        platform.register("李五", ID_B, PHONE_B)  # 李四's ID number, another name
    assert (mismatch.value.field, mismatch.value.rule) == ("id_number", "authority_mismatch")
    for error in (unknown.value, mismatch.value):
        assert ID_E not in str(error) and ID_B not in str(error) and "李" not in str(error)
    with platform.db.session() as session:
        assert session.execute(select(Person.id)).first() is None


@needs_clip
def test_registering_as_someone_else_with_your_own_face_is_refused(platform):
    """Issue 9's attack: the attacker knows 李四's name and ID number and
    registers with their own phone and their own live face. The authority's
    photo of 李四 (obama.jpg) is not the attacker's face (the performer):
    no proof, no certificate, and 李四 can still register."""
    rpc = platform.rpc
    attacker = platform.register("李四", ID_B, PHONE_C)
    assert attacker["assurance_level"] == "authority_two_element"  # name and number do belong together
    answer = platform.prove_live(attacker["person_id"])
    assert answer["liveness_passed"] is True  # a real, live person ...
    assert answer["matched"] is False and answer["proof_id"] is None  # ... who is not 李四
    assert answer["reasons"] == ["face_mismatch"] and answer["score"] >= answer["threshold"]
    with pytest.raises(Forbidden) as no_certificate:
        rpc.identity.issue_certificate(person_id=attacker["person_id"])
    assert no_certificate.value.reason == "step_up_required"
    status = rpc.identity.person_status(person_id=attacker["person_id"])
    assert status["face_verified"] is False and status["assurance_level"] == "authority_two_element"
    # 李四 himself registers with his own phone: the attacker's weaker account holds the number, so he is
    # pending until his face proves him (the take-back test shows the rest)
    real = platform.register("李四", ID_B, PHONE_D)
    assert real["status"] == "pending_takeover"


def test_the_attack_with_self_declared_identities_gives_the_weaker_level(start_platform, tmp_path):
    """With the development provider allowed, the same attack passes, and says so:
    the certificate states self_declared."""
    platform = start_platform(PROOFING={"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True},
                              FACES={"ALLOW_UPLOAD": True}, LIVENESS={"REQUIRED": False})
    rpc = platform.rpc
    attacker = platform.register("李四", ID_B, PHONE_C)
    assert attacker["assurance_level"] == "self_declared"
    answer = rpc.identity.proof_face(person_id=attacker["person_id"], selfie=photo("biden"),
                                     id_portrait=b64(photo_bytes("biden")))
    assert answer["matched"] is True and answer["assurance_level"] == "self_declared"
    issued = rpc.identity.issue_certificate(person_id=attacker["person_id"], proof_id=answer["proof_id"])
    cert = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
    assert level_of_certificate(cert) is AssuranceLevel.SELF_DECLARED
    profile = rpc.identity.report_profile(person_id=attacker["person_id"], serial=issued["serial"])
    assert profile["identity_check"]["assurance_level"] == "self_declared"
    assert profile["identity_check"]["provider"] == "self_declared"


def test_self_declared_is_refused_unless_allowed(service_config):
    from services.identity.settings import IdentitySettings

    with pytest.raises(InvalidInput) as refused:
        IdentitySettings.from_config({"PROOFING": {"PROVIDER": "self_declared"}})
    assert (refused.value.field, refused.value.rule) == ("proofing.provider", "self_declared_not_allowed")


@needs_clip
def test_the_crl_is_served_until_a_revocation_or_its_next_update_draws_near(platform):
    from services.identity.certificates import CRL_REFRESH_BEFORE
    from services.identity.models import CrlNumber

    rpc = platform.rpc

    def fetch():
        crl = x509.load_der_x509_crl(base64.b64decode(rpc.identity.crl()["crl_der"]))
        return crl, crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    def rows() -> int:
        with platform.db.session() as session:
            return session.query(CrlNumber).count()

    first, number = fetch()
    for _ in range(5):  # the same CRL, not a new signature and row per request
        assert fetch()[1] == number
    assert rows() == 1
    person, issued = platform.certified("张三", ID_A, PHONE_A)
    rpc.identity.revoke_certificate(person_id=person, reason="key_compromise")
    after, revoked_number = fetch()  # a revocation makes a new one at once
    assert revoked_number > number
    assert after.get_revoked_certificate_by_serial_number(int(issued["serial"], 16)) is not None
    assert fetch()[1] == revoked_number and rows() == 2
    with platform.db.session() as session:  # its nextUpdate draws near
        latest = session.get(CrlNumber, revoked_number)
        latest.next_update = latest.issued_at + CRL_REFRESH_BEFORE
        session.commit()
    renewed, renewed_number = fetch()
    assert renewed_number > revoked_number and renewed.next_update_utc >= after.next_update_utc
    assert renewed.get_revoked_certificate_by_serial_number(int(issued["serial"], 16)) is not None


def test_a_stolen_session_cannot_replace_the_face_issue_a_certificate_or_pass_face_willingness(start_platform):
    """A thief holds 张三's session token (and may upload files: the most
    permissive setting) but has another face (biden.jpg)."""
    platform = start_platform(FACES={"ALLOW_UPLOAD": True})
    rpc = platform.rpc
    person, certificate = platform.certified("张三", ID_A, PHONE_A)
    with platform.db.session() as session:
        face_before = session.get(Person, person).face_encoding_sealed

    replaced = rpc.identity.proof_face(person_id=person, selfie=photo("biden"))  # /me/face with the thief's selfie
    assert replaced["matched"] is False and replaced["proof_id"] is None
    with platform.db.session() as session:
        assert session.get(Person, person).face_encoding_sealed == face_before
    assert rpc.identity.issue_certificate(person_id=person)["serial"] == certificate["serial"]  # only reads
    with pytest.raises(NotFound):  # nor with someone else's proof
        other = platform.register("王五", ID_C, PHONE_B)["person_id"]
        rpc.identity.issue_certificate(person_id=person, proof_id=platform.prove_live(other)["proof_id"])
    with pytest.raises(Forbidden) as phone_refused:
        rpc.identity.change_phone(person_id=person, phone_challenge_id=platform.confirmed_phone(PHONE_C))
    assert phone_refused.value.reason == "step_up_required"
    digest = hashlib.sha256(b"IOU").hexdigest()
    started = rpc.identity.start_willingness(person_id=person, digest=digest, method="face")
    with pytest.raises(Forbidden) as face_refused:
        rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], selfie=photo("biden"),
                                         person_id=person)
    assert face_refused.value.reason == "face_mismatch"
    # the still photo of a face, held up to the camera, fails liveness
    started = rpc.identity.start_willingness(person_id=person, digest=digest, method="face")
    still = [b64(frame) for frame in liveness_clip.still_frames()]
    with pytest.raises(Forbidden) as still_refused:
        rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], frames=still, person_id=person)
    assert still_refused.value.reason == "liveness_failed"
    with platform.db.session() as session:  # nothing above issued a certificate
        assert len(session.execute(select(Certificate.serial).where(Certificate.person_id == person)).all()) == 1
    # the person themself, live, still passes
    assert platform.face_grant(person, digest)["grant"]


@needs_clip
def test_uploads_are_refused_where_liveness_is_required(platform):
    rpc = platform.rpc
    person = platform.register("张三", ID_A, PHONE_A)["person_id"]
    with pytest.raises(InvalidInput) as refused:
        rpc.identity.proof_face(person_id=person, selfie=photo("obama"))
    assert (refused.value.field, refused.value.rule) == ("selfie", "liveness_required")
    challenge = rpc.identity.start_liveness(person_id=person)
    assert challenge["upload_allowed"] is False and challenge["frames_min"] == 3
    still = [b64(frame) for frame in liveness_clip.still_frames()]
    answer = rpc.identity.proof_face(person_id=person, challenge_id=challenge["challenge_id"], frames=still)
    assert answer["matched"] is False and answer["liveness_passed"] is False
    assert "static_frames" in answer["reasons"] and "no_motion" in answer["reasons"]
    with pytest.raises(Forbidden) as spent:
        rpc.identity.proof_face(person_id=person, challenge_id=challenge["challenge_id"], frames=still)
    assert spent.value.reason == "liveness_challenge_used"
    with pytest.raises(InvalidInput) as neither:
        rpc.identity.proof_face(person_id=person, challenge_id=challenge["challenge_id"])
    assert (neither.value.field, neither.value.rule) == ("frames", "required")
    other = rpc.identity.start_liveness(person_id=person)
    performed = ("turn_left", "turn_right") if other["actions"][0] == "turn_right" else ("turn_right", "turn_left")
    answer = rpc.identity.proof_face(person_id=person, challenge_id=other["challenge_id"],
                                     frames=live_frames(performed))
    assert answer["matched"] is False and "challenge_not_performed" in answer["reasons"]
    outcomes = [r["outcome"] for r in rpc.identity.audit_records(person_id=person) if r["action"] == "liveness_check"]
    assert outcomes == ["failed", "failed"]


def test_health_answers_while_a_face_check_runs(start_platform, amqp_uri):
    platform = start_platform(FACES={"ALLOW_UPLOAD": True}, LIVENESS={"REQUIRED": False})
    rpc = platform.rpc
    person = platform.register("李四", ID_B, PHONE_B)["person_id"]
    # warm the pool (process start and model load) so the timed check is a pure face check
    assert rpc.identity.proof_face(person_id=person, selfie=photo("obama2"))["matched"]
    finished = {}
    selfie = photo("obama3")

    def face_check():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as own:  # one proxy per greenthread
            started = time.perf_counter()
            own.identity.proof_face(person_id=person, selfie=selfie)
            finished["face"] = time.perf_counter()
            finished["face_seconds"] = finished["face"] - started

    worker = eventlet.spawn(face_check)
    eventlet.sleep(0.05)  # the face check is under way
    health = rpc.identity.health()
    finished["health"] = time.perf_counter()
    worker.wait()
    assert health["status"] == "ok"
    assert finished["health"] < finished["face"], finished
    print(f"\nface check {finished['face_seconds']:.3f} s; health answered "
          f"{finished['face'] - finished['health']:.3f} s before it finished")


def test_duplicate_id_number_or_phone_is_a_conflict(start_platform):
    platform = start_platform(FACES={"ALLOW_UPLOAD": True}, LIVENESS={"REQUIRED": False})
    rpc = platform.rpc
    first = platform.confirmed_phone(PHONE_A)
    person = rpc.identity.register(name="李四", id_number=ID_B, phone=PHONE_A, phone_challenge_id=first)["person_id"]
    # proved by the authority's photo: nobody can take the number from this account
    proof = rpc.identity.proof_face(person_id=person, selfie=photo("obama2"))
    assert proof["matched"] and proof["assurance_level"] == "authority_face"
    other_phone = platform.confirmed_phone(PHONE_B)
    with pytest.raises(Conflict) as same_id:
        rpc.identity.register(name="李四", id_number=ID_B, phone=PHONE_B, phone_challenge_id=other_phone)
    assert same_id.value.reason == "id_number_registered"
    with pytest.raises(Conflict) as same_phone:
        rpc.identity.register(name="王五", id_number=ID_C, phone=PHONE_A, phone_challenge_id=first)
    assert same_phone.value.reason == "phone_registered"
    # the confirmation of one phone does not register another
    with pytest.raises(Forbidden) as wrong_phone:
        rpc.identity.register(name="王五", id_number=ID_C, phone=PHONE_C, phone_challenge_id=other_phone)
    assert wrong_phone.value.reason == "phone_not_confirmed"
    unconfirmed = rpc.identity.request_phone_code(phone=PHONE_C)["challenge_id"]
    with pytest.raises(Forbidden) as not_confirmed:
        rpc.identity.register(name="王五", id_number=ID_C, phone=PHONE_C, phone_challenge_id=unconfirmed)
    assert not_confirmed.value.reason == "phone_not_confirmed"
    rpc.identity.register(name="王五", id_number=ID_C, phone=PHONE_B, phone_challenge_id=other_phone)
    with pytest.raises(Conflict) as reused:  # the used confirmation cannot register someone else
        rpc.identity.register(name="张三", id_number=ID_A, phone=PHONE_B, phone_challenge_id=other_phone)
    assert reused.value.reason == "phone_registered"


def test_a_late_delivery_receipt_does_not_undo_a_confirmation(platform, dispatch_as):
    """The CI failure of session 1: notify's ``sms_sent`` arrived while the code
    was being confirmed, and the handler wrote back the 'pending' it had read
    as 'delivered', so registration found the phone unconfirmed. A test
    transaction confirms the row and holds its lock while the receipt is
    handled; after it commits, the confirmation must still stand."""
    from services.common import events
    from services.common.outbox import envelope
    from services.identity.models import OtpChallenge

    rpc = platform.rpc
    before = len(platform.sent())
    challenge = rpc.identity.request_phone_code(phone=PHONE_C)["challenge_id"]
    platform.code_for(PHONE_C, "phone_code", before)
    dispatch = dispatch_as("notify")
    # notify delivers it: its receipt
    dispatch("notify", events.SMS_SENT, envelope("notify", events.SMS_SENT, events.SmsOutcome(
        message_id="m-first", template="phone_code", ref_type="otp", ref_id=challenge).to_data()))
    with platform.db.session() as session:  # the first receipt has been handled
        assert wait_for(lambda: session.get(OtpChallenge, challenge, populate_existing=True).status == "delivered")
        # make it look undelivered again, as when the receipt is still on its way
        session.execute(update(OtpChallenge).where(OtpChallenge.id == challenge).values(status="pending"))
        session.commit()
    with platform.db.session() as holder:
        holder.execute(update(OtpChallenge).where(OtpChallenge.id == challenge).values(status="confirmed"))
        dispatch("notify", events.SMS_SENT, envelope("notify", events.SMS_SENT, events.SmsOutcome(
            message_id="m-again", template="phone_code", ref_type="otp", ref_id=challenge).to_data()))
        eventlet.sleep(1.0)  # the handler reads the row, then waits for this lock
        holder.commit()
    eventlet.sleep(1.0)
    with platform.db.session() as session:
        row = session.get(OtpChallenge, challenge)
        assert (row.status, row.code_sealed) == ("confirmed", None)


def test_wrong_guesses_by_anyone_lock_that_code_not_the_phone(platform):
    rpc = platform.rpc
    person = platform.register("张三", ID_A, PHONE_A)["person_id"]
    platform.allow_resend()
    before = len(platform.sent())
    stranger = rpc.identity.request_phone_code(phone=PHONE_A)["challenge_id"]  # anyone may ask
    code = platform.code_for(PHONE_A, "phone_code", before)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(Forbidden):
            rpc.identity.confirm_phone_code(challenge_id=stranger, code=wrong)
    with pytest.raises(Forbidden) as dead:  # that challenge is locked, even for the right code
        rpc.identity.confirm_phone_code(challenge_id=stranger, code=code)
    assert dead.value.reason == "otp_locked"
    # the phone's owner asks for a new code a minute later (not half an hour) and logs in
    assert rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_A))["person_id"] == person


def test_a_registered_person_logs_in_with_a_new_code_and_codes_are_rate_limited(platform):
    from services.identity.models import OtpChallenge

    rpc = platform.rpc
    person = platform.register("张三", ID_A, PHONE_A)["person_id"]
    with pytest.raises(RateLimited) as too_soon:  # one code a minute per phone
        rpc.identity.request_phone_code(phone=PHONE_A)
    assert too_soon.value.reason == "otp_resend_too_soon" and 1 <= too_soon.value.retry_after <= 60
    assert isinstance(too_soon.value, Forbidden)  # a kind of refusal, for callers that only know that
    with platform.db.session() as session:  # a minute and more later
        session.execute(update(OtpChallenge).values(created_at=OtpChallenge.created_at - timedelta(minutes=2)))
        session.commit()
    challenge = platform.confirmed_phone(PHONE_A)
    assert rpc.identity.login(phone_challenge_id=challenge)["person_id"] == person
    with pytest.raises(Forbidden):  # a confirmation logs in once
        rpc.identity.login(phone_challenge_id=challenge)
    actions = [record["action"] for record in rpc.identity.audit_records(person_id=person)]
    assert "login" in actions


@pytest.mark.parametrize("id_number, rule", [
    ("11010519491231002Y", "charset"), ("110105194912310021", "check_digit"), ("11010519000229002X", "birth_date"),
    ("1101051949123100", "length"), ("１１０１０５１９４９１２３１００２X", "charset"),
    ("99010519491231002X", "province"),
])
def test_invalid_id_numbers_name_the_rule(platform, id_number, rule):
    challenge = platform.confirmed_phone(PHONE_C)
    with pytest.raises(InvalidInput) as error:
        platform.rpc.identity.register(name="张三", id_number=id_number, phone=PHONE_C, phone_challenge_id=challenge)
    assert (error.value.field, error.value.rule) == ("id_number", rule)


def _verify_signature(cert_pem: str, digest_hex: str, signature_b64: str) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    cert.public_key().verify(base64.b64decode(signature_b64), bytes.fromhex(digest_hex),
                             ec.ECDSA(Prehashed(hashes.SHA256())))


def _sms_grant(platform, person: str, phone: str, digest: str) -> str:
    before = len(platform.sent())
    started = platform.rpc.identity.start_willingness(person_id=person, digest=digest, method="sms",
                                                      document_title="借条")
    code = platform.code_for(phone, "willingness_code", before)
    return platform.rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], code=code)["grant"]


@needs_clip
def test_sign_digest_stamps_the_signature_before_spending_the_grant(start_platform, monkeypatch):
    """With ``timestamp``, identity answers the platform TSA's token over the signature value; if the
    TSA fails, the answer is Unavailable and the grant is not spent, so the person need not confirm again."""
    from asn1crypto import cms

    from services.common.errors import Unavailable
    from services.common.tsa import TimeStampAuthority

    platform = start_platform(FACES={"ALLOW_UPLOAD": True})
    rpc = platform.rpc
    person, _certificate = platform.certified("张三", ID_A, PHONE_A)
    digest = hashlib.sha256(b"IOU stamped").hexdigest()
    grant = _sms_grant(platform, person, PHONE_A, digest)

    with pytest.raises(InvalidInput) as bad:
        rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest, timestamp="yes")
    assert (bad.value.field, bad.value.rule) == ("timestamp", "bool_type")  # checked by the entrypoint

    def broken(self, digest, algorithm="sha256"):
        raise OSError("the TSA key's token is gone")

    with monkeypatch.context() as patch:
        patch.setattr(TimeStampAuthority, "token", broken)
        with pytest.raises(Unavailable) as down:
            rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest, timestamp=True)
    assert down.value.system == "tsa" and "OSError" in down.value.reason
    assert "gone" not in str(down.value)  # the cause's text stays in the log

    signed = rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest, timestamp=True)  # not spent
    _verify_signature(signed["certificate_pem"], digest, signed["signature"])
    token = cms.ContentInfo.load(base64.b64decode(signed["timestamp_token"]))
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == hashlib.sha256(
        base64.b64decode(signed["signature"])).digest()
    tsa_pem = rpc.identity.pki_certificates()["tsa_pem"]
    tsa_certificate = x509.load_pem_x509_certificate(tsa_pem.encode())
    [signer_info] = token["content"]["signer_infos"]
    assert signer_info["sid"].chosen["serial_number"].native == tsa_certificate.serial_number
    tsa_certificate.public_key().verify(signer_info["signature"].native, signer_info["signed_attrs"].untag().dump(),
                                        ec.ECDSA(hashes.SHA256()))
    with pytest.raises(Forbidden) as replayed:
        rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest, timestamp=True)
    assert replayed.value.reason == "grant_replayed"
    # without it, no token (the signer asks an outside TSA itself)
    platform.allow_resend()
    plain = rpc.identity.sign_digest(grant=_sms_grant(platform, person, PHONE_A, digest), person_id=person,
                                     digest=digest)
    assert "timestamp_token" not in plain


@needs_clip
def test_willingness_grants_sign_once_for_one_digest_and_person(start_platform):
    platform = start_platform(FACES={"ALLOW_UPLOAD": True})
    rpc = platform.rpc
    person, certificate = platform.certified("张三", ID_A, PHONE_A)
    other = platform.register("李四", ID_B, PHONE_B)["person_id"]
    digest = hashlib.sha256(b"IOU v1").hexdigest()
    other_digest = hashlib.sha256(b"IOU v2").hexdigest()

    before = len(platform.sent())
    started = rpc.identity.start_willingness(person_id=person, digest=digest, method="sms", document_title="借条")
    assert started["challenge"] is None
    message = platform.message(PHONE_A, "willingness_code", before)  # the SMS names the document
    assert message["params"]["document_title"] == "借条"
    code = message["params"]["code"]
    with pytest.raises(Forbidden) as wrong:
        rpc.identity.confirm_willingness(willingness_id=started["willingness_id"],
                                         code="000000" if code != "000000" else "111111")
    assert wrong.value.reason == "otp_wrong_code"
    grant = rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], code=code)["grant"]
    with pytest.raises(Forbidden) as used:
        rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], code=code)
    assert used.value.reason == "willingness_used"

    def refused(reason, **call):
        with pytest.raises(Forbidden) as error:
            rpc.identity.sign_digest(**call)
        assert error.value.reason == reason

    refused("grant_digest_mismatch", grant=grant, person_id=person, digest=other_digest)
    refused("grant_foreign_person", grant=grant, person_id=other, digest=digest)
    refused("grant_unknown", grant="not-a-grant", person_id=person, digest=digest)
    signed = rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest)
    assert signed["certificate_pem"] == certificate["certificate_pem"]
    _verify_signature(signed["certificate_pem"], digest, signed["signature"])
    refused("grant_replayed", grant=grant, person_id=person, digest=digest)

    # face method: another person's face is refused; the person, live, gets a grant
    face = rpc.identity.start_willingness(person_id=person, digest=other_digest, method="face")
    assert face["challenge"]["actions"] and face["challenge"]["challenge_id"]
    with pytest.raises(Forbidden) as mismatch:
        rpc.identity.confirm_willingness(willingness_id=face["willingness_id"], selfie=photo("biden"))
    assert mismatch.value.reason == "face_mismatch"
    # a fresh challenge replaces the first (as after a failed live attempt)
    renewed = rpc.identity.new_willingness_challenge(willingness_id=face["willingness_id"], person_id=person)
    assert renewed["challenge_id"] != face["challenge"]["challenge_id"]
    face_grant = rpc.identity.confirm_willingness(willingness_id=face["willingness_id"],
                                                  frames=live_frames(renewed["actions"]))
    # expiry: the stored grant's deadline is moved into the past (no waiting on a clock)
    with platform.db.session() as session:
        session.execute(update(SigningGrantRow).where(SigningGrantRow.used_at.is_(None))
                        .values(expires_at=SigningGrantRow.issued_at))
        session.commit()
    refused("grant_expired", grant=face_grant["grant"], person_id=person, digest=other_digest)

    # a revoked certificate signs nothing, even with a fresh grant
    third_digest = hashlib.sha256(b"IOU v3").hexdigest()
    last_grant = platform.face_grant(person, third_digest)["grant"]
    rpc.identity.revoke_certificate(person_id=person, reason="privilege_withdrawn", actor="admin")
    refused("certificate_revoked", grant=last_grant, person_id=person, digest=third_digest)
    with pytest.raises(Forbidden) as no_cert:
        rpc.identity.start_willingness(person_id=person, digest=third_digest, method="sms")
    assert no_cert.value.reason == "no_active_certificate"

    outcomes = [(r["action"], r["outcome"]) for r in rpc.identity.audit_records(person_id=person)]
    sign_outcomes = [o for a, o in outcomes if a == "sign_digest"]
    assert sign_outcomes == ["grant_digest_mismatch", "grant_unknown", "ok", "grant_replayed",
                             "grant_expired", "certificate_revoked"]
    assert (("willingness_checked", "face_mismatch") in outcomes
            and ("willingness_checked", "otp_wrong_code") in outcomes)
    # the foreign attempt is recorded under the person who tried it
    assert [r["outcome"] for r in rpc.identity.audit_records(person_id=other) if r["action"] == "sign_digest"] == [
        "grant_foreign_person"]


@needs_clip
def test_delete_face_data_blocks_face_willingness(platform):
    rpc = platform.rpc
    person, _ = platform.certified("张三", ID_A, PHONE_A)
    assert rpc.identity.delete_face_data(person_id=person) == {"person_id": person, "deleted": True}
    with platform.db.session() as session:
        assert session.get(Person, person).face_encoding_sealed is None
    with pytest.raises(Forbidden) as refused:
        rpc.identity.start_willingness(person_id=person, digest="ab" * 32, method="face")
    assert refused.value.reason == "face_not_verified"
    assert ("face_data_deleted", "ok") in [(r["action"], r["outcome"])
                                           for r in rpc.identity.audit_records(person_id=person)]


@needs_clip
def test_face_willingness_failures_are_counted_per_person_and_lock(start_platform, amqp_uri):
    """Five failures in 15 minutes, spread over several checks and made at once
    from several clients, lock face willingness for the person; one lock, audited."""
    platform = start_platform(FACES={"ALLOW_UPLOAD": True})
    rpc = platform.rpc
    person, _ = platform.certified("张三", ID_A, PHONE_A)
    checks = [rpc.identity.start_willingness(person_id=person, digest=hashlib.sha256(bytes([i])).hexdigest(),
                                             method="face")["willingness_id"] for i in range(4)]
    thief = photo("biden")
    outcomes = []

    def attempt(willingness_id):
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as own:
            try:
                own.identity.confirm_willingness(willingness_id=willingness_id, selfie=thief)
            except Forbidden as refused:
                outcomes.append(refused.reason)

    pool = eventlet.GreenPool(8)
    for willingness_id in checks * 2:  # 8 attempts, two per check, at once
        pool.spawn(attempt, willingness_id)
    pool.waitall()
    assert len(outcomes) == 8 and set(outcomes) <= {"face_mismatch", "face_willingness_locked", "willingness_failed"}
    with pytest.raises(RateLimited) as locked:
        rpc.identity.start_willingness(person_id=person, digest="cd" * 32, method="face")
    assert locked.value.reason == "face_willingness_locked" and 800 <= locked.value.retry_after <= 901
    trail = rpc.identity.audit_records(person_id=person)
    assert [r["outcome"] for r in trail if r["action"] == "face_checks_locked"] == ["locked"]
    mismatches = [r for r in trail if r["action"] == "willingness_checked" and r["outcome"] == "face_mismatch"]
    assert len(mismatches) >= 5
    # SMS willingness is not locked by face failures
    assert rpc.identity.start_willingness(person_id=person, digest="cd" * 32, method="sms")["willingness_id"]


@needs_clip
def test_failed_face_proofs_lock_the_persons_face_checks(platform):
    """Fishing for a challenge a recording happens to perform (or spending the
    authority's comparisons on someone else's face) stops after five failures."""
    rpc = platform.rpc
    person = platform.register("李四", ID_B, PHONE_B)["person_id"]  # the authority's photo of 李四 is not the performer
    for attempt in range(5):
        answer = platform.prove_live(person)
        assert answer["liveness_passed"] and answer["reasons"] == ["face_mismatch"], (attempt, answer)
    with pytest.raises(RateLimited) as locked:
        rpc.identity.start_liveness(person_id=person)
    assert locked.value.reason == "face_proofing_locked" and locked.value.retry_after > 800
    trail = rpc.identity.audit_records(person_id=person)
    assert [r["outcome"] for r in trail if r["action"] == "face_checks_locked"] == ["locked"]
    assert [r["outcome"] for r in trail if r["action"] == "face_proof"] == ["face_mismatch"] * 5


def test_sessions_are_recorded_listed_revoked_and_time_out(platform):
    rpc = platform.rpc
    registered = platform.register("张三", ID_A, PHONE_A)
    person, first = registered["person_id"], registered["session"]
    second = rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_A), user_agent="phone")["session"]
    third = rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_A), user_agent="tablet")["session"]
    assert len({first["token"], second["token"], third["token"]}) == 3
    listed = rpc.identity.list_sessions(person_id=person, current_session_id=second["session_id"])
    assert [s["user_agent"] for s in listed] == ["tablet", "phone", "pytest"]
    assert [s["current"] for s in listed] == [False, True, False]
    assert all("token" not in s for s in listed)
    with platform.db.session() as session:  # only hashes are stored
        stored = session.execute(select(SessionRow.token_hash)).scalars().all()
        assert first["token"] not in stored and len(stored) == 3

    rpc.identity.revoke_session(person_id=person, session_id=first["session_id"])  # logout
    with pytest.raises(Forbidden) as revoked:
        rpc.identity.session_person(token=first["token"])
    assert revoked.value.reason == "session_revoked"
    assert rpc.identity.revoke_other_sessions(person_id=person, keep_session_id=second["session_id"]) == {"revoked": 1}
    with pytest.raises(Forbidden):
        rpc.identity.session_person(token=third["token"])
    assert rpc.identity.session_person(token=second["token"])["session_id"] == second["session_id"]
    with pytest.raises(NotFound):  # someone else's session id is nobody's
        rpc.identity.revoke_session(person_id="someone-else", session_id=second["session_id"])

    with platform.db.session() as session:  # idle for 31 minutes
        session.execute(update(SessionRow).where(SessionRow.id == second["session_id"])
                        .values(last_used_at=SessionRow.last_used_at - timedelta(minutes=31)))
        session.commit()
    with pytest.raises(Forbidden) as idle:
        rpc.identity.session_person(token=second["token"])
    assert idle.value.reason == "session_expired"
    fourth = rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_A))["session"]
    with platform.db.session() as session:  # used a moment ago, but begun more than 12 hours ago
        session.execute(update(SessionRow).where(SessionRow.id == fourth["session_id"])
                        .values(expires_at=SessionRow.created_at - timedelta(seconds=1)))
        session.commit()
    with pytest.raises(Forbidden) as absolute:
        rpc.identity.session_person(token=fourth["token"])
    assert absolute.value.reason == "session_expired"
    with pytest.raises(Forbidden) as unknown:
        rpc.identity.session_person(token="not-a-token")
    assert unknown.value.reason == "session_invalid"


@needs_clip
def test_a_new_phone_needs_its_code_and_a_fresh_face_proof(platform):
    rpc = platform.rpc
    person, _ = platform.certified("张三", ID_A, PHONE_A)
    new_phone = platform.confirmed_phone(PHONE_C)
    proof = platform.prove_live(person)
    with platform.db.session() as session:  # a proof older than the step-up window is not fresh
        session.execute(update(IdentityProof).where(IdentityProof.id == proof["proof_id"])
                        .values(created_at=IdentityProof.created_at - timedelta(minutes=11)))
        session.commit()
    with pytest.raises(Forbidden) as stale:
        rpc.identity.change_phone(person_id=person, phone_challenge_id=new_phone, proof_id=proof["proof_id"])
    assert stale.value.reason == "step_up_expired"
    changed = rpc.identity.change_phone(person_id=person, phone_challenge_id=new_phone,
                                        proof_id=platform.prove_live(person)["proof_id"])
    assert changed["phone_masked"] == "137****7000"
    assert rpc.identity.contact(person_id=person)["phone"] == PHONE_C
    # notify's one call for all of a flow's parties: the same answer, None for a person nobody knows
    assert rpc.identity.contacts(person_ids=[person, "p-nobody", person]) == {
        person: rpc.identity.contact(person_id=person), "p-nobody": None}
    for wrong, rule in (([], "length"), (["p"] * 21, "length"), ([7], "type"), ("p-1", "list_type")):
        with pytest.raises(InvalidInput) as refused:
            rpc.identity.contacts(person_ids=wrong)
        assert (refused.value.field, refused.value.rule) == ("person_ids", rule)
    assert rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_C))["person_id"] == person
    with pytest.raises(NotFound):  # the old phone logs nobody in
        rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_A))
    trail = [(r["action"], r["outcome"]) for r in rpc.identity.audit_records(person_id=person)]
    assert ("phone_changed", "ok") in trail and ("step_up", "phone_change") in trail


@needs_clip
def test_a_squatted_id_number_is_taken_back_by_an_authority_proof(start_platform, tmp_path):
    """A squatter registered as 张三 while the platform took people at their word
    (self_declared, with their own photo as 'ID portrait') and got a certificate.
    The platform now asks the authority. The real 张三 registers with his own
    phone and proves his face live: his proof wins, the squatter's account is
    frozen, its certificate revoked and its sessions ended, and signing is told."""
    old = start_platform(PROOFING={"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True},
                         FACES={"ALLOW_UPLOAD": True}, LIVENESS={"REQUIRED": False})
    squatter = old.register("张三", ID_A, PHONE_B)
    proof = old.rpc.identity.proof_face(person_id=squatter["person_id"], selfie=photo("biden"),
                                        id_portrait=photo("biden"))
    squatter_cert = old.rpc.identity.issue_certificate(person_id=squatter["person_id"], proof_id=proof["proof_id"])
    old.identity_container.stop()

    platform = start_platform(database=old.identity_container.config["DATABASE"])
    rpc = platform.rpc
    real = platform.register("张三", ID_A, PHONE_A)
    assert real["status"] == "pending_takeover"
    with pytest.raises(Forbidden) as pending:
        rpc.identity.issue_certificate(person_id=real["person_id"])
    assert pending.value.reason == "account_pending"
    answer = platform.prove_live(real["person_id"])
    assert answer["matched"] and answer["assurance_level"] == "authority_face_liveness"

    assert rpc.identity.person_status(person_id=real["person_id"])["status"] == "active"
    frozen = rpc.identity.person_status(person_id=squatter["person_id"])
    assert frozen["status"] == "frozen" and frozen["next_step"] == "frozen"
    status = rpc.identity.certificate_status(serial=squatter_cert["serial"])
    assert status["status"] == "revoked" and status["reason"] == "privilege_withdrawn"
    crl = x509.load_der_x509_crl(base64.b64decode(rpc.identity.crl()["crl_der"]))
    assert crl.get_revoked_certificate_by_serial_number(int(squatter_cert["serial"], 16)) is not None
    with pytest.raises(Forbidden) as ended:
        rpc.identity.session_person(token=squatter["session"]["token"])
    assert ended.value.reason == "session_revoked"
    with pytest.raises(Forbidden) as no_login:
        rpc.identity.login(phone_challenge_id=platform.confirmed_phone(PHONE_B))
    assert no_login.value.reason == "account_frozen"
    # documents now find the real 张三
    assert rpc.identity.find_person(name="张三", id_number=ID_A)["person_id"] == real["person_id"]
    assert rpc.identity.person_matches(person_id=squatter["person_id"], name="张三", id_number=ID_A)["matches"] is False
    issued = rpc.identity.issue_certificate(person_id=real["person_id"], proof_id=answer["proof_id"])
    assert issued["assurance_level"] == "authority_face_liveness"

    disputed = [e for e in platform.events() if e["event_type"] == "identity_disputed"]
    assert [e["data"] for e in disputed] == [{"person_id": squatter["person_id"],
                                             "replaced_by_person_id": real["person_id"],
                                             "revoked_serials": [squatter_cert["serial"]],
                                             "reason": "identity_taken_back"}]
    squatter_trail = [(r["action"], r["outcome"]) for r in rpc.identity.audit_records(person_id=squatter["person_id"])]
    assert ("account_frozen", "identity_taken_back") in squatter_trail
    assert ("certificate_revoked", "privilege_withdrawn") in squatter_trail
    assert ("identity_taken_back", "ok") in [(r["action"], r["outcome"])
                                             for r in rpc.identity.audit_records(person_id=real["person_id"])]
    # a second newcomer cannot take the number from an authority-proofed holder
    with pytest.raises(Conflict) as held:
        platform.register("张三", ID_A, PHONE_C)
    assert held.value.reason == "id_number_registered"


@needs_clip
def test_kek_rotation_on_a_populated_database(start_platform, run_container, tmp_path):
    """A new KEK: everything sealed (personal data, person keys, codes, the CA's key
    files) re-wrapped under it by esign keys rotate; then identity runs without the
    old one. Before: the key id was always kek-1 and a new ESIGN_KEK could not open
    the CA keys. The keys are sealed here (KEYS.BACKEND sealed): on the token they are
    not under the KEK at all."""
    import copy
    import os

    from services.common.key_rotation import rotate_service

    platform = start_platform(KEYS=SEALED_KEYS)
    rpc = platform.rpc
    person, certificate = platform.certified("张三", ID_A, PHONE_A)
    platform.register("李四", ID_B, PHONE_B)
    old = platform.identity_container.config
    new_kek = tmp_path / "secrets" / "kek-2"
    new_kek.write_text("base64:" + base64.b64encode(os.urandom(32)).decode() + "\n")
    rotating = copy.deepcopy(old)
    rotating["SECRETS"]["KEK"] = {"id": "kek-2", "file": str(new_kek)}
    rotating["SECRETS"]["RETIRED_KEKS"] = [{"id": "kek-1", **old["SECRETS"]["KEK"]}]

    check = rotate_service("identity", rotating, dry_run=True)
    assert set(check["by_key_id"]) == {"kek-1"} and check["rewrapped_files"] >= 4
    done = rotate_service("identity", rotating)
    assert done["rewrapped"]["persons.id_number_sealed"] == 2
    assert done["rewrapped"]["certificates.private_key_sealed"] == 1
    assert done["by_key_id"] == {"kek-2": sum(done["rewrapped"].values()) + done["rewrapped_files"]}
    again = rotate_service("identity", rotating)  # idempotent
    assert again["rewrapped"] == {} and again["rewrapped_files"] == 0

    # the old KEK is gone: identity starts (CA keys open) and works with the new one alone
    platform.identity_container.stop()
    only_new = copy.deepcopy(rotating)
    del only_new["SECRETS"]["RETIRED_KEKS"]
    run_container(IdentityService, only_new)
    assert rpc.identity.party_details(person_id=person)["id_number"] == ID_A
    digest = hashlib.sha256(b"IOU after rotation").hexdigest()
    before = len(platform.sent())
    started = rpc.identity.start_willingness(person_id=person, digest=digest, method="sms", document_title="借条")
    code = platform.code_for(PHONE_A, "willingness_code", before)
    grant = rpc.identity.confirm_willingness(willingness_id=started["willingness_id"], code=code)["grant"]
    signed = rpc.identity.sign_digest(grant=grant, person_id=person, digest=digest)  # the person key opens
    _verify_signature(certificate["certificate_pem"], digest, signed["signature"])
    rpc.identity.revoke_certificate(person_id=person, reason="key_compromise")  # the CA key signs a new CRL
    crl = x509.load_der_x509_crl(base64.b64decode(rpc.identity.crl()["crl_der"]))
    issuing = x509.load_pem_x509_certificate(rpc.identity.pki_certificates()["issuing_pem"].encode())
    assert crl.is_signature_valid(issuing.public_key())
