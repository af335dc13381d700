"""A signature's willingness in the services' own workers (tests/support/service_worker.py):
signing, documents and identity each in their workers on SQLite and in-memory S3, calling
one another directly, identity's platform TSA stamping inside ``sign_digest``. The SMS code
is read as notify reads it (identity's ``otp_requested`` event, then ``otp_message``).

A grant is bound to one person and one digest, is used once, and a prepared signature made
on a PDF that has since changed cannot be completed. The faces are not what is tested here
(tests/unit/identity and the e2e tests are): the two people's proofs are recorded directly
in identity's tables, the one thing this test puts there by hand."""
from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from services.common.assurance import AssuranceLevel
from services.common.errors import Conflict, Forbidden
from services.common.events import OTP_REQUESTED
from services.documents.service import DocumentsService
from services.identity.models import IdentityProof
from services.identity.service import IdentityService
from services.signing.service import SigningService
from tests.support.service_worker import ServiceWorkers, WorkersProxy
from tests.support.softhsm import pkcs11_keys
from tests.support.stack import BORROWER, LENDER, handwriting_png, party

IOU_VALUES = {"initiator_role": "借款方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "800",
              "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2026-12-01",
              "repayment_method": "一次性还本付息", "remark": ""}
LIVE_PROOF = AssuranceLevel.AUTHORITY_FACE_LIVENESS.value
IDENTITY_CONFIG = {"PROOFING": {"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True},
                   "PUBLIC_URL": "http://127.0.0.1:8000", "CA": {"PERSON_VALIDITY_DAYS": 30}}


@pytest.fixture(scope="module", params=["sealed", "pkcs11"])
def services(tmp_path_factory, request):
    """The three services' workers, their keys sealed or on the test process's SoftHSM2 token
    (every key identity and signing hold: person keys, the CA, OCSP, TSA, the evidence log's)."""
    folder = tmp_path_factory.mktemp("workers")
    keys = {}
    if request.param == "pkcs11":
        home, run = request.getfixturevalue("softhsm_home"), uuid.uuid4().hex[:10]
        keys = {service: {"KEYS": pkcs11_keys(home, service, run)} for service in ("identity", "signing")}
    identity = ServiceWorkers(IdentityService, folder / "identity", config=dict(IDENTITY_CONFIG,
                                                                               **keys.get("identity", {})))
    documents = ServiceWorkers(DocumentsService, folder / "documents", identity=WorkersProxy(identity))
    signing = ServiceWorkers(SigningService, folder / "signing", config=keys.get("signing"),
                             identity=WorkersProxy(identity), documents=WorkersProxy(documents))
    identity.backend = request.param
    yield identity, documents, signing
    for workers in (signing, documents, identity):
        workers.stop()


def code_sent(identity: ServiceWorkers, phone_suffix: str) -> str:
    """The newest code identity asked notify to send, as notify reads it."""
    challenge = identity.events(OTP_REQUESTED)[-1]["data"]["challenge_id"]
    message = identity.call("otp_message", challenge_id=challenge)
    assert message["phone"].endswith(phone_suffix), message["phone"]
    return message["params"]["code"]


def certified(identity: ServiceWorkers, person: tuple[str, str, str]) -> str:
    """Registered with a confirmed phone, proofed (recorded directly), with a certificate."""
    name, id_number, phone = person
    challenge = identity.call("request_phone_code", phone=phone)["challenge_id"]
    identity.call("confirm_phone_code", challenge_id=challenge, code=code_sent(identity, phone[-4:]))
    person_id = identity.call("register", name=name, id_number=id_number, phone=phone,
                              phone_challenge_id=challenge)["person_id"]
    proof_id = str(uuid.uuid4())
    with identity.database().db.session() as session:  # what a live registry proof records
        session.add(IdentityProof(id=proof_id, person_id=person_id, provider="registry", level=LIVE_PROOF,
                                  matched=True, live=True, score=0.3, score_kind="distance", threshold=0.6,
                                  created_at=datetime.utcnow()))
        session.commit()
    assert identity.call("issue_certificate", person_id=person_id, proof_id=proof_id)["serial"]
    return person_id


@pytest.fixture(scope="module")
def flow(services):
    identity, documents, signing = services
    lender, borrower = certified(identity, LENDER), certified(identity, BORROWER)
    draft = documents.call("create_draft", template_id="iou", values=IOU_VALUES)
    rendered = documents.call("render", document_id=draft["document_id"])
    started = signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=borrower,
                           parties=[{"role": "借款人"}, {"role": "出借人"}])
    return started["flow_id"], lender, borrower


