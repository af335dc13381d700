"""A signed IOU's life end to end (issue #13): over HTTP through the gateway
process, on real RabbitMQ, PostgreSQL and SeaweedFS, the lender confirms a
repayment in two parts and the borrower proposes an extension the lender
accepts. Each statement is its own signed PDF (pyHanko-verified offline with
its report), each becomes a leaf of the IOU's flow in the evidence log under
a witnessed checkpoint, 我的文件 follows (completed → part_repaid → repaid),
and notify's reminders move with the extension and end with the repayment.
The refusals the issue lists answer by field and rule, and a void by mutual
consent ends it as before."""
from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from services.common.clock import today_in_china
from services.common.database import Database
from services.notify.models import Reminder
from services.signing.offline_verify import verify_offline
from tests.support.stack import BORROWER, LENDER, Http, people, signed_iou
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def refused(http: Http, path: str, body: dict) -> dict:
    status, content, _ = http.call("POST", path, body)
    assert 400 <= status < 500, (status, content)
    return dict(json.loads(content)["error"], status=status)


def my_status(http: Http, flow_id: str) -> str:
    [item] = [i for i in http.json("GET", "/me/files?" + urlencode({"template": "iou"}))["items"]
              if i["id"] == flow_id]
    return item["status"]


def reminders(stack, flow_id: str) -> list[Reminder]:
    config = stack.notify_config["DATABASE"]
    database = Database(config["URL"], config["SCHEMA"], "notify")
    try:
        with database.session() as session:
            return list(session.execute(select(Reminder).where(Reminder.flow_id == flow_id)).scalars())
    finally:
        database.dispose()


def scheduled(stack, flow_id: str) -> dict[str, set[str]]:
    """The reminders still to go, by kind: the days they speak about."""
    found: dict[str, set[str]] = {}
    for reminder in reminders(stack, flow_id):
        if reminder.status == "scheduled":
            found.setdefault(reminder.kind, set()).add(json.loads(reminder.params)["due_date"])
    return found


def verified(stack, flow_id: str, root_pem: str) -> dict:
    """The flow's report, checked offline with its signed PDF: answers the report."""
    made = stack.rpc.signing.report(flow_id=flow_id)
    pdf = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    witnesses = [w.key for w in stack.witnesses]
    result = verify_offline(pdf, [root_pem.encode()], report=made["report"],
                            log_public_key=stack.rpc.signing.log_public_key()["public_key"], witness_keys=witnesses)
    assert result.ok, result.problems
    return made["report"]["report"]


