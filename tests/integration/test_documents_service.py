"""The documents service over real RabbitMQ, PostgreSQL and SeaweedFS:
templates, drafts with sealed values, validation errors that name field and
rule, reproducible PDFs in S3, attachments, the lock when signing starts,
receipt invites, and what a dead S3 leaves behind."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import time

import eventlet
import pytest
from nameko.rpc import rpc as nameko_rpc
from nameko.standalone.rpc import ClusterRpcProxy
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.common import events
from services.common.database import Database
from services.common.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.common.outbox import OUTBOX, envelope
from services.common.storage import ObjectStore, S3Settings
from services.documents.catalog import (
    TemplateChanged,
    definition_sha256,
    record_templates,
)
from services.documents.invite import token_from_url
from services.documents.models import Document, TemplateRecord
from services.documents.service import DocumentsService
from services.documents.template import TEMPLATES_DIR, load_templates
from services.documents.validation import ValidationFailed
from tests.support.flow_events import flow_event
from tests.support.waiting import wait_for
from tests.unit.documents.samples import BORROWER, LENDER, VALID

pytestmark = pytest.mark.integration

#: the parties of the flows whose events are handed to documents
PARTIES = [("p-lender", "出借人"), ("p-borrower", "借款人")]
IMAGE_FIELDS = {"images", "property_photos", "facility_photos", "ownership_proof", "attachments"}


def sample(template_id: str, **changes) -> dict:
    """A template's valid sample values without images (those come by add_attachment)."""
    return {k: v for k, v in VALID[template_id](**changes).items() if k not in IMAGE_FIELDS}


#: the templates only the platform makes, with the dates their samples need on the real day
STATEMENTS = {"iou_repayment": {}, "iou_extension": {"agreed_on": "today", "repayment_date": "today+90d"}}


