"""The signing report (签约报告): built from a real evidence log, signed as a
C2SP note, refused when it would carry a clear ID number or a broken proof,
and rendered as a Chinese PDF that poppler can read back."""
import base64
import copy
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from services.common.assurance import AssuranceLevel
from services.common.errors import IntegrityError, InvalidInput
from services.signing.checkpoint import BadSignatureError, NoteSigner, UnknownKeyError
from services.signing.evidence_log import EvidenceLog, MemoryLogStore
from services.signing.report import (
    ReportSignatureError,
    build_report,
    refuse_clear_personal_data,
    render_report_pdf,
    report_digest,
    sign_report,
    verify_report_signature,
)

FLOW_ID = "9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
OTHER_FLOW = "other-flow"
ORIGINAL = hashlib.sha256(b"rendered IOU").hexdigest()
FINAL = hashlib.sha256(b"signed IOU").hexdigest()
TITLE = "借条（小借条）"
URL = "https://esign.example/verify/9b2f6c1e"
GENERATED = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)


def _self_declared(person_id: str) -> dict:
    """What identity answers for a person no authority checked (development only)."""
    return {"person_id": person_id, "assurance_level": "self_declared", "provider": "self_declared",
            "request_id": None, "score": None, "score_kind": None, "threshold": None, "liveness": "not_performed",
            "checked_at": None, "account_status": "active"}


def _append_flow(log: EvidenceLog) -> None:
    events = [
        ("flow_sent", "alice", ORIGINAL, None, None, "2024-05-01T01:00:00Z"),
        ("party_signed", "alice", "a" * 64, "1234", "sms", "2024-05-01T01:05:00Z"),
        ("party_signed", "bob", FINAL, "5678", "face", "2024-05-01T02:00:00Z"),
        ("flow_completed", "bob", FINAL, "5678", "face", "2024-05-01T02:00:00Z"),
    ]
    for n, (event_type, party, doc_hash, serial, method, at) in enumerate(events):
        # another flow's events interleave, as they do in the shared log
        log.append({"flow_id": OTHER_FLOW, "event_type": "flow_sent", "timestamp": at})
        log.append({"flow_id": FLOW_ID, "event_type": event_type, "timestamp": at, "document_hash": doc_hash,
                    "party_id": party, "certificate_serial": serial, "willingness_method": method,
                    "willingness_outcome": "passed" if method else None, "event_id": f"e{n}"})


def _evidence(log: EvidenceLog, flow_id: str = FLOW_ID) -> dict:
    """What the flow_evidence RPC returns."""
    checkpoint = log.checkpoint()
    size = log.size()
    return {
        "checkpoint": checkpoint, "tree_size": size, "log_public_key": log.public_key(),
        "leaves": [{"index": leaf.index, "leaf": leaf.data.decode(),
                    "proof": log.inclusion_proof(leaf.index, size).to_dict()}
                   for leaf in log.flow_leaves(flow_id)],
    }


def _inputs(evidence: dict) -> dict:
    flow = {"flow_id": FLOW_ID, "document_id": "doc-1", "title": TITLE, "state": "completed", "reason": None,
            "parties": [{"person_id": "alice", "role": "出借方"}, {"person_id": "bob", "role": "借款方"}]}
    certificate = {"issuer": "CN=Test Issuing CA", "not_before": "2024-01-01T00:00:00+00:00",
                   "not_after": "2026-01-01T00:00:00+00:00"}
    return dict(
        flow=flow, original_pdf_sha256=ORIGINAL, final_pdf_sha256=FINAL,
        parties=[
            {"person_id": "alice", "name": "张三", "id_number_masked": "1101**********002X",
             "phone_masked": "138****0000", "certificate": dict(certificate, serial="1234")},
            {"person_id": "bob", "name": "李四", "id_number_masked": "3101**********1234",
             "phone_masked": "139****1111", "certificate": dict(certificate, serial="5678")},
        ],
        identity_checks=[
            # identity's report_profile identity_check: Tencent FaceID scores a similarity, the registry a distance
            {"person_id": "alice", "assurance_level": "authority_face_liveness", "provider": "tencent_faceid",
             "request_id": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "score": 87.31, "score_kind": "similarity",
             "threshold": 70, "liveness": "passed", "checked_at": "2024-04-30T09:00:00Z", "account_status": "active"},
            {"person_id": "bob", "assurance_level": "authority_face", "provider": "registry", "request_id": None,
             "score": 0.42, "score_kind": "distance", "threshold": 0.6, "liveness": "not_performed",
             "checked_at": "2024-04-30T10:00:00Z", "account_status": "active"},
        ],
        willingness=[
            {"person_id": "alice", "action": "sign", "method": "sms", "at": "2024-05-01T01:04:00Z",
             "outcome": "passed"},
            {"person_id": "bob", "action": "sign", "method": "face", "at": "2024-05-01T01:59:00Z", "outcome": "passed"},
        ],
        signatures=[
            {"person_id": "alice", "field_name": "Party1", "signed_at": "2024-05-01T01:05:00+00:00",
             "timestamp_time": "2024-05-01T01:05:01+00:00", "tsa": "Test Platform TSA"},
            {"person_id": "bob", "field_name": "Party2", "signed_at": "2024-05-01T02:00:00+00:00",
             "timestamp_time": "2024-05-01T02:00:01+00:00", "tsa": "Test Platform TSA"},
        ],
        evidence=evidence, generated_at=GENERATED, verification_url=URL,
    )


