"""The platform CA: root/issuing hierarchy, person/TSA/service certificates,
CRL and OCSP, checked with cryptography's parsers and the real openssl CLI."""
import datetime as dt
import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID, NameOID

from services.common.errors import Conflict, IntegrityError, InvalidInput
from services.common.sealing import BlindIndex, Keyring, associated_data
from services.identity import ca

# The openssl CLI is a declared test dependency: missing, these tests fail
# rather than skip.
OPENSSL = shutil.which("openssl") or "openssl"

PASSPHRASE = "correct horse battery staple"
POINTS = ca.PublicationPoints(
    crl_url="http://pki.esign.test/crl/issuing-1.crl",
    ocsp_url="http://pki.esign.test/ocsp",
    ca_issuers_url="http://pki.esign.test/ca/issuing-1.cer",
)
NAME = "买买提·艾力𠮷"
ID_NUMBER = "11010519491231002X"
SUBJECT_SERIAL = BlindIndex(b"b" * 32).digest("certificate_subject", ID_NUMBER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    root_dir = folder / "root"
    root_cert = ca.init_root(root_dir, PASSPHRASE)
    issuing = ca.create_issuing_ca(root_dir, PASSPHRASE)
    person_key = ca.generate_key()
    person = ca.issue_person_certificate(issuing, person_key.public_key(), NAME, SUBJECT_SERIAL, POINTS)
    (folder / "issuing.pem").write_bytes(ca.certificate_to_pem(issuing.certificate))
    (folder / "person.pem").write_bytes(ca.certificate_to_pem(person))
    return dict(folder=folder, root_dir=root_dir, root=root_cert, issuing=issuing, person=person,
                person_key=person_key)


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def openssl(*args, cwd=None):
    return subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)


# --- root ----------------------------------------------------------------

def test_init_root_writes_certificate_and_encrypted_key(pki):
    root_dir = pki["root_dir"]
    key_pem = (root_dir / ca.ROOT_KEY_FILE).read_bytes()
    assert key_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(os.stat(root_dir / ca.ROOT_KEY_FILE).st_mode) == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(key_pem, password=None)
    key = serialization.load_pem_private_key(key_pem, password=PASSPHRASE.encode())
    assert key.public_key() == pki["root"].public_key()
    assert x509.load_pem_x509_certificate((root_dir / ca.ROOT_CERT_FILE).read_bytes()) == pki["root"]


def test_init_root_refuses_to_overwrite(pki):
    before = (pki["root_dir"] / ca.ROOT_KEY_FILE).read_bytes()
    with pytest.raises(Conflict):
        ca.init_root(pki["root_dir"], PASSPHRASE)
    assert (pki["root_dir"] / ca.ROOT_KEY_FILE).read_bytes() == before


def test_wrong_or_short_passphrase(pki, tmp_path):
    with pytest.raises(InvalidInput) as info:
        ca.create_issuing_ca(pki["root_dir"], "not the passphrase")
    assert info.value.field == "passphrase"
    with pytest.raises(InvalidInput):
        ca.init_root(tmp_path / "r", "short")