def jpeg(colour=(200, 30, 30), size=(640, 480)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def pdf_text(pdf: bytes, tmp_path) -> str:
    path = tmp_path / "document.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, dict(service="documents", **labels)) or 0.0


@pytest.fixture
def documents_config(service_config, tmp_path):
    def make(**overrides):
        secrets = tmp_path / "secrets"
        settings = dict(
            SECRETS={"KEK": {"id": "test-kek", "file": str(secrets / "documents-kek")},
                     "INVITE_KEY": {"file": str(secrets / "invite")}, "GENERATE_MISSING": True},
            PUBLIC_URL="https://esign.test/",
            RENDER={"WORKERS": 1},
        )
        settings.update(overrides)
        return service_config("documents", **settings)

    return make


@pytest.fixture
def documents(documents_config, run_container):
    return run_container(DocumentsService, documents_config())


def database_of(container) -> Database:
    cfg = container.config["DATABASE"]
    return Database(cfg["URL"], cfg["SCHEMA"], "documents")


def test_templates_are_listed_and_recorded(documents, rpc_proxy):
    listed = {t["id"]: t for t in rpc_proxy.documents.list_templates()}
    assert set(listed) == {"iou", "receipt", "iou_contract", "rental", "employment"}
    assert [r["id"] for r in listed["iou"]["roles"]] == ["lender", "borrower"]
    assert {f["name"] for f in listed["iou"]["fields"]} >= {"amount", "remark", "annual_rate"}
    db = database_of(documents)
    with db.session() as session:
        rows = {(r.id, r.version): r for r in session.execute(select(TemplateRecord)).scalars()}
    db.dispose()
    # the statements the platform makes (还款确认书, 借款展期协议) are recorded, never offered
    assert set(rows) == {(t, 1) for t in listed} | {("iou_repayment", 1), ("iou_extension", 1)}
    assert rows[("iou", 1)].sha256 == listed["iou"]["sha256"]
    assert json.loads(rows[("iou", 1)].definition)["title"] == "借条"


def test_a_changed_template_file_under_the_same_version_is_refused(documents_config, tmp_path):
    config = documents_config()
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    db = Database(config["DATABASE"]["URL"], config["DATABASE"]["SCHEMA"], "documents")
    db.migrate()
    with db.session() as session:
        record_templates(session, load_templates(templates))
        record_templates(session, load_templates(templates))  # unchanged: accepted again
    receipt = templates / "receipt.v1.yaml"
    receipt.write_text(receipt.read_text(encoding="utf-8").replace("title: 收据", "title: 收条"), encoding="utf-8")
    with db.session() as session, pytest.raises(TemplateChanged) as refused:
        record_templates(session, load_templates(templates))
    db.dispose()
    assert "receipt v1" in str(refused.value) and "receipt.v2.yaml" in str(refused.value)


@pytest.mark.parametrize("template_id", sorted(set(VALID) - set(STATEMENTS)))
def test_every_template_creates_and_renders(template_id, documents, rpc_proxy):
    before = metric("esign_documents_created_total", template=template_id)
    created = rpc_proxy.documents.create_draft(template_id=template_id, values=sample(template_id),
                                               owner_person_id="person-1")
    assert created["status"] == "draft" and created["template_id"] == template_id
    assert metric("esign_documents_created_total", template=template_id) == before + 1
    rendered = rpc_proxy.documents.render(document_id=created["document_id"])
    assert rendered["pages"] >= 1 and len(rendered["pdf_sha256"]) == 64
    assert rendered["pdf_key"] == "pdf/" + rendered["pdf_sha256"]
    assert len(rendered["signature_fields"]) == 2
    assert [p["signature_field"] for p in rendered["parties"]] == rendered["signature_fields"]
    assert sum(p["initiator"] for p in rendered["parties"]) == 1
    document = rpc_proxy.documents.get_document(document_id=created["document_id"])
    assert document["status"] == "rendered" and document["pdf_sha256"] == rendered["pdf_sha256"]
    assert document["locked"] is False and document["owner_person_id"] == "person-1"


@pytest.mark.parametrize("template_id", sorted(STATEMENTS))
def test_a_statement_is_made_and_rendered_at_once_and_only_so(template_id, documents, rpc_proxy):
    """还款确认书 and 借款展期协议: signing makes them (create_statement), not people (create_draft)."""
    from datetime import timedelta

    from services.common.clock import today_in_china

    today = today_in_china()
    days = {"today": today, "today+90d": today + timedelta(days=90)}
    values = sample(template_id, **{k: days[v].isoformat() for k, v in STATEMENTS[template_id].items()})
    with pytest.raises(InvalidInput) as refused:
        rpc_proxy.documents.create_draft(template_id=template_id, values=values, owner_person_id="person-1")
    assert (refused.value.field, refused.value.rule) == ("template_id", "made_by_platform")
    rendered = rpc_proxy.documents.create_statement(template_id=template_id, values=values, owner_person_id="person-1")
    assert rendered["pages"] >= 1 and len(rendered["pdf_sha256"]) == 64
    roles = {"iou_repayment": ["lender"], "iou_extension": ["lender", "borrower"]}[template_id]
    assert [p["role"] for p in rendered["parties"]] == roles  # a 还款确认书 is the lender's alone
    assert rpc_proxy.documents.get_document(document_id=rendered["document_id"])["status"] == "rendered"
    with pytest.raises(InvalidInput) as refused:
        rpc_proxy.documents.create_statement(template_id="iou", values=sample("iou"), owner_person_id="person-1")
    assert refused.value.rule == "statement_template"


def test_iou_pdf_shows_parties_amount_words_and_schedule_and_is_reproducible(documents, rpc_proxy, tmp_path):
    created = rpc_proxy.documents.create_draft(template_id="iou", values=sample("iou"), initiator_role="borrower")
    assert created["initiator_role"] == "borrower"
    document_id = created["document_id"]
    first = rpc_proxy.documents.render(document_id=document_id, document_date="2026-11-20")
    second = rpc_proxy.documents.render(document_id=document_id)
    assert second["document_date"] == "2026-11-20"  # fixed at the first rendering
    assert second["pdf_sha256"] == first["pdf_sha256"]
    pdf_one = rpc_proxy.documents.get_pdf(document_id=document_id)
    pdf = base64.b64decode(pdf_one["pdf"])
    assert hashlib.sha256(pdf).hexdigest() == pdf_one["sha256"] == first["pdf_sha256"]
    assert pdf.startswith(b"%PDF")

    text = pdf_text(pdf, tmp_path)
    for expected in ("借条", LENDER["name"], BORROWER["name"], "10,005.00", "壹万零伍元整", "第1期", "第3期",
                     "按月付息、到期还本", "按期还款", "2026年11月20日"):
        assert expected in text, expected
    fonts = subprocess.run(["pdffonts", str(tmp_path / "document.pdf")], check=True, capture_output=True,
                           text=True).stdout
    hana = [line for line in fonts.splitlines() if "HanaMinA" in line]
    assert hana and all(" yes " in line for line in hana)  # embedded (and subset)

    # a changed value sets the document back to draft; the PDF no longer matches it
    updated = rpc_proxy.documents.update_draft(document_id=document_id, values={"remark": "提前还款"})
    assert updated["status"] == "draft" and updated["pdf_sha256"] is None
    with pytest.raises(NotFound):
        rpc_proxy.documents.get_pdf(document_id=document_id)
    third = rpc_proxy.documents.render(document_id=document_id)
    assert third["pdf_sha256"] != first["pdf_sha256"] and third["document_date"] == "2026-11-20"


def test_validation_errors_name_field_and_rule_over_rpc(documents, rpc_proxy):
    before = metric("esign_document_validation_failures_total", template="iou", rule="max_chars",
                    operation="create")
    with pytest.raises(ValidationFailed) as failed:
        rpc_proxy.documents.create_draft(template_id="iou", values=sample("iou", remark="字" * 41))
    assert isinstance(failed.value, InvalidInput)
    assert (failed.value.field, failed.value.rule) == ("remark", "max_chars")
    assert "41 > 40" in failed.value.message
    assert [(v.field, v.rule) for v in failed.value.violations] == [("remark", "max_chars")]
    assert metric("esign_document_validation_failures_total", template="iou", rule="max_chars",
                  operation="create") == before + 1

    with pytest.raises(ValidationFailed) as failed:
        rpc_proxy.documents.create_draft(template_id="iou", values=sample(
            "iou", amount="-5", annual_rate="13", lender=dict(LENDER, id_number="110105194912310021")))
    rules = {(v.field, v.rule) for v in failed.value.violations}
    assert ("amount", "min") in rules and ("annual_rate", "max") in rules
    assert any(field == "lender.id_number" for field, _ in rules)
    assert "110105194912310021" not in str(failed.value.args)  # the value itself never comes back

    # a draft may be incomplete; rendering needs every required field
    draft = rpc_proxy.documents.create_draft(template_id="iou", values={"lender": LENDER, "remark": "草稿"})
    with pytest.raises(ValidationFailed) as incomplete:
        rpc_proxy.documents.render(document_id=draft["document_id"])
    assert ("borrower", "required") in {(v.field, v.rule) for v in incomplete.value.violations}
    assert rpc_proxy.documents.get_document(document_id=draft["document_id"])["pdf_key"] is None

    with pytest.raises(ValidationFailed) as images:
        rpc_proxy.documents.create_draft(template_id="iou", values=VALID["iou"]())
    assert (images.value.field, images.value.rule) == ("images", "attachments_only")
    with pytest.raises(NotFound):
        rpc_proxy.documents.create_draft(template_id="nothing", values={})
    with pytest.raises(InvalidInput) as role:
        rpc_proxy.documents.create_draft(template_id="iou", values={}, initiator_role="payee")
    assert (role.value.field, role.value.rule) == ("initiator_role", "enum")
    with pytest.raises(InvalidInput) as typed:
        rpc_proxy.documents.create_draft(template_id="iou", values="not a dict")
    assert typed.value.field == "values"


def test_a_character_no_font_draws_is_refused_naming_field_and_character(documents, rpc_proxy):
    values = sample("iou", lender=dict(LENDER, name="张\ue000"))
    created = rpc_proxy.documents.create_draft(template_id="iou", values=values)
    with pytest.raises(InvalidInput) as refused:
        rpc_proxy.documents.render(document_id=created["document_id"])
    assert (refused.value.field, refused.value.rule) == ("lender.name", "glyph_missing")
    assert "U+E000" in refused.value.message
    assert rpc_proxy.documents.get_document(document_id=created["document_id"])["pdf_key"] is None


def test_values_are_sealed_and_persons_masked(documents, rpc_proxy):
    created = rpc_proxy.documents.create_draft(template_id="receipt", values=sample("receipt"))
    document = rpc_proxy.documents.get_document(document_id=created["document_id"])
    payee = next(p for p in document["parties"] if p["role"] == "payee")
    assert (payee["name"], payee["id_number"], payee["phone"]) == ("张*", "1101**********002X", "138****8000")
    assert document["title"] == "收据"
    content = rpc_proxy.documents.get_document_content(document_id=created["document_id"])
    assert content["values"]["payee"] == LENDER and content["violations"] == []
    assert content["content"]["amount"]["words"] == "人民币壹仟肆佰零玖元伍角"

    db = database_of(documents)
    with db.session() as session:
        row = session.get(Document, created["document_id"])
        outbox = [json.loads(p) for p in session.execute(select(OUTBOX.c.payload)).scalars()]
    db.dispose()
    for secret in (LENDER["id_number"], LENDER["phone"], LENDER["name"], BORROWER["id_number"]):
        assert secret not in row.content_sealed
        assert all(secret not in json.dumps(event, ensure_ascii=False) for event in outbox)
    created_events = [e for e in outbox if e["event_type"] == events.DOCUMENT_CREATED]
    assert created_events[-1]["data"] == {"document_id": created["document_id"], "template_id": "receipt"}


def test_attachments_are_stored_in_s3_listed_and_drawn(documents, rpc_proxy, tmp_path):
    created = rpc_proxy.documents.create_draft(template_id="rental", values=sample("rental"))
    document_id = created["document_id"]
    added = rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(), label="客厅")
    assert added["mime"] == "image/jpeg" and (added["width"], added["height"]) == (640, 480)
    assert added["field"] == "property_photos"
    from services.documents.secrets import load_keys

    store = ObjectStore(S3Settings.from_config(documents.config), load_keys(documents.config).keyring)
    stored = store.get("attachments/" + added["sha256"])  # decrypted, and verified against its hash
    raw = store.client.get_object(Bucket=store.bucket, Key="attachments/" + added["sha256"])["Body"].read()
    assert raw[:4] == b"ESL1" and stored not in raw  # the store holds ciphertext only
    assert Image.open(io.BytesIO(stored)).size == (640, 480)
    again = rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(), label="客厅")
    assert again["sha256"] == added["sha256"]  # the same image once

    for n, colour in enumerate([(1, 2, 3), (40, 50, 60), (70, 80, 90)]):
        rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(colour), label=f"产权证明{n}",
                                           field="ownership_proof")
    with pytest.raises(InvalidInput) as full:
        rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg((9, 9, 9)), label="第四张",
                                           field="ownership_proof")
    assert (full.value.field, full.value.rule) == ("ownership_proof", "max_items")
    with pytest.raises(InvalidInput) as not_image:
        rpc_proxy.documents.add_attachment(document_id=document_id,
                                           image=base64.b64encode(b"%PDF-1.7 not an image").decode(), label="x")
    assert (not_image.value.field, not_image.value.rule) == ("image", "image_type")
    with pytest.raises(InvalidInput) as long_label:
        rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(), label="长" * 21)
    assert (long_label.value.field, long_label.value.rule) == ("label", "max_chars")

    document = rpc_proxy.documents.get_document(document_id=document_id)
    assert [a["sha256"] for a in document["attachments"]][0] == added["sha256"]
    assert len(document["attachments"]) == 4
    rendered = rpc_proxy.documents.render(document_id=document_id)
    text = pdf_text(base64.b64decode(rpc_proxy.documents.get_pdf(document_id=document_id)["pdf"]), tmp_path)
    assert added["sha256"][:32] in text and "房屋照片：客厅" in text
    assert rendered["pages"] >= 2