@pytest.fixture(scope="module")
def signer():
    return NoteSigner.generate("esign.test/evidence-log")


@pytest.fixture(scope="module")
def log(signer):
    log = EvidenceLog(MemoryLogStore(), signer)
    _append_flow(log)
    return log


@pytest.fixture(scope="module")
def inputs(log):
    return _inputs(_evidence(log))


@pytest.fixture(scope="module")
def report(inputs):
    return build_report(**inputs)


@pytest.fixture(scope="module")
def pdf(report):
    return render_report_pdf(report)


# --- content ----------------------------------------------------------------------------


def test_report_holds_document_parties_checks_and_events(report, log):
    assert report["document"] == {"title": TITLE, "original_pdf_sha256": ORIGINAL, "final_pdf_sha256": FINAL}
    assert [p["name"] for p in report["parties"]] == ["张三", "李四"]
    assert [p["role"] for p in report["parties"]] == ["出借方", "借款方"]  # taken from the flow
    assert report["parties"][0]["certificate"]["serial"] == "1234"
    assert report["parties"][0]["certificate"]["not_after"] == "2026-01-01T00:00:00Z"
    assert report["version"] == 2
    assert report["identity_checks"][0] == {
        "person_id": "alice", "assurance_level": "authority_face_liveness", "provider": "tencent_faceid",
        "request_id": "8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f", "score": "87.3100", "score_kind": "similarity",
        "threshold": "70.0000", "liveness": "passed", "checked_at": "2024-04-30T09:00:00Z", "account_status": "active"}
    assert report["identity_checks"][1]["score"] == "0.4200"  # a decimal string, not a float
    assert report["identity_checks"][1]["threshold"] == "0.6000"
    assert "id_verified" not in report["identity_checks"][1]
    assert report["dispute"] is None
    assert report["willingness"][1]["method"] == "face"
    assert report["signatures"][1]["timestamp_time"] == "2024-05-01T02:00:01Z"
    assert report["generated_at"] == "2024-05-02T08:30:00Z" and report["verification_url"] == URL
    evidence = report["evidence"]
    assert [e["index"] for e in evidence["events"]] == [1, 3, 5, 7]  # the other flow holds the even leaves
    assert [e["event_type"] for e in evidence["events"]] == ["flow_sent", "party_signed", "party_signed",
                                                             "flow_completed"]
    assert [e["prev_index"] for e in evidence["events"]] == [None, 1, 3, 5]
    assert evidence["tree_size"] == log.size() == 8
    assert evidence["root_hash"] == log.root().hex()
    assert evidence["checkpoint"] == log.checkpoint()
    assert all(len(e["proof"]["hashes"]) == 3 for e in evidence["events"])  # log2(8)
    json.dumps(report)  # JSON-able as it is


def test_build_refuses_a_clear_id_number_anywhere(inputs):
    clear = "11010519491231002X"
    bad = copy.deepcopy(inputs)
    bad["parties"][0]["id_number_masked"] = clear
    with pytest.raises(InvalidInput) as caught:
        build_report(**bad)
    assert caught.value.rule == "clear_personal_data" and clear not in str(caught.value)
    bad = copy.deepcopy(inputs)
    bad["parties"][1]["name"] = f"李四 {clear}"
    with pytest.raises(InvalidInput) as caught:
        build_report(**bad)
    assert caught.value.field == "parties.1.name" and clear not in str(caught.value)
    bad = copy.deepcopy(inputs)
    bad["flow"]["reason"] = f"身份证{clear}"
    with pytest.raises(InvalidInput, match="clear_personal_data"):
        build_report(**bad)


def test_build_refuses_unmasked_phone_and_id(inputs):
    bad = copy.deepcopy(inputs)
    bad["parties"][0]["phone_masked"] = "13800000000"
    with pytest.raises(InvalidInput, match="clear_personal_data"):
        build_report(**bad)
    bad = copy.deepcopy(inputs)
    bad["parties"][0]["id_number_masked"] = "110105-1949-1231"
    with pytest.raises(InvalidInput) as caught:
        build_report(**bad)
    assert caught.value.rule == "masked"


