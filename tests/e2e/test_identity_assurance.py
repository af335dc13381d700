"""Identity assurance end to end, every service as in production but in
this process (real RabbitMQ, PostgreSQL, SeaweedFS, the gateway's TSA):

* with the development provider allowed, issue 9's attack (someone else's
  name and ID number, the attacker's own face twice) gets through, and says
  so everywhere: the certificate in the signed PDF, the signing report and
  ``esign verify --report`` all state ``self_declared``;
* a squatter who signed that way while the platform took people at their
  word loses the identity when the real person proves their face live
  against the authority's photo: the squatter's unfinished flow is
  cancelled (the document goes back to its maker, the other party is told)
  and the finished one is marked ``disputed_identity`` in its status, its
  evidence log and its report.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader

from services.common.assurance import AssuranceLevel, level_of_certificate
from services.signing.offline_verify import verify_offline
from tests.support.faces import face_path
from tests.support.stack import BORROWER, LENDER, REPO, Stack, b64, party
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

SELF_DECLARED = {"PROOFING": {"PROVIDER": "self_declared", "ALLOW_SELF_DECLARED": True},
                 "FACES": {"ALLOW_UPLOAD": True}, "LIVENESS": {"REQUIRED": False}}
LEGACY_SIGNING = {"ASSURANCE": {"REQUIRED_LEVEL": "self_declared"}}
SQUATTER_PHONE = "13600136000"
IOU = {"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "3000",
       "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2027-05-01",
       "repayment_method": "一次性还本付息", "remark": ""}


def self_declared_person(stack: Stack, name: str, id_number: str, phone: str, face: str) -> str:
    """Registered on the person's word: their own photo as 'ID portrait' and as selfie."""
    before = len(stack.sms())
    challenge = stack.rpc.identity.request_phone_code(phone=phone)["challenge_id"]
    stack.rpc.identity.confirm_phone_code(challenge_id=challenge, code=stack.latest_code(phone, "phone_code", before))
    person = stack.rpc.identity.register(name=name, id_number=id_number, phone=phone, phone_challenge_id=challenge)
    assert person["assurance_level"] == "self_declared"
    image = b64(face_path(face).read_bytes())
    proof = stack.rpc.identity.proof_face(person_id=person["person_id"], selfie=image, id_portrait=image)
    assert proof["matched"] and proof["assurance_level"] == "self_declared"
    stack.rpc.identity.issue_certificate(person_id=person["person_id"], proof_id=proof["proof_id"])
    return person["person_id"]


def signed_iou(stack: Stack, lender: str, borrower: str, finish: bool = True) -> dict:
    rendered = stack.document("iou", IOU)
    flow = stack.start(rendered, [(lender, "lender"), (borrower, "borrower")])
    stack.sign(flow["flow_id"], lender, phone=SQUATTER_PHONE)
    return stack.sign(flow["flow_id"], borrower, phone=BORROWER[2]) if finish else stack.rpc.signing.get_flow(
        flow_id=flow["flow_id"])