def test_a_document_is_read_only_once_signing_starts(documents, rpc_proxy):
    created = rpc_proxy.documents.create_draft(template_id="iou", values=sample("iou"))
    document_id = created["document_id"]
    rendered = rpc_proxy.documents.render(document_id=document_id)
    rpc_proxy.documents.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=rendered["pdf_sha256"])
    assert rpc_proxy.documents.get_document(document_id=document_id)["locked"]
    with pytest.raises(Conflict) as refused:
        rpc_proxy.documents.update_draft(document_id=document_id, values={"remark": "改"})
    assert refused.value.reason == "document_locked"
    with pytest.raises(Conflict):
        rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(), label="截图")
    with pytest.raises(Conflict):
        rpc_proxy.documents.render(document_id=document_id)
    document = rpc_proxy.documents.get_document(document_id=document_id)
    assert document["status"] == "locked" and document["locked_by_flow"] == "flow-1"
    assert document["pdf_sha256"] == rendered["pdf_sha256"]  # the PDF being signed is kept
    assert rpc_proxy.documents.get_pdf(document_id=document_id)["sha256"] == rendered["pdf_sha256"]


def test_signing_locks_only_the_pdf_it_read_and_releases_a_flow_it_did_not_record(documents, rpc_proxy):
    docs = rpc_proxy.documents
    document_id = docs.create_draft(template_id="iou", values=sample("iou"))["document_id"]
    first = docs.render(document_id=document_id)["pdf_sha256"]
    docs.update_draft(document_id=document_id, values={"remark": "改过"})  # edited after signing read the PDF
    second = docs.render(document_id=document_id)["pdf_sha256"]
    assert first != second
    with pytest.raises(Conflict) as changed:
        docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=first)
    assert changed.value.reason == "document_changed"
    assert docs.lock_for_signing(document_id=document_id, flow_id="flow-1",
                                 pdf_sha256=second)["locked_by_flow"] == "flow-1"
    assert docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=second)  # idempotent
    with pytest.raises(Conflict) as taken:  # a concurrent second start does not take the lock over
        docs.lock_for_signing(document_id=document_id, flow_id="flow-2", pdf_sha256=second)
    assert taken.value.reason == "document_in_flow"
    with pytest.raises(Conflict):
        docs.update_draft(document_id=document_id, values={"remark": "再改"})
    assert docs.release_signing_lock(document_id=document_id, flow_id="flow-2")["released"] is False
    assert docs.get_document(document_id=document_id)["locked"] is True
    # flow-1 was not recorded after all: editable again
    assert docs.release_signing_lock(document_id=document_id, flow_id="flow-1")["released"] is True
    document = docs.get_document(document_id=document_id)
    assert document["locked"] is False and document["status"] == "rendered"
    # once flow-1 has ended (declined, say), a new flow may take the document over
    docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=second)
    assert docs.lock_for_signing(document_id=document_id, flow_id="flow-3", pdf_sha256=second,
                                 ended_flows=["flow-1"])["locked_by_flow"] == "flow-3"


