"""The platform TSA (RFC 3161) and its HTTP transport, and the client's
refusal to sign without a trusted time."""
import asyncio
import datetime as dt
import hashlib
import os

import pytest
import requests
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko_certvalidator import ValidationContext

from services.common.errors import InvalidInput, Unavailable
from services.common.tsa import IssuedToken, TimeStampApp, TimeStampAuthority, TsaClient, TsaSettings
from tests.support.pki import PkiHttpServer


@pytest.fixture(scope="module")
def authority(env):
    return TimeStampAuthority(env.pki.tsa.certificate, env.pki.tsa.key, [env.pki.issuing.certificate])


def _request(digest: bytes, algorithm: str = "sha256", nonce: int | None = 1234567) -> tsp.TimeStampReq:
    fields = {
        "version": 1,
        "message_imprint": {"hash_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
                            "hashed_message": digest},
        "cert_req": True,
    }
    if nonce is not None:
        fields["nonce"] = nonce
    return tsp.TimeStampReq(fields)


class _AnyTimeStampResp(core.Sequence):
    # asn1crypto's TimeStampResp insists on a token, which a rejection lacks
    _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]


def _status(response_der: bytes) -> tuple[str, set]:
    status = _AnyTimeStampResp.load(response_der)["status"]
    return status["status"].native, set(status["fail_info"].native or ())


def test_authority_refuses_a_certificate_without_the_timestamping_eku(env):
    with pytest.raises(InvalidInput) as err:
        TimeStampAuthority(env.pki.alice.certificate, env.pki.alice.key)
    assert err.value.field == "tsa_certificate" and err.value.rule == "eku"


def test_authority_refuses_a_key_that_is_not_the_certificates(env):
    with pytest.raises(InvalidInput) as err:
        TimeStampAuthority(env.pki.tsa.certificate, env.pki.alice.key)
    assert err.value.rule == "key_mismatch"


def test_granted_token_covers_the_digest_and_chains_to_the_root(env, authority):
    digest = hashlib.sha256(b"signature value").digest()
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    response = tsp.TimeStampResp.load(authority.respond(_request(digest).dump()))
    assert response["status"]["status"].native == "granted"
    token = response["time_stamp_token"]
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest
    assert tst_info["nonce"].native == 1234567
    assert before <= tst_info["gen_time"].native <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(env.pki.root.der)], allow_fetching=True,
                                revocation_mode="hard-fail")
    status = asyncio.run(
        validate_tst_signed_data(token["content"], context, expected_tst_imprint=lambda _algorithm: digest)
    )
    assert status["intact"] and status["valid"]
    assert status["validation_path"] is not None  # chained to our root under hard-fail revocation


@pytest.mark.parametrize(
    "request_der, fail_info",
    [
        (b"\x30\x03\x02\x01", "bad_data_format"),  # truncated DER
        (_request(hashlib.md5(b"x").digest(), "md5").dump(), "bad_alg"),
        (_request(b"\x00" * 20).dump(), "bad_data_format"),  # 20 bytes is not a SHA-256 digest
    ],
    ids=["truncated", "md5", "short_digest"],
)
def test_bad_requests_get_a_rejection_not_a_token(authority, request_der, fail_info):
    status, infos = _status(authority.respond(request_der))
    assert status == "rejection"
    assert fail_info in infos


def test_http_transport_follows_rfc3161_section_3_4(env):
    body = _request(hashlib.sha256(b"x").digest()).dump()
    answer = requests.post(env.tsa_url, data=body, headers={"Content-Type": "application/timestamp-query"}, timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/timestamp-reply"
    assert _status(answer.content)[0] == "granted"

    assert requests.get(env.tsa_url, timeout=5).status_code == 405
    wrong_type = requests.post(env.tsa_url, data=body, headers={"Content-Type": "text/plain"}, timeout=5)
    assert wrong_type.status_code == 415
    too_big = requests.post(
        env.tsa_url, data=os.urandom(TimeStampApp.max_request_bytes + 1),
        headers={"Content-Type": "application/timestamp-query"}, timeout=5,
    )
    assert too_big.status_code == 400


def test_client_gets_a_token_for_its_digest(env):
    digest = hashlib.sha256(b"abc").digest()
    token = asyncio.run(TsaClient(TsaSettings(env.tsa_url)).async_timestamp(digest, "sha256"))
    assert (token["content"]["encap_content_info"]["content"].parsed["message_imprint"]["hashed_message"].native
            == digest)


def _serve(app) -> PkiHttpServer:
    server = PkiHttpServer()
    server.app = app
    return server.start()


def test_client_raises_unavailable_when_the_tsa_is_down():
    server = _serve(lambda environ, start_response: [])
    url = f"{server.base_url}/tsa"
    server.stop()  # nothing listens there any more
    with pytest.raises(Unavailable) as err:
        asyncio.run(TsaClient(TsaSettings(url, timeout_seconds=2)).async_timestamp(b"\x01" * 32, "sha256"))
    assert err.value.system == "tsa"


def test_client_raises_unavailable_on_a_server_error():
    def failing(environ, start_response):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"boom"]

    server = _serve(failing)
    try:
        with pytest.raises(Unavailable):
            asyncio.run(TsaClient(TsaSettings(f"{server.base_url}/tsa")).async_timestamp(b"\x01" * 32, "sha256"))
    finally:
        server.stop()