def test_self_declared_identities_say_so_in_certificate_report_and_verify(stack_factory, tmp_path):
    stack = stack_factory(identity=SELF_DECLARED, signing=LEGACY_SIGNING)
    attacker = self_declared_person(stack, *LENDER[:2], SQUATTER_PHONE, face="biden")  # not 王䶮's face
    borrower = self_declared_person(stack, *BORROWER, face="obama")
    done = signed_iou(stack, attacker, borrower)
    assert done["state"] == "completed"
    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=done["flow_id"])["pdf"])

    # the certificates inside the PDF state the level
    import io

    reader = PdfFileReader(io.BytesIO(signed))
    levels = {level_of_certificate(x509.load_der_x509_certificate(s.signer_cert.dump()))
              for s in reader.embedded_signatures if s.sig_object_type == "/Sig"}  # not the document time stamp
    assert levels == {AssuranceLevel.SELF_DECLARED}
    verdict = stack.rpc.signing.verify(pdf=b64(signed))
    assert verdict["ok"] and {s["assurance_level"] for s in verdict["signatures"]} == {"self_declared"}

    # the report and esign verify say it, in words
    made = stack.rpc.signing.report(flow_id=done["flow_id"])
    checks = made["report"]["report"]["identity_checks"]
    assert {c["assurance_level"] for c in checks} == {"self_declared"}
    assert {c["provider"] for c in checks} == {"self_declared"}
    report_pdf = tmp_path / "report.pdf"
    report_pdf.write_bytes(base64.b64decode(made["report_pdf"]))
    text = subprocess.run(["pdftotext", str(report_pdf), "-"], capture_output=True, text=True).stdout
    assert AssuranceLevel.SELF_DECLARED.label in text and "未经权威" in text
    root = tmp_path / "root.pem"
    root.write_text(stack.rpc.identity.pki_certificates()["root_pem"])
    (tmp_path / "report.json").write_text(json.dumps(made["report"], ensure_ascii=False), "utf-8")
    (tmp_path / "iou.pdf").write_bytes(signed)
    log_key = stack.rpc.signing.log_public_key()["public_key"]
    printed = subprocess.run([sys.executable, "-m", "services.cli", "verify", "--root", str(root), "--log-key", log_key,
                              "--report", str(tmp_path / "report.json"), str(tmp_path / "iou.pdf")],
                             cwd=REPO, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stdout + printed.stderr  # it all holds: it is what it says
    assert printed.stdout.count("self-declared: not verified by an authority") == 2, printed.stdout
    assert "self_declared" in printed.stdout and "certificate states assurance self_declared" in printed.stdout


def test_a_squatters_flows_are_cancelled_or_marked_when_the_real_person_takes_the_identity_back(stack_factory):
    stack = stack_factory(identity=SELF_DECLARED, signing=LEGACY_SIGNING)
    squatter = self_declared_person(stack, *LENDER[:2], SQUATTER_PHONE, face="biden")
    borrower = self_declared_person(stack, *BORROWER, face="obama")
    finished = signed_iou(stack, squatter, borrower)
    unfinished = signed_iou(stack, squatter, borrower, finish=False)
    assert (finished["state"], unfinished["state"]) == ("completed", "waiting")
    unfinished_document = unfinished["document_id"]

    # the platform now asks the authority (the same database, keys and people)
    stack.identity_container.stop()
    stack.restart_identity(PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(stack.registry_file)},
                           FACES={}, LIVENESS={})
    real = stack.person(*LENDER)  # registers (pending), proves live, takes the number back, gets a certificate
    assert stack.rpc.identity.person_status(person_id=real)["status"] == "active"
    assert stack.rpc.identity.person_status(person_id=squatter)["status"] == "frozen"

    marked = wait_for(lambda: stack.rpc.signing.get_flow(flow_id=finished["flow_id"]))
    assert wait_for(lambda: stack.rpc.signing.get_flow(flow_id=finished["flow_id"])["status"] == "disputed_identity")
    marked = stack.rpc.signing.get_flow(flow_id=finished["flow_id"])
    assert marked["state"] == "completed" and marked["disputed_identity"]["person_id"] == squatter
    cancelled = stack.rpc.signing.get_flow(flow_id=unfinished["flow_id"])
    assert cancelled["state"] == "cancelled" and cancelled["reason"] == "identity_disputed"
    # the cancelled document is its maker's to correct again; the other party is told
    assert wait_for(lambda: not stack.rpc.documents.get_document(document_id=unfinished_document)["locked"])
    assert wait_for(lambda: [m for m in stack.sms() if m["template"] == "flow_cancelled" and m["phone"] == BORROWER[2]])
    assert not [m for m in stack.sms() if m["template"] == "flow_cancelled" and m["phone"] == SQUATTER_PHONE]

    # the evidence log records the dispute, and the report carries it
    assert wait_for(lambda: "flow_identity_disputed" in [  # an event reaches the log moments after its change
        json.loads(leaf["leaf"])["event_type"]
        for leaf in stack.rpc.signing.flow_evidence(flow_id=finished["flow_id"])["leaves"]])
    report = wait_for(lambda: _report(stack, finished["flow_id"]))
    assert report["report"]["report"]["dispute"]["person_id"] == squatter
    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=finished["flow_id"])["pdf"])
    root = stack.rpc.identity.pki_certificates()["root_pem"].encode()
    result = verify_offline(signed, [root], report=report["report"],
                            log_public_key=stack.rpc.signing.log_public_key()["public_key"])
    assert any("disputed" in warning for warning in result.warnings), result.warnings


def _report(stack: Stack, flow_id: str):
    from services.common.errors import Unavailable

    try:
        return stack.rpc.signing.report(flow_id=flow_id)
    except Unavailable:  # the dispute's leaf is not under a checkpoint yet
        return None