def test_a_grant_signs_one_digest_for_one_person_once(services, flow):
    identity, _, signing = services
    flow_id, lender, borrower = flow

    def prepared() -> tuple[dict, str]:
        pending = signing.call("prepare_signature", flow_id=flow_id, person_id=borrower,
                               signature_image=handwriting_png(), method="sms")
        code = code_sent(identity, BORROWER[2][-4:])
        grant = identity.call("confirm_willingness", willingness_id=pending["willingness_id"], code=code)["grant"]
        return pending, grant

    # not the lender's turn: the borrower signs first
    with pytest.raises(Forbidden):
        signing.call("prepare_signature", flow_id=flow_id, person_id=lender, signature_image=handwriting_png(),
                     method="sms")
    first, first_grant = prepared()
    second, second_grant = prepared()
    assert first["digest"] != second["digest"]
    # a grant is bound to one digest: the first grant cannot sign the second prepared signature
    with pytest.raises(Forbidden) as mismatch:
        signing.call("sign", flow_id=flow_id, person_id=borrower, pending_id=second["pending_id"], grant=first_grant)
    assert mismatch.value.reason == "grant_digest_mismatch"
    # nor can another person use it, nor a made-up one
    with pytest.raises(Forbidden):
        signing.call("sign", flow_id=flow_id, person_id=lender, pending_id=first["pending_id"], grant=first_grant)
    with pytest.raises(Forbidden) as unknown:
        signing.call("sign", flow_id=flow_id, person_id=borrower, pending_id=first["pending_id"],
                     grant="not-a-grant")
    assert unknown.value.reason == "grant_unknown"
    signed = signing.call("sign", flow_id=flow_id, person_id=borrower, pending_id=first["pending_id"],
                          grant=first_grant)
    assert signed["next_person_id"] == lender
    # used once: neither the pending signature nor the grant works again
    with pytest.raises((Conflict, Forbidden)):
        signing.call("sign", flow_id=flow_id, person_id=borrower, pending_id=first["pending_id"], grant=first_grant)
    # the second prepared signature was made on the unsigned PDF: it cannot be completed now
    with pytest.raises((Conflict, Forbidden)):
        signing.call("sign", flow_id=flow_id, person_id=borrower, pending_id=second["pending_id"],
                     grant=second_grant)
    got = signing.call("get_flow", flow_id=flow_id)
    assert got["state"] == "waiting" and [o["kind"] for o in got["objects"]] == ["original", "signed"]
    [party_signed] = [p for p in got["parties"] if p["person_id"] == borrower]
    assert party_signed["willingness_method"] == "sms" and party_signed["certificate_serial"]


def test_every_key_is_where_the_backend_puts_it(services, flow):
    """Sealed: in the rows, CA.DIR and the secrets, as before issue #16. On the token: refs only."""
    from pathlib import Path

    from sqlalchemy import select

    from services.identity.models import Certificate

    identity, _, signing = services
    with identity.database().db.session() as session:
        rows = session.execute(select(Certificate)).scalars().all()
    ca_dir = Path(identity.config["DATA_DIR"]) / "ca"
    key_files = sorted(p.name.split("-key.")[1] for p in ca_dir.glob("*-key.*"))
    signing_secrets = {p.name for p in (Path(signing.config["DATA_DIR"]) / "secrets").iterdir()}
    if identity.backend == "sealed":
        assert rows and all(r.private_key_sealed and r.key_ref is None for r in rows)
        assert key_files == ["sealed"] * 4 and "evidence-log-key" in signing_secrets
    else:
        assert rows and all(r.key_ref and r.private_key_sealed is None for r in rows)
        assert key_files == ["ref"] * 4
        assert "evidence-log-key.ref" in signing_secrets and "evidence-log-key" not in signing_secrets
