"""Is the agreement in force? The status of a document, answerable from its hash.

Valid signatures say who signed what; they do not say whether the parties
later voided it, or whether it ever took effect. Every status change of a
flow (sent, signed, completed, void requested, voided, declined, expired,
cancelled) is a leaf of the evidence log, so anyone holding a PDF the
platform signed can ask for its flow's current status by the PDF's SHA-256
and get, with it, the leaf that set that status and its inclusion proof
under a signed (and witnessed) checkpoint: the answer is checkable, not the
platform's word.

A hash the platform never produced is answered ``known: false``: the
platform did not sign that file (or it was changed since).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from services.signing.flow import LOAN_EVENTS

CHINA = ZoneInfo("Asia/Shanghai")

#: how each state reads in the pages (the flow's ``status``, so a disputed flow reads as disputed)
STATUS_WORDS = {
    "draft": "草稿", "waiting": "签署中", "completed": "已生效", "void_requested": "作废申请中",
    "voided": "已作废", "declined": "已拒签", "expired": "已过期", "cancelled": "已取消",
    "disputed_identity": "签署方身份存在争议",
}
#: the versions of a document a flow keeps
VERSIONS = {"original": "签署前的原始文件", "signed": "部分签署的中间版本", "final": "全部签署完成的最终版本"}


def local_time(stamp: str | datetime | None) -> str | None:
    """An RFC 3339 time as people in China read it (YYYY-MM-DD HH:MM, Beijing time)."""
    if stamp is None:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def describe(flow: Mapping[str, Any], leaf: Mapping[str, Any] | None) -> str:
    """The status in one Chinese sentence, e.g. "已作废，作废原因：已还清，双方确认于 2026-12-06 17:12"."""
    status = flow["status"]
    words = STATUS_WORDS.get(status, status)
    at = local_time(leaf.get("timestamp")) if leaf else None
    reason = (leaf or {}).get("reason") or flow.get("reason")
    if status == "voided":
        return (f"{words}，作废原因：{reason or '未填写'}，双方确认于 {at}" if at
                else f"{words}，作废原因：{reason or '未填写'}")
    if status == "void_requested":
        return f"{words}（原因：{reason or '未填写'}），尚待另一方确认；在确认前文件仍然有效"
    if status == "declined":
        return f"{words}（原因：{reason or '未填写'}），文件未生效"
    if status == "completed":
        return f"{words}：各方已于 {at} 签署完成" if at else words
    if status == "disputed_identity":
        return f"{words}：平台已冻结被冒用身份的账户，请勿将本文件作为有效约定使用"
    return words


def answer(sha256: str, kind: str, is_current: bool, flow: Mapping[str, Any],
           evidence: Mapping[str, Any], witnesses: Mapping[str, Any] | None = None) -> dict:
    """What ``document_status`` answers for a known hash: the flow's status in
    words, which version of the document this is, the status-setting leaf
    (the flow's last leaf under the checkpoint) and the leaf that produced this
    file (its ``document_hash`` is the file's SHA-256), each with its proof."""
    leaves: Sequence[Mapping[str, Any]] = evidence.get("leaves") or ()
    # the leaf that set the status: a repayment or an extension of a signed IOU changes no status
    last = next((leaf for leaf in reversed(leaves)
                 if json.loads(leaf["leaf"]).get("event_type") not in LOAN_EVENTS), None)
    record = json.loads(last["leaf"]) if last else None
    # the leaf that binds this very file to the flow: the event that produced it names its hash
    made = next((leaf for leaf in leaves if json.loads(leaf["leaf"]).get("document_hash") == sha256), None)
    return {
        "known": True, "sha256": sha256, "flow_id": flow["flow_id"], "title": flow["title"],
        "state": flow["state"], "status": flow["status"], "status_text": describe(flow, record),
        "in_force": flow["status"] in ("completed", "void_requested"),
        "version": kind, "version_text": VERSIONS.get(kind, kind),
        "latest_version": is_current,
        "parties": [{"role": p["role"], "signed_at": p["signed_at"]} for p in flow["parties"]],
        "evidence": None if last is None else {
            "leaf": last["leaf"], "index": last["index"], "proof": last["proof"],
            "document_leaf": None if made is None else {"leaf": made["leaf"], "index": made["index"],
                                                        "proof": made["proof"]},
            "checkpoint": evidence["checkpoint"], "tree_size": evidence["tree_size"],
            "log_public_key": evidence["log_public_key"]},
        # who besides the platform vouches for that checkpoint: the witnesses whose cosignatures verify
        "witnesses": witnesses,
    }


def unknown(sha256: str) -> dict:
    return {"known": False, "sha256": sha256, "status_text": "本平台未签署过此文件（或文件在签署后被改动）"}
