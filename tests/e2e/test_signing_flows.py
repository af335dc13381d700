"""Signing end to end on the whole stack (tests/e2e/conftest.py: every
service on real RabbitMQ, PostgreSQL and SeaweedFS, the gateway as its own
process), real face photos, and the signed PDF checked by
pyHanko, poppler's pdfsig (with the platform root in an NSS database) and
the offline verifier."""
from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from services.common.errors import Conflict, Forbidden
from services.signing.offline_verify import verify_offline
from tests.support.faces import face_path
from tests.support.key_custody import keys_not_on_token
from tests.support.softhsm import services_keys
from tests.support.stack import (
    BORROWER,
    LENDER,
    REPO,
    UNREGISTERED,
    Http,
    b64,
    handwriting_png,
    party,
    people,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def pdfsig(pdf: Path, root_pem: str, workdir: Path) -> str:
    workdir.mkdir(exist_ok=True)
    nss = workdir / "nss"
    nss.mkdir(exist_ok=True)
    root = workdir / "root.pem"
    root.write_text(root_pem)
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"], check=True, capture_output=True)
    subprocess.run(["certutil", "-A", "-n", "esign-root", "-t", "C,C,C", "-i", str(root), "-d", f"sql:{nss}"],
                   check=True, capture_output=True)
    # pdfsig exits 0 even on "Digest Mismatch.": the output is what counts
    return subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(pdf)], capture_output=True, text=True).stdout


