"""The key store (services/common/keystore): both backends behave alike, and the
token backend keeps keys on a real SoftHSM2 token where they cannot be read.

SoftHSM2 reads SOFTHSM2_CONF once, when the module is first initialised in a
process, so every test uses the process's token home (tests/support/softhsm.py:
a token for the stores, one whose PIN the tests change); each test names its
keys under a prefix of its own and destroys them after.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import uuid

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from eventlet.patcher import original
from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from services.common.errors import IntegrityError, InvalidInput, Unavailable
from services.common.keystore import EC_P256, ED25519, PKCS11, SEALED, KeyRef, KeyStore, new_key_id
from services.common.keystore import pkcs11_token as token_module
from services.common.keystore.pkcs11_token import Pkcs11KeyStore, TokenSettings, reason_of
from services.common.keystore.private_keys import private_key
from services.common.keystore.reconcile import reconcile
from services.common.keystore.sealed import SealedKey, SealedKeyStore
from services.common.keystore.settings import KeyStoreSettings, open_key_store
from services.common.keystore.softhsm import SoftHsmUnavailable, ensure_token
from services.common.sealing import Keyring
from services.identity import ca, grants
from services.signing.checkpoint import NoteSigner, NoteVerifier

os_threading = original("threading")
#: python-pkcs11 ends a search on a session that died under it twice, the second time in __del__, where
#: its SessionHandleInvalid can only be printed: expected in the tests that kill sessions
DEAD_SESSION_SEARCHES = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
LABEL = "esign-test"
OTHER = "esign-other"  # the token whose PIN a test changes


@pytest.fixture(scope="module")
def softhsm(softhsm_home):
    return {"data": softhsm_home, LABEL: ensure_token(softhsm_home, LABEL), OTHER: ensure_token(softhsm_home, OTHER)}


def settings_for(softhsm, label=LABEL, **changes) -> TokenSettings:
    return TokenSettings(token_label=label, storage_dir=softhsm[label].token_dir, **changes)


@pytest.fixture
def prefix() -> str:
    return f"esign/test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def pkcs11_store(softhsm, prefix):
    store = Pkcs11KeyStore.open(settings_for(softhsm), softhsm[LABEL].pin())
    yield store
    cleaner = Pkcs11KeyStore.open(settings_for(softhsm), softhsm[LABEL].pin())
    for ref in cleaner.list_refs(prefix):
        cleaner.destroy(ref)
    cleaner.close()
    store.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"kek-test": os.urandom(32)}, "kek-test")


@pytest.fixture(params=[SEALED, PKCS11])
def backend(request, softhsm, keyring, prefix):
    """(store, reopen): a store of each backend, and a way to make a new instance over the same keys."""
    if request.param == SEALED:
        storage: dict[str, SealedKey] = {}
        yield SealedKeyStore(keyring, storage), lambda: SealedKeyStore(keyring, storage)
        return
    store = request.getfixturevalue("pkcs11_store")
    yield store, lambda: Pkcs11KeyStore.open(settings_for(softhsm), softhsm[LABEL].pin())


def digest_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- both backends -----------------------------------------------------------------------


def test_both_stores_are_key_stores(backend):
    store, _ = backend
    assert isinstance(store, KeyStore)


def test_an_ecdsa_signature_of_a_digest_verifies_over_the_original_data(backend, prefix):
    store, _ = backend
    ref = store.generate(prefix + "person/1", EC_P256)
    data = "借条: 人民币 壹万元整".encode()
    signature = store.sign_digest(ref, digest_of(data))
    public = store.public_key(ref)
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))  # DER, over the data: what CMS embeds
    public.verify(signature, digest_of(data), ec.ECDSA(Prehashed(hashes.SHA256())))
    r, s = decode_dss_signature(signature)
    assert r > 0 and s > 0
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidSignature
        public.verify(signature, data + b".", ec.ECDSA(hashes.SHA256()))


def test_an_ed25519_signature_covers_the_message_itself_as_a_note_signer_needs(backend, prefix):
    store, _ = backend
    ref = store.generate(prefix + "evidence-log", ED25519)
    text = b"esign.example/evidence-log\n1042\nq1Rt4yEs5ZlNxTPoYJFa9B0rxqvR0fXx8mDm0y1mV4c=\n"
    signature = store.sign(ref, text)
    public = store.public_key(ref)
    assert isinstance(public, ed25519.Ed25519PublicKey) and len(signature) == 64
    public.verify(signature, text)
    verifier = NoteVerifier.from_public_key("esign.example/evidence-log", public)
    assert verifier.verifies(text, signature) and not verifier.verifies(text + b"x", signature)


def test_a_ref_is_a_plain_value_without_key_material(backend, prefix):
    store, _ = backend
    ref = store.generate(prefix + "ca/issuing", EC_P256)
    assert KeyRef.from_text(ref.to_text()) == ref
    assert set(ref.to_dict()) == {"backend", "algorithm", "label", "key_id"}
    assert ref.backend == store.backend and len(ref.key_id) == 32
    assert abs(ref.created_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)


def test_keys_survive_a_new_store_instance(backend, prefix):
    store, reopen = backend
    ec_ref = store.generate(prefix + "tsa", EC_P256)
    ed_ref = store.generate(prefix + "log", ED25519)
    ec_public, ed_public = store.public_key(ec_ref), store.public_key(ed_ref)
    again = reopen()
    try:
        digest = digest_of(b"a CRL")
        ec_public.verify(again.sign_digest(ec_ref, digest), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        ed_public.verify(again.sign(ed_ref, b"a checkpoint"), b"a checkpoint")
        assert again.public_key(ec_ref) == ec_public
        assert {r.key_id for r in again.list_refs(prefix)} == {ec_ref.key_id, ed_ref.key_id}
    finally:
        again.close()


def test_destroy_removes_the_key_and_a_second_destroy_is_harmless(backend, prefix):
    store, _ = backend
    ref = store.generate(prefix + "person/2", EC_P256)
    kept = store.generate(prefix + "person/3", EC_P256)
    store.sign_digest(ref, digest_of(b"before"))
    assert store.destroy(ref) is True
    with pytest.raises(Unavailable) as raised:
        store.sign_digest(ref, digest_of(b"after"))
    assert (raised.value.system, raised.value.reason) == ("key_store", "key_missing")
    with pytest.raises(Unavailable, match="key_missing"):
        store.public_key(ref)
    with pytest.raises(Unavailable, match="key_missing"):
        store.public_key(KeyRef(ref.backend, ref.algorithm, ref.label, new_key_id()))
    assert store.destroy(ref) is False
    assert [r.key_id for r in store.list_refs(prefix)] == [kept.key_id]
    store.sign_digest(kept, digest_of(b"the other key still signs"))


def test_list_refs_stays_under_the_prefix(backend, prefix):
    store, _ = backend
    mine = store.generate(prefix + "a", EC_P256)
    theirs = store.generate(prefix[:-1] + "-other/b", EC_P256)
    try:
        assert [r.key_id for r in store.list_refs(prefix)] == [mine.key_id]
    finally:
        store.destroy(theirs)


def test_wrong_uses_are_refused_by_name(backend, prefix):
    store, _ = backend
    ec_ref = store.generate(prefix + "ec", EC_P256)
    ed_ref = store.generate(prefix + "ed", ED25519)
    with pytest.raises(InvalidInput) as raised:
        store.sign_digest(ed_ref, digest_of(b"x"))
    assert (raised.value.field, raised.value.rule) == ("key_ref.algorithm", "mismatch")
    with pytest.raises(InvalidInput, match="key_ref.algorithm"):
        store.sign(ec_ref, b"x")
    with pytest.raises(InvalidInput) as raised:
        store.sign_digest(ec_ref, b"\x00" * 31)
    assert (raised.value.field, raised.value.rule) == ("digest", "length")
    store.sign_digest(ec_ref, hashlib.sha384(b"x").digest(), "sha384")
    other_backend = PKCS11 if store.backend == SEALED else SEALED
    with pytest.raises(InvalidInput, match="key_ref.backend"):
        store.sign_digest(KeyRef(other_backend, EC_P256, ec_ref.label, ec_ref.key_id), digest_of(b"x"))
    with pytest.raises(InvalidInput, match="label"):
        store.generate("esign/陈某/110101199003070011", EC_P256)
    with pytest.raises(InvalidInput, match="algorithm"):
        store.generate(prefix + "rsa", "rsa-2048")


def test_signing_from_eight_os_threads_at_once_agrees(backend, prefix):
    store, _ = backend
    refs = [store.generate(prefix + f"person/{n}", EC_P256) for n in range(4)]
    publics = [store.public_key(ref) for ref in refs]
    failures: list[BaseException] = []
    signed = []
    start = os_threading.Barrier(8)

    def signer(n: int) -> None:
        try:
            start.wait()
            for i in range(25):
                ref_index = (n + i) % len(refs)
                digest = digest_of(f"{n}/{i}".encode())
                signed.append((ref_index, digest, store.sign_digest(refs[ref_index], digest)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [os_threading.Thread(target=signer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert len(signed) == 8 * 25
    for ref_index, digest, signature in signed:
        publics[ref_index].verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_the_reconciler_destroys_only_old_unrecorded_keys(backend, prefix):
    store, _ = backend
    recorded = store.generate(prefix + "person/recorded", EC_P256)
    orphan = store.generate(prefix + "person/orphan", EC_P256)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)

    young = reconcile(store, [recorded], prefix, grace=dt.timedelta(hours=1))
    assert young.destroyed == () and [r.key_id for r in young.too_recent] == [orphan.key_id]

    with pytest.raises(InvalidInput, match="too_many_orphans"):
        reconcile(store, [], prefix, now=later, max_destroy=1)  # a list of records that lost one: refused whole
    assert len(store.list_refs(prefix)) == 2

    dry = reconcile(store, [recorded.key_id], prefix, now=later, dry_run=True)
    assert [r.key_id for r in dry.destroyed] == [orphan.key_id] and len(store.list_refs(prefix)) == 2

    done = reconcile(store, [recorded], prefix, now=later)
    assert [r.key_id for r in done.destroyed] == [orphan.key_id] and done.recorded == 1
    assert [r.key_id for r in store.list_refs(prefix)] == [recorded.key_id]
    store.sign_digest(recorded, digest_of(b"the recorded key is untouched"))


def test_the_ca_code_signs_certificates_crls_ocsp_and_notes_with_a_key_in_the_store(backend, prefix, keyring):
    """What item 2 of issue #16 builds on: cryptography's builders and NoteSigner call the store."""
    store, _ = backend
    issuing = private_key(store, store.generate(prefix + "ca/issuing", EC_P256))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "esign Test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(issuing.public_key())
               .serial_number(ca.random_serial()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(issuing.public_key()), critical=False)
               .sign(issuing, hashes.SHA256()))
    authority = ca.CertificateAuthority(ca_cert, issuing)
    person = private_key(store, store.generate(prefix + "person/cert", EC_P256))
    points = ca.PublicationPoints("http://esign.test/crl", "http://esign.test/ocsp", "http://esign.test/ca")
    person_cert = ca.issue_person_certificate(authority, person.public_key(), "张三", "ab" * 16, points)
    person_cert.verify_directly_issued_by(ca_cert)

    crl = ca.build_crl(authority, [ca.Revocation(person_cert.serial_number, now)], crl_number=1)
    assert crl.is_signature_valid(ca_cert.public_key())

    request = ocsp.OCSPRequestBuilder().add_certificate(person_cert, ca_cert, hashes.SHA256()).build()
    answer = ocsp.load_der_ocsp_response(ca.build_ocsp_response(
        authority, request.public_bytes(serialization.Encoding.DER), lambda serial: ca.GOOD))
    ca_cert.public_key().verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))

    digest = digest_of(b"signed attributes")
    person.public_key().verify(grants.sign_digest(person, digest), digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    log_key = private_key(store, store.generate(prefix + "evidence-log", ED25519))
    signer = NoteSigner("esign.example/evidence-log", log_key)
    assert signer.verifier.verifies(b"checkpoint\n", signer.sign(b"checkpoint\n"))

    for key in (issuing, log_key):  # the key never leaves as bytes, not even sealed
        with pytest.raises(TypeError, match="never serialised"):
            ca.seal_private_key(keyring, key, b"aad") if key is issuing else key.private_bytes_raw()
    assert issuing.ref.key_id in repr(issuing)


def test_a_sealed_key_copied_to_another_record_does_not_open(keyring, prefix):
    storage: dict[str, SealedKey] = {}
    store = SealedKeyStore(keyring, storage)
    victim, thief = store.generate(prefix + "person/a", EC_P256), store.generate(prefix + "person/b", EC_P256)
    storage[thief.key_id] = SealedKey(thief.label, thief.algorithm, storage[victim.key_id].sealed)
    with pytest.raises(IntegrityError):
        store.sign_digest(thief, digest_of(b"x"))
    assert "sealed=" not in repr(storage[victim.key_id])


# --- the token: custody --------------------------------------------------------------------


def test_a_private_key_on_the_token_cannot_be_exported(pkcs11_store, prefix):
    ref = pkcs11_store.generate(prefix + "person/export", EC_P256)
    with pkcs11_store._token.session() as pooled:
        key = pooled.session.get_key(ObjectClass.PRIVATE_KEY, id=ref.id_bytes)
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]  # C_GetAttributeValue(CKA_VALUE)
        held = key.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.ALWAYS_SENSITIVE,
                                   Attribute.NEVER_EXTRACTABLE, Attribute.TOKEN, Attribute.PRIVATE, Attribute.LOCAL,
                                   Attribute.DECRYPT, Attribute.DERIVE, Attribute.UNWRAP])
        assert held[Attribute.SENSITIVE] is True and held[Attribute.EXTRACTABLE] is False
        assert held[Attribute.ALWAYS_SENSITIVE] is True and held[Attribute.NEVER_EXTRACTABLE] is True
        assert held[Attribute.TOKEN] is True and held[Attribute.PRIVATE] is True and held[Attribute.LOCAL] is True
        assert not (held[Attribute.DECRYPT] or held[Attribute.DERIVE] or held[Attribute.UNWRAP])
        with pytest.raises(p11.PKCS11Error):  # PKCS#11 §4.9: CKA_EXTRACTABLE may only go to false
            key[Attribute.EXTRACTABLE] = True
        with pytest.raises(p11.PKCS11Error):  # and CKA_SENSITIVE only to true
            key[Attribute.SENSITIVE] = False
        with pytest.raises(p11.PKCS11Error):  # nor can a copy be made extractable
            key.copy({Attribute.EXTRACTABLE: True, Attribute.TOKEN: False})
    pkcs11_store.sign_digest(ref, digest_of(b"still usable"))


