"""``esign verify --online`` believes nothing it cannot check: a platform that
states another status than its log records, a leaf of another flow, or a
checkpoint no witness cosigned is caught."""
from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.signing.checkpoint import NoteSigner
from services.signing.evidence_log import EvidenceLog, MemoryLogStore
from services.signing.online_status import check_status
from services.signing.witnesses import with_cosignatures
from services.witness.cosignature import CosignatureSigner

ORIGIN = "esign.test/log"
FINAL = "f" * 64


def answer(status: str = "voided", tamper_leaf: bool = False):
    signer = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    log = EvidenceLog(MemoryLogStore(), signer)
    events = [("flow_sent", "a" * 64), ("party_signed", "b" * 64), ("flow_completed", FINAL),
              ("void_requested", None), ("flow_voided", None)]
    for event_type, document_hash in events:
        log.append({"flow_id": "f1", "event_type": event_type, "timestamp": "2026-12-06T10:00:00Z",
                    "document_hash": document_hash, "reason": "已还清" if "void" in event_type else None})
    log.append({"flow_id": "f2", "event_type": "flow_sent", "timestamp": "2026-12-06T10:00:00Z"})
    witness = CosignatureSigner.generate("w1.test")
    note = log.checkpoint()
    body = note[: note.index("\n\n") + 1]
    cosigned = with_cosignatures(note, [witness.cosign(body, 1_780_000_000).line()])

    def leaf(index):
        stored = log.leaf(index)
        return {"leaf": stored.data.decode(), "index": index, "proof": log.inclusion_proof(index, 6).to_dict()}

    status_leaf = leaf(5 if tamper_leaf else 4)
    return ({"known": True, "status": status, "status_text": "…", "evidence": dict(
        status_leaf, document_leaf=leaf(2), checkpoint=cosigned, tree_size=6,
        log_public_key=signer.verifier.to_key_string())},
        signer.verifier.to_key_string(), witness.verifier.to_key_string())


def failing(checks):
    return [c.subject for c in checks if not c.ok]


def test_an_honest_answer_holds():
    given, log_key, witness_key = answer()
    checks, _ = check_status(given, FINAL, log_key, [witness_key], 1)
    assert failing(checks) == []


def test_a_platform_saying_in_force_of_a_voided_agreement_is_caught():
    given, log_key, witness_key = answer(status="completed")
    checks, _ = check_status(given, FINAL, log_key, [witness_key], 1)
    assert failing(checks) == ["stated status"]


def test_another_flows_leaf_and_another_file_are_caught():
    given, log_key, witness_key = answer(tamper_leaf=True)
    checks, _ = check_status(given, FINAL, log_key, [witness_key], 1)
    assert "status of this file's flow" in failing(checks)
    given, log_key, witness_key = answer()
    checks, _ = check_status(given, "0" * 64, log_key, [witness_key], 1)
    assert failing(checks) == ["this file in the log"]


def test_a_changed_leaf_or_an_unwitnessed_checkpoint_fails():
    given, log_key, witness_key = answer()
    record = json.loads(given["evidence"]["leaf"])
    record["reason"] = "另有其事"
    given["evidence"]["leaf"] = json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    checks, _ = check_status(given, FINAL, log_key, [witness_key], 1)
    assert "status leaf" in failing(checks)
    given, log_key, _ = answer()
    stranger = CosignatureSigner.generate("w2.test").verifier.to_key_string()
    checks, _ = check_status(given, FINAL, log_key, [stranger], 1)
    assert failing(checks) == ["witnesses: not witnessed"]
