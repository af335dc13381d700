"""The evidence log does not rest on the platform's word: two independent
witnesses (each its own ``esign witness run`` process, its own key and state)
cosign its checkpoints, and ``esign verify`` requires their cosignatures.

The attack it stops: the operator rebuilds the signing database's log with
one leaf changed (here, someone else's receipt) and re-signs everything with
the log key. The witnesses still hold the tree they cosigned, so they refuse
the rewritten one (422 to its consistency proof): a report made afterwards
carries a checkpoint with no cosignature, and ``esign verify`` says "not
witnessed" and fails, where the same check on the report made before the
rewrite passes."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from sqlalchemy import text

from services.common.database import Database
from services.signing.dependencies import load_keys
from services.signing.evidence_log import EvidenceLog, SqlLogStore
from tests.support.stack import BORROWER, LENDER, REPO, party, people, signed_iou
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def esign_verify(stack, tmp_path, name: str, pdf: bytes, report: dict) -> subprocess.CompletedProcess:
    (tmp_path / f"{name}.pdf").write_bytes(pdf)
    (tmp_path / f"{name}.json").write_text(json.dumps(report, ensure_ascii=False), "utf-8")
    (tmp_path / "root.pem").write_text(stack.rpc.identity.pki_certificates()["root_pem"])
    keys = [arg for w in stack.witnesses for arg in ("--witness-key", w.key)]
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "verify", "--root", str(tmp_path / "root.pem"),
         "--log-key", stack.rpc.signing.log_public_key()["public_key"], "--report", str(tmp_path / f"{name}.json"),
         *keys, "--witness-threshold", "2", str(tmp_path / f"{name}.pdf")],
        cwd=REPO, capture_output=True, text=True, timeout=120)


def rewrite_log(stack, changed_flow: str) -> None:
    """What a dishonest operator with the database and the log key can do:
    rebuild the log with one leaf of ``changed_flow`` altered, and re-sign (the
    reports kept from before the rewrite are dropped: they would give it away)."""
    cfg = stack.signing_config["DATABASE"]
    database = Database(cfg["URL"], cfg["SCHEMA"], "signing")
    with database.session() as session:
        rows = session.execute(text("SELECT leaf_data FROM log_leaves ORDER BY leaf_index")).scalars().all()
        for table in ("log_checkpoints", "log_nodes", "log_leaves", "log_head"):
            session.execute(text(f"DELETE FROM {table}"))
        session.execute(text("DELETE FROM stored_objects WHERE kind IN ('report_json', 'report_pdf')"))
        session.commit()
    log = EvidenceLog(SqlLogStore(database.sessionmaker), load_keys(stack.signing_config).log_signer)
    for raw in rows:
        record = json.loads(bytes(raw))
        record.pop("prev_index", None), record.pop("version", None)  # the log fills these in again
        if record["flow_id"] == changed_flow and record["event_type"] == "flow_sent":
            record["document_hash"] = "0" * 64  # another document than the parties saw
        log.append(record)
    database.dispose()


def test_a_log_rewritten_behind_the_witnesses_back_is_not_witnessed(stack, tmp_path):
    lender, borrower = people(stack)
    flow_id = signed_iou(stack, lender, borrower, amount="6000", purpose="生产经营需要", annual_rate="4",
                         repayment_date="2027-11-01")
    pdf = base64.b64decode(stack.rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
    honest = stack.rpc.signing.report(flow_id=flow_id)["report"]
    before = esign_verify(stack, tmp_path, "before", pdf, honest)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "✓ witnesses: 2 of 2 configured witnesses cosigned" in before.stdout

    receipt = stack.document("receipt", {
        "initiator_role": "付款人", "payee": party(LENDER), "payer": party(BORROWER), "amount": "50",
        "reason": "其他", "received_at": "2026-11-28T09:30:00", "remark": ""})
    other = stack.start(receipt, [(borrower, "payer"), (lender, "payee")])["flow_id"]
    assert wait_for(lambda: len(stack.rpc.signing.flow_evidence(flow_id=other)["leaves"]) == 1)

    rewrite_log(stack, changed_flow=other)
    after = stack.rpc.signing.report(flow_id=flow_id)["report"]  # made afterwards: the platform still signs it
    checkpoint = after["report"]["evidence"]["checkpoint"]
    assert not [line for line in checkpoint.splitlines() if line.startswith("— witness-")]  # no witness cosigned
    result = esign_verify(stack, tmp_path, "after", pdf, after)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "✗ witnesses: not witnessed" in result.stdout and "0 of 2 configured witnesses cosigned" in result.stdout
    # every other check still holds (the operator re-signed everything): only the witnesses can tell
    failed = [line for line in result.stdout.splitlines() if line.strip().startswith("✗")]
    assert len(failed) == 1 and "witnesses: not witnessed" in failed[0], result.stdout
    # each witness said why, and the log knows: an alert fires on it (deploy/prometheus/alerts.yml)
    policy = stack.rpc.signing.witness_policy()
    assert [w["last_error"].split(":")[0] for w in policy["witnesses"]] == ["422", "422"], policy
