"""The CA directory: `esign ca init` / `issue-ca`, sealed keys, the
development CA, and OCSP answers from the delegated responder."""
from __future__ import annotations

import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.common.errors import Conflict, IntegrityError
from services.common.sealing import Keyring
from services.identity import ca, ca_cli, ca_store

PASSPHRASE = "correct horse battery"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"kek-1": os.urandom(32)}, "kek-1")


@pytest.fixture
def issued(tmp_path, keyring):
    ca_cli.init(tmp_path / "root", PASSPHRASE, key_file=True)  # the root on a token: test_root_custody.py
    ca_cli.issue_ca(tmp_path / "root", PASSPHRASE, tmp_path / "ca", public_url="https://esign.example", keyring=keyring)
    return tmp_path / "ca"


def test_issue_ca_writes_certificates_and_only_sealed_keys(issued, keyring, tmp_path):
    names = sorted(p.name for p in issued.iterdir())
    assert names == ["issuing-key.sealed", "issuing.pem", "ocsp-key.sealed", "ocsp.pem", "root.crl", "root.pem",
                     "service-key.sealed", "service.pem", "tsa-key.sealed", "tsa.pem"]
    for path in issued.glob("*.sealed"):
        assert b"PRIVATE KEY" not in path.read_bytes()
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    for role in ("issuing", "tsa", "service", "ocsp"):
        target = issued / f"{role}.pem"
        result = subprocess.run(["openssl", "verify", "-CAfile", str(issued / "root.pem"), "-untrusted",
                                 str(issued / "issuing.pem"), str(target)], capture_output=True, text=True)
        assert result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    material = ca_store.load_ca_material(issued, keyring)
    issuing = material.issuing.certificate
    dp = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name[0].value == "https://esign.example/pki/root.crl"
    with pytest.raises(x509.ExtensionNotFound):  # the offline root answers no OCSP
        issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    root_crl = x509.load_der_x509_crl(material.root_crl_der)
    assert root_crl.is_signature_valid(material.root.public_key()) and len(root_crl) == 0
    with pytest.raises(Conflict):
        ca_cli.issue_ca(tmp_path / "root", PASSPHRASE, issued, public_url="https://x", keyring=keyring)


def test_the_ocsp_responder_certificate_is_delegated_and_nocheck(issued, keyring):
    responder = ca_store.load_ca_material(issued, keyring).ocsp_responder.certificate
    eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert responder.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_keys_do_not_open_under_another_kek(issued):
    with pytest.raises(IntegrityError):
        ca_store.load_ca_material(issued, Keyring({"kek-1": os.urandom(32)}, "kek-1"))