def test_build_refuses_evidence_whose_proof_fails(inputs):
    bad = copy.deepcopy(inputs)
    leaf = bad["evidence"]["leaves"][1]
    leaf["leaf"] = leaf["leaf"].replace('"sms"', '"face"')
    with pytest.raises(IntegrityError, match="inclusion proof"):
        build_report(**bad)


def test_build_refuses_another_flows_leaves(log, inputs):
    bad = copy.deepcopy(inputs)
    bad["evidence"] = _evidence(log, OTHER_FLOW)
    with pytest.raises(IntegrityError, match="another flow"):
        build_report(**bad)


def test_build_refuses_a_tree_size_other_than_the_checkpoints(inputs):
    bad = copy.deepcopy(inputs)
    bad["evidence"]["tree_size"] += 1
    with pytest.raises(IntegrityError, match="tree size"):
        build_report(**bad)


@pytest.mark.parametrize("change, field, rule", [
    ({"assurance_level": "very_sure"}, "identity_checks.1.assurance_level", "allowed_values"),
    ({"assurance_level": None}, "identity_checks.1.assurance_level", "allowed_values"),
    ({"score_kind": "percent"}, "identity_checks.1.score_kind", "allowed_values"),
    ({"score_kind": None}, "identity_checks.1.score_kind", "allowed_values"),  # a score says what it measures
    ({"score": 100.5}, "identity_checks.1.score", "range"),
    ({"score": True}, "identity_checks.1.score", "type"),
    ({"provider": None}, "identity_checks.1.provider", "required"),
])
def test_build_refuses_an_identity_check_it_cannot_state(inputs, change, field, rule):
    bad = copy.deepcopy(inputs)
    bad["identity_checks"][1].update(change)
    with pytest.raises(InvalidInput) as caught:
        build_report(**bad)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_a_self_declared_identity_needs_no_score_or_check_time(inputs):
    ok = copy.deepcopy(inputs)
    ok["identity_checks"][1] = _self_declared("bob")
    check = build_report(**ok)["identity_checks"][1]
    assert check["assurance_level"] == "self_declared"
    assert (check["score"], check["score_kind"], check["threshold"], check["checked_at"]) == (None, None, None, None)


# --- the platform's signature -------------------------------------------------------------


