"""我的文件 in documents (services/documents/my_files.py) on SQLite: a
person's drafts, never anyone else's and never a document a flow holds, with
what the template says of them, found by the counterparty's name."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.common.listing import ListQuery
from services.common.sealing import Keyring
from services.documents import drafts
from services.documents.catalog import Templates
from services.documents.models import Base, Document
from services.documents.my_files import list_drafts
from tests.support.sqlite import sqlite_session

from .samples import TODAY, iou_values, receipt_values

KEYRING = Keyring({"k1": b"\x02" * 32}, active="k1")
START = datetime(2026, 12, 1, 8, 0)


@pytest.fixture
def session():
    yield from sqlite_session(Base.metadata)


def add(session, catalog, n: int, owner: str, template_id: str = "iou", values: dict | None = None,
        status: str = "draft", locked: bool = False) -> None:
    template = catalog.get(template_id)
    raw = values if values is not None else (iou_values() if template_id == "iou" else receipt_values())
    clean = template.validate(raw, TODAY, complete=False)
    document_id = f"doc-{n:04d}"
    moment = START + timedelta(minutes=n)
    session.add(Document(id=document_id, template_id=template_id, template_version=template.version, status=status,
                         content_sealed=drafts.seal_values(KEYRING, document_id, clean), owner_person_id=owner,
                         created_at=moment, updated_at=moment, locked_at=moment if locked else None))
    session.commit()


def page(session, catalog, person_id: str, **arguments) -> dict:
    return list_drafts(session, KEYRING, Templates(catalog), ListQuery.parse(person_id, **arguments))


def test_a_persons_drafts_newest_first_with_amount_due_date_and_masked_counterparty(session, catalog):
    add(session, catalog, 1, "me")  # 借款方 starts it: the counterparty is the lender
    add(session, catalog, 2, "me", "receipt")
    add(session, catalog, 3, "someone else")
    add(session, catalog, 4, "me", status="locked", locked=True)  # a flow holds it: signing lists it
    items = page(session, catalog, "me")["items"]
    assert [i["id"] for i in items] == ["doc-0002", "doc-0001"]
    iou = items[1]
    assert (iou["status"], iou["title"], iou["my_role"], iou["amount"], iou["due_date"]) == (
        "draft", "借条", "借款人", "10005.00", "2026-04-15")
    assert iou["counterparties"] == [{"role": "出借人", "name": "张*"}]
    assert page(session, catalog, "me", statuses=["to_sign"]) == {"items": [], "more": False}
    assert [i["id"] for i in page(session, catalog, "me", template_id="receipt")["items"]] == ["doc-0002"]


def test_an_incomplete_draft_is_listed_with_what_it_has(session, catalog):
    add(session, catalog, 1, "me", values={"initiator_role": "出借方", "amount": "12"})
    [item] = page(session, catalog, "me")["items"]
    assert item["amount"] == "12.00" and item["due_date"] is None and item["my_role"] == "出借人"
    assert item["counterparties"] == [{"role": "借款人", "name": None}]


def test_search_by_counterparty_name_and_pages(session, catalog):
    for n in range(1, 26):
        lender = {"name": "王小明" if n == 7 else "张三", "id_number": "11010519491231002X", "phone": "13800138000"}
        add(session, catalog, n, "me", values=iou_values(lender=lender))
    assert [i["id"] for i in page(session, catalog, "me", q="小明")["items"]] == ["doc-0007"]
    assert page(session, catalog, "me", q="李")["items"] == []  # 李𠮷 is the borrower: me
    first = page(session, catalog, "me", limit=20)
    second = page(session, catalog, "me", limit=20, before=first["items"][-1]["key"])
    assert first["more"] and not second["more"]
    assert [i["id"] for i in first["items"] + second["items"]] == [f"doc-{n:04d}" for n in range(25, 0, -1)]