def test_the_lock_answers_the_pdf_it_locked_so_signing_needs_no_get_pdf(documents, rpc_proxy):
    """``with_pdf``: the lock and the PDF in one call (signing's start, one RPC fewer); without
    ``pdf_sha256`` the rendering there now is locked; get_document_content names the rendering its
    content belongs to, which signing passes on."""
    docs = rpc_proxy.documents
    document_id = docs.create_draft(template_id="iou", values=sample("iou"))["document_id"]
    with pytest.raises(NotFound):  # nothing rendered: nothing to lock
        docs.lock_for_signing(document_id=document_id, flow_id="flow-1", with_pdf=True)
    rendered = docs.render(document_id=document_id)["pdf_sha256"]
    assert docs.get_document_content(document_id=document_id)["pdf_sha256"] == rendered
    locked = docs.lock_for_signing(document_id=document_id, flow_id="flow-1", with_pdf=True)
    assert locked["locked_by_flow"] == "flow-1" and locked["sha256"] == rendered
    assert locked["pdf"] == docs.get_pdf(document_id=document_id)["pdf"]
    assert hashlib.sha256(base64.b64decode(locked["pdf"])).hexdigest() == rendered
    again = docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=rendered, with_pdf=True)
    assert again == locked  # idempotent, PDF included
    with pytest.raises(Conflict) as taken:
        docs.lock_for_signing(document_id=document_id, flow_id="flow-2", with_pdf=True)
    assert taken.value.reason == "document_in_flow"