def test_client_raises_unavailable_on_junk_with_the_right_content_type():
    def junk(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/timestamp-reply")])
        return [b"\x30\x80garbage"]

    server = _serve(junk)
    try:
        with pytest.raises(Unavailable):
            asyncio.run(TsaClient(TsaSettings(f"{server.base_url}/tsa")).async_timestamp(b"\x01" * 32, "sha256"))
    finally:
        server.stop()


def test_client_rejects_a_token_for_another_digest(authority):
    def substituting(environ, start_response):
        # a TSA that time-stamps something else than it was asked to
        request = tsp.TimeStampReq.load(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        forged = _request(hashlib.sha256(b"other").digest(), nonce=request["nonce"].native)
        body = authority.respond(forged.dump())
        start_response("200 OK", [("Content-Type", "application/timestamp-reply")])
        return [body]

    server = _serve(substituting)
    try:
        with pytest.raises(Unavailable) as err:
            asyncio.run(TsaClient(TsaSettings(f"{server.base_url}/tsa")).async_timestamp(b"\x01" * 32, "sha256"))
        assert "different digest" in str(err.value)
    finally:
        server.stop()


def test_a_token_issued_in_process_covers_the_digest_and_chains_to_the_root(env, authority):
    """identity stamps a signature in the RPC that makes it: the same token an HTTP request would get."""
    digest = hashlib.sha256(b"a signature value").digest()
    token = cms.ContentInfo.load(authority.token(digest))
    tst_info = token["content"]["encap_content_info"]["content"].parsed
    assert tst_info["message_imprint"]["hashed_message"].native == digest
    assert tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native == "sha256"
    assert tst_info["nonce"].native is not None
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(env.pki.root.der)], allow_fetching=True,
                                revocation_mode="hard-fail")
    status = asyncio.run(
        validate_tst_signed_data(token["content"], context, expected_tst_imprint=lambda _algorithm: digest))
    assert status["intact"] and status["valid"] and status["validation_path"] is not None


def test_a_token_is_issued_only_for_a_digest_of_the_named_length(authority):
    with pytest.raises(InvalidInput) as err:
        authority.token(b"\x00" * 20)
    assert (err.value.field, err.value.rule) == ("digest", "length")


def test_an_issued_token_answers_only_for_its_own_digest(authority):
    digest = hashlib.sha256(b"the signature").digest()
    stamper = IssuedToken(authority.token(digest))
    assert asyncio.run(stamper.async_timestamp(digest, "sha256"))["content_type"].native == "signed_data"
    with pytest.raises(Unavailable) as err:
        asyncio.run(stamper.async_timestamp(hashlib.sha256(b"another signature").digest(), "sha256"))
    assert err.value.system == "tsa" and "different digest" in err.value.reason
    with pytest.raises(Unavailable):
        asyncio.run(stamper.async_timestamp(digest, "sha512"))


def test_an_unreadable_token_is_refused_before_signing():
    with pytest.raises(Unavailable) as err:
        IssuedToken(b"\x30\x03\x02\x01\x00")
    assert err.value.system == "tsa"


def test_a_tsa_whose_key_is_on_a_token_issues_tokens_that_validate_as_before(env, softhsm_home):
    """The TSA key generated on the PKCS#11 token (services/common/keystore) signs through pyHanko's
    CMS signer; certomancer's stamper, which wants the key's bytes, is not involved."""
    from services.common.keystore import EC_P256
    from services.common.keystore.private_keys import StoreEcPrivateKey
    from services.common.keystore.settings import open_key_store
    from tests.support.pki import _name, issue_certificate
    from tests.support.softhsm import pkcs11_keys

    store = open_key_store({"KEYS": pkcs11_keys(softhsm_home, "tsa-test")})
    ref = store.generate("esign/tsa-test/" + os.urandom(4).hex(), EC_P256)
    try:
        key = StoreEcPrivateKey(store, ref)
        with pytest.raises(TypeError):  # a key on the token is never serialised: the TSA cannot need its bytes
            key.private_bytes(None, None, None)
        tsa = issue_certificate(_name("Token TSA"), key, env.pki.issuing, ca=False, base_url=env.pki.base_url,
                                crl_of_issuer="issuing", ocsp=True, eku_timestamping=True)
        authority = TimeStampAuthority(tsa.certificate, key, [env.pki.issuing.certificate])
        digest = hashlib.sha256(b"signature value on the token").digest()
        token = cms.ContentInfo.load(authority.token(digest))
        context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(env.pki.root.der)], allow_fetching=True,
                                    revocation_mode="hard-fail")
        status = asyncio.run(
            validate_tst_signed_data(token["content"], context, expected_tst_imprint=lambda _algorithm: digest))
        assert status["intact"] and status["valid"] and status["validation_path"] is not None
        response = tsp.TimeStampResp.load(authority.respond(_request(digest).dump()))
        assert response["status"]["status"].native == "granted"
    finally:
        store.destroy(ref)
        store.close()