@pytest.mark.parametrize("keys", ["sealed", "pkcs11"])
def test_iou_signed_by_sms_and_face_is_valid_everywhere(stack_factory, keys, softhsm_home, tmp_path):
    """With every private key sealed under the KEKs, and with every one on the SoftHSM2 token
    (``KEYS.BACKEND: pkcs11``: person keys, the CA, OCSP responder, TSA and the evidence log's)."""
    stack = stack_factory(**services_keys(keys, softhsm_home))
    lender, borrower = people(stack)
    rendered = stack.document("iou", {
        "initiator_role": "借款方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "10005",
        "purpose": "家庭装修", "annual_rate": "3.65", "start_date": "2026-11-01", "repayment_date": "2027-02-01",
        "repayment_method": "一次性还本付息", "remark": "按期还款"})
    flow = stack.start(rendered, [(borrower, "borrower"), (lender, "lender")])
    assert flow["state"] == "waiting" and flow["next_person_id"] == borrower
    assert flow["repayment_date"] == "2027-02-01"  # from the IOU itself: it drives the reminders
    flow_id = flow["flow_id"]

    # refused transitions through the signing path
    with pytest.raises(Forbidden):
        stack.rpc.signing.prepare_signature(flow_id=flow_id, person_id=lender, signature_image=handwriting_png(),
                                            method="sms")
    # the document is read-only once signing started
    assert wait_for(lambda: stack.rpc.documents.get_document(document_id=rendered["document_id"])["locked"])

    after_first = stack.sign(flow_id, borrower, phone=BORROWER[2])  # 借款方: SMS-code willingness
    assert after_first["next_person_id"] == lender
    done = stack.sign(flow_id, lender, face=True)  # 出借方: face willingness, live
    assert done["state"] == "completed"
    assert [o["kind"] for o in done["objects"]] == ["original", "signed", "final"]
    assert all(p["certificate_serial"] and p["signed_at"] for p in done["parties"])
    assert {p["willingness_method"] for p in done["parties"]} == {"sms", "face"}

    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    pdf = tmp_path / "iou.pdf"
    pdf.write_bytes(signed)
    root_pem = stack.rpc.identity.pki_certificates()["root_pem"]

    # pyHanko through the signing service's verify, and the offline verifier
    verdict = stack.rpc.signing.verify(pdf=b64(signed))
    assert verdict["ok"], verdict["problems"]
    assert len(verdict["signatures"]) == 2 and verdict["has_validation_data"]
    assert all(s["intact"] and s["valid"] and s["trusted"] for s in verdict["signatures"])
    assert not verdict["modified_after_last_signature"]
    offline = verify_offline(signed, [root_pem.encode()])
    assert offline.ok, offline.problems

    # poppler's pdfsig with the platform root in an NSS database
    text = pdfsig(pdf, root_pem, tmp_path / "nss-check")
    assert text.count("Signature is Valid.") == 2, text
    assert text.count("Certificate is Trusted.") == 2, text

    # one flipped byte inside a page stream (covered by every signature) breaks every check
    tampered = bytearray(signed)
    tampered[signed.index(b"stream") + 40] ^= 0x01
    bad = tmp_path / "tampered.pdf"
    bad.write_bytes(bytes(tampered))
    assert not stack.rpc.signing.verify(pdf=b64(bytes(tampered)))["ok"]
    assert not verify_offline(bytes(tampered), [root_pem.encode()]).ok
    bad_text = pdfsig(bad, root_pem, tmp_path / "tampered-nss")
    assert "Signature is Valid." not in bad_text, bad_text

    # every flow event is in the evidence log, provable against a signed checkpoint
    def complete_evidence() -> dict | None:  # an event reaches the log moments after its change
        evidence = stack.rpc.signing.flow_evidence(flow_id=flow_id)
        kinds = [json.loads(leaf["leaf"])["event_type"] for leaf in evidence["leaves"]]
        done = kinds.count("party_signed") == 2 and "flow_completed" in kinds and kinds[0] == "flow_sent"
        return evidence if done else None

    evidence = wait_for(complete_evidence)
    assert evidence, stack.rpc.signing.flow_evidence(flow_id=flow_id)

    # notify told each party: sign requests and the completed notice
    # the final PDF is kept under S3 Object Lock: its version cannot be deleted
    from botocore.exceptions import ClientError

    from services.common.storage import ObjectStore, S3Settings
    from services.signing.dependencies import load_keyring

    store = ObjectStore(S3Settings.from_config(stack.signing_config), load_keyring(stack.signing_config))
    key = "flows/" + hashlib.sha256(signed).hexdigest()
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head.get("VersionId")
    with pytest.raises(ClientError):
        store.client.delete_object(Bucket=store.bucket, Key=key, VersionId=head["VersionId"])
    assert store.get(key) == signed
    raw = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    assert raw[:4] == b"ESL1" and b"%PDF" not in raw  # encrypted under signing's KEK before it left signing

    # the signing report (签约报告): signed JSON and PDF; checked offline together with the PDF
    made = stack.rpc.signing.report(flow_id=flow_id)
    signed_report = made["report"]
    assert signed_report["report"]["document"]["final_pdf_sha256"] == hashlib.sha256(signed).hexdigest()
    log_key = stack.rpc.signing.log_public_key()["public_key"]
    together = verify_offline(signed, [root_pem.encode()], report=signed_report, log_public_key=log_key)
    assert together.ok, together.problems
    report_pdf = tmp_path / "report.pdf"
    report_pdf.write_bytes(base64.b64decode(made["report_pdf"]))
    report_text = subprocess.run(["pdftotext", str(report_pdf), "-"], capture_output=True, text=True).stdout
    assert "签约报告" in report_text and "1101**********002X" in report_text
    assert "11010519491231002X" not in report_text and "11010519491231002X" not in json.dumps(signed_report)

    # `esign verify` on the command line, offline: exit 0, and 1 for the tampered file
    (tmp_path / "report.json").write_text(json.dumps(signed_report, ensure_ascii=False), "utf-8")
    (tmp_path / "root.pem").write_text(root_pem)
    witness_keys = [w.key for w in stack.witnesses]
    command = [sys.executable, "-m", "services.cli", "verify", "--root", str(tmp_path / "root.pem"),
               "--log-key", log_key, "--report", str(tmp_path / "report.json"),
               *[arg for key in witness_keys for arg in ("--witness-key", key)], "--witness-threshold", "2"]
    good = subprocess.run(command + [str(pdf)], cwd=REPO, capture_output=True, text=True)
    assert good.returncode == 0, good.stdout + good.stderr
    # who each signer is rests on the authority: the level, the provider and its request id, per party
    checks = signed_report["report"]["identity_checks"]
    assert {c["assurance_level"] for c in checks} == {"authority_face_liveness"}
    assert {c["provider"] for c in checks} == {"registry"} and all(c["request_id"] for c in checks)
    assert good.stdout.count("authority_face_liveness") >= 2 and "self-declared" not in good.stdout
    # the checkpoint is witnessed: both independent witnesses cosigned it, by name and time
    assert "✓ witnesses: 2 of 2 configured witnesses cosigned: witness-1.test at 20" in good.stdout, good.stdout
    assert "witness-2.test at 20" in good.stdout
    broken = subprocess.run(command + [str(bad)], cwd=REPO, capture_output=True, text=True)
    assert broken.returncode == 1, broken.stdout + broken.stderr

    def told(template: str, count: int) -> bool:
        return [m["template"] for m in stack.sms()].count(template) == count

    # the lender is asked to sign; the borrower, who sent the IOU and signed it at once, is not
    assert wait_for(lambda: told("sign_request", 1) and told("flow_completed", 2))
    [request] = [m for m in stack.sms() if m["template"] == "sign_request"]
    assert request["phone"] == LENDER[2]

    if keys == "pkcs11":  # every key was on the token: only refs name them, each signature audited with both
        assert keys_not_on_token(stack.identity_config, stack.signing_config) == []


