"""Person keys on a PKCS#11 token (issue #16, item 3), in identity's own workers
(tests/support/service_worker.py) with ``KEYS.BACKEND: pkcs11`` on the test
process's SoftHSM2 token (tests/support/softhsm.py).

A certificate's key is generated on the token and the row names it (no key
material in the row); it signs only under a claimed willingness grant, and
that use is audited with the grant's id and the key's id; a token fault
leaves the grant unspent; revoking the certificate destroys the key; a key
whose certificate was never recorded does not stay on the token."""
from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import replace
from datetime import datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import select

from services.common.errors import Forbidden, InvalidInput, Unavailable
from services.common.keystore import EC_P256, SESSION_LOST, KeyRef, fault
from services.common.keystore.provider import key_store_of
from services.identity import ca, grants
from services.identity.models import AuditRecord, Certificate, SigningGrantRow
from services.identity.person_keys import PersonKeys
from services.identity.service import IdentityService
from tests.support.identity_people import IDENTITY_CONFIG, PEOPLE, grant_for, proof, registered
from tests.support.service_worker import ServiceWorkers
from tests.support.softhsm import pkcs11_keys
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def identity(tmp_path_factory, softhsm_home):
    keys = pkcs11_keys(softhsm_home, "identity")
    keys["RECONCILE_GRACE_SECONDS"] = 1  # the reconciler's grace, short enough to wait out in a test
    workers = ServiceWorkers(IdentityService, tmp_path_factory.mktemp("identity"),
                             config=dict(IDENTITY_CONFIG, KEYS=keys))
    yield workers
    workers.stop()


def store_of(identity: ServiceWorkers):
    return key_store_of(identity.container).open()


def prefix_of(identity: ServiceWorkers) -> str:
    return identity.config["KEYS"]["LABEL_PREFIX"] + "person/"


def certificate_row(identity: ServiceWorkers, serial: str) -> Certificate:
    with identity.database().db.session() as session:
        return session.get(Certificate, serial)


def audits(identity: ServiceWorkers, person_id: str | None, action: str) -> list[dict]:
    with identity.database().db.session() as session:
        rows = session.execute(select(AuditRecord).where(AuditRecord.action == action)
                               .order_by(AuditRecord.id)).scalars().all()
        return [dict(outcome=r.outcome, person_id=r.person_id, **json.loads(r.refs)) for r in rows
                if person_id is None or r.person_id == person_id]


@pytest.fixture(scope="module")
def person(identity):
    """A person with a certificate whose key is on the token: (person_id, serial)."""
    person_id = registered(identity, PEOPLE[0])
    serial = identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))["serial"]
    return person_id, serial


def test_the_key_is_made_on_the_token_and_the_row_only_names_it(identity, person):
    person_id, serial = person
    row = certificate_row(identity, serial)
    assert row.private_key_sealed is None and row.key_id is None
    ref = KeyRef.from_text(row.key_ref)
    assert (ref.backend, ref.algorithm, ref.label) == ("pkcs11", EC_P256, prefix_of(identity) + serial)
    store = store_of(identity)
    certificate = ca.certificate_from_pem(row.certificate_pem.encode())
    assert store.public_key(ref) == certificate.public_key()  # the certificate certifies the key on the token
    assert [r.key_id for r in store.list_refs(ref.label)] == [ref.key_id]
    issued = audits(identity, person_id, "certificate_issued")[-1]
    assert issued["token_key_id"] == ref.key_id and "key_id" not in issued