def test_delegated_ocsp_answers_good_revoked_unknown_and_unauthorized(issued, keyring):
    material = ca_store.load_ca_material(issued, keyring)
    points = ca_store.publication_points("https://esign.example")
    person = ca.issue_person_certificate(material.issuing, ca.generate_key().public_key(), "张三", "ab" * 32, points)
    issuer = material.issuing.certificate

    def ask(cert, issuer_cert, lookup):
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer_cert, hashes.SHA1()).build()
        from cryptography.hazmat.primitives.serialization import Encoding

        return ocsp.load_der_ocsp_response(
            ca_store.build_delegated_ocsp_response(material, request.public_bytes(Encoding.DER), lookup))

    good = ask(person, issuer, lambda serial: ca.GOOD)
    assert good.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert good.certificates == [material.ocsp_responder.certificate]
    material.ocsp_responder.certificate.public_key().verify(
        good.signature, good.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))
    revoked = ask(person, issuer, lambda serial: ca.CertificateStatus(ca.Revocation(
        serial, person.not_valid_before_utc, ca.RevocationReason.key_compromise)))
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise
    assert ask(person, issuer, lambda serial: None).certificate_status == ocsp.OCSPCertStatus.UNKNOWN
    # the platform's own certificates are known as good
    assert material.platform_status(material.tsa.serial_number) is ca.GOOD
    # a certificate of another issuer: unauthorized
    other = ask(issuer, material.root, lambda serial: ca.GOOD)
    assert other.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED

    malformed = ocsp.load_der_ocsp_response(ca_store.build_delegated_ocsp_response(material, b"junk", lambda s: None))
    assert malformed.response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_development_ca_is_made_once_and_require_existing_refuses(tmp_path, keyring):
    config = {"DATA_DIR": str(tmp_path / "data"), "PUBLIC_URL": "http://dev.test"}
    first = ca_store.open_ca(config, keyring)
    second = ca_store.open_ca(config, keyring)
    assert first.issuing.certificate == second.issuing.certificate
    passphrase = tmp_path / "data" / "ca" / ca_store.DEV_PASSPHRASE_FILE
    assert oct(passphrase.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ca_store.CaNotConfigured):
        ca_store.open_ca({"DATA_DIR": str(tmp_path / "empty"), "CA": {"REQUIRE_EXISTING": True}}, keyring)
    assert not (tmp_path / "empty" / "ca" / "issuing.pem").exists()
    # a directory made by `esign ca issue-ca` is used as it is
    ca_cli.init(tmp_path / "root", PASSPHRASE, key_file=True)  # the root on a token: test_root_custody.py
    made = ca_cli.issue_ca(tmp_path / "root", PASSPHRASE, tmp_path / "prod", public_url="https://p", keyring=keyring)
    loaded = ca_store.open_ca({"DATA_DIR": str(tmp_path / "x"), "CA": {"DIR": str(tmp_path / "prod"),
                                                                        "REQUIRE_EXISTING": True}}, keyring)
    assert loaded.issuing.certificate == made.issuing.certificate


# --- the CA's keys on a PKCS#11 token (issue #16, item 2) -------------------------------------------


@pytest.fixture
def token_keys(softhsm_home, keyring):
    """PlatformKeys on the test process's SoftHSM2 token, under a prefix of this test; its keys
    are destroyed after."""
    import uuid

    from services.common.keystore.settings import open_key_store
    from tests.support.softhsm import pkcs11_keys

    store = open_key_store({"KEYS": pkcs11_keys(softhsm_home, "identity")})
    keys = ca_store.PlatformKeys(keyring, store, f"esign/t{uuid.uuid4().hex[:10]}/identity/")
    yield keys
    for ref in store.list_refs(keys.prefix):
        store.destroy(ref)
    store.close()


def test_issue_ca_on_the_token_writes_refs_and_the_ca_signs_there(tmp_path, keyring, token_keys):
    from services.common.keystore import KeyRef
    from services.common.keystore.private_keys import StoreEcPrivateKey

    ca_cli.init(tmp_path / "root", PASSPHRASE, key_file=True)  # the root on a token: test_root_custody.py
    out = tmp_path / "ca"
    ca_cli.issue_ca(tmp_path / "root", PASSPHRASE, out, public_url="https://esign.example", keys=token_keys)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["issuing-key.ref", "issuing.pem", "ocsp-key.ref", "ocsp.pem", "root.crl", "root.pem",
                     "service-key.ref", "service.pem", "tsa-key.ref", "tsa.pem"]
    for role in ("issuing", "tsa", "service", "ocsp"):
        ref = KeyRef.from_text(ca_store.key_ref_path(out, role).read_text())
        certificate = ca_store.role_certificate(out, role)
        assert ref.label == token_keys.label(role, certificate.serial_number)
        assert token_keys.store.public_key(ref) == certificate.public_key()
        result = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.pem"), "-untrusted",
                                 str(out / "issuing.pem"), str(out / f"{role}.pem")], capture_output=True, text=True)
        assert result.stdout.strip().endswith(": OK"), result.stdout + result.stderr
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in out.iterdir())
    material = ca_store.load_ca_material(out, keyring, token_keys.store)
    assert isinstance(material.issuing.private_key, StoreEcPrivateKey)
    # the issuing CA certifies and signs CRLs on the token; the delegated responder answers OCSP there
    points = ca_store.publication_points("https://esign.example")
    person = ca.issue_person_certificate(material.issuing, ca.generate_key().public_key(), "张三", "ab" * 32, points)
    person.verify_directly_issued_by(material.issuing.certificate)
    crl = ca.build_crl(material.issuing, [ca.Revocation(person.serial_number, person.not_valid_before_utc)], 1)
    assert crl.is_signature_valid(material.issuing.certificate.public_key())
    request = ocsp.OCSPRequestBuilder().add_certificate(person, material.issuing.certificate, hashes.SHA1()).build()
    from cryptography.hazmat.primitives.serialization import Encoding

    answer = ocsp.load_der_ocsp_response(ca_store.build_delegated_ocsp_response(
        material, request.public_bytes(Encoding.DER), lambda serial: ca.GOOD))
    material.ocsp_responder.certificate.public_key().verify(answer.signature, answer.tbs_response_bytes,
                                                            ec.ECDSA(hashes.SHA256()))
    authority = ca_store.load_tsa_authority(out, keyring, material, token_keys.store)
    assert authority.token(os.urandom(32))
    # a service whose KEYS say sealed cannot reach them, and says why
    from services.common.errors import Unavailable

    with pytest.raises(Unavailable) as sealed:
        ca_store.load_ca_material(out, keyring)
    assert (sealed.value.system, sealed.value.reason) == ("key_store", "token_missing")