def test_root_is_a_self_signed_p256_ca_with_pathlen_1(pki):
    root = pki["root"]
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    bc = ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    assert ext(root, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(root.public_key())


def test_issuing_ca_is_signed_by_root_with_pathlen_0(pki):
    cert = pki["issuing"].certificate
    cert.verify_directly_issued_by(pki["root"])
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(pki["root"], x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc <= pki["root"].not_valid_after_utc


# --- person certificate ----------------------------------------------------

def test_person_certificate_verifies_with_openssl(pki):
    folder = pki["folder"]
    result = openssl("verify", "-CAfile", pki["root_dir"] / "root.pem", "-untrusted", folder / "issuing.pem",
                     folder / "person.pem")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_refuses_the_person_certificate_without_the_issuing_ca(pki):
    folder = pki["folder"]
    result = openssl("verify", "-CAfile", pki["root_dir"] / "root.pem", folder / "person.pem")
    assert result.returncode != 0


def test_openssl_refuses_a_certificate_from_another_root(pki, tmp_path):
    other_root = ca.create_root()
    (tmp_path / "other.pem").write_bytes(ca.certificate_to_pem(other_root.certificate))
    result = openssl("verify", "-CAfile", tmp_path / "other.pem", "-untrusted", pki["folder"] / "issuing.pem",
                     pki["folder"] / "person.pem")
    assert result.returncode != 0


def test_person_subject_has_name_and_keyed_hash_but_no_id_number(pki):
    person = pki["person"]
    subject = person.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAME
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "CN"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == SUBJECT_SERIAL
    der = ca.certificate_to_der(person)
    assert ID_NUMBER.encode() not in der and ID_NUMBER.lower().encode() not in der
    assert NAME.encode("utf-8") in der  # UTF8String, so 𠮷 survives


def test_person_extensions(pki):
    person, issuing = pki["person"], pki["issuing"].certificate
    bc = ext(person, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext(person, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.content_commitment
    assert not (ku.value.key_cert_sign or ku.value.crl_sign or ku.value.key_encipherment
                or ku.value.data_encipherment or ku.value.key_agreement)
    assert ext(person, x509.SubjectKeyIdentifier).value == \
        x509.SubjectKeyIdentifier.from_public_key(pki["person_key"].public_key())
    assert ext(person, x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(issuing, x509.SubjectKeyIdentifier).value.digest
    crl_dp = ext(person, x509.CRLDistributionPoints).value
    assert [n.value for n in crl_dp[0].full_name] == [POINTS.crl_url]
    aia = {d.access_method: d.access_location.value for d in ext(person, x509.AuthorityInformationAccess).value}
    assert aia == {AuthorityInformationAccessOID.OCSP: POINTS.ocsp_url,
                   AuthorityInformationAccessOID.CA_ISSUERS: POINTS.ca_issuers_url}
    with pytest.raises(x509.ExtensionNotFound):
        person.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    person.verify_directly_issued_by(issuing)


def test_openssl_reads_the_extensions_the_same_way(pki):
    text = openssl("x509", "-in", pki["folder"] / "person.pem", "-noout", "-text").stdout
    assert "X509v3 Key Usage: critical" in text
    assert "Digital Signature, Non Repudiation" in text
    assert "X509v3 Basic Constraints: critical" in text and "CA:FALSE" in text
    assert "OCSP - URI:" + POINTS.ocsp_url in text
    assert "CA Issuers - URI:" + POINTS.ca_issuers_url in text
    assert "URI:" + POINTS.crl_url in text
    assert "ecdsa-with-SHA256" in text and "prime256v1" in text


def test_person_validity_is_two_years_by_default(pki):
    person = pki["person"]
    span = person.not_valid_after_utc - person.not_valid_before_utc
    assert dt.timedelta(days=730) <= span <= dt.timedelta(days=730, minutes=10)
    assert person.not_valid_before_utc <= dt.datetime.now(dt.timezone.utc)


def test_validity_never_exceeds_the_issuer(pki):
    cert = ca.issue_person_certificate(pki["issuing"], ca.generate_key().public_key(), "张三", SUBJECT_SERIAL,
                                       POINTS, validity=dt.timedelta(days=365 * 50))
    assert cert.not_valid_after_utc == pki["issuing"].certificate.not_valid_after_utc


def test_serials_are_random_positive_and_at_most_159_bits(pki):
    serials = [ca.random_serial() for _ in range(200)]
    assert all(0 < s < 2 ** 159 for s in serials)
    assert len(set(serials)) == 200
    assert max(s.bit_length() for s in serials) >= 150  # really uses the width
    assert 0 < pki["person"].serial_number < 2 ** 159


@pytest.mark.parametrize("serial", [ID_NUMBER, "11010519491231002x", "", "A" * 64, "ab" * 33, "g" * 40])
def test_subject_serial_must_be_a_hex_hash(pki, serial):
    with pytest.raises(InvalidInput) as info:
        ca.issue_person_certificate(pki["issuing"], ca.generate_key().public_key(), "张三", serial, POINTS)
    assert info.value.field == "subject_serial"
    assert ID_NUMBER not in str(info.value)


def test_only_p256_keys_are_certified(pki):
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(InvalidInput):
        ca.issue_person_certificate(pki["issuing"], p384, "张三", SUBJECT_SERIAL, POINTS)


# --- TSA and service certificates ----------------------------------------

def test_tsa_certificate(pki, tmp_path):
    cert = ca.issue_tsa_certificate(pki["issuing"], ca.generate_key().public_key(), "esign TSA 1", POINTS)
    eku = ext(cert, x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature
    assert ext(cert, x509.BasicConstraints).value.ca is False
    (tmp_path / "tsa.pem").write_bytes(ca.certificate_to_pem(cert))
    result = openssl("verify", "-purpose", "timestampsign", "-CAfile", pki["root_dir"] / "root.pem",
                     "-untrusted", pki["folder"] / "issuing.pem", tmp_path / "tsa.pem")
    assert result.returncode == 0, result.stdout + result.stderr


def test_person_certificate_is_not_a_tsa_certificate(pki):
    result = openssl("verify", "-purpose", "timestampsign", "-CAfile", pki["root_dir"] / "root.pem",
                     "-untrusted", pki["folder"] / "issuing.pem", pki["folder"] / "person.pem")
    assert result.returncode != 0


def test_service_certificate(pki, tmp_path):
    cert = ca.issue_service_certificate(pki["issuing"], ca.generate_key().public_key(), "esign report signer",
                                        POINTS)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "esign report signer"
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext(cert, x509.BasicConstraints).value.ca is False
    (tmp_path / "svc.pem").write_bytes(ca.certificate_to_pem(cert))
    result = openssl("verify", "-CAfile", pki["root_dir"] / "root.pem", "-untrusted", pki["folder"] / "issuing.pem",
                     tmp_path / "svc.pem")
    assert result.returncode == 0, result.stderr


# --- CRL ------------------------------------------------------------------

def revoked_entry(pki, reason=ca.RevocationReason.key_compromise):
    when = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    return ca.Revocation(pki["person"].serial_number, when, reason)


def test_empty_crl_then_revoked(pki):
    now = dt.datetime.now(dt.timezone.utc)
    issuing = pki["issuing"]
    empty = ca.build_crl(issuing, [], crl_number=1, now=now)
    assert len(empty) == 0
    assert empty.get_revoked_certificate_by_serial_number(pki["person"].serial_number) is None

    crl = ca.build_crl(issuing, [revoked_entry(pki)], crl_number=2, now=now)
    assert crl.is_signature_valid(issuing.certificate.public_key())
    assert crl.issuer == issuing.certificate.subject
    entry = crl.get_revoked_certificate_by_serial_number(pki["person"].serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert crl.next_update_utc - crl.last_update_utc == dt.timedelta(days=1)
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
        ext(issuing.certificate, x509.SubjectKeyIdentifier).value.digest


def test_unspecified_reason_is_omitted(pki):
    crl = ca.build_crl(pki["issuing"], [revoked_entry(pki, ca.RevocationReason.unspecified)], crl_number=3)
    entry = crl.get_revoked_certificate_by_serial_number(pki["person"].serial_number)
    with pytest.raises(x509.ExtensionNotFound):
        entry.extensions.get_extension_for_class(x509.CRLReason)


def test_crl_signed_by_another_ca_does_not_verify(pki):
    crl = ca.build_crl(ca.create_root(), [], crl_number=1)
    assert not crl.is_signature_valid(pki["issuing"].certificate.public_key())


def test_openssl_sees_the_revocation_in_the_crl(pki, tmp_path):
    folder = pki["folder"]
    good_crl = ca.build_crl(pki["issuing"], [], crl_number=1)
    (tmp_path / "good.pem").write_bytes(ca.crl_to_pem(good_crl))
    ok = openssl("verify", "-crl_check", "-CRLfile", tmp_path / "good.pem", "-CAfile", pki["root_dir"] / "root.pem",
                 "-untrusted", folder / "issuing.pem", folder / "person.pem")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    crl = ca.build_crl(pki["issuing"], [revoked_entry(pki)], crl_number=2)
    (tmp_path / "crl.pem").write_bytes(ca.crl_to_pem(crl))
    text = openssl("crl", "-in", tmp_path / "crl.pem", "-noout", "-text").stdout
    assert f"{pki['person'].serial_number:X}" in text.upper()
    assert "Key Compromise" in text
    refused = openssl("verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                      pki["root_dir"] / "root.pem", "-untrusted", folder / "issuing.pem", folder / "person.pem")
    assert refused.returncode != 0
    assert "revoked" in (refused.stdout + refused.stderr).lower()


# --- OCSP -----------------------------------------------------------------

def ocsp_request(cert, issuer, algorithm=hashes.SHA256(), nonce=None):
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def status_store(revocations):
    by_serial = {r.serial: r for r in revocations}

    def lookup(serial):
        if serial in by_serial:
            return ca.CertificateStatus(by_serial[serial])
        if serial in lookup.issued:
            return ca.GOOD
        return None

    lookup.issued = set()
    return lookup


def single(response_der):
    response = ocsp.load_der_ocsp_response(response_der)
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return response


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA1()])
def test_ocsp_good_then_revoked(pki, algorithm):
    issuing, person = pki["issuing"], pki["person"]
    lookup = status_store([])
    lookup.issued.add(person.serial_number)
    request = ocsp_request(person, issuing.certificate, algorithm)

    good = single(ca.build_ocsp_response(issuing, request, lookup))
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert good.serial_number == person.serial_number
    issuing.certificate.public_key().verify(good.signature, good.tbs_response_bytes,
                                            ec.ECDSA(good.signature_hash_algorithm))
    assert good.responder_key_hash == ext(issuing.certificate, x509.SubjectKeyIdentifier).value.digest

    revoked_lookup = status_store([revoked_entry(pki)])
    revoked = single(ca.build_ocsp_response(issuing, request, revoked_lookup))
    assert revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_time_utc == dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert revoked.next_update_utc > revoked.this_update_utc


def test_ocsp_unknown_for_a_serial_never_issued(pki):
    other = ca.issue_person_certificate(pki["issuing"], ca.generate_key().public_key(), "李四", SUBJECT_SERIAL, POINTS)
    response = single(ca.build_ocsp_response(pki["issuing"], ocsp_request(other, pki["issuing"].certificate),
                                             status_store([])))
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_nonce_is_echoed(pki):
    nonce = os.urandom(16)
    request = ocsp_request(pki["person"], pki["issuing"].certificate, nonce=nonce)
    response = single(ca.build_ocsp_response(pki["issuing"], request, status_store([])))
    assert response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce


def test_ocsp_request_about_another_issuer_is_unauthorized(pki):
    other_root = ca.create_root()
    other_issuing = ca.issue_ca(other_root)
    foreign = ca.issue_person_certificate(other_issuing, ca.generate_key().public_key(), "王五", SUBJECT_SERIAL,
                                          POINTS)
    request = ocsp_request(foreign, other_issuing.certificate)
    response = ocsp.load_der_ocsp_response(ca.build_ocsp_response(pki["issuing"], request, status_store([])))
    assert response.response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01\x01", os.urandom(64)])
def test_malformed_ocsp_request(pki, garbage):
    response = ocsp.load_der_ocsp_response(ca.build_ocsp_response(pki["issuing"], garbage, status_store([])))
    assert response.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_openssl_client_request_and_verification_of_a_revoked_answer(pki, tmp_path):
    folder = pki["folder"]
    # The request comes from the real openssl client (SHA-1 CertID and a nonce).
    made = openssl("ocsp", "-issuer", folder / "issuing.pem", "-cert", folder / "person.pem",
                   "-reqout", tmp_path / "req.der")
    assert made.returncode == 0, made.stderr
    response = ca.build_ocsp_response(pki["issuing"], (tmp_path / "req.der").read_bytes(),
                                      status_store([revoked_entry(pki)]))
    (tmp_path / "resp.der").write_bytes(response)
    checked = openssl("ocsp", "-respin", tmp_path / "resp.der", "-reqin", tmp_path / "req.der",
                      "-CAfile", pki["root_dir"] / "root.pem", "-verify_other", folder / "issuing.pem", "-resp_text")
    output = checked.stdout + checked.stderr
    assert "Response verify OK" in output, output
    assert "Cert Status: revoked" in output
    assert "keyCompromise" in output


# --- private keys only through sealing ------------------------------------

def test_private_key_round_trips_only_sealed(pki):
    keyring = Keyring({"kek-1": b"k" * 32}, active="kek-1")
    key = pki["person_key"]
    aad = associated_data("certificate-key", str(pki["person"].serial_number))
    blob = ca.seal_private_key(keyring, key, aad)
    raw = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert raw not in blob
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    assert scalar not in blob
    restored = ca.unseal_private_key(keyring, blob, aad)
    assert restored.private_numbers() == key.private_numbers()
    with pytest.raises(IntegrityError):
        ca.unseal_private_key(keyring, blob, associated_data("certificate-key", "other"))


def test_pem_der_helpers_round_trip(pki):
    cert = pki["person"]
    assert ca.certificate_from_pem(ca.certificate_to_pem(cert)) == cert
    assert ca.certificate_from_der(ca.certificate_to_der(cert)) == cert
    pub = pki["person_key"].public_key()
    assert ca.public_key_from_pem(ca.public_key_to_pem(pub)) == pub
    crl = ca.build_crl(pki["issuing"], [], crl_number=1)
    assert x509.load_der_x509_crl(ca.crl_to_der(crl)) == crl


def test_ca_repr_hides_the_key(pki):
    text = repr(pki["issuing"])
    assert "Issuing CA" in text
    assert str(pki["issuing"].private_key.private_numbers().private_value) not in text
