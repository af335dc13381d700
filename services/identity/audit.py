"""The identity audit trail: one append-only record per registration, face
check, liveness check, certificate event, willingness check and signature
attempt (refusals included), for the signing report to cite.

A record says who (``actor``: the person, an admin, a service), what
(``action``), when, how (``method``: sms, face, video ...), the score and
threshold where there is one, the outcome (``ok``, ``matched``, or the refusal
reason such as ``grant_replayed``), and ``refs``: ids (certificate serial,
willingness id, document digest) and masked values only — never an ID
number, phone, code, face or key.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.clock import utcnow
from services.identity.models import AuditRecord

ACTIONS = (
    "registration", "login", "identity_check", "face_proof", "face_check", "liveness_check", "face_data_deleted",
    "phone_changed", "step_up", "sessions_revoked", "account_frozen", "identity_taken_back",
    "certificate_issued", "certificate_revoked", "key_destroyed",
    "willingness_started", "willingness_checked", "face_checks_locked", "sign_digest",
)


def record(session: Session, action: str, outcome: str, *, person_id: str | None, actor: str = "person",
           method: str | None = None, score: float | None = None, threshold: float | None = None,
           **refs: Any) -> AuditRecord:
    """Add an audit record to the session (committed with the caller's transaction)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    row = AuditRecord(
        occurred_at=utcnow(), person_id=person_id, actor=actor[:32], action=action, method=method,
        score=score, threshold=threshold, outcome=outcome[:64],
        refs=json.dumps({k: v for k, v in refs.items() if v is not None}, ensure_ascii=False, sort_keys=True),
    )
    session.add(row)
    return row


def as_dict(row: AuditRecord) -> dict:
    return {
        "id": row.id, "occurred_at": row.occurred_at.isoformat() + "Z", "person_id": row.person_id,
        "actor": row.actor, "action": row.action, "method": row.method, "score": row.score,
        "threshold": row.threshold, "outcome": row.outcome, "refs": json.loads(row.refs),
    }


def records_of(session: Session, person_id: str) -> list[dict]:
    rows = session.execute(
        select(AuditRecord).where(AuditRecord.person_id == person_id).order_by(AuditRecord.id)
    ).scalars()
    return [as_dict(row) for row in rows]
