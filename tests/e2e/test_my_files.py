"""我的文件 end to end (issue #13): over HTTP through the gateway process, on
real RabbitMQ, PostgreSQL and SeaweedFS, the lender and the borrower each
find their IOU in their own list with the status they should see at every
step, by the counterparty's name, and open its signed PDF from there."""
from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import urlencode

import pytest

from services.common.clock import today_in_china
from tests.support.stack import BORROWER, LENDER, Http, iou_values, people, signed_iou

pytestmark = pytest.mark.e2e


def files(http: Http, **params) -> dict:
    return http.json("GET", "/me/files" + (f"?{urlencode(params)}" if params else ""))


def only(http: Http, **params) -> dict:
    [item] = files(http, **params)["items"]
    return item


def test_each_party_finds_the_iou_with_its_status_at_every_step(stack):
    lender_id, borrower_id = people(stack)
    lender, borrower = Http(stack, stack.tokens[lender_id]), Http(stack, stack.tokens[borrower_id])

    due = (today_in_china() + timedelta(days=30)).isoformat()
    draft = lender.json("POST", "/documents", {"template_id": "iou", "values": iou_values(amount="3000",
                                                                                       repayment_date=due)},
                        expect=201)
    item = only(lender)
    assert (item["kind"], item["id"], item["status"], item["my_role"]) == ("document", draft["document_id"], "draft",
                                                                          "出借人")
    assert item["amount"] == "3000.00" and item["due_date"] == due
    assert item["counterparties"] == [{"role": "借款人", "name": BORROWER[0][0] + "*"}]
    assert files(borrower)["items"] == []  # a draft is its maker's alone

    lender.json("POST", f"/documents/{draft['document_id']}/render")
    flow = lender.json("POST", "/flows", {"document_id": draft["document_id"],
                                          "parties": [{"role": "出借人"}, {"role": "借款人"}]}, expect=201)
    flow_id = flow["flow_id"]
    # sent: the draft became a flow (listed once), the lender's turn
    item = only(lender)
    assert (item["kind"], item["id"], item["document_id"], item["status"]) == ("flow", flow_id, draft["document_id"],
                                                                               "to_sign")
    assert (only(borrower)["status"], only(borrower)["my_role"]) == ("waiting_others", "借款人")
    assert only(borrower)["counterparties"] == [{"role": "出借人", "name": LENDER[0][0] + "*"}]

    stack.sign(flow_id, lender_id, phone=LENDER[2])
    assert (only(lender)["status"], only(borrower)["status"]) == ("waiting_others", "to_sign")
    assert only(borrower, status="to_sign")["id"] == flow_id
    assert files(lender, status="to_sign")["items"] == []

    stack.sign(flow_id, borrower_id, phone=BORROWER[2])
    assert (only(lender)["status"], only(borrower)["status"]) == ("completed", "completed")

    # found by the counterparty's name (part of it), not by one's own; then opened
    found = only(borrower, q=LENDER[0][1:], status="completed", template="iou")
    assert found["id"] == flow_id and found["amount"] == "3000.00"
    assert files(borrower, q=BORROWER[0])["items"] == []
    status, pdf, headers = borrower.call("GET", f"/flows/{found['flow_id']}/pdf")
    assert status == 200 and pdf.startswith(b"%PDF") and hashlib.sha256(pdf).hexdigest() == headers["X-Content-SHA256"]

    # a second draft: newest first, and a cursor is the lender's own
    second = lender.json("POST", "/documents", {"template_id": "receipt", "values": {"initiator_role": "收款人"}},
                         expect=201)
    page = files(lender, limit=1)
    assert page["items"][0]["id"] == second["document_id"] and page["next_cursor"]
    assert files(lender, limit=1, cursor=page["next_cursor"])["items"][0]["id"] == flow_id
    status, body, _ = borrower.call("GET", f"/me/files?limit=1&cursor={page['next_cursor']}")
    assert status == 422 and b"other_person" in body

    # an IOU past its repayment date and not repaid is overdue, for both, and found so
    late = signed_iou(stack, lender_id, borrower_id, repayment_date=(today_in_china() - timedelta(days=1)).isoformat())
    assert only(borrower, status="overdue")["id"] == late and only(lender, status="overdue")["id"] == late
    assert late not in {i["id"] for i in files(borrower, status="completed")["items"]}
    assert flow_id in {i["id"] for i in files(borrower, status="completed")["items"]}