def test_a_grant_signs_its_digest_once_on_the_token_audited_with_the_grant_and_the_key(identity, person):
    person_id, serial = person
    digest = hashlib.sha256(b"IOU 800 yuan " + uuid.uuid4().bytes).digest()
    grant = grant_for(identity, person_id, digest)
    signed = identity.call("sign_digest", grant=grant, person_id=person_id, digest=digest.hex())
    certificate = ca.certificate_from_pem(certificate_row(identity, serial).certificate_pem.encode())
    signature = base64.b64decode(signed["signature"])
    certificate.public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    used = audits(identity, person_id, "sign_digest")[-1]
    with identity.database().db.session() as session:
        grant_row = session.execute(select(SigningGrantRow).where(SigningGrantRow.document_digest == digest.hex())
                                    ).scalars().one()
    assert used["outcome"] == "ok" and used["grant_id"] == grant_row.token_hash
    assert used["token_key_id"] == KeyRef.from_text(certificate_row(identity, serial).key_ref).key_id
    assert used["willingness_id"] == grant_row.willingness_id and grant_row.used_at is not None
    with pytest.raises(Forbidden) as replayed:
        identity.call("sign_digest", grant=grant, person_id=person_id, digest=digest.hex())
    assert replayed.value.reason == "grant_replayed"
    with pytest.raises(Forbidden) as unknown:
        identity.call("sign_digest", grant="made-up", person_id=person_id, digest=digest.hex())
    assert unknown.value.reason == "grant_unknown"


def test_the_key_refuses_a_grant_not_claimed_for_this_certificate_and_digest(identity, person):
    _, serial = person
    row = certificate_row(identity, serial)
    keys = PersonKeys(store_of(identity), None, key_store_of(identity.container).settings)
    digest = hashlib.sha256(b"x").digest()
    moment = datetime.now().astimezone()
    fresh = grants.new_grant(row.person_id, int(serial, 16), digest.hex(), "sms", moment).grant
    with pytest.raises(InvalidInput) as unclaimed:
        keys.sign_digest(row, fresh, digest)  # never claimed
    assert unclaimed.value.rule == "unclaimed"
    claimed = replace(fresh, used_at=moment)
    with pytest.raises(InvalidInput) as other_digest:
        keys.sign_digest(row, claimed, hashlib.sha256(b"y").digest())
    assert other_digest.value.rule == "mismatch"
    with pytest.raises(InvalidInput) as other_certificate:
        keys.sign_digest(row, replace(claimed, certificate_serial=int(serial, 16) + 1), digest)
    assert other_certificate.value.rule == "mismatch"
    signature = keys.sign_digest(row, claimed, digest)
    ca.certificate_from_pem(row.certificate_pem.encode()).public_key().verify(
        signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_a_token_fault_mid_sign_is_unavailable_and_leaves_the_grant_unspent(identity, person, monkeypatch):
    person_id, _ = person
    digest = hashlib.sha256(b"fault " + uuid.uuid4().bytes).digest()
    grant = grant_for(identity, person_id, digest)
    store = store_of(identity)

    def lost(*_args, **_kwargs):
        raise fault(SESSION_LOST)

    monkeypatch.setattr(store, "sign_digest", lost)
    with pytest.raises(Unavailable) as raised:
        identity.call("sign_digest", grant=grant, person_id=person_id, digest=digest.hex())
    assert (raised.value.system, raised.value.reason) == ("key_store", "session_lost")
    attempt = audits(identity, person_id, "sign_digest")[-1]
    assert attempt["outcome"] == "key_store_session_lost" and attempt["digest"] == digest.hex()
    with identity.database().db.session() as session:
        assert session.execute(select(SigningGrantRow.used_at).where(
            SigningGrantRow.document_digest == digest.hex())).scalar_one() is None
    monkeypatch.undo()
    assert identity.call("sign_digest", grant=grant, person_id=person_id, digest=digest.hex())["signature"]


def test_revoking_or_superseding_a_certificate_destroys_its_key_on_the_token(identity):
    store = store_of(identity)
    person_id = registered(identity, PEOPLE[1])
    first = identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))["serial"]
    first_ref = KeyRef.from_text(certificate_row(identity, first).key_ref)
    second = identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))["serial"]
    second_ref = KeyRef.from_text(certificate_row(identity, second).key_ref)
    # destroyed after the commit, beside the worker: superseded, its key is gone
    assert wait_for(lambda: store.list_refs(first_ref.label) == [], timeout=10)
    assert [r.key_id for r in store.list_refs(second_ref.label)] == [second_ref.key_id]
    identity.call("revoke_certificate", person_id=person_id, reason="cessation_of_operation")
    assert wait_for(lambda: store.list_refs(second_ref.label) == [], timeout=10)
    wait_for(lambda: len(audits(identity, person_id, "key_destroyed")) == 2, timeout=10)
    destroyed = audits(identity, person_id, "key_destroyed")
    assert [(d["serial"], d["token_key_id"], d["outcome"]) for d in destroyed] == [
        (first, first_ref.key_id, "ok"), (second, second_ref.key_id, "ok")]
    row = certificate_row(identity, second)
    assert row.status == "revoked" and row.key_ref == second_ref.to_text()  # which key it was stays on record


