"""Drafts outside nameko: sealed values bound to their document, merging,
image fields filled from attachments, masked parties, field paths of the
renderer's errors, the service's keys, and template versions recorded once."""
import datetime as dt
import shutil
from types import SimpleNamespace

import pytest

from services.common.clock import today_in_china
from services.common.database import Database
from services.common.errors import IntegrityError, InvalidInput
from services.common.sealing import Keyring
from services.documents import drafts
from services.documents.catalog import (
    TemplateChanged,
    definition_sha256,
    record_templates,
)
from services.documents.secrets import load_keys
from services.documents.template import TEMPLATES_DIR, load_templates
from services.documents.validation import ValidationFailed

from .samples import BORROWER, HASH_A, LENDER, TODAY, iou_values

KEYRING = Keyring({"k1": b"\x01" * 32}, active="k1")


def test_values_are_sealed_and_bound_to_their_document():
    sealed = drafts.seal_values(KEYRING, "doc-1", {"lender": LENDER})
    assert LENDER["id_number"] not in sealed and "张三" not in sealed
    assert drafts.open_values(KEYRING, "doc-1", sealed) == {"lender": LENDER}
    with pytest.raises(IntegrityError):
        drafts.open_values(KEYRING, "doc-2", sealed)  # copied to another document: does not open
    assert drafts.open_values(KEYRING, "doc-1", None) == {}


def test_merge_replaces_keys_and_null_removes():
    assert drafts.merge_values({"a": 1, "b": 2}, {"b": 3, "a": None, "c": 4}) == {"b": 3, "c": 4}


def test_images_come_only_from_attachments(catalog):
    iou = catalog.get("iou")
    with pytest.raises(ValidationFailed) as refused:
        drafts.refuse_image_values(iou, iou_values())
    assert (refused.value.field, refused.value.rule) == ("images", "attachments_only")
    drafts.refuse_image_values(iou, iou_values(images=[]))
    rows = [SimpleNamespace(field="images", sha256=HASH_A, label="转账截图")]
    merged = drafts.with_attachments(iou, iou_values(images=[{"sha256": "b" * 64}]), rows)
    assert merged["images"] == [{"sha256": HASH_A, "caption": "转账截图"}]
    assert "images" not in drafts.without_images(iou, merged)
    rental = catalog.get("rental")
    assert drafts.images_field_for(rental, None).name == "property_photos"
    assert drafts.images_field_for(rental, "ownership_proof").max_items == 3
    with pytest.raises(InvalidInput) as wrong:
        drafts.images_field_for(rental, "address")
    assert (wrong.value.field, wrong.value.rule) == ("field", "enum")


def test_parties_are_masked_and_a_draft_may_lack_them(catalog):
    iou = catalog.get("iou")
    parties = drafts.masked_parties(iou, {"initiator_role": "借款方", "lender": LENDER})
    assert parties[0] == {"role": "lender", "label": "出借人", "signature_field": "sig_lender", "initiator": False,
                          "name": "张*", "id_number": "1101**********002X", "phone": "138****8000"}
    assert parties[1]["initiator"] is True and parties[1]["name"] is None
    assert drafts.masked_parties(iou, {"borrower": BORROWER})[1]["name"] == "李*"  # 𠮷 is one character


def test_renderer_paths_become_template_fields(catalog):
    iou = catalog.get("iou")
    assert drafts.template_field_path(iou, "parties[1].name") == "borrower.name"
    assert drafts.template_field_path(iou, "remark") == "remark"
    assert drafts.template_field_path(iou, "sections[0].rows[1].value") == "sections[0].rows[1].value"


def test_document_dates():
    assert today_in_china(dt.datetime(2026, 11, 28, 17, 0, tzinfo=dt.timezone.utc)) == dt.date(2026, 11, 29)
    assert drafts.parse_document_date("2026-11-20") == dt.date(2026, 11, 20)
    assert drafts.parse_document_date(None) is None
    with pytest.raises(InvalidInput) as bad:
        drafts.parse_document_date("20.11.2026")
    assert (bad.value.field, bad.value.rule) == ("document_date", "date")


def test_keys_are_generated_once_and_read_back(tmp_path):
    config = {"DATA_DIR": str(tmp_path), "SECRETS": {
        "KEK": {"id": "kek-a", "file": str(tmp_path / "kek")}, "INVITE_KEY": {"file": str(tmp_path / "invite")},
        "GENERATE_MISSING": True}}
    first, second = load_keys(config), load_keys(config)
    assert first.keyring.active_key_id == "kek-a" and len(first.invite_key) == 32
    assert second.keyring.open(first.keyring.seal(b"x")) == b"x" and second.invite_key == first.invite_key
    assert "invite_key=<hidden>" in repr(first)
    config["SECRETS"]["GENERATE_MISSING"] = False
    config["SECRETS"]["INVITE_KEY"] = {"file": str(tmp_path / "missing")}
    with pytest.raises(RuntimeError, match="invite"):
        load_keys(config)


def test_a_template_version_is_recorded_once_and_may_not_change(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    db = Database(f"sqlite:///{tmp_path / 'documents.db'}", None, "documents")
    db.migrate()
    catalog = load_templates(templates)
    with db.session() as session:
        hashes = record_templates(session, catalog)
        assert record_templates(session, catalog) == hashes
    assert hashes[("iou", 1)] == definition_sha256(catalog.get("iou"))
    iou = templates / "iou.v1.yaml"
    iou.write_text(iou.read_text(encoding="utf-8").replace("max_chars: 40", "max_chars: 50"), encoding="utf-8")
    with db.session() as session, pytest.raises(TemplateChanged, match="iou v1"):
        record_templates(session, load_templates(templates))
    db.dispose()


def test_what_lists_show_of_a_template_may_be_added_to_a_recorded_version(tmp_path):
    """``summary`` says how 我的文件 shows a document, not what it says: it is
    outside the recorded definition, so adding it to iou.v1 changes no hash."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    iou = templates / "iou.v1.yaml"
    without = iou.read_text(encoding="utf-8").replace("summary: {amount: amount, due_date: repayment_date}\n", "")
    assert without != iou.read_text(encoding="utf-8")
    iou.write_text(without, encoding="utf-8")
    assert definition_sha256(load_templates(templates).get("iou")) == definition_sha256(load_templates().get("iou"))
    assert load_templates(templates).get("iou").summary(iou_values())["amount"] is None


def test_a_template_summary_names_its_amount_due_date_and_parties(catalog):
    summary = catalog.get("iou").summary(catalog.get("iou").validate(iou_values(), TODAY))
    assert summary == {"amount": "10005.00", "due_date": "2026-04-15",
                       "parties": [{"role": "lender", "label": "出借人", "name": LENDER["name"]},
                                   {"role": "borrower", "label": "借款人", "name": BORROWER["name"]}],
                       "loan": {"principal": "10005.00", "annual_rate": "3.65", "start_date": "2026-01-31",
                                "due_date": "2026-04-15", "method": "monthly_interest", "day_count": "actual/365"}}
    receipt = catalog.get("receipt").summary({})
    assert (receipt["amount"] is None and receipt["due_date"] is None and receipt["loan"] is None
            and [p["name"] for p in receipt["parties"]] == [None, None])