def test_receipt_voided_by_mutual_consent(stack):
    payee, payer = people(stack)
    rendered = stack.document("receipt", {
        "initiator_role": "付款人", "payee": party(LENDER), "payer": party(BORROWER), "amount": "1409.50",
        "reason": "押金", "received_at": "2026-11-28T09:30:00", "remark": "十二月押金"})
    flow_id = stack.start(rendered, [(payer, "payer"), (payee, "payee")])["flow_id"]
    stack.sign(flow_id, payer, phone=BORROWER[2])
    assert stack.sign(flow_id, payee, phone=LENDER[2])["state"] == "completed"

    requested = stack.void_action(stack.rpc.signing.request_void, payer, BORROWER[2], flow_id=flow_id,
                                  reason="押金已退还")
    assert requested["state"] == "void_requested" and requested["void_requested_by"] == payer
    with pytest.raises(Forbidden):  # the requester cannot confirm their own request
        stack.rpc.signing.confirm_void(flow_id=flow_id, person_id=payer, method="sms")
    voided = stack.void_action(stack.rpc.signing.confirm_void, payee, LENDER[2], flow_id=flow_id)
    assert voided["state"] == "voided"
    with pytest.raises(Conflict):  # final
        stack.rpc.signing.request_void(flow_id=flow_id, person_id=payee, reason="again", method="sms")
    def kinds() -> list[str]:  # an event reaches the log moments after its change
        return [json.loads(leaf["leaf"])["event_type"]
                for leaf in stack.rpc.signing.flow_evidence(flow_id=flow_id)["leaves"]]

    assert wait_for(lambda: kinds()[-2:] == ["void_requested", "flow_voided"]), kinds()
    assert wait_for(lambda: [m for m in stack.sms() if m["template"] == "flow_voided"])

    # /verify: the signatures are valid, and the agreement is not in force, provably
    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    request = urllib.request.Request(stack.gateway_url + "/api/v1/verify", method="POST",
                                     data=json.dumps({"pdf": b64(signed)}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        verdict = json.loads(answer.read())
    assert verdict["ok"], verdict["problems"]
    status = verdict["document_status"]
    assert status["known"] and status["status"] == "voided" and status["in_force"] is False
    assert status["status_text"].startswith("已作废，作废原因：押金已退还，双方确认于 20"), status["status_text"]
    assert status["version"] == "final" and status["latest_version"] is True
    leaf = json.loads(status["evidence"]["leaf"])
    assert leaf["event_type"] == "flow_voided" and leaf["reason"] == "押金已退还" and leaf["flow_id"] == flow_id
    # the status is proven: the leaf is in the tree the signed checkpoint commits to
    from services.signing.checkpoint import NoteVerifier
    from services.signing.log_records import InclusionProof, verify_checkpointed_inclusion

    verify_checkpointed_inclusion(status["evidence"]["leaf"].encode(),
                                  InclusionProof.from_dict(status["evidence"]["proof"]),
                                  status["evidence"]["checkpoint"],
                                  NoteVerifier.from_key_string(stack.rpc.signing.log_public_key()["public_key"]))
    # esign verify --online: the same status, from the platform's answer checked against the log key and witnesses
    pdf_path = Path(stack.tmp_path) / "voided.pdf"
    pdf_path.write_bytes(signed)
    root = Path(stack.tmp_path) / "root-voided.pem"
    root.write_text(stack.rpc.identity.pki_certificates()["root_pem"])
    online = subprocess.run(
        [sys.executable, "-m", "services.cli", "verify", "--root", str(root), "--online", stack.gateway_url,
         "--log-key", stack.rpc.signing.log_public_key()["public_key"],
         *[arg for w in stack.witnesses for arg in ("--witness-key", w.key)], str(pdf_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert online.returncode == 0, online.stdout + online.stderr
    assert "► agreement status: 已作废，作废原因：押金已退还，双方确认于 " in online.stdout
    assert "✓ this file in the log" in online.stdout and "✓ witnesses: 2 of 2" in online.stdout
    # a PDF the platform never signed says so
    with urllib.request.urlopen(f"{stack.gateway_url}/api/v1/documents/{'ab' * 32}/status", timeout=30) as answer:
        assert json.loads(answer.read()) == {"known": False, "sha256": "ab" * 32,
                                             "status_text": "本平台未签署过此文件（或文件在签署后被改动）"}


def test_declined_and_expired_flows(stack):
    lender, borrower = people(stack)
    values = {"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "5000",
              "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2026-12-01",
              "repayment_method": "一次性还本付息", "remark": ""}
    declined_flow = stack.start(stack.document("iou", values), [(lender, "lender"), (borrower, "borrower")])
    stack.sign(declined_flow["flow_id"], lender, phone=LENDER[2])
    declined = stack.rpc.signing.decline(flow_id=declined_flow["flow_id"], person_id=borrower, reason="金额不对")
    assert declined["state"] == "declined" and declined["reason"] == "金额不对"
    with pytest.raises(Conflict):
        stack.rpc.signing.prepare_signature(flow_id=declined_flow["flow_id"], person_id=borrower,
                                            signature_image=handwriting_png(), method="sms")

    expiring = stack.start(stack.document("iou", values), [(lender, "lender"), (borrower, "borrower")],
                           expires_in_hours=1)
    assert stack.rpc.signing.expire_now() == 0  # not due yet
    stack.move_expiry_into_the_past(expiring["flow_id"])
    assert stack.rpc.signing.expire_now() == 1
    expired = stack.rpc.signing.get_flow(flow_id=expiring["flow_id"])
    assert expired["state"] == "expired"
    with pytest.raises(Conflict):
        stack.rpc.signing.prepare_signature(flow_id=expiring["flow_id"], person_id=lender,
                                            signature_image=handwriting_png(), method="sms")
    assert wait_for(lambda: len([m for m in stack.sms() if m["template"] == "flow_expired"]) == 2)
    assert wait_for(lambda: [m for m in stack.sms() if m["template"] == "flow_declined"])


def test_rental_contract_signed_by_landlord_and_tenant(stack, tmp_path):
    landlord, tenant = people(stack)
    rendered = stack.document("rental", {
        "initiator_role": "房东", "landlord": party(LENDER), "tenant": party(BORROWER),
        "address": "北京市朝阳区某路1号院2号楼301室", "building_area": "89.5", "decoration": "精装修",
        "furnishings": [{"name": "空调", "count": 2}, {"name": "床", "count": 1}, {"name": "冰箱", "count": 1}],
        "lease_start": "2027-01-01", "lease_end": "2027-12-31", "monthly_rent": "6500", "payment_cycle": "季付",
        "payment_day": 5, "deposit": "6500", "tenant_fees": ["电费", "水费", "燃气费"],
        "renovation_allowed": False, "sublet_allowed": False, "renewal_notice_days": 30})
    flow_id = stack.start(rendered, [(landlord, "landlord"), (tenant, "tenant")])["flow_id"]
    stack.sign(flow_id, landlord, face=True)
    assert stack.sign(flow_id, tenant, phone=BORROWER[2])["state"] == "completed"
    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    root_pem = stack.rpc.identity.pki_certificates()["root_pem"]
    pdf = tmp_path / "rental.pdf"
    pdf.write_bytes(signed)
    text = pdfsig(pdf, root_pem, tmp_path / "nss-rental")
    assert text.count("Signature is Valid.") == 2 and text.count("Certificate is Trusted.") == 2, text
    made = stack.rpc.signing.report(flow_id=flow_id)
    assert verify_offline(signed, [root_pem.encode()], report=made["report"],
                          log_public_key=stack.rpc.signing.log_public_key()["public_key"]).ok


IOU_VALUES = {"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "2000",
              "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2026-12-01",
              "repayment_method": "一次性还本付息", "remark": ""}


def test_a_counterparty_invited_before_registering_joins_and_signs(stack):
    lender = stack.person(*LENDER)
    rendered = stack.document("iou", dict(IOU_VALUES, borrower=party(UNREGISTERED)))
    flow = stack.rpc.signing.start_flow(document_id=rendered["document_id"], initiator_person_id=lender,
                                        parties=[{"role": "出借人"}, {"role": "借款人"}])
    flow_id = flow["flow_id"]
    assert [p["person_id"] for p in flow["parties"]] == [lender, None]
    after_lender = stack.sign(flow_id, lender, phone=LENDER[2])
    assert after_lender["next_person_id"] is None and after_lender["next_role"] == "借款人"
    # the invitation goes to the number the document gives the borrower, with the link
    invited = wait_for(lambda: [m for m in stack.sms()
                                if m["template"] == "sign_request" and m["phone"] == UNREGISTERED[2]])
    assert invited and invited[0]["params"]["link"].endswith(f"/flows/{flow_id}")
    # someone the document does not name cannot take the place, even once registered
    other = stack.person(*BORROWER)
    with pytest.raises(Forbidden) as outsider:
        stack.rpc.signing.join_flow(flow_id=flow_id, person_id=other)
    assert outsider.value.reason == "not_a_party"
    borrower = stack.person(*UNREGISTERED)
    joined = stack.rpc.signing.join_flow(flow_id=flow_id, person_id=borrower)
    assert joined["next_person_id"] == borrower
    assert stack.rpc.signing.join_flow(flow_id=flow_id, person_id=borrower)["parties"] == joined["parties"]
    assert stack.sign(flow_id, borrower, face=True)["state"] == "completed"

    def kinds() -> list[str]:
        leaves = stack.rpc.signing.flow_evidence(flow_id=flow_id)["leaves"]
        return [json.loads(leaf["leaf"])["event_type"] for leaf in leaves]

    assert wait_for(lambda: kinds() == ["flow_sent", "party_signed", "flow_sent", "party_joined", "party_signed",
                                        "flow_completed"]), kinds()
    signed = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    root_pem = stack.rpc.identity.pki_certificates()["root_pem"]
    made = stack.rpc.signing.report(flow_id=flow_id)
    assert verify_offline(signed, [root_pem.encode()], report=made["report"],
                          log_public_key=stack.rpc.signing.log_public_key()["public_key"]).ok


def test_a_receipt_opened_from_a_qr_invite_names_both_people_and_is_signed(stack):
    from services.documents.invite import token_from_url

    payee, payer = people(stack)
    invite = stack.rpc.documents.make_receipt_invite(person_id=payee, role="payee", ttl_seconds=600)
    token = token_from_url(invite["url"])
    assert stack.rpc.documents.open_receipt_invite(token=token)["inviter_name_masked"] == "王*"
    draft = stack.rpc.documents.create_draft_from_invite(
        token=token, owner_person_id=payer,
        values={"amount": "1200", "reason": "押金", "received_at": "2026-11-20T10:00:00", "remark": ""})
    values = stack.rpc.documents.get_document_content(document_id=draft["document_id"])["values"]
    assert values["payee"] == party(LENDER) and values["payer"] == party(BORROWER)  # from identity's records
    stack.rpc.documents.render(document_id=draft["document_id"])
    flow = stack.rpc.signing.start_flow(document_id=draft["document_id"], initiator_person_id=payer,
                                        parties=[{"role": "付款人"}, {"role": "收款人"}])
    assert [p["person_id"] for p in flow["parties"]] == [payer, payee]
    stack.sign(flow["flow_id"], payer, phone=BORROWER[2])
    assert stack.sign(flow["flow_id"], payee, phone=LENDER[2])["state"] == "completed"


def test_documents_belong_to_their_maker_and_flows_start_by_role_over_http(stack):
    as_lender = Http(stack).register(*LENDER)
    as_borrower = Http(stack).register(*BORROWER)
    lender, borrower = as_lender.person_id, as_borrower.person_id
    document_id = as_lender.json("POST", "/documents", {"template_id": "iou", "values": IOU_VALUES},
                                 expect=201)["document_id"]
    photo = b64(face_path("biden").read_bytes())  # any JPEG will do as an attachment
    status, content, _ = as_lender.call("POST", f"/documents/{document_id}/attachments",
                                        {"image": photo, "label": "转账截图", "field": "property_photos"})
    assert status == 422 and json.loads(content)["error"]["field"] == "field"  # not an image field of an IOU
    as_lender.json("POST", f"/documents/{document_id}/attachments",
                   {"image": photo, "label": "转账截图", "field": "images"}, expect=201)
    rendered = as_lender.json("POST", f"/documents/{document_id}/render")
    status, pdf, headers = as_lender.call("GET", f"/documents/{document_id}/pdf")
    assert status == 200 and pdf.startswith(b"%PDF-")
    assert hashlib.sha256(pdf).hexdigest() == rendered["pdf_sha256"] == headers["X-Content-SHA256"]
    # someone else's session learns nothing of it and cannot change it
    for method, path, body in (("GET", f"/documents/{document_id}", None),
                               ("GET", f"/documents/{document_id}/pdf", None),
                               ("PATCH", f"/documents/{document_id}", {"values": {"remark": "改"}}),
                               ("POST", f"/documents/{document_id}/render", None)):
        status, content, _ = as_borrower.call(method, path, body)
        assert status == 404, (method, path, status, content)
        assert json.loads(content)["error"]["code"] == "not_found"
    assert Http(stack).call("GET", f"/documents/{document_id}")[0] == 403  # no session at all
    # nor start signing it (signing asks documents for it as the caller's own)
    status, content, _ = as_borrower.call("POST", "/flows", {"document_id": document_id,
                                                            "parties": [{"role": "借款人"}, {"role": "出借人"}]})
    assert status == 404 and json.loads(content)["error"]["code"] == "not_found", (status, content)
    # parties by role only: the counterparty is the person the document names
    flow = as_lender.json("POST", "/flows", {"document_id": document_id,
                                             "parties": [{"role": "出借人"}, {"role": "借款人"}]}, expect=201)
    assert [p["person_id"] for p in flow["parties"]] == [lender, borrower]
    assert as_borrower.json("GET", f"/flows/{flow['flow_id']}")["next_person_id"] == lender
    # signing over HTTP; a willingness check answers only to its own person
    flow_id = flow["flow_id"]
    before = len(stack.sms())
    pending = as_lender.json("POST", f"/flows/{flow_id}/signature",
                             {"signature_image": handwriting_png(), "method": "sms"}, expect=201)
    code = stack.latest_code(LENDER[2], "willingness_code", before)
    status, _, _ = as_borrower.call("POST", f"/willingness/{pending['willingness_id']}/confirm", {"code": code})
    assert status == 404
    grant = as_lender.json("POST", f"/willingness/{pending['willingness_id']}/confirm", {"code": code})["grant"]
    signed = as_lender.json("POST", f"/flows/{flow_id}/sign", {"pending_id": pending["pending_id"], "grant": grant})
    assert signed["next_person_id"] == borrower
    # 我的二维码 over HTTP: the inviter is told it is their own code; the other sees a masked name, no id
    from urllib.parse import quote

    from services.documents.invite import token_from_url

    invite = as_lender.json("GET", "/me/receipt-invite?role=payee")
    assert invite["url"].startswith(stack.gateway_url + "/receipts/new?invite=")
    token = quote(token_from_url(invite["url"]))
    assert as_lender.json("GET", f"/receipt-invites/{token}")["own_invite"] is True
    seen = as_borrower.json("GET", f"/receipt-invites/{token}")
    assert seen["own_invite"] is False and seen["inviter_name_masked"] == "王*" and "person_id" not in seen
    status, content, _ = as_borrower.call("GET", "/receipt-invites/not.valid")
    assert status == 403 and json.loads(content)["error"]["message"] == "invite_invalid"
    # only its maker starts signing a document
    status, content, _ = as_borrower.call("POST", "/flows", {"document_id": document_id,
                                                             "parties": [{"role": "出借人"}, {"role": "借款人"}]})
    assert status == 404, content
