"""``esign verify --online URL FILE.pdf``: is the agreement in force, proven.

Asks the platform at ``URL`` for the status of the flow that produced the
file (``GET /api/v1/documents/<sha256>/status``), then checks the answer
instead of believing it:

* the leaf that produced this file names the file's SHA-256, and the status
  leaf belongs to the same flow and comes at or after it;
* both leaves are in the tree the checkpoint commits to (RFC 9162 inclusion
  proofs), the checkpoint is signed by the log's key, and cosigned by at least
  K of the configured witnesses (c2sp.org/tlog-cosignature);
* the status the platform states is the one the status leaf records.

Only the log key and the witness keys are trusted, so a platform that says
"in force" of a voided agreement is caught: the leaf that voided it is in a
tree the witnesses cosigned.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence

from services.signing.checkpoint import NoteVerifier
from services.signing.log_records import InclusionProof, verify_checkpointed_inclusion
from services.witness.cosignature import CosignatureVerifier, check_cosignatures

#: the status each ending event sets
STATUS_OF_EVENT = {"flow_sent": "waiting", "party_joined": "waiting", "party_signed": "waiting",
                   "flow_completed": "completed", "void_requested": "void_requested", "void_rejected": "completed",
                   "flow_voided": "voided", "flow_declined": "declined", "flow_expired": "expired",
                   "flow_cancelled": "cancelled", "flow_identity_disputed": "disputed_identity"}


class StatusCheck:
    """One conclusion of the online status check (the shape of offline_verify's Check)."""

    def __init__(self, subject: str, ok: bool, expected: str, found: str):
        self.subject, self.ok, self.expected, self.found = subject, ok, expected, found


def fetch_status(base_url: str, sha256: str, timeout: float = 30.0) -> dict:
    url = f"{base_url.rstrip('/')}/api/v1/documents/{sha256}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return json.loads(answer.read())
    except (urllib.error.URLError, ValueError) as exc:
        raise OSError(f"cannot read the document's status at {url}: {exc}") from None


def check_status(answer: Mapping[str, Any], sha256: str, log_key: str, witnesses: Sequence[str],
                 threshold: int) -> tuple[list[StatusCheck], str]:
    """The checks of an answer, and the status in words (as proven, or why not)."""
    if not answer.get("known"):
        return [StatusCheck("document status", True, "a status for this file",
                            "the platform never produced this file (or it was changed since)")], \
            answer.get("status_text") or "unknown"
    evidence = answer.get("evidence") or {}
    checks: list[StatusCheck] = []
    verifier = NoteVerifier.from_key_string(log_key)
    note = evidence.get("checkpoint") or ""
    for label, leaf in (("status leaf", evidence), ("document leaf", evidence.get("document_leaf"))):
        if not leaf:
            checks.append(StatusCheck(label, False, "a leaf with its inclusion proof", "none in the answer"))
            continue
        try:
            verify_checkpointed_inclusion(leaf["leaf"].encode("utf-8"), InclusionProof.from_dict(leaf["proof"]),
                                          note, verifier)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            checks.append(StatusCheck(label, False, "inclusion under the log-signed checkpoint",
                                      getattr(exc, "reason", str(exc))))
        else:
            checks.append(StatusCheck(label, True, "inclusion under the log-signed checkpoint",
                                      f"leaf {leaf['index']} of a tree of {evidence.get('tree_size')}"))
    status_record = json.loads(evidence["leaf"]) if evidence.get("leaf") else {}
    document = evidence.get("document_leaf") or {}
    document_record = json.loads(document["leaf"]) if document.get("leaf") else {}
    checks.append(StatusCheck("this file in the log", document_record.get("document_hash") == sha256,
                              f"a leaf naming the file's SHA-256 {sha256}",
                              f"a leaf naming {document_record.get('document_hash')}"))
    same_flow = status_record.get("flow_id") == document_record.get("flow_id") and \
        evidence.get("index", -1) >= document.get("index", 1 << 62)
    checks.append(StatusCheck("status of this file's flow", same_flow,
                              "the status leaf of the same flow, at or after the file's",
                              f"flow {status_record.get('flow_id')} leaf {evidence.get('index')}"))
    recorded = STATUS_OF_EVENT.get(status_record.get("event_type"), status_record.get("event_type"))
    stated = answer.get("status")
    checks.append(StatusCheck("stated status", recorded == stated or stated == "disputed_identity",
                              f"the status the leaf records ({recorded})", f"the platform states {stated}"))
    cosigned = check_cosignatures(note, [CosignatureVerifier.from_key_string(k) for k in witnesses], threshold)
    names = "; ".join(name for name, _ in cosigned.valid) or "none"
    checks.append(StatusCheck("witnesses" if cosigned.witnessed else "witnesses: not witnessed", cosigned.witnessed,
                              f"cosignatures by at least {threshold} of {len(witnesses)} witnesses",
                              f"{len(cosigned.valid)} of {len(witnesses)} configured witnesses cosigned: {names}"))
    return checks, answer.get("status_text") or str(stated)
