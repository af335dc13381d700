"""我的文件 in signing (services/signing/my_files.py) on SQLite: the party
index written as flows change, and a person's pages read from it: their
flows only, newest first, each status as they see it, filters, search by
counterparty name, and keyset pages that neither repeat nor skip."""
from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest

from services.common.listing import SEARCH_CHUNK, ListQuery
from services.common.sealing import Keyring
from services.signing import my_files
from services.signing.models import Base, FlowParty, FlowRow
from tests.support.sqlite import sqlite_session

KEYRING = Keyring({"kek-1": os.urandom(32)}, "kek-1")
START = datetime(2026, 12, 1, 8, 0)
LENDER, BORROWER, STRANGER = "person-lender", "person-borrower", "person-stranger"


@pytest.fixture
def session():
    yield from sqlite_session(Base.metadata)


def add_flow(session, n: int, persons=(LENDER, BORROWER), names=("王䶮", "李𠮷"), state="waiting", current=0,
             template="iou", title="借条", amount="2000.00", with_summary=True) -> FlowRow:
    flow_id = f"flow-{n:04d}"
    moment = START + timedelta(minutes=n)
    row = FlowRow(id=flow_id, document_id=f"doc-{n}", document_sha256="0" * 64, title=title, state=state,
                  current_index=current, initiator_person_id=persons[0], expires_at=moment + timedelta(days=3),
                  repayment_date="2027-06-01", void_confirmed_by="[]", current_pdf_key="k", current_pdf_sha256="0" * 64,
                  template_id=template, created_at=moment, updated_at=moment,
                  summary_sealed=my_files.seal_summary(KEYRING, flow_id, {
                      "amount": amount, "due_date": "2027-06-01",
                      "parties": [{"label": "出借人", "name": names[0]}, {"label": "借款人", "name": names[1]}]})
                  if with_summary else None)
    parties = [FlowParty(flow_id=flow_id, position=i, person_id=person, role=role, signature_field=f"sig_{i}")
               for i, (person, role) in enumerate(zip(persons, ("出借人", "借款人"), strict=True))]
    session.add(row)
    session.add_all(parties)
    session.flush()
    my_files.write_index(session, row, parties)
    session.commit()
    return row


def page(session, person_id, **arguments) -> dict:
    return my_files.list_files(session, KEYRING, ListQuery.parse(person_id, **arguments))


def test_each_party_sees_whose_turn_it_is_with_the_counterparty_masked(session):
    add_flow(session, 1)
    [lender_item] = page(session, LENDER)["items"]
    [borrower_item] = page(session, BORROWER)["items"]
    assert (lender_item["status"], borrower_item["status"]) == ("to_sign", "waiting_others")
    assert lender_item["my_role"] == "出借人" and lender_item["counterparties"] == [{"role": "借款人", "name": "李*"}]
    assert borrower_item["counterparties"] == [{"role": "出借人", "name": "王*"}]
    assert (lender_item["amount"], lender_item["due_date"], lender_item["template_id"]) == ("2000.00", "2027-06-01",
                                                                                           "iou")
    assert page(session, STRANGER)["items"] == []


def test_a_change_of_the_flow_moves_it_to_the_top_with_each_party_status(session):
    first = add_flow(session, 1)
    add_flow(session, 2)
    assert [i["id"] for i in page(session, BORROWER)["items"]] == ["flow-0002", "flow-0001"]
    first.current_index, first.updated_at = 1, START + timedelta(hours=1)  # the lender signed
    parties = session.query(FlowParty).filter_by(flow_id=first.id).all()
    my_files.write_index(session, first, parties)
    session.commit()
    top = page(session, BORROWER)["items"][0]
    assert (top["id"], top["status"]) == ("flow-0001", "to_sign")
    assert page(session, LENDER)["items"][0]["status"] == "waiting_others"
    first.state, first.updated_at = "completed", START + timedelta(hours=2)
    my_files.write_index(session, first, parties)
    first.disputed_at = START + timedelta(hours=3)
    assert my_files.party_status(first, 0) == "disputed"
    first.state = "cancelled"
    assert my_files.party_status(first, 0) == "cancelled"
    session.commit()
    assert [i["status"] for i in page(session, LENDER, statuses=["completed"])["items"]] == ["completed"]


def test_pages_follow_each_other_without_repeating_or_skipping(session):
    for n in range(1, 48):
        add_flow(session, n, state="completed" if n % 3 == 0 else "waiting")
    seen, before = [], None
    while True:
        result = page(session, LENDER, limit=10, before=before)
        seen += [item["id"] for item in result["items"]]
        if not result["more"]:
            break
        before = result["items"][-1]["key"]
    assert seen == [f"flow-{n:04d}" for n in range(47, 0, -1)]
    done = page(session, LENDER, statuses=["completed"], limit=100)["items"]
    assert [item["id"] for item in done] == [f"flow-{n:04d}" for n in range(45, 0, -3)]


def test_filters_by_template_and_status(session):
    add_flow(session, 1, template="iou")
    add_flow(session, 2, template="receipt", title="收据")
    add_flow(session, 3, template="iou", state="declined")
    assert [i["id"] for i in page(session, LENDER, template_id="receipt")["items"]] == ["flow-0002"]
    assert [i["id"] for i in page(session, LENDER, statuses=["declined", "to_sign"], template_id="iou")["items"]] == [
        "flow-0003", "flow-0001"]


def test_search_finds_the_counterparty_by_name_never_by_ones_own_and_reads_every_chunk(session):
    for n in range(1, SEARCH_CHUNK + 40):
        names = ("王䶮", "张三丰") if n == 3 else ("王䶮", "李𠮷")
        add_flow(session, n, names=names)
    add_flow(session, 1000, persons=(STRANGER, BORROWER), names=("张三丰", "李𠮷"))  # not the lender's
    found = page(session, LENDER, q="三丰")["items"]
    assert [(i["id"], i["counterparties"][0]["name"]) for i in found] == [("flow-0003", "张**")]
    assert page(session, LENDER, q="王䶮")["items"] == []  # the lender's own name finds nothing
    assert len(page(session, LENDER, q="借条", limit=100)["items"]) == 100  # the title
    # a flow from before summaries were kept is found by its title only, and shows no counterparty
    add_flow(session, 2000, with_summary=False)
    old = page(session, LENDER, limit=1)["items"][0]
    assert (old["id"], old["counterparties"], old["amount"]) == ("flow-2000", [], None)


def test_a_summary_opens_only_for_its_own_flow(session):
    from services.common.errors import IntegrityError

    sealed = my_files.seal_summary(KEYRING, "flow-a", {"amount": "1"})
    assert my_files.open_summary(KEYRING, "flow-a", sealed) == {"amount": "1"}
    with pytest.raises(IntegrityError):
        my_files.open_summary(KEYRING, "flow-b", sealed)