def test_signed_report_verifies_and_names_its_digest(report, signer):
    signed = sign_report(report, signer)
    assert verify_report_signature(json.loads(json.dumps(signed)), signer.verifier.to_key_string()) == report
    text = signed["signature"].split("\n\n")[0]
    assert text == f"esign report v1\n{report_digest(report)}"
    assert report_digest(report) == hashlib.sha256(
        json.dumps(report, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def test_changed_report_fails_its_signature(report, signer):
    signed = sign_report(report, signer)
    signed["report"] = copy.deepcopy(signed["report"])
    signed["report"]["document"]["final_pdf_sha256"] = "0" * 64
    with pytest.raises(ReportSignatureError, match="expected the note to sign report digest"):
        verify_report_signature(signed, signer.verifier.to_key_string())


def test_forged_or_foreign_signature_fails(report, signer):
    signed = sign_report(report, signer)
    stranger = NoteSigner.generate(signer.name)
    with pytest.raises(UnknownKeyError):
        verify_report_signature(signed, stranger.verifier.to_key_string())
    text, sig_line = signed["signature"].split("\n\n")
    forged = sign_report(report, stranger)["signature"].split("\n\n")[1]
    # the stranger's signature bytes under the platform's key name and id
    platform_prefix = sig_line.split(" ")[0] + " " + sig_line.split(" ")[1]
    blob = base64.b64decode(sig_line.split(" ")[2])[:4] + base64.b64decode(forged.split(" ")[2])[4:]
    tampered = dict(signed, signature=f"{text}\n\n{platform_prefix} {base64.b64encode(blob).decode()}\n")
    with pytest.raises(BadSignatureError):
        verify_report_signature(tampered, signer.verifier.to_key_string())


# --- the PDF -----------------------------------------------------------------------------


def _pdftotext(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout


def test_pdf_shows_title_parties_and_hashes(pdf, tmp_path):
    assert pdf.startswith(b"%PDF-")
    text = _pdftotext(pdf, tmp_path)
    for expected in ("签约报告", TITLE, "张三", "李四", "1101**********002X", "138****0000", ORIGINAL, FINAL,
                     "短信验证码", "刷脸", "Test Platform TSA", "已签名检查点", URL):
        assert expected in text, expected
    assert "11010519491231002X" not in text


def test_pdf_shows_each_partys_identity_check(pdf, tmp_path):
    text = _pdftotext(pdf, tmp_path)
    for expected in (AssuranceLevel.AUTHORITY_FACE_LIVENESS.label, AssuranceLevel.AUTHORITY_FACE.label,
                     "腾讯云人脸核身", "请求编号 8f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
                     "87.3100（相似度，阈值 70.0000）", "本地权威库", "0.4200（人脸距离，阈值 0.6000）", "未进行",
                     "2024-04-30 17:00:00 (UTC+8)", "正常"):
        assert expected in text, expected
    assert "警告" not in text  # every identity here was vouched for by an authority, none disputed


def test_pdf_warns_of_a_self_declared_identity(inputs, tmp_path):
    changed = copy.deepcopy(inputs)
    changed["identity_checks"][1] = _self_declared("bob")
    text = _squashed(_pdftotext(render_report_pdf(build_report(**changed)), tmp_path))
    assert "警告：李四（借款方）的身份为自行声明，未经权威机构核验" in text
    assert AssuranceLevel.SELF_DECLARED.label in text
    assert text.count("警告") == 1  # alice's identity was checked by an authority


def test_a_disputed_flows_report_carries_the_dispute_and_warns(inputs, tmp_path):
    changed = copy.deepcopy(inputs)
    changed["flow"]["disputed_identity"] = {"person_id": "bob", "at": "2024-06-01T04:00:00+00:00",
                                            "reason": "identity_taken_over"}
    report = build_report(**changed)
    assert report["dispute"] == {"person_id": "bob", "at": "2024-06-01T04:00:00Z", "reason": "identity_taken_over"}
    text = _squashed(_pdftotext(render_report_pdf(report), tmp_path))
    assert _squashed("警告：签约方李四（借款方）的身份已于2024-06-01 12:00:00 (UTC+8)被认定存在争议") in text
    assert "该身份证号已由经权威核验的本人重新认证" in text
    # the warning comes first, before the document's details
    assert text.index("被认定存在争议") < text.index("文件信息")


def _squashed(text: str) -> str:
    """Text without any white space: a table cell's line breaks fall anywhere."""
    return "".join(text.split())


def test_pdf_is_a4_with_embedded_fonts(pdf, tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    assert "595.276 x 841.89 pts (A4)" in info
    fonts = subprocess.run(["pdffonts", str(path)], check=True, capture_output=True, text=True).stdout
    rows = [line for line in fonts.splitlines()[2:] if line.strip()]
    assert rows and all(" yes " in row for row in rows), fonts  # every font embedded


def test_pdf_bytes_are_the_same_for_the_same_report(report, pdf):
    assert render_report_pdf(copy.deepcopy(report)) == pdf


def test_pdf_bytes_are_the_same_in_another_process(report, pdf, tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(report))
    script = ("import json,sys; from services.signing.report import render_report_pdf; "
              "sys.stdout.buffer.write(render_report_pdf(json.load(open(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "report.json")], check=True,
                         capture_output=True, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[3]))
    assert out.stdout == pdf


def test_pdf_changes_with_the_report(report, pdf):
    other = copy.deepcopy(report)
    other["document"]["title"] = "收据"
    assert render_report_pdf(other) != pdf


@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbarimg (zbar-tools) not installed")
def test_qr_code_opens_the_verification_url(pdf, tmp_path):
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "150", "-png", str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page*.png"))
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", *map(str, pages)],
                             check=False, capture_output=True, text=True).stdout
    assert URL in decoded.splitlines()


def test_pdf_refuses_characters_the_fonts_cannot_draw(report):
    other = copy.deepcopy(report)
    other["parties"][0]["name"] = "张\U000F0000"  # private use: never drawn
    with pytest.raises(InvalidInput) as caught:
        render_report_pdf(other)
    assert caught.value.rule == "glyph_missing" and "U+F0000" in caught.value.message


def test_identifiers_whose_hex_looks_like_a_phone_are_not_personal_data():
    # CI once failed on a leaf whose event_id ended in a hex group like this one
    refuse_clear_personal_data({"leaf": json.dumps({"event_id": "5f0e2c4a-9d1b-4c7e-8a2f-a13912345678"})})
    refuse_clear_personal_data({"note": "request 0x13912345678b"})
    for clear in ("13912345678", "电话13912345678", "+86 13912345678", "tel:13912345678"):
        with pytest.raises(InvalidInput, match="clear_personal_data") as caught:
            refuse_clear_personal_data({"leaf": json.dumps({"note": clear})})
        assert "13912345678" not in str(caught.value)
