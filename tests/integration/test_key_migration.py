"""``esign keys migrate --to pkcs11`` on a populated database, PostgreSQL and SQLite
(services/common/key_migration.py): identity's person keys and CA keys and
signing's evidence-log key move onto the SoftHSM2 token as the same keys, each
verified there before its sealed copy goes; a second run changes nothing; a
run stopped half-way, or a token copy that does not sign as the original,
leaves nothing half-done."""
from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import select

from services.common import key_migration
from services.common.errors import IntegrityError, InvalidInput
from services.common.keystore import KeyRef
from services.common.keystore.settings import open_key_store
from services.identity import ca
from services.identity.models import Certificate
from services.identity.service import IdentityService
from services.signing import log_key
from services.signing.dependencies import load_keys, log_verifier
from tests.support.identity_people import IDENTITY_CONFIG, PEOPLE, certify, grant_for, registered
from tests.support.service_worker import ServiceWorkers
from tests.support.softhsm import pkcs11_keys
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def platform(tmp_path, db_url_for, softhsm_home):
    """identity and signing as they ran sealed: five people certified (one re-certified, one
    revoked), a sealed CA, a sealed evidence-log key. Their configs name the test token in
    ``KEYS.PKCS11`` while ``KEYS.BACKEND`` still says sealed, as before a migration."""
    url, schema = db_url_for("identity")
    run = uuid.uuid4().hex[:10]
    keys = {service: dict(pkcs11_keys(softhsm_home, service, run), BACKEND="sealed")
            for service in ("identity", "signing")}
    identity = ServiceWorkers(IdentityService, tmp_path / "identity",
                              config=dict(IDENTITY_CONFIG, DATABASE={"URL": url, "SCHEMA": schema},
                                          KEYS=keys["identity"]))
    people = [registered(identity, person) for person in PEOPLE[:5]]
    serials = [certify(identity, person_id) for person_id in people]
    serials.append(certify(identity, people[0]))  # supersedes the first
    identity.call("revoke_certificate", person_id=people[1], reason="cessation_of_operation")
    config = identity.config
    identity.stop()
    signing = {"DATA_DIR": str(tmp_path / "signing"), "SECRETS": {"GENERATE_MISSING": True}, "KEYS": keys["signing"]}
    before = log_verifier(signing).to_key_string()  # the sealed log key, made as a first start makes it
    yield {"identity": config, "signing": signing, "people": people, "log_key": before,
           "prefix": keys["identity"]["LABEL_PREFIX"]}
    store = open_key_store(key_migration.token_config(config))
    for prefix in (keys["identity"]["LABEL_PREFIX"], keys["signing"]["LABEL_PREFIX"]):
        for ref in store.list_refs(prefix):
            store.destroy(ref)
    store.close()


def rows(config: dict) -> list[Certificate]:
    from services.common.database import Database

    database = Database.from_config(config, "identity")
    try:
        with database.session() as session:
            return session.execute(select(Certificate).order_by(Certificate.serial)).scalars().all()
    finally:
        database.dispose()


def on_token(config: dict, prefix: str) -> list[KeyRef]:
    store = open_key_store(key_migration.token_config(config))
    try:
        return store.list_refs(prefix)
    finally:
        store.close()


def test_every_sealed_key_moves_to_the_token_once_and_still_signs(platform):
    identity, signing = platform["identity"], platform["signing"]
    assert key_migration.migrate_service("identity", identity, dry_run=True)["person_keys"] == {
        "moved": 4, "revoked_sealed_removed": 2}
    assert sum(r.private_key_sealed is not None for r in rows(identity)) == 6  # the check changed nothing

    done = key_migration.migrate_service("identity", identity)
    assert done["person_keys"] == {"moved": 4, "revoked_sealed_removed": 2} and done["ca_keys"] == {"moved": 4}
    certificates = rows(identity)
    assert all(r.private_key_sealed is None and r.key_id is None for r in certificates)
    active = [r for r in certificates if r.status == "active"]
    assert len(active) == 4 and all(r.key_ref for r in active)
    assert all(r.key_ref is None for r in certificates if r.status == "revoked")
    store = open_key_store(key_migration.token_config(identity))
    try:
        for row in active:  # the very key the certificate certifies, now on the token
            ref = KeyRef.from_text(row.key_ref)
            assert store.public_key(ref) == ca.certificate_from_pem(row.certificate_pem.encode()).public_key()
    finally:
        store.close()
    ca_dir = Path(identity["DATA_DIR"]) / "ca"
    assert sorted(p.name for p in ca_dir.glob("*-key.*")) == [
        "issuing-key.ref", "ocsp-key.ref", "service-key.ref", "tsa-key.ref"]

    moved = key_migration.migrate_service("signing", signing)
    assert moved["log_key"] == "moved"
    assert not (Path(signing["DATA_DIR"]) / "secrets" / "evidence-log-key").exists()
    on = dict(signing, KEYS=dict(signing["KEYS"], BACKEND="pkcs11"))
    assert log_verifier(on).to_key_string() == platform["log_key"]  # the same key: witnesses still trust it
    with pytest.raises(InvalidInput, match="log_key_on_token"):
        load_keys(signing)  # sealed again would mean a new key: refused

    again = key_migration.migrate_service("identity", identity)
    assert again["person_keys"] == {} and again["ca_keys"] == {"already_on_token": 4}
    assert key_migration.migrate_service("signing", signing)["log_key"] == "already_on_token"
    assert len(on_token(identity, platform["prefix"])) == 4 + 4  # person keys and CA keys, none twice

    # the service on the token signs for a migrated person, and revoking destroys the key
    workers = ServiceWorkers(IdentityService, Path(identity["DATA_DIR"]).parent,
                             config=dict(identity, KEYS=dict(identity["KEYS"], BACKEND="pkcs11")))
    try:
        person_id = platform["people"][2]
        digest = hashlib.sha256(b"after the migration").digest()
        signed = workers.call("sign_digest", grant=grant_for(workers, person_id, digest), person_id=person_id,
                              digest=digest.hex(), timestamp=True)  # the TSA's migrated key stamps it
        certificate = ca.certificate_from_pem(signed["certificate_pem"].encode())
        certificate.public_key().verify(base64.b64decode(signed["signature"]), digest,
                                        ec.ECDSA(Prehashed(hashes.SHA256())))
        assert base64.b64decode(signed["timestamp_token"])
        workers.call("revoke_certificate", person_id=person_id, reason="key_compromise")
        # destroyed after the commit, beside the worker
        assert wait_for(lambda: len(on_token(identity, platform["prefix"] + "person/")) == 3, timeout=10)
    finally:
        workers.stop()