def test_a_declined_or_expired_flow_hands_the_document_back(documents, rpc_proxy, dispatch_as):
    docs = rpc_proxy.documents
    document_id = docs.create_draft(template_id="iou", values=sample("iou"))["document_id"]
    sha = docs.render(document_id=document_id)["pdf_sha256"]
    docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=sha)
    dispatch = dispatch_as("signing")
    # an older flow's end does not unlock what a newer flow holds
    expired = flow_event(events.FLOW_EXPIRED, "flow-0", PARTIES, document_id=document_id)
    dispatch("signing", events.FLOW_EXPIRED, envelope("signing", events.FLOW_EXPIRED, expired))
    eventlet.sleep(1.0)  # handled in milliseconds
    assert docs.get_document(document_id=document_id)["locked"] is True
    declined = flow_event(events.FLOW_DECLINED, "flow-1", PARTIES, document_id=document_id,
                          decliner_person_id="p-borrower", reason="金额不对")
    dispatch("signing", events.FLOW_DECLINED, envelope("signing", events.FLOW_DECLINED, declined))
    assert wait_for(lambda: not docs.get_document(document_id=document_id)["locked"])
    docs.update_draft(document_id=document_id, values={"remark": "金额已改"})  # corrected, to be sent again
    assert docs.get_document(document_id=document_id)["status"] == "draft"


