"""The witness's one decision, c2sp.org/tlog-witness ``add-checkpoint``: cosign a
checkpoint only if it is consistent with the latest one cosigned for its log.

The checks, in the spec's order:

1. the body parses (400), the note and the checkpoint in it parse (400);
2. the origin is one we follow (404);
3. a trusted key of that origin signed it, and no trusted key's signature
   fails (403) — signatures by other keys are ignored;
4. old size <= checkpoint size (400);
5. under the state's write lock: old size == the size last cosigned, or 0 if
   none (409, body ``<size>\\n``); a size-0 checkpoint has the empty-tree root
   (422); no proof from old size 0 (422); equal sizes have equal roots (422);
   otherwise the RFC 6962 consistency proof joins the cosigned root to the new
   one (422);
6. cosign (timestamp = now, never earlier than the previous cosignature, so
   a clock stepping back cannot date a larger tree before a smaller one),
   store the note with the log's verified signatures and the cosignature,
   commit durably, and only then answer 200 with the cosignature line.

From step 5 on, a validly signed checkpoint that contradicts the cosigned
state is recorded as misbehaviour (see services.witness.state) whatever the
answer — a fork sent with a stale old size is a 409 for the client and still
evidence; only the cosigned state is never touched by a refusal.
"""
from __future__ import annotations

import time
from typing import Callable

from services.signing import merkle
from services.signing.checkpoint import (
    BadSignatureError,
    Checkpoint,
    MalformedNoteError,
    UnknownKeyError,
    open_note,
    parse_note,
)
from services.signing.merkle import ConsistencyProofError
from services.witness.config import TrustedLogs
from services.witness.cosignature import CosignatureSigner
from services.witness.protocol import (
    AddCheckpointRequest,
    InconsistentCheckpoint,
    MalformedRequest,
    OldSizeBeyondCheckpoint,
    SizeConflict,
    UnknownLog,
    UntrustedCheckpoint,
    WitnessRefusal,
    parse_add_checkpoint,
)
from services.witness.state import CosignedCheckpoint, Misbehaviour, Transition, WitnessState


class Witness:
    """Checks and cosigns checkpoints against ``state``; ``logs`` is called on
    each request so a changed log list applies at once."""

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Callable[[], TrustedLogs],
        state: WitnessState,
        clock: Callable[[], float] = time.time,
    ):
        self.signer = signer
        self._logs = logs
        self.state = state
        self._clock = clock

    @property
    def name(self) -> str:
        return self.signer.name

    def add_checkpoint(self, body: bytes) -> str:
        """The cosignature line for an add-checkpoint body; raises a
        :class:`~services.witness.protocol.WitnessRefusal` with the spec's status."""
        request = parse_add_checkpoint(body)
        checkpoint, text, note = self._open(request.note)
        if request.old_size > checkpoint.size:
            raise OldSizeBeyondCheckpoint(
                f"expected an old size <= the checkpoint size {checkpoint.size}, found {request.old_size}"
            )
        transition = self.state.update(
            checkpoint.origin, lambda latest: self._decide(request, checkpoint, text, note, latest)
        )
        if isinstance(transition.outcome, WitnessRefusal):
            raise transition.outcome
        return transition.outcome

    def _open(self, message: bytes) -> tuple[Checkpoint, str, str]:
        """The checkpoint, its note text, and the note with only the trusted log
        signatures kept (the only ones worth storing and serving)."""
        try:
            parsed = parse_note(message)
            checkpoint = Checkpoint.from_body(parsed.text)
        except MalformedNoteError as exc:
            raise MalformedRequest(f"checkpoint note: {exc.message}") from None
        verifiers = self._logs().verifiers(checkpoint.origin)
        if not verifiers:
            raise UnknownLog(f"expected a log this witness follows, found origin {checkpoint.origin!r}")
        try:
            opened = open_note(message, verifiers)
        except (UnknownKeyError, BadSignatureError) as exc:
            raise UntrustedCheckpoint(exc.reason) from None
        except MalformedNoteError as exc:  # pragma: no cover - parse_note above already passed
            raise MalformedRequest(f"checkpoint note: {exc.message}") from None
        return checkpoint, opened.text, opened.text + "\n" + "".join(sig.line() for sig in opened.verified)

    def _decide(
        self,
        request: AddCheckpointRequest,
        checkpoint: Checkpoint,
        text: str,
        note: str,
        latest: CosignedCheckpoint | None,
    ) -> Transition:
        known_size = latest.size if latest else 0

        def refuse(refusal: WitnessRefusal, kind: str | None = None) -> Transition:
            evidence = None
            if kind is not None:
                evidence = Misbehaviour(
                    checkpoint.origin, kind, request.old_size, checkpoint.size, checkpoint.root_hash,
                    request.note.decode("utf-8"), request.proof, latest,
                )
            return Transition(refusal, evidence=evidence)

        # the checkpoint itself contradicts what was cosigned, whatever old size came with it
        contradiction = None
        if latest and checkpoint.size == latest.size and checkpoint.root_hash != latest.root_hash:
            contradiction = "fork"
        elif latest and checkpoint.size < latest.size:
            contradiction = "rollback"

        if request.old_size != known_size:
            return refuse(SizeConflict(known_size), contradiction)
        if checkpoint.size == 0 and checkpoint.root_hash != merkle.EMPTY_ROOT:
            return refuse(
                InconsistentCheckpoint("empty_tree_root", "expected the root of a size-0 tree to be SHA-256(\"\")"),
                contradiction or "empty_tree_root",
            )
        if request.old_size == 0 and request.proof:
            return refuse(
                InconsistentCheckpoint("proof_from_empty",
                                       f"expected no proof from old size 0, found {len(request.proof)} hashes"),
                contradiction,
            )
        if request.old_size == checkpoint.size:
            if latest and checkpoint.root_hash != latest.root_hash:
                return refuse(
                    InconsistentCheckpoint("root_mismatch", f"expected the root cosigned at size {checkpoint.size}"),
                    contradiction,
                )
            if request.proof:
                return refuse(InconsistentCheckpoint("bad_proof", "expected no proof between equal sizes"))
        elif request.old_size > 0:
            try:
                merkle.verify_consistency(
                    request.old_size, checkpoint.size, latest.root_hash, checkpoint.root_hash, request.proof
                )
            except ConsistencyProofError as exc:
                return refuse(InconsistentCheckpoint("bad_proof", exc.reason), "bad_proof")

        timestamp = max(int(self._clock()), latest.cosigned_at if latest else 1)
        cosignature = self.signer.cosign(text, timestamp)
        line = cosignature.line()
        stored = CosignedCheckpoint(checkpoint.origin, checkpoint.size, checkpoint.root_hash, note + line, timestamp)
        return Transition(line, store=stored)

    def latest_note(self, origin_hex_hash: str) -> str | None:
        """The latest cosigned checkpoint (log and witness signatures) for the
        origin whose hex SHA-256 this is, or None."""
        latest = self.state.latest_by_origin_hash(origin_hex_hash)
        return latest.note if latest else None