def test_a_stopped_run_or_a_copy_that_does_not_sign_leaves_nothing_half_done(platform, monkeypatch):
    identity = platform["identity"]
    real_import, real_verify = key_migration.import_verified, key_migration.verify_on_token
    imported = []

    def dies_after_importing(store, label, private_key, public, leftovers=()):
        ref = real_import(store, label, private_key, public, leftovers)
        imported.append(ref)
        raise SystemExit("the process died before recording the key")

    monkeypatch.setattr(key_migration, "import_verified", dies_after_importing)
    with pytest.raises(SystemExit):
        key_migration.migrate_service("identity", identity)
    monkeypatch.undo()
    [stranded] = imported
    row = next(r for r in rows(identity) if r.serial == stranded.label.rsplit("/", 1)[1])
    assert row.private_key_sealed is not None and row.key_ref is None  # not recorded, not removed
    assert [r.key_id for r in on_token(identity, stranded.label)] == [stranded.key_id]

    calls = []

    def second_fails(store, ref, public):
        calls.append(ref)
        if len(calls) == 2:
            raise IntegrityError("migrated key", "the token's copy does not sign as the key it replaces")
        real_verify(store, ref, public)

    monkeypatch.setattr(key_migration, "verify_on_token", second_fails)
    with pytest.raises(IntegrityError):
        key_migration.migrate_service("identity", identity)
    monkeypatch.undo()
    failed = calls[1]
    assert on_token(identity, failed.label) == []  # the copy that did not verify is gone ...
    serial = failed.label.rsplit("/", 1)[1]
    assert next(r for r in rows(identity) if r.serial == serial).private_key_sealed is not None  # ... the key stays

    done = key_migration.migrate_service("identity", identity)
    assert done["person_keys"]["moved"] == 3  # the first moved before the failure
    assert all(r.private_key_sealed is None for r in rows(identity))
    labels = [r.label for r in on_token(identity, platform["prefix"] + "person/")]
    assert len(labels) == len(set(labels)) == 4  # the stranded copy was destroyed, not kept beside the new one
    assert stranded.key_id not in {r.key_id for r in on_token(identity, stranded.label)}
    assert log_key.sealed_key_source(platform["signing"]) is not None  # signing was not asked: untouched


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # esign up's embedded database
def test_esign_up_moves_a_sealed_data_dir_onto_the_embedded_token_once(platform, capsys):
    """``esign up`` (services/common/launcher.py) on a data directory of the sealed days, now that
    config.yaml's default is the embedded token: it finds the sealed CA and log keys from their
    files and moves them with everything ``esign keys migrate`` moves (the person keys too),
    says so, and the next start finds nothing to do. A configured HSM (EMBEDDED false) or
    ``sealed`` is left alone: the service's own refusal speaks there."""
    from services.common.launcher import CannotStart, keys_onto_embedded_token

    with pytest.raises(CannotStart, match="identity: keys.backend"):  # said before anything starts
        keys_onto_embedded_token({"identity": {"KEYS": {"BACKEND": "vault"}}})
    embedded = {service: dict(platform[service], KEYS=dict(platform[service]["KEYS"], BACKEND="pkcs11"))
                for service in ("identity", "signing")}
    hsm = {service: dict(config, KEYS=dict(config["KEYS"], PKCS11=dict(
        config["KEYS"]["PKCS11"], EMBEDDED=False, PIN={"env": "ESIGN_TEST_NO_SUCH_PIN"})))
        for service, config in embedded.items()}
    sealed = {service: platform[service] for service in ("identity", "signing")}
    assert keys_onto_embedded_token(hsm) == {} and keys_onto_embedded_token(sealed) == {}
    assert len(key_migration.sealed_leftovers("identity", embedded["identity"])) == 4
    assert key_migration.sealed_leftovers("signing", embedded["signing"]) == [
        str(Path(platform["signing"]["DATA_DIR"]) / "secrets" / "evidence-log-key")]
    capsys.readouterr()

    moved = keys_onto_embedded_token(embedded)
    assert moved["identity"]["person_keys"] == {"moved": 4, "revoked_sealed_removed": 2}
    assert moved["identity"]["ca_keys"] == {"moved": 4} and moved["signing"]["log_key"] == "moved"
    said = capsys.readouterr().out
    assert 'signing: moved onto the embedded token: {"log_key": "moved"}' in said
    assert '"person_keys": {"moved": 4, "revoked_sealed_removed": 2}' in said
    assert all(r.private_key_sealed is None for r in rows(platform["identity"]))
    assert log_verifier(embedded["signing"]).to_key_string() == platform["log_key"]  # the same key

    assert [key_migration.sealed_leftovers(service, config) for service, config in embedded.items()] == [[], []]
    assert keys_onto_embedded_token(embedded) == {} and capsys.readouterr().out == ""  # the next start