def test_a_flow_cancelled_by_an_identity_dispute_hands_the_document_back(documents, rpc_proxy, dispatch_as):
    docs = rpc_proxy.documents
    document_id = docs.create_draft(template_id="iou", values=sample("iou"))["document_id"]
    sha = docs.render(document_id=document_id)["pdf_sha256"]
    docs.lock_for_signing(document_id=document_id, flow_id="flow-1", pdf_sha256=sha)
    dispatch = dispatch_as("signing")
    cancelled = envelope("signing", events.FLOW_CANCELLED, flow_event(
        events.FLOW_CANCELLED, "flow-1", PARTIES, document_id=document_id, reason="identity_disputed",
        disputed_person_id="p-borrower"))
    dispatch("signing", events.FLOW_CANCELLED, cancelled)
    assert wait_for(lambda: not docs.get_document(document_id=document_id)["locked"])
    assert docs.get_document(document_id=document_id)["status"] == "rendered"
    # a new flow takes it; the cancelled flow's event delivered again does not unlock it
    docs.lock_for_signing(document_id=document_id, flow_id="flow-2", pdf_sha256=sha, ended_flows=["flow-1"])
    dispatch("signing", events.FLOW_CANCELLED, cancelled)
    eventlet.sleep(1.0)  # handled in milliseconds
    assert docs.get_document(document_id=document_id)["locked"] is True


def test_health_is_answered_while_a_render_runs(documents, rpc_proxy, amqp_uri):
    """Rendering runs in a worker process: the service keeps answering meanwhile."""
    created = rpc_proxy.documents.create_draft(template_id="iou", values=sample(
        "iou", start_date="2026-11-01", repayment_date="2036-11-01"))  # 120 monthly rows, several pages
    finished = []

    def render():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as own_proxy:  # one proxy per greenthread
            result = own_proxy.documents.render(document_id=created["document_id"])
        finished.append(time.monotonic())
        return result

    worker = eventlet.spawn(render)
    answered_during = 0
    while not finished:
        assert rpc_proxy.documents.health()["status"] == "ok"
        if not finished:
            answered_during += 1
    result = worker.wait()
    assert result["pages"] >= 3
    assert answered_during >= 1


class StubIdentity:
    """identity's party_details and person_status for two registered people (a neighbour stubbed:
    the real one is in tests/e2e/test_signing_flows.py)."""

    name = "identity"
    people = {"person-7": {"name": "王五", "id_number": "11010519491231002X", "phone": "13800138000"},
              "person-8": {"name": "李四", "id_number": "440524188001010014", "phone": "13900139000"}}

    @nameko_rpc
    def party_details(self, person_id):
        if person_id not in self.people:
            raise NotFound("person", person_id)
        return dict(self.people[person_id])

    @nameko_rpc
    def person_status(self, person_id):
        from services.common.masking import mask_name

        return {"person_id": person_id, "name_masked": mask_name(self.party_details(person_id)["name"])}


class StalledIdentity:
    """identity hanging: it takes the call and never answers in time."""

    name = "identity"

    @nameko_rpc
    def person_status(self, person_id):
        eventlet.sleep(6)  # longer than the bound below; the container waits it out at teardown
        return {"person_id": person_id, "name_masked": "王*"}


def test_a_call_to_a_service_that_hangs_is_answered_unavailable_in_bounded_time(
        documents_config, run_container, rpc_proxy, service_config):
    run_container(DocumentsService, documents_config(RPC_TIMEOUT=1))
    run_container(StalledIdentity, service_config("identity"))
    token = token_from_url(rpc_proxy.documents.make_receipt_invite(person_id="person-7", role="payee")["url"])
    started = time.monotonic()
    with pytest.raises(Unavailable) as hung:
        rpc_proxy.documents.open_receipt_invite(token=token)  # asks identity for the inviter's masked name
    assert hung.value.system == "identity" and "no answer to person_status in 1 s" in str(hung.value)
    assert time.monotonic() - started < 3  # before: it waited for ever, holding the worker


