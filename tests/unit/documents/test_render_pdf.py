"""PDF rendering, checked with the tools a reader of the PDF would use:
poppler (pdftotext, pdffonts, pdfinfo, pdfimages) and pyHanko."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PIL import Image
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko_certvalidator.registry import SimpleCertificateStore

from services.common.errors import InvalidInput
from services.documents.attachments import sanitize_image
from services.documents.rendering import DocumentContent, Party, Section, pdf_id_for, render_pdf
from services.documents.rendering.examples import iou_example, rental_example

ROOT = Path(__file__).resolve().parents[3]


def run(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def iou_pdf() -> bytes:
    return render_pdf(iou_example())


@pytest.fixture(scope="module")
def rental_pdf() -> bytes:
    return render_pdf(rental_example())


def test_text_layer_has_parties_amount_words_and_schedule(iou_pdf, tmp_path):
    text = run("pdftotext", "-enc", "UTF-8", write(tmp_path, "iou.pdf", iou_pdf), "-")
    for expected in ("借条", "出借方", "借款方", "王䶮", "李𠮷祥", "1101**********002X", "138****1234",
                     "¥10,005.00", "（大写）", "人民币壹万零伍元整", "家庭装修",
                     "还款计划", "2025-03-01", "345.17", "10,350.17", "实际天数/365",
                     "现金交付，双方确认无误。", "IOU-2024-000123", "第 1 页，共 1 页"):
        assert expected in text, expected


def test_cjk_font_is_embedded_and_no_font_is_not(iou_pdf, tmp_path):
    lines = run("pdffonts", write(tmp_path, "iou.pdf", iou_pdf)).splitlines()[2:]
    assert lines, "no fonts listed"
    assert any("HanaMinA" in line for line in lines)
    for line in lines:
        emb, sub = line.split()[-5:-3]
        assert (emb, sub) == ("yes", "yes"), line


def test_a_character_only_the_fallback_face_has_is_embedded_from_it(tmp_path):
    pdf = render_pdf(iou_example(borrower_name="孙𫝀"))
    path = write(tmp_path, "fallback.pdf", pdf)
    assert "HanaMinB" in run("pdffonts", path)
    assert "孙𫝀" in run("pdftotext", "-enc", "UTF-8", path, "-")


def test_pdf_is_a4_with_document_date_and_title(iou_pdf, tmp_path):
    info = run("pdfinfo", "-isodates", write(tmp_path, "iou.pdf", iou_pdf))
    assert "595.276 x 841.89 pts (A4)" in info
    assert "2024-03-01T00:00:00+08" in info  # CreationDate is the document date, not the clock
    assert "借条" in info


def test_empty_signature_fields_are_named_per_party_on_the_last_page(rental_pdf):
    reader = PdfFileReader(io.BytesIO(rental_pdf))
    found = list(fields.enumerate_sig_fields(reader))
    assert [name for name, _, _ in found] == ["sig_landlord", "sig_tenant"]
    assert all(value is None for _, value, _ in found), "fields must be empty before signing"
    last_page = reader.root["/Pages"]["/Kids"][-1]
    assert reader.root["/Pages"]["/Count"] >= 2
    for _, _, ref in found:
        widget = ref.get_object()
        assert widget["/FT"] == "/Sig" and widget["/Subtype"] == "/Widget"
        assert widget["/P"] == last_page
        x0, y0, x1, y1 = (float(v) for v in widget["/Rect"])
        assert 0 < x0 < x1 < 595.3 and 0 < y0 < y1 < 841.9
        assert x1 - x0 > 150 and y1 - y0 > 60  # room for a handwritten signature


def test_same_content_gives_same_bytes(iou_pdf):
    assert render_pdf(iou_example()) == iou_pdf


def test_same_bytes_in_separate_processes(iou_pdf):
    script = (
        "import hashlib, sys\n"
        "from services.documents.rendering import render_pdf\n"
        "from services.documents.rendering.examples import iou_example\n"
        "sys.stdout.write(hashlib.sha256(render_pdf(iou_example())).hexdigest())\n"
    )
    # another hash seed than this process's: set/dict order must not leak into the bytes (this
    # process's own is random, unless PYTHONHASHSEED fixes it: the other process's differs from it)
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    running = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, PYTHONHASHSEED=seed),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    answers = [process.communicate(timeout=120) for process in running]
    assert [process.returncode for process in running] == [0], [err[-800:] for _, err in answers]
    assert {out for out, _ in answers} == {hashlib.sha256(iou_pdf).hexdigest()}


def test_pdf_id_derives_from_the_content(iou_pdf):
    content = iou_example()
    trailer_id = PdfFileReader(io.BytesIO(iou_pdf)).trailer["/ID"]
    expected = hashlib.sha256(content.canonical_bytes()).digest()[:16]
    assert [bytes(part.original_bytes) for part in trailer_id] == [expected, expected]
    changed = dataclasses.replace(content, remark="另付利息。")
    assert pdf_id_for(changed) != pdf_id_for(content)
    assert render_pdf(changed) != iou_pdf


def test_schedule_runs_over_pages_with_every_row_and_page_totals(rental_pdf, tmp_path):
    path = write(tmp_path, "rent.pdf", rental_pdf)
    pages = int(next(line for line in run("pdfinfo", path).splitlines() if line.startswith("Pages:")).split()[1])
    assert pages >= 2
    per_page = [run("pdftotext", "-enc", "UTF-8", "-f", str(n), "-l", str(n), path, "-") for n in range(1, pages + 1)]
    text = "".join(per_page)
    for n in range(1, 37):
        assert f"\n{n}\n" in text or f" {n} " in text
    assert "2026-12-05" in text
    for n, page in enumerate(per_page, start=1):
        assert f"第 {n} 页，共 {pages} 页" in page
    # the schedule header repeats on every page the schedule continues on
    schedule_pages = [p for p in per_page if re.search(r"20\d\d-\d\d-05", p)]
    assert len(schedule_pages) >= 2
    assert all("付款日" in p for p in schedule_pages)


def test_attachment_thumbnails_are_drawn_and_hashes_listed(tmp_path):
    photos = []
    for colour in ((200, 30, 30), (30, 30, 200)):
        buf = io.BytesIO()
        Image.new("RGB", (900, 600), colour).save(buf, "JPEG")
        photos.append(sanitize_image(buf.getvalue()))
    content = rental_example(months=3, photos=tuple(p.thumbnail_jpeg for p in photos))
    content = dataclasses.replace(content, attachments=tuple(
        dataclasses.replace(a, sha256=p.sha256) for a, p in zip(content.attachments, photos, strict=True)))
    path = write(tmp_path, "photos.pdf", render_pdf(content))
    images = run("pdfimages", "-list", path).splitlines()[2:]
    assert len(images) == 2
    assert all(line.split()[2] == "image" and line.split()[8] == "jpeg" for line in images)
    text = run("pdftotext", "-enc", "UTF-8", path, "-").replace("\n", "")
    for photo in photos:
        assert photo.sha256[:32] in text and photo.sha256[32:] in text


def _self_signed_signer() -> signers.SimpleSigner:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "测试签署人")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore(),
    )


def test_signing_fills_a_field_and_leaves_page_content_alone(iou_pdf):
    writer = IncrementalPdfFileWriter(io.BytesIO(iou_pdf))
    out = signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="sig_lender"),
                           signer=_self_signed_signer(), existing_fields_only=True)
    signed = out.getvalue()
    assert signed.startswith(iou_pdf)  # an incremental update: the original bytes stay
    reader = PdfFileReader(io.BytesIO(signed))
    status = {name: value is not None for name, value, _ in fields.enumerate_sig_fields(reader)}
    assert status == {"sig_lender": True, "sig_borrower": False}
    before = PdfFileReader(io.BytesIO(iou_pdf))
    for page_before, page_after in zip(before.root["/Pages"]["/Kids"], reader.root["/Pages"]["/Kids"], strict=True):
        assert page_before.get_object()["/Contents"].data == page_after.get_object()["/Contents"].data


def test_glyph_missing_names_the_field_and_the_characters():
    content = iou_example(borrower_name="李\U00030000")
    with pytest.raises(InvalidInput) as caught:
        render_pdf(content)
    assert (caught.value.field, caught.value.rule) == ("parties[1].name", "glyph_missing")
    assert "U+30000 \U00030000" in caught.value.message


def test_glyph_missing_in_a_section_value():
    content = iou_example()
    bad = dataclasses.replace(content.sections[0], rows=(("借款金额", "¥1\u200b0"),))
    with pytest.raises(InvalidInput) as caught:
        render_pdf(dataclasses.replace(content, sections=(bad,)))
    assert (caught.value.field, caught.value.rule) == ("sections[0].rows[0].value", "glyph_missing")
    assert "U+200B" in caught.value.message


@pytest.mark.parametrize("change, field, rule", [
    (lambda c: dataclasses.replace(c, parties=()), "parties", "required"),
    (lambda c: dataclasses.replace(
        c, parties=(c.parties[0], dataclasses.replace(c.parties[1], signature_field="sig_lender"))),
     "parties[1].signature_field", "unique"),
    (lambda c: dataclasses.replace(c, parties=(dataclasses.replace(c.parties[0], signature_field="sig.lender"),)),
     "parties[0].signature_field", "field_name"),
    (lambda c: dataclasses.replace(c, schedule=dataclasses.replace(c.schedule, rows=(("1", "2025-03-01"),))),
     "schedule.rows[0]", "columns"),
])
def test_structure_rules(change, field, rule):
    with pytest.raises(InvalidInput) as caught:
        render_pdf(change(iou_example()))
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_attachment_rules():
    content = rental_example(months=1)
    bad_hash = dataclasses.replace(content.attachments[0], sha256="AB" * 32)
    with pytest.raises(InvalidInput) as caught:
        render_pdf(dataclasses.replace(content, attachments=(bad_hash,)))
    assert (caught.value.field, caught.value.rule) == ("attachments[0].sha256", "sha256")
    not_jpeg = dataclasses.replace(content.attachments[0], thumbnail_jpeg=b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InvalidInput) as caught:
        render_pdf(dataclasses.replace(content, attachments=(not_jpeg,)))
    assert (caught.value.field, caught.value.rule) == ("attachments[0].thumbnail_jpeg", "jpeg")


def test_json_form_round_trips_including_thumbnails():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 10)).save(buf, "JPEG")
    content = rental_example(months=2, photos=(buf.getvalue(),))
    assert DocumentContent.from_dict(content.to_dict()) == content


@pytest.mark.parametrize("mutate, field, rule", [
    (lambda d: d.pop("title"), "title", "required"),
    (lambda d: d.update(document_date="2024/03/01"), "document_date", "date"),
    (lambda d: d["parties"][0].update(name=7), "parties[0].name", "type"),
    (lambda d: d["sections"][0]["rows"].append(["only label"]), "sections[0].rows[6]", "columns"),
])
def test_json_form_errors_name_the_field(mutate, field, rule):
    data = iou_example().to_dict()
    mutate(data)
    with pytest.raises(InvalidInput) as caught:
        DocumentContent.from_dict(data)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_single_party_document_renders_one_field():
    content = dataclasses.replace(iou_example(), parties=(Party("收款人", "周一", "", "", "sig_payee"),),
                                  sections=(Section("收款信息", rows=(("收款事由", "租金"),)),), schedule=None)
    found = list(fields.enumerate_sig_fields(PdfFileReader(io.BytesIO(render_pdf(content)))))
    assert [name for name, _, _ in found] == ["sig_payee"]


def test_the_renderers_own_words_are_covered_by_the_fonts():
    from services.common.fonts import coverage_check
    from services.documents.rendering.pdf import LABELS
    from services.documents.rendering.signature_fields import SIGNATURE_LABEL, SIGNATURE_TOOLTIP
    words = [SIGNATURE_LABEL, SIGNATURE_TOOLTIP]
    for value in LABELS.values():
        words += list(value) if isinstance(value, tuple) else [value]
    assert coverage_check("".join(words)) == []


def test_a_long_party_name_stays_inside_its_signature_box(tmp_path):
    long_name = "北京某某科技发展有限公司法定代表人授权代理人张三"
    content = iou_example(lender_name=long_name)
    path = write(tmp_path, "long.pdf", render_pdf(content))
    # -bbox gives word boxes; the label must end left of the second box's start
    boxes = run("pdftotext", "-enc", "UTF-8", "-bbox", path, "-")
    reader = PdfFileReader(open(path, "rb"))
    rects = {name: [float(v) for v in ref.get_object()["/Rect"]]
             for name, _, ref in fields.enumerate_sig_fields(reader)}
    lender_right = rects["sig_lender"][2]
    label_words = [line for line in boxes.splitlines() if "张三" in line and "xMax" in line]
    assert label_words, boxes[:500]
    x_max = max(float(line.split('xMax="')[1].split('"')[0]) for line in label_words)
    assert x_max <= lender_right + 3 * 2.835  # within the box (field inset by 3 mm padding)