def test_a_ca_not_written_takes_its_keys_off_the_token(tmp_path, keyring, token_keys, monkeypatch):
    ca_cli.init(tmp_path / "root", PASSPHRASE, key_file=True)  # the root on a token: test_root_custody.py

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ca_store, "write_ca_material", disk_full)
    with pytest.raises(OSError):
        ca_cli.issue_ca(tmp_path / "root", PASSPHRASE, tmp_path / "ca", public_url="https://x", keys=token_keys)
    assert token_keys.store.list_refs(token_keys.prefix) == []


# --- the development root on a token of its own (issue #16) -----------------------------------------


def test_the_development_ca_on_the_embedded_token_keeps_its_root_on_a_token_of_its_own(softhsm_home, tmp_path,
                                                                                      keyring):
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import exceptions as p11

    from services.common.keystore import pkcs11_token
    from services.common.keystore.settings import open_key_store
    from services.identity.root_custody import RootToken
    from tests.support.softhsm import DEV_ROOT_TOKEN, pkcs11_keys

    assert DEV_ROOT_TOKEN == ca_store.DEV_ROOT_TOKEN  # the tests' home makes it before SoftHSM2 starts
    keys = pkcs11_keys(softhsm_home, "identity")
    config = {"DATA_DIR": str(tmp_path / "data"), "PUBLIC_URL": "http://dev.test", "KEYS": keys}
    assert ca_store.development_tokens(config) == (DEV_ROOT_TOKEN,)
    store = open_key_store(config, embedded_also=ca_store.development_tokens(config))
    root_token = ca_store.development_root_token(config)
    root_store = None
    try:
        material = ca_store.open_ca(config, keyring, store)
        # the root signed the CA and its CRL, and was let go: this process holds no session on its token
        assert (os.path.realpath(root_token.settings.module), DEV_ROOT_TOKEN) not in pkcs11_token._TOKENS
        directory = tmp_path / "data" / "ca"
        root_dir = directory / ca_store.DEV_ROOT_DIR
        assert sorted(p.name for p in root_dir.iterdir()) == ["root-token.json", "root.pem"]
        assert not (directory / ca_store.DEV_PASSPHRASE_FILE).exists()
        assert sorted(p.name for p in directory.glob("*-key.*")) == [
            f"{role}-key.ref" for role in sorted(ca_store.ROLES)]
        material.issuing.certificate.verify_directly_issued_by(material.root)
        assert x509.load_der_x509_crl(material.root_crl_der).is_signature_valid(material.root.public_key())
        recorded = RootToken.read(root_dir)
        assert (recorded.place.token_label, recorded.place.softhsm_dir) == (DEV_ROOT_TOKEN, str(softhsm_home))
        assert recorded.key.label == f"{keys['LABEL_PREFIX']}ca/root/{format(material.root.serial_number, 'x')}"
        # the root key is on its token, with its own PIN, and cannot be read
        from services.common.keystore.pkcs11_token import Pkcs11KeyStore

        assert root_token.token.pin() != ensure_pin(softhsm_home, "esign")
        root_store = Pkcs11KeyStore.open(root_token.settings, root_token.token.pin())
        assert root_store.public_key(recorded.key) == material.root.public_key()
        with root_store._token.session() as pooled:
            key = pooled.session.get_key(ObjectClass.PRIVATE_KEY, id=recorded.key.id_bytes)
            with pytest.raises(p11.AttributeSensitive):
                key[Attribute.VALUE]
            assert key[Attribute.EXTRACTABLE] is False
        assert not store.list_refs(f"{keys['LABEL_PREFIX']}ca/root/")  # not on the services' token
        # made once; afterwards the service needs no root token at all
        assert ca_store.open_ca(config, keyring, store).issuing.certificate == material.issuing.certificate
        assert ca_store.development_tokens(config) == ()
    finally:
        if root_store is not None:
            for ref in root_store.list_refs(keys["LABEL_PREFIX"]):
                root_store.destroy(ref)
            root_store.close()
        for ref in store.list_refs(keys["LABEL_PREFIX"]):
            store.destroy(ref)
        store.close()