def test_receipt_invites_are_signed_and_expire(documents, rpc_proxy, run_container, service_config, tmp_path):
    run_container(StubIdentity, service_config("identity"))
    invite = rpc_proxy.documents.make_receipt_invite(person_id="person-7", role="payee", ttl_seconds=600)
    assert invite["url"].startswith("https://esign.test/receipts/new?invite=")
    assert invite["qr_svg"].lstrip().startswith("<svg")
    token = token_from_url(invite["url"])
    opened = rpc_proxy.documents.open_receipt_invite(token=token)
    assert opened == {"person_id": "person-7", "role": "payee", "role_label": "收款人", "template_id": "receipt",
                      "expires_at": invite["expires_at"], "inviter_name_masked": "王*"}
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(Forbidden):
        rpc_proxy.documents.open_receipt_invite(token=forged)
    with pytest.raises(InvalidInput) as role:
        rpc_proxy.documents.make_receipt_invite(person_id="person-7", role="lender")
    assert role.value.field == "role"
    with pytest.raises(InvalidInput) as ttl:
        rpc_proxy.documents.make_receipt_invite(person_id="person-7", role="payer", ttl_seconds=0)
    assert (ttl.value.field, ttl.value.rule) == ("ttl_seconds", "range")

    # whoever scans it gets a receipt with both sides filled from the real-name records, and starts it
    values = {"amount": "300", "reason": "定金", "received_at": "2026-11-20T10:00:00", "remark": ""}
    draft = rpc_proxy.documents.create_draft_from_invite(token=token, values=values, owner_person_id="person-8")
    content = rpc_proxy.documents.get_document_content(document_id=draft["document_id"])["values"]
    assert content["payee"] == StubIdentity.people["person-7"] and content["payer"] == StubIdentity.people["person-8"]
    assert content["initiator_role"] == "付款人" and draft["owner_person_id"] == "person-8"
    # the scanner sees the inviter's ID number and phone masked in the PDF it previews and signs
    rpc_proxy.documents.render(document_id=draft["document_id"])
    text = pdf_text(base64.b64decode(rpc_proxy.documents.get_pdf(document_id=draft["document_id"])["pdf"]), tmp_path)
    assert "11010519491231002X" not in text and "13800138000" not in text
    assert "1101**********002X" in text and "138****8000" in text
    assert "440524188001010014" in text  # the scanner's own record, in full
    with pytest.raises(InvalidInput) as own:
        rpc_proxy.documents.create_draft_from_invite(token=token, values=values, owner_person_id="person-7")
    assert (own.value.field, own.value.rule) == ("invite", "own_invite")
    with pytest.raises(InvalidInput) as typed:
        rpc_proxy.documents.create_draft_from_invite(token=token, owner_person_id="person-8",
                                                     values=dict(values, payee={"name": "别人"}))
    assert (typed.value.field, typed.value.rule) == ("values.payee", "from_invite")


def test_a_render_worker_killed_mid_job_fails_that_render_only(documents, rpc_proxy, amqp_uri):
    """Before: after a kill -9 of the render worker every later render answered
    internal_error (BrokenProcessPool for ever) while health said ok."""
    from nameko.standalone.rpc import ClusterRpcProxy

    from tests.support.workers import kill_when_busy, pool_of, worker_pids

    # the rental contract: its render is the longest (about 20 ms), a wider window to kill it in
    document_id = rpc_proxy.documents.create_draft(template_id="rental", values=sample("rental"))["document_id"]
    rpc_proxy.documents.render(document_id=document_id)  # the worker is up
    pool = pool_of(documents, "renderer")
    workers = worker_pids(pool)

    def render_in_flight():
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as own:  # one proxy per greenthread
            return own.documents.render(document_id=document_id)

    in_flight = eventlet.spawn(render_in_flight)
    kill_when_busy(workers)  # mid-render, as the OOM killer would
    with pytest.raises(Unavailable) as failed:
        in_flight.wait()
    assert failed.value.system == "documents.render" and "worker_died" in str(failed.value)
    rendered = rpc_proxy.documents.render(document_id=document_id)  # fresh workers
    assert len(rendered["pdf_sha256"]) == 64
    checks = rpc_proxy.documents.health()["checks"]
    assert checks["workers.documents.render"]["ok"] is True and checks["workers.documents.render"]["replacements"] == 1