def test_ed25519_keys_are_held_the_same_way(pkcs11_store, prefix):
    ref = pkcs11_store.generate(prefix + "log", ED25519)
    with pkcs11_store._token.session() as pooled:
        key = pooled.session.get_key(ObjectClass.PRIVATE_KEY, id=ref.id_bytes)
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]
        assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True


# --- the token: faults ---------------------------------------------------------------------


def test_a_wrong_pin_is_unavailable_and_never_shown(softhsm, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-pin-" + uuid.uuid4().hex
    with pytest.raises(Unavailable) as raised:
        Pkcs11KeyStore.open(settings_for(softhsm, OTHER), wrong)
    assert (raised.value.system, raised.value.reason) == ("key_store", "wrong_pin")
    shown = " ".join([str(raised.value), repr(raised.value), repr(raised.value.args), caplog.text,
                      str(raised.value.__cause__), str(raised.value.__context__)])
    assert wrong not in shown and softhsm[OTHER].pin() not in shown
    store = Pkcs11KeyStore.open(settings_for(softhsm, OTHER), softhsm[OTHER].pin())  # the token itself is fine
    assert softhsm[OTHER].pin() not in repr(store) and softhsm[OTHER].pin() not in repr(store._token)
    store.close()


def test_a_pin_the_token_refused_is_not_offered_again(softhsm, monkeypatch):
    pin, changed = softhsm[OTHER].pin(), "changed-" + uuid.uuid4().hex[:16]
    store = Pkcs11KeyStore.open(settings_for(softhsm, OTHER), pin)
    try:
        with store._token.session() as pooled:
            pooled.session.set_pin(pin, changed)  # the PIN changes under the running store
        store._token.reset(reinitialize=False)  # ... which then loses its login
        logins = []
        real_log_in = token_module._Token._log_in

        def counting(self):
            logins.append(1)
            return real_log_in(self)

        monkeypatch.setattr(token_module._Token, "_log_in", counting)
        for _ in range(3):
            with pytest.raises(Unavailable, match="wrong_pin"):
                store.list_refs("esign/")
        assert store._token._refused == "wrong_pin"
    finally:
        store.close()
        monkeypatch.undo()
        restore = Pkcs11KeyStore.open(settings_for(softhsm, OTHER), changed)
        with restore._token.session() as pooled:
            pooled.session.set_pin(changed, pin)
        restore.close()
    assert len(logins) == 1  # three calls, one C_Login: the refused PIN was not offered again
    Pkcs11KeyStore.open(settings_for(softhsm, OTHER), pin).close()


def test_a_missing_token_or_module_is_token_missing(softhsm, tmp_path):
    with pytest.raises(Unavailable) as raised:
        Pkcs11KeyStore.open(TokenSettings(token_label="no-such-token"), "whatever-pin")
    assert raised.value.reason == "token_missing"
    not_a_library = tmp_path / "libnot-pkcs11.so"
    not_a_library.write_bytes(b"\x7fELF but not really")
    for module in (str(tmp_path / "absent.so"), str(not_a_library)):
        with pytest.raises(Unavailable) as raised:
            Pkcs11KeyStore.open(TokenSettings(module=module, token_label=LABEL), softhsm[LABEL].pin())
        assert raised.value.reason == "token_missing"


def test_a_full_token_refuses_before_generating_and_records_nothing(softhsm, pkcs11_store, prefix, monkeypatch):
    floor = Pkcs11KeyStore.open(settings_for(softhsm, min_free_bytes=1 << 62), softhsm[LABEL].pin())
    try:
        with pytest.raises(Unavailable, match="token_full"):
            floor.generate(prefix + "person/none", EC_P256)
    finally:
        floor.close()
    assert pkcs11_store.list_refs(prefix) == []
    # SoftHSM2 never answers CKR_DEVICE_MEMORY (see pkcs11_token's docstring); a token that does:
    assert reason_of(p11.DeviceMemory()) == "token_full"

    def full(pooled, ref):
        raise p11.DeviceMemory()

    monkeypatch.setattr(Pkcs11KeyStore, "_generate", staticmethod(full))
    with pytest.raises(Unavailable, match="token_full"):
        pkcs11_store.generate(prefix + "person/none", EC_P256)
    assert pkcs11_store.list_refs(prefix) == []


@DEAD_SESSION_SEARCHES
def test_a_session_closed_under_the_store_is_replaced_once(pkcs11_store, prefix, caplog):
    ref = pkcs11_store.generate(prefix + "person/s", EC_P256)
    with pkcs11_store._token.session() as pooled:
        pooled.session.close()  # the pool gets back a dead session
    signature = pkcs11_store.sign_digest(ref, digest_of(b"x"))
    pkcs11_store.public_key(ref).verify(signature, digest_of(b"x"), ec.ECDSA(Prehashed(hashes.SHA256())))
    assert "SessionHandleInvalid" in caplog.text and "retrying once" in caplog.text


@DEAD_SESSION_SEARCHES
def test_a_module_finalized_under_the_store_is_reinitialized_once(pkcs11_store, prefix, softhsm):
    ref = pkcs11_store.generate(prefix + "log", ED25519)
    pkcs11.lib(pkcs11_store._token.settings.module).finalize()  # every session and the login are gone
    pkcs11_store.public_key(ref).verify(pkcs11_store.sign(ref, b"after"), b"after")
    pkcs11.lib(pkcs11_store._token.settings.module).finalize()  # and again, before a generation
    made = pkcs11_store.generate(prefix + "person/after", EC_P256)  # once more, on a fresh session
    pkcs11_store.public_key(made).verify(pkcs11_store.sign_digest(made, digest_of(b"y")), digest_of(b"y"),
                                         ec.ECDSA(Prehashed(hashes.SHA256())))


@DEAD_SESSION_SEARCHES
def test_a_session_lost_again_on_the_retry_is_session_lost(pkcs11_store, prefix, monkeypatch, caplog):
    ref = pkcs11_store.generate(prefix + "person/l", EC_P256)
    real_take = token_module._Token._take
    taken = []

    def dead_session(self):
        pooled = real_take(self)
        pooled.session.close()
        taken.append(pooled)
        return pooled

    monkeypatch.setattr(token_module._Token, "_take", dead_session)
    with pytest.raises(Unavailable) as raised:
        pkcs11_store.sign_digest(ref, digest_of(b"x"))
    assert raised.value.reason == "session_lost" and len(taken) == 2  # tried, then once more
    with pytest.raises(Unavailable, match="session_lost"):
        pkcs11_store.generate(prefix + "person/never", EC_P256)
    # generation is tried once more under a new id (a key the lost session made is named by nothing:
    # the reconciler's), not a third time
    assert len(taken) == 4
    monkeypatch.undo()
    assert [r.key_id for r in pkcs11_store.list_refs(prefix)] == [ref.key_id]
    pkcs11_store.sign_digest(ref, digest_of(b"recovered"))


def test_no_two_threads_share_a_session(softhsm, prefix, monkeypatch):
    store = Pkcs11KeyStore.open(settings_for(softhsm), softhsm[LABEL].pin())
    ref = store.generate(prefix + "person/p", EC_P256)
    in_use: set[int] = set()
    clashes = []
    guard = os_threading.Lock()
    real_take, real_give = token_module._Token._take, token_module._Token._give_back

    def take(self):
        pooled = real_take(self)
        with guard:
            if pooled.session.handle in in_use:
                clashes.append(pooled.session.handle)
            in_use.add(pooled.session.handle)
        return pooled

    def give_back(self, pooled, keep):
        with guard:
            in_use.discard(pooled.session.handle)
        return real_give(self, pooled, keep)

    monkeypatch.setattr(token_module._Token, "_take", take)
    monkeypatch.setattr(token_module._Token, "_give_back", give_back)
    threads = [os_threading.Thread(target=lambda: [store.sign_digest(ref, digest_of(b"p")) for _ in range(20)])
               for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert clashes == []
        assert len(store._token._idle) <= store._token.settings.pool_size
    finally:
        store.destroy(ref)
        store.close()


def test_greenthreads_sign_through_tpool_and_on_the_hub_at_once(pkcs11_store, prefix):
    """As a nameko service will: workers hand calls to eventlet's tpool (OS threads) while
    others call on the hub's own thread; the store's locks are the OS's, so neither stalls."""
    import eventlet
    from eventlet import tpool

    ref = pkcs11_store.generate(prefix + "person/g", EC_P256)
    public = pkcs11_store.public_key(ref)

    def worker(n: int, offloaded: bool) -> int:
        for i in range(10):
            digest = digest_of(f"{n}/{i}".encode())
            if offloaded:
                signature = tpool.execute(pkcs11_store.sign_digest, ref, digest)
            else:
                signature = pkcs11_store.sign_digest(ref, digest)
            public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            eventlet.sleep(0)
        return n

    pool = eventlet.GreenPool()
    done = list(pool.imap(lambda n: worker(n, offloaded=n % 2 == 0), range(8)))
    assert done == list(range(8))


def test_a_key_generated_by_a_process_that_died_before_recording_it_is_reclaimed(pkcs11_store, prefix, softhsm,
                                                                                  tmp_path):
    """The case the reconciler exists for: the key is on the token, the record was never committed."""
    recorded = pkcs11_store.generate(prefix + "person/recorded", EC_P256)
    records = tmp_path / "records.txt"
    records.write_text(recorded.to_text() + "\n")
    script = textwrap.dedent(f"""
        import os, signal, sys
        from services.common.keystore import EC_P256
        from services.common.keystore.pkcs11_token import Pkcs11KeyStore, TokenSettings
        store = Pkcs11KeyStore.open(TokenSettings(token_label={LABEL!r}), {softhsm[LABEL].pin()!r})
        ref = store.generate({prefix + "person/dying"!r}, EC_P256)
        print(ref.to_text(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # dies before appending the ref to the records
        open({str(records)!r}, "a").write(ref.to_text() + "\\n")
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ), cwd=os.getcwd())
    assert child.returncode == -9, child.stderr
    dying = KeyRef.from_text(child.stdout.strip())
    known = [KeyRef.from_text(line) for line in records.read_text().splitlines()]
    assert known == [recorded]
    assert {r.key_id for r in pkcs11_store.list_refs(prefix)} == {recorded.key_id, dying.key_id}
    done = reconcile(pkcs11_store, known, prefix, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
    assert [r.key_id for r in done.destroyed] == [dying.key_id]
    assert [r.key_id for r in pkcs11_store.list_refs(prefix)] == [recorded.key_id]


# --- settings and the embedded token -------------------------------------------------------


def test_settings_are_read_and_bad_values_stop_the_start():
    assert KeyStoreSettings.from_config({}).backend == SEALED
    read = KeyStoreSettings.from_config({"KEYS": {"BACKEND": "pkcs11", "RECONCILE_GRACE_SECONDS": "600",
                                                  "PKCS11": {"TOKEN_LABEL": "hsm-1", "POOL_SIZE": 8,
                                                             "PIN": {"env": "ESIGN_TOKEN_PIN"}}}})
    assert (read.backend, read.reconcile_grace, read.pkcs11.token.token_label, read.pkcs11.token.pool_size) == (
        PKCS11, dt.timedelta(minutes=10), "hsm-1", 8)
    assert "ESIGN_TOKEN_PIN" not in repr(read)
    bad = [
        ({"BACKEND": "vault"}, "keys.backend"),
        ({"BACKEND": "pkcs11"}, "keys.pkcs11.pin"),
        ({"PKCS11": {"PARALLEL": "true"}}, "keys.pkcs11.parallel"),
        ({"PKCS11": {"PARALLEL": "maybe", "MODULE": "/opt/hsm/libcloudhsm.so"}}, "keys.pkcs11.parallel"),
        ({"PKCS11": {"EMBEDDED": True, "MODULE": "/opt/hsm/libcloudhsm.so"}}, "keys.pkcs11.embedded"),
        ({"PKCS11": {"POOL_SIZE": 500}}, "keys.pkcs11.pool_size"),
        ({"PKCS11": {"POOL_SIZE": "many"}}, "keys.pkcs11.pool_size"),
        ({"PKCS11": {"TOKEN_LABEL": "x" * 33}}, "keys.pkcs11.token_label"),
        ({"PKCS11": {"PIN": "123456"}}, "keys.pkcs11.pin"),
        ({"LABEL_PREFIX": "esign prefix"}, "keys.label_prefix"),
    ]
    for keys, field in bad:
        with pytest.raises(InvalidInput) as raised:
            KeyStoreSettings.from_config({"KEYS": keys})
        assert raised.value.field == field, keys
    parallel = KeyStoreSettings.from_config({"KEYS": {"PKCS11": {"PARALLEL": True, "MODULE": "/opt/libcs.so"}}})
    assert parallel.pkcs11.token.parallel is True


def test_the_embedded_token_is_made_once_and_opened_from_config(softhsm, keyring):
    token = softhsm[LABEL]
    pin_before, conf_before = token.pin(), token.conf.read_text()
    objects_before = sorted(os.listdir(token.token_dir))
    assert ensure_token(softhsm["data"], LABEL) == token  # idempotent: nothing made, nothing changed
    assert (token.pin(), token.conf.read_text(), sorted(os.listdir(token.token_dir))) == (
        pin_before, conf_before, objects_before)
    assert oct(token.pin_file.stat().st_mode & 0o777) == "0o600"
    assert oct(token.token_dir.stat().st_mode & 0o777) == "0o700"
    config = {"DATA_DIR": str(softhsm["data"]),
              "KEYS": {"BACKEND": "pkcs11", "PKCS11": {"EMBEDDED": True, "TOKEN_LABEL": LABEL}}}
    store = open_key_store(config, keyring)
    try:
        assert isinstance(store, Pkcs11KeyStore) and store._token.settings.storage_dir == token.token_dir
        assert store._token.settings.min_free_bytes == 16 * 1024 * 1024
    finally:
        store.close()
    assert isinstance(open_key_store({"KEYS": {"BACKEND": "sealed"}}, keyring), SealedKeyStore)


def test_a_second_pin_for_a_token_already_open_is_refused(pkcs11_store, softhsm):
    with pytest.raises(Unavailable, match="wrong_pin"):
        Pkcs11KeyStore.open(settings_for(softhsm), "another-pin-entirely")
    again = Pkcs11KeyStore.open(settings_for(softhsm), softhsm[LABEL].pin())
    assert again._token is pkcs11_store._token  # one login and one pool per token and process
    again.close()
    pkcs11_store.list_refs("esign/")  # closing one store leaves the other logged in


def test_the_embedded_token_may_live_apart_from_the_data_dir_and_a_process_sees_one_home(softhsm, tmp_path):
    config = {"DATA_DIR": str(tmp_path / "data"),
              "KEYS": {"BACKEND": "pkcs11", "PKCS11": {"EMBEDDED": True, "EMBEDDED_DIR": str(softhsm["data"]),
                                                        "TOKEN_LABEL": LABEL}}}
    store = open_key_store(config)
    try:
        assert store._token.settings.storage_dir == softhsm[LABEL].token_dir
    finally:
        store.close()
    assert not (tmp_path / "data" / "softhsm").exists() and not (tmp_path / "data" / "secrets").exists()
    # SoftHSM2 of this process read the home's configuration: another home is refused by name, not missed
    elsewhere = ensure_token(tmp_path / "elsewhere", LABEL)
    with pytest.raises(SoftHsmUnavailable, match="one embedded token directory per process"):
        elsewhere.activate()
    with pytest.raises(InvalidInput) as relative:
        KeyStoreSettings.from_config({"KEYS": {"PKCS11": {"EMBEDDED_DIR": "var/softhsm"}}})
    assert relative.value.field == "keys.pkcs11.embedded_dir"


def test_the_services_keep_keys_on_the_embedded_token_unless_the_environment_says_sealed(monkeypatch):
    """config.yaml's default is the embedded SoftHSM2 token; a config without KEYS (a program's
    own, a test's) is sealed: nothing outside the process, no process-wide SoftHSM2 home chosen."""
    from services.common.config import load_config

    for service in ("identity", "signing"):
        monkeypatch.delenv("ESIGN_KEYS_BACKEND", raising=False)
        settings = KeyStoreSettings.from_config(load_config(service))
        assert (settings.backend, settings.label_prefix) == (PKCS11, f"esign/{service}/")
        assert settings.pkcs11.embedded and settings.pkcs11.token.token_label == "esign"
        monkeypatch.setenv("ESIGN_KEYS_BACKEND", "sealed")
        assert KeyStoreSettings.from_config(load_config(service)).backend == SEALED
    assert KeyStoreSettings.from_config({}).backend == SEALED


@pytest.mark.parametrize("algorithm", [EC_P256, ED25519])
def test_an_imported_key_is_held_as_a_generated_one_and_signs_as_the_original(pkcs11_store, prefix, algorithm):
    """``esign keys migrate --to pkcs11`` moves sealed keys so: the same key, then unreadable."""
    original = ec.generate_private_key(ec.SECP256R1()) if algorithm == EC_P256 else ed25519.Ed25519PrivateKey.generate()
    ref = pkcs11_store.import_private_key(prefix + "migrated", original)
    assert (ref.algorithm, ref.label) == (algorithm, prefix + "migrated")
    assert pkcs11_store.public_key(ref) == original.public_key()
    reopened = Pkcs11KeyStore.open(settings_for_store(pkcs11_store), pkcs11_store._token._pin)
    try:
        assert reopened.public_key(ref) == original.public_key()  # read from the token, not remembered
    finally:
        reopened.close()
    if algorithm == EC_P256:
        digest = digest_of(b"migrated")
        signature = pkcs11_store.sign_digest(ref, digest)
        original.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    else:
        original.public_key().verify(pkcs11_store.sign(ref, b"note"), b"note")
    with pkcs11_store._token.session() as pooled:
        key = pooled.session.get_key(ObjectClass.PRIVATE_KEY, id=ref.id_bytes)
        with pytest.raises(p11.AttributeSensitive):
            key[Attribute.VALUE]
        assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is False  # the token says it was outside once
    assert [r.key_id for r in pkcs11_store.list_refs(prefix)] == [ref.key_id]
    with pytest.raises(InvalidInput):
        pkcs11_store.import_private_key(prefix + "rsa", object())


def settings_for_store(store) -> TokenSettings:
    return store._settings


def test_providers_opening_the_store_at_once_in_greenthreads_do_not_block_the_hub():
    """nameko sets a container's providers up in greenthreads at once; opening the embedded token
    waits on softhsm2-util, which yields to the hub. (With an OS lock in the provider, the second
    greenthread blocked the hub and the service never started: run in a child with a time limit.)"""
    script = textwrap.dedent("""
        import eventlet
        eventlet.monkey_patch()
        from types import SimpleNamespace
        from services.common.keystore import provider

        def opening(config, **_options):
            eventlet.sleep(0.2)  # the subprocess's wait: other greenthreads run
            return SimpleNamespace(close=lambda: None)

        provider.open_key_store = opening
        keys = provider.KeyStoreProvider()
        keys.container = SimpleNamespace(config={"KEYS": {"BACKEND": "pkcs11", "PKCS11": {"EMBEDDED": True}}})
        first, second = eventlet.spawn(keys.open), eventlet.spawn(keys.open)
        assert first.wait() is second.wait() is not None
        print("both opened one store")
    """)
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                           cwd=os.getcwd())  # a blocked hub never ends: the time limit is the failure
    assert child.returncode == 0 and "both opened one store" in child.stdout, child.stderr[-2000:]
