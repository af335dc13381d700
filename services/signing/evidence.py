"""The flows' evidence: every flow event becomes a leaf of the evidence log
(:mod:`.evidence_log`, RFC 9162 Merkle tree with signed checkpoints), and a
flow's leaves are proven against a signed checkpoint.

A flow event's leaf is *sequenced* in the transaction that changes the flow and
emits the event (:meth:`services.signing.flow_store.FlowStore.apply`): leaf and
outbox row commit together or not at all, and a flow's leaves are queued in the
order of its own transactions, which its row lock serialises. (They were once
sequenced by an event handler per event type; events published back to back then
reached the log in whatever order their handlers finished.) The event carries
``logged_with_change``; the handlers below still log an event without it (one
emitted before this, still queued), once even when the broker delivers it twice
(the leaf carries the event id, unique in the queue). The integrator job puts
sequenced events into the tree in batches. So a leaf follows its change by
moments; :meth:`FlowEvidence.settled` waits for it, integrating meanwhile.

:class:`EvidenceEntrypoints` holds the service's entrypoints for the log,
one handler per flow event written out (grep finds ``log_flow_voided``), the
public proof RPCs and the checkpoint job. The signing service mixes it in.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Mapping

import eventlet
from nameko.timer import timer

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.errors import Unavailable
from services.common.lease import acquire, holder_id
from services.signing.checkpoint import Checkpoint, parse_note
from services.signing.evidence_log import EvidenceLog
from services.signing.log_records import utc_timestamp
from services.signing.witnesses import Witnessing

#: every event of a flow; each is a leaf
FLOW_EVENTS = (events.FLOW_SENT, events.PARTY_JOINED, events.PARTY_SIGNED, events.FLOW_COMPLETED,
               events.FLOW_DECLINED, events.FLOW_EXPIRED, events.VOID_REQUESTED, events.VOID_REJECTED,
               events.FLOW_VOIDED, events.FLOW_CANCELLED, events.FLOW_IDENTITY_DISPUTED,
               events.LOAN_REPAYMENT_RECORDED, events.LOAN_EXTENDED, events.LOAN_REPAID)
#: fields of a flow event copied into its leaf when the event has them (a statement about a signed IOU
#: names its own flow and signed PDF: services/signing/loans.py)
LEAF_EXTRA_FIELDS = ("assurance_level", "disputed_person_id", "dispute_reason", "reason", "statement_flow_id",
                     "statement_sha256")
#: the event that put a flow in each ended state
ENDING_EVENTS = {"completed": events.FLOW_COMPLETED, "voided": events.FLOW_VOIDED,
                 "void_requested": events.VOID_REQUESTED, "declined": events.FLOW_DECLINED,
                 "expired": events.FLOW_EXPIRED, "cancelled": events.FLOW_CANCELLED}
EVIDENCE_WAIT_SECONDS = 10.0  # a report waits this long for the flow's last event to reach the log
#: the envelope member of a flow event whose leaf was sequenced in the transaction that emitted it
LOGGED_WITH_CHANGE = "logged_with_change"


def not_logged_yet(event: dict) -> bool:
    """Whether a flow event still needs its leaf sequenced by a handler: one emitted before signing
    sequenced leaves with their change (a queue drained after an upgrade) or by a flow store
    without the log."""
    return event.get(LOGGED_WITH_CHANGE) is not True


def leaf_of(event: dict) -> dict:
    """The log record of a flow event (ids, hashes and words; no personal data); an
    event whose data is not its payload type (services/common/events.py) is refused
    (``InvalidInput``). Members only some events' types declare are read by name."""
    payload = events.parse(event["event_type"], event["data"])
    members = dict(payload)
    record = {
        "event_id": event["event_id"], "flow_id": payload.flow_id, "event_type": event["event_type"],
        "document_hash": members.get("signed_pdf_sha256") or payload.document_sha256,
        "party_id": payload.actor_person_id, "certificate_serial": members.get("certificate_serial"),
        "willingness_method": members.get("willingness_method"),
        "willingness_outcome": "passed" if members.get("willingness_method") else None,
        "timestamp": utc_timestamp(datetime.fromisoformat(event["occurred_at"])),
    }
    # only where the event has them: leaves of events without them stay as they always were
    record.update({name: members[name] for name in LEAF_EXTRA_FIELDS if members.get(name) is not None})
    return record