def test_an_s3_failure_during_render_leaves_no_pdf_referenced(documents_config, run_container, rpc_proxy, s3):
    config = documents_config()
    config["S3"] = dict(config["S3"], ENDPOINT="http://127.0.0.1:9", MAX_ATTEMPTS=1)  # nothing listens there
    container = run_container(DocumentsService, config)
    assert rpc_proxy.documents.health()["checks"]["storage"]["ok"] is False
    created = rpc_proxy.documents.create_draft(template_id="iou", values=sample("iou"))
    with pytest.raises(Unavailable) as unavailable:
        rpc_proxy.documents.render(document_id=created["document_id"])
    assert unavailable.value.system == "s3"
    document = rpc_proxy.documents.get_document(document_id=created["document_id"])
    assert (document["status"], document["pdf_key"], document["pdf_sha256"]) == ("draft", None, None)
    assert document["document_date"] is None
    db = database_of(container)
    with db.session() as session:
        row = session.get(Document, created["document_id"])
        assert (row.pdf_key, row.pdf_sha256) == (None, None)
    db.dispose()
    assert definition_sha256(load_templates().get("iou")) == document["template_sha256"]


def test_a_render_failing_before_its_commit_leaves_no_pdf_behind(documents, rpc_proxy, monkeypatch):
    """The PDF is stored, then the change does not commit (the database away, the
    process stopped): the object reconciler deletes the file nothing refers to."""
    from datetime import timedelta

    from nameko.testing.services import entrypoint_hook

    from services.common.object_intents import OBJECT_INTENTS
    from services.common.outbox import UnitOfWork
    from services.documents.secrets import load_keys

    store = ObjectStore(S3Settings.from_config(documents.config), load_keys(documents.config).keyring)
    db = database_of(documents)

    def intents() -> list:
        with db.session() as session:
            return session.execute(select(OBJECT_INTENTS)).all()

    document_id = rpc_proxy.documents.create_draft(template_id="iou", values=sample("iou"))["document_id"]
    emit = UnitOfWork.emit

    def database_gone(self, event_type, payload):  # after the PDF is stored, before the commit
        if event_type == events.DOCUMENT_UPDATED and payload.change == "rendered":
            raise Unavailable("database", "gone")
        return emit(self, event_type, payload)

    monkeypatch.setattr(UnitOfWork, "emit", database_gone)
    with pytest.raises(Unavailable):
        rpc_proxy.documents.render(document_id=document_id)
    monkeypatch.undo()
    assert rpc_proxy.documents.get_document(document_id=document_id)["pdf_key"] is None
    [intent] = intents()
    assert intent.owner_id == document_id and intent.object_key.startswith("pdf/")
    assert store.exists(intent.object_key)
    assert rpc_proxy.documents.reconcile_objects_now() == \
        {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}  # younger than the grace period: maybe running
    with db.session() as session:  # ten minutes later, the reconciler's timer (one replica: a lease)
        session.execute(OBJECT_INTENTS.update().values(created_at=OBJECT_INTENTS.c.created_at - timedelta(minutes=11)))
        session.commit()
    removed_before = metric("esign_orphan_objects_removed_total")
    with entrypoint_hook(documents, "reconcile_objects") as reconcile:
        assert reconcile() == 1
    assert metric("esign_orphan_objects_removed_total") == removed_before + 1
    assert not store.exists(intent.object_key) and intents() == []

    rendered = rpc_proxy.documents.render(document_id=document_id)  # the same bytes again, committed this time
    assert rendered["pdf_key"] == intent.object_key and intents() == []
    added = rpc_proxy.documents.add_attachment(document_id=document_id, image=jpeg(), label="借条照片")
    assert intents() == []  # the image and its thumbnail: both intents settled by the commit
    assert rpc_proxy.documents.reconcile_objects_now(older_than_seconds=0)["removed"] == 0
    assert store.get("attachments/" + added["sha256"])
    assert store.exists(intent.object_key)
    db.dispose()