def test_a_key_made_for_a_certificate_never_recorded_is_destroyed_at_once(identity, monkeypatch):
    store = store_of(identity)
    person_id = registered(identity, PEOPLE[2])
    before = {r.key_id for r in store.list_refs(prefix_of(identity))}

    def refused(*_args, **_kwargs):
        raise RuntimeError("the issuing CA failed after the key was made")

    monkeypatch.setattr(ca, "issue_person_certificate", refused)
    with pytest.raises(RuntimeError, match="after the key was made"):
        identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))
    monkeypatch.undo()
    assert {r.key_id for r in store.list_refs(prefix_of(identity))} == before
    with identity.database().db.session() as session:
        assert session.execute(select(Certificate).where(Certificate.person_id == person_id)).first() is None


def test_the_reconciler_destroys_keys_no_active_certificate_names_and_only_those(identity, person, monkeypatch):
    store = store_of(identity)
    _, serial = person
    kept = KeyRef.from_text(certificate_row(identity, serial).key_ref)
    orphan = store.generate(prefix_of(identity) + "ffff0001", EC_P256)  # a process died before recording it
    # a revocation whose destroy after the commit was lost
    person_id = registered(identity, PEOPLE[3])
    lost = identity.call("issue_certificate", person_id=person_id, proof_id=proof(identity, person_id))["serial"]
    lost_ref = KeyRef.from_text(certificate_row(identity, lost).key_ref)
    tried = []

    def lost_session(_self, ref):
        tried.append(ref)
        raise fault(SESSION_LOST)

    monkeypatch.setattr(type(store), "destroy", lost_session)
    identity.call("revoke_certificate", person_id=person_id, reason="key_compromise")
    assert wait_for(lambda: tried, timeout=10)  # the destroy after the commit was tried, and failed
    monkeypatch.undo()
    assert [r.key_id for r in store.list_refs(lost_ref.label)] == [lost_ref.key_id]
    time.sleep(1.1)  # the keys are older than the grace now
    assert identity.call("reconcile_person_keys") == 2
    on_token = {r.key_id for r in store.list_refs(prefix_of(identity))}
    assert kept.key_id in on_token and orphan.key_id not in on_token and lost_ref.key_id not in on_token
    reclaimed = [a for a in audits(identity, None, "key_destroyed") if a["outcome"] == "unrecorded"]
    assert {a["token_key_id"] for a in reclaimed} == {orphan.key_id, lost_ref.key_id}
    assert identity.call("reconcile_person_keys") == 0  # nothing left to reclaim


def test_health_reports_the_token_and_its_fault_by_name(identity, monkeypatch):
    assert identity.call("health")["checks"]["key_store"]["ok"] is True
    store = store_of(identity)
    monkeypatch.setattr(store, "ping", lambda: (_ for _ in ()).throw(fault("token_missing")))
    health = identity.call("health")
    assert health["status"] == "degraded"
    assert (health["checks"]["key_store"]["error"], health["checks"]["key_store"]["reason"]) == (
        "unavailable", "token_missing")