class FlowEvidence:
    def __init__(self, log: EvidenceLog, witnesses: Witnessing | None = None):
        self.log = log
        self.witnesses = witnesses

    def checkpoint(self) -> str:
        """The checkpoint of the current tree, with the witnesses' cosignatures
        (asked for now if it has fewer than the policy's threshold)."""
        note = self.log.checkpoint()
        if self.witnesses is None:
            return note
        witnessed = self.witnesses.witnessed(note)
        if len(parse_note(witnessed).signatures) - 1 < self.witnesses.policy.threshold:
            witnessed = self.witnesses.cosign(note)
        return witnessed

    def append(self, event: dict) -> bool:
        """Sequence a flow event's leaf, durably; False when it is queued
        already (a redelivered event; one that is a leaf already is dropped
        when integrated)."""
        return self.log.sequence(leaf_of(event))

    def of_flow(self, flow_id: str) -> dict:
        """Every leaf of a flow with its inclusion proof against a fresh signed
        (and, with witnesses configured, cosigned) checkpoint."""
        checkpoint = self.checkpoint()
        # the size the checkpoint signed, not the log's size a moment later
        size = Checkpoint.from_body(parse_note(checkpoint).text).size
        leaves = []
        for leaf in self.log.flow_leaves(flow_id):
            if leaf.index >= size:  # appended after the checkpoint was taken: proven by the next one
                continue
            proof = self.log.inclusion_proof(leaf.index, size)
            leaves.append({"index": leaf.index, "leaf": leaf.data.decode("utf-8"), "proof": proof.to_dict()})
        return {"checkpoint": checkpoint, "tree_size": size, "leaves": leaves, "log_public_key": self.log.public_key()}

    def settled(self, flow_id: str, awaited: Mapping[str, int], wait: float = EVIDENCE_WAIT_SECONDS) -> dict:
        """The flow's evidence once the ``awaited`` events (type → how many) are
        in the log and under a checkpoint; ``Unavailable`` after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            evidence = self.of_flow(flow_id)
            logged = Counter(json.loads(leaf["leaf"]).get("event_type") for leaf in evidence["leaves"])
            missing = {event for event, count in awaited.items() if logged[event] < count}
            if not missing:
                return evidence
            if time.monotonic() >= deadline:
                raise Unavailable("evidence_log",
                                  f"{', '.join(sorted(missing))} of this flow is not logged yet; ask again shortly")
            # sequenced but maybe not integrated: one batch now rather than wait for the job
            # (integrators take turns on the head lock, so this is safe beside it)
            if not self.log.integrate().taken:
                eventlet.sleep(0.2)


class EvidenceEntrypoints:
    """The signing service's evidence-log entrypoints (mixed into the service;
    ``self.ctx.log`` is its evidence log, ``self.flows`` its flow store)."""

    _holder = holder_id()

    @property
    def evidence(self) -> FlowEvidence:
        return FlowEvidence(self.ctx.log, self.ctx.witnesses)

    # -- every flow event becomes a leaf --------------------------------------------------
    @handles_event("signing", events.FLOW_SENT, wanted=not_logged_yet)
    def log_flow_sent(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.PARTY_JOINED, wanted=not_logged_yet)
    def log_party_joined(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.PARTY_SIGNED, wanted=not_logged_yet)
    def log_party_signed(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_COMPLETED, wanted=not_logged_yet)
    def log_flow_completed(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_DECLINED, wanted=not_logged_yet)
    def log_flow_declined(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_EXPIRED, wanted=not_logged_yet)
    def log_flow_expired(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.VOID_REQUESTED, wanted=not_logged_yet)
    def log_void_requested(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.VOID_REJECTED, wanted=not_logged_yet)
    def log_void_rejected(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_VOIDED, wanted=not_logged_yet)
    def log_flow_voided(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_CANCELLED, wanted=not_logged_yet)
    def log_flow_cancelled(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.FLOW_IDENTITY_DISPUTED, wanted=not_logged_yet)
    def log_flow_identity_disputed(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.LOAN_REPAYMENT_RECORDED, wanted=not_logged_yet)
    def log_loan_repayment_recorded(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.LOAN_REPAID, wanted=not_logged_yet)
    def log_loan_repaid(self, event: dict) -> None:
        self.evidence.append(event)

    @handles_event("signing", events.LOAN_EXTENDED, wanted=not_logged_yet)
    def log_loan_extended(self, event: dict) -> None:
        self.evidence.append(event)

    # -- proofs anyone may ask for (the gateway serves them publicly) --------------------------
    @rpc
    def flow_evidence(self, flow_id: str) -> dict:
        """Every log leaf of a flow with its inclusion proof against a fresh signed checkpoint
        (events already sequenced are integrated first, so the answer is as fresh as it can be)."""
        self.flows.load(flow_id)
        if self.ctx.log.pending():
            self.ctx.log.integrate()
        return self.evidence.of_flow(flow_id)

    @rpc
    def checkpoint(self) -> dict:
        """The latest checkpoint, with the cosignatures its witnesses gave."""
        return {"checkpoint": self.ctx.witnesses.witnessed(self.ctx.log.checkpoint())}

    @rpc
    def witness_policy(self) -> dict:
        """The witnesses whose cosignatures make a checkpoint witnessed (their
        verifier keys), how many are needed, and what the log knows of each."""
        heads = self.ctx.witnesses.heads()
        policy = self.ctx.witnesses.policy
        return {"threshold": policy.threshold, "witnesses": [
            {"name": w.name, "url": w.url, "key": w.verifier.to_key_string(),
             "cosigned_size": heads[w.name].size if w.name in heads else 0,
             "cosigned_at": (heads[w.name].cosigned_at.isoformat()
                             if w.name in heads and heads[w.name].cosigned_at else None),
             "last_error": heads[w.name].last_error if w.name in heads else None}
            for w in policy.witnesses]}

    @rpc
    def log_public_key(self) -> dict:
        return {"public_key": self.ctx.log.public_key()}

    @rpc
    def inclusion_proof(self, index: int, tree_size: int | None = None) -> dict:
        return self.ctx.log.inclusion_proof(index, tree_size).to_dict()

    @rpc
    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict:
        return self.ctx.log.consistency_proof(old_size, new_size).to_dict()

    # -- the integrator ---------------------------------------------------------------------
    @timer(interval=0.5)
    def integrate_log(self) -> None:
        """Put sequenced flow events into the tree, in batches (one replica at
        a time; integrators are serialised by the head lock anyway, the lease
        only spares the others the wait)."""
        if acquire(self.db.session, "log-integrator", self._holder, timedelta(seconds=30)):
            self.ctx.log.integrate_all(budget=5.0)
            self.metrics.set("log_sequenced_backlog", self.ctx.log.pending(),
                             "Flow events sequenced but not yet integrated into the evidence log")

    # -- the checkpoint job -------------------------------------------------------------------
    @timer(interval=5)
    def publish_checkpoint(self) -> None:
        """Sign a checkpoint of the current tree every few seconds and have the
        witnesses cosign it (one replica; a witness that fails is retried on the
        next tick)."""
        if acquire(self.db.session, "checkpoint", self._holder, timedelta(seconds=30)):
            note = self.ctx.log.checkpoint()
            self.metrics.set("log_checkpoint_size", Checkpoint.from_body(parse_note(note).text).size,
                             "Tree size of the latest signed checkpoint")
            self.ctx.witnesses.cosign(note)