def test_two_part_repayment_and_an_extension_each_signed_logged_and_followed(stack):
    lender_id, borrower_id = people(stack)
    lender, borrower = Http(stack, stack.tokens[lender_id]), Http(stack, stack.tokens[borrower_id])
    today = today_in_china()
    due = today + timedelta(days=30)
    flow_id = signed_iou(stack, lender_id, borrower_id, amount="3000", repayment_date=due.isoformat())
    assert my_status(lender, flow_id) == my_status(borrower, flow_id) == "completed"
    loan = borrower.json("GET", f"/flows/{flow_id}/loan")
    assert (loan["state"], loan["principal_outstanding"], loan["repayment_date"]) == ("active", "3000.00",
                                                                                     due.isoformat())
    # notify planned the reminders of the agreed date, the overdue ones after it included
    assert wait_for(lambda: scheduled(stack, flow_id).get("due_today") == {due.isoformat()})
    assert scheduled(stack, flow_id)["overdue"] == {due.isoformat()}

    repayments = f"/flows/{flow_id}/repayments"
    # refusals: only the lender confirms, never above what is owed nor on a future day
    assert refused(borrower, repayments, {"amount": "100", "date": today.isoformat(), "method": "现金"})[
        "message"] == "lender_only"
    above = refused(lender, repayments, {"amount": "3000.01", "date": today.isoformat(), "method": "现金"})
    assert (above["field"], above["rule"]) == ("amount", "not_above_outstanding")
    future = refused(lender, repayments, {"amount": "100", "date": (today + timedelta(days=1)).isoformat(),
                                          "method": "现金"})
    assert (future["field"], future["rule"]) == ("date", "not_in_future")

    # -- the first part: a 还款确认书 the lender alone signs
    first = lender.json("POST", repayments, {"amount": "1000", "date": today.isoformat(), "method": "微信转账"},
                        expect=201)
    assert first["parent_flow_id"] == flow_id and first["statement"] == "repayment"
    assert [p["person_id"] for p in first["parties"]] == [lender_id] and first["next_person_id"] == lender_id
    assert refused(lender, repayments, {"amount": "1", "date": today.isoformat(), "method": "现金"})[
        "message"] == "statement_pending"  # one change at a time
    assert stack.sign(first["flow_id"], lender_id, phone=LENDER[2])["state"] == "completed"
    loan = lender.json("GET", f"/flows/{flow_id}/loan")
    assert (loan["state"], loan["principal_outstanding"], loan["repaid_total"]) == ("part_repaid", "2000.00",
                                                                                   "1000.00")
    assert my_status(lender, flow_id) == my_status(borrower, flow_id) == "part_repaid"
    # the borrower reads the lender's statement about their IOU
    status, pdf, _ = borrower.call("GET", f"/flows/{first['flow_id']}/pdf")
    assert status == 200 and pdf.startswith(b"%PDF")

    # -- the extension: the borrower proposes, the lender accepts, both by signing the 借款展期协议
    extensions = f"/flows/{flow_id}/extensions"
    too_early = refused(borrower, extensions, {"repayment_date": today.isoformat()})
    assert (too_early["field"], too_early["rule"]) == ("repayment_date", "after_today")
    over_cap = refused(borrower, extensions, {"repayment_date": (due + timedelta(days=30)).isoformat(),
                                              "annual_rate": "25"})
    assert over_cap["field"] == "annual_rate" and "rate_cap" in {v["rule"] for v in over_cap["violations"]}
    new_due = due + timedelta(days=30)
    extension = borrower.json("POST", extensions, {"repayment_date": new_due.isoformat()}, expect=201)
    assert [p["person_id"] for p in extension["parties"]] == [borrower_id, lender_id]
    stack.sign(extension["flow_id"], borrower_id, phone=BORROWER[2])
    assert stack.sign(extension["flow_id"], lender_id, phone=LENDER[2])["state"] == "completed"
    moved = borrower.json("GET", f"/flows/{flow_id}")
    assert moved["repayment_date"] == new_due.isoformat() and moved["state"] == "completed"
    # the reminders follow the moved date: the old day's are cancelled, the new day's planned
    assert wait_for(lambda: scheduled(stack, flow_id).get("due_today") == {new_due.isoformat()})
    assert scheduled(stack, flow_id)["overdue"] == {new_due.isoformat()}
    said = f"{new_due.year}年{new_due.month}月{new_due.day}日"  # as the SMS shows a date
    assert wait_for(lambda: [m["params"]["due_date"] for m in stack.sms() if m["template"] == "loan_extended"]
                    == [said] * 2)

    # -- the rest: repaid; its reminders end; nothing more can be confirmed
    second = lender.json("POST", repayments, {"amount": "2000", "date": today.isoformat(), "method": "银行转账"},
                         expect=201)
    stack.sign(second["flow_id"], lender_id, phone=LENDER[2])
    loan = borrower.json("GET", f"/flows/{flow_id}/loan")
    assert (loan["state"], loan["outstanding"], len(loan["repayments"]), len(loan["extensions"])) == (
        "repaid", "0.00", 2, 1)
    assert my_status(lender, flow_id) == my_status(borrower, flow_id) == "repaid"
    assert [i["id"] for i in borrower.json("GET", "/me/files?status=repaid")["items"]] == [flow_id]
    assert refused(lender, repayments, {"amount": "1", "date": today.isoformat(), "method": "现金"})[
        "message"] == "loan_repaid"
    assert wait_for(lambda: not scheduled(stack, flow_id))
    assert wait_for(lambda: [m["template"] for m in stack.sms()].count("loan_repaid") == 2)

    # -- the evidence: each statement is a leaf of the IOU's flow naming its signed PDF, with its proof;
    # each statement's own flow verifies with its report, as any signed document does
    root_pem = stack.rpc.identity.pki_certificates()["root_pem"]
    report = verified(stack, flow_id, root_pem)
    logged = [(e["event_type"], json.loads(e["leaf"]).get("statement_flow_id")) for e in report["evidence"]["events"]]
    assert [entry for entry in logged if entry[0].startswith("loan_")] == [
        ("loan_repayment_recorded", first["flow_id"]), ("loan_extended", extension["flow_id"]),
        ("loan_repaid", second["flow_id"])]
    for statement in (first, extension, second):
        own = verified(stack, statement["flow_id"], root_pem)
        leaf = next(json.loads(e["leaf"]) for e in report["evidence"]["events"]
                    if json.loads(e["leaf"]).get("statement_flow_id") == statement["flow_id"])
        assert leaf["statement_sha256"] == own["document"]["final_pdf_sha256"]
    # a void by mutual consent stays as it is; a voided IOU takes no statement
    stack.void_action(stack.rpc.signing.request_void, lender_id, LENDER[2], flow_id=flow_id, reason="双方另行结清")
    stack.void_action(stack.rpc.signing.confirm_void, borrower_id, BORROWER[2], flow_id=flow_id)
    assert refused(lender, repayments, {"amount": "1", "date": today.isoformat(), "method": "现金"})[
        "message"] == "flow_voided"
    assert refused(borrower, extensions, {"repayment_date": (new_due + timedelta(days=9)).isoformat()})[
        "message"] == "flow_voided"
    assert my_status(borrower, flow_id) == "voided"
