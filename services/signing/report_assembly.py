"""Putting a signing report (签约报告) together from what each owner says:
identity's profile of each party (name, masked numbers, certificates, how
their identity was checked: the proof behind the certificate they signed
with), the willingness actions the flow recorded, the signatures read from
the final PDF, and the flow's evidence under a checkpoint. The report itself
(its fields, rules, signature and PDF) is :mod:`.report`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from services.common.clock import aware
from services.signing.models import FlowParty, PendingAction
from services.signing.report import build_report

REPORTABLE_STATES = ("completed", "voided", "void_requested")


def report_parties(parties: Sequence[FlowParty], profile_of: Callable[[FlowParty], Mapping[str, Any]]
                   ) -> tuple[list[dict], list[dict]]:
    """The report's parties and identity checks, one per party, from identity's
    ``report_profile`` for the certificate each party signed with."""
    entries, checks = [], []
    for party in parties:
        profile = profile_of(party)
        cert = next((c for c in profile["certificates"] if c["serial"] == party.certificate_serial), None)
        entries.append({
            "person_id": party.person_id, "role": party.role, "name": profile["name"],
            "id_number_masked": profile["id_number_masked"], "phone_masked": profile["phone_masked"],
            "certificate": None if cert is None else {
                "serial": cert["serial"], "issuer": cert["issuer"], "subject": cert["subject_cn"],
                "not_before": cert["not_before"], "not_after": cert["not_after"]},
        })
        # scores stay numbers here: build_report writes them as decimal strings (no floats in canonical JSON)
        checks.append(dict(profile["identity_check"], person_id=party.person_id))
    return entries, checks


def willingness_entries(actions: Sequence[PendingAction]) -> list[dict]:
    """Each completed signature or void consent: who, what, how willingness was shown, when."""
    return [{"person_id": a.person_id, "action": a.action, "method": a.method,
             "at": aware(a.used_at).isoformat(), "outcome": "passed"} for a in actions]


def assemble(flow: Mapping[str, Any], original_sha256: str, final_sha256: str, parties: Sequence[FlowParty],
             profile_of: Callable[[FlowParty], Mapping[str, Any]], actions: Sequence[PendingAction],
             signatures: Sequence[Mapping[str, Any]], evidence: Mapping[str, Any], now: datetime,
             verification_url: str) -> dict:
    """The report of one flow (unsigned), from the pieces above."""
    entries, checks = report_parties(parties, profile_of)
    return build_report(flow, original_sha256, final_sha256, entries, checks, willingness_entries(actions),
                        signatures, evidence, now, verification_url)