def ensure_pin(home, label):
    from services.common.keystore.softhsm import token_paths

    return token_paths(home, label).pin()


def test_a_development_ca_not_written_is_made_again_under_the_root_already_made(softhsm_home, tmp_path, keyring,
                                                                                monkeypatch):
    from services.common.keystore.settings import open_key_store
    from tests.support.softhsm import pkcs11_keys

    config = {"DATA_DIR": str(tmp_path / "data"), "PUBLIC_URL": "http://dev.test",
              "KEYS": pkcs11_keys(softhsm_home, "identity")}
    store = open_key_store(config)
    try:
        written = ca_store.write_ca_material

        def disk_full(*_args, **_kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(ca_store, "write_ca_material", disk_full)
        with pytest.raises(OSError):
            ca_store.open_ca(config, keyring, store)
        root_pem = (tmp_path / "data" / "ca" / ca_store.DEV_ROOT_DIR / "root.pem").read_bytes()
        assert store.list_refs(config["KEYS"]["LABEL_PREFIX"]) == []  # the CA's keys were taken back
        monkeypatch.setattr(ca_store, "write_ca_material", written)
        material = ca_store.open_ca(config, keyring, store)
        assert ca.certificate_to_pem(material.root) == root_pem
        material.issuing.certificate.verify_directly_issued_by(material.root)
    finally:
        for ref in store.list_refs(config["KEYS"]["LABEL_PREFIX"]):
            store.destroy(ref)
        store.close()


def test_a_development_root_keeps_its_key_file_with_sealed_keys_or_an_hsm(tmp_path):
    assert ca_store.development_root_token({"DATA_DIR": str(tmp_path)}) is None
    hsm = {"DATA_DIR": str(tmp_path), "KEYS": {"BACKEND": "pkcs11", "PKCS11": {
        "EMBEDDED": False, "MODULE": "/opt/hsm/libhsm.so", "PIN": {"env": "HSM_PIN"}}}}
    assert ca_store.development_root_token(hsm) is None and ca_store.development_tokens(hsm) == ()
    embedded = {"DATA_DIR": str(tmp_path), "CA": {"REQUIRE_EXISTING": True},
                "KEYS": {"BACKEND": "pkcs11", "PKCS11": {"EMBEDDED": True}}}
    assert ca_store.development_tokens(embedded) == ()  # a deployment's CA: no development root
