"""The evidence log's witnesses, from the log's side (c2sp.org/tlog-witness).

After each checkpoint is signed, the log submits it to every configured
witness (``POST <url>/add-checkpoint`` with the size the witness last
cosigned and an RFC 6962 consistency proof from it), checks the
cosignature/v1 line it gets back against that witness's configured key
(:mod:`services.witness.cosignature`) and keeps it. A checkpoint is
*witnessed* when at least ``threshold`` of the configured witnesses cosigned
it; the log publishes it with their signature lines appended (a signed note
may carry several signatures; verifiers ignore the ones they do not know).

A witness that is down, slow or refusing never stops signing: its
cosignature is simply missing, the next checkpoint is submitted again (every
few seconds, :meth:`Witnessing.cosign` from the checkpoint job and on demand
before a report), and ``/metrics`` shows per witness the size it last
cosigned and when (``esign_log_witness_cosigned_size``,
``esign_log_witness_cosigned_timestamp_seconds``), and each refusal by its
status (``esign_log_witness_refusals_total``), so an alert fires when one lags.
A 409 tells the log the size the witness knows (another replica got there
first); a 422 for the log's own proof means the log is not consistent with
what that witness saw: a rewritten log. That is exactly what witnesses are
for, and it is alerted on.

Configuration (``WITNESSES``)::

    WITNESSES:
      LIST: [{"url": "https://witness.example/w1", "key": "witness.example/w1+1a2b3c4d+BA..."}]
      THRESHOLD: 1          # K of N cosignatures make a checkpoint witnessed
      TIMEOUT_SECONDS: 5
"""
from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import eventlet
import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.errors import InvalidInput
from services.common.metrics import Series
from services.signing.checkpoint import Checkpoint, MalformedNoteError, parse_note
from services.signing.evidence_log import EvidenceLog
from services.signing.models import LogCosignature, LogWitnessHead
from services.witness.cosignature import Cosignature, CosignatureVerifier

log = logging.getLogger(__name__)

MAX_PROOF_LINES = 63  # the protocol's limit
SIZE_MEDIA_TYPE = "text/x.tlog.size"


@dataclass(frozen=True)
class Witness:
    """One configured witness: where to submit, and the key its cosignatures must verify under."""

    url: str
    verifier: CosignatureVerifier

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class WitnessPolicy:
    """Who witnesses the log, and how many cosignatures make a checkpoint witnessed."""

    witnesses: tuple[Witness, ...] = ()
    threshold: int = 0
    timeout: float = 5.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> "WitnessPolicy":
        section = section or {}
        if not isinstance(section, Mapping):
            raise InvalidInput("witnesses", "mapping", "expected LIST, THRESHOLD and TIMEOUT_SECONDS")
        listed = section.get("LIST") or []
        if isinstance(listed, str):  # an environment variable holding JSON
            try:
                listed = json.loads(listed) if listed.strip() else []
            except ValueError:
                raise InvalidInput("witnesses.list", "json", "expected a JSON list of {url, key}") from None
        if not isinstance(listed, list):
            raise InvalidInput("witnesses.list", "list", "expected a list of {url, key}")
        witnesses = []
        for i, entry in enumerate(listed):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str) or not entry.get("key"):
                raise InvalidInput(f"witnesses.list.{i}", "entry", "expected {url, key}")
            url = entry["url"].rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(f"witnesses.list.{i}.url", "url", "expected an http(s) URL prefix")
            try:
                verifier = CosignatureVerifier.from_key_string(str(entry["key"]))
            except MalformedNoteError as exc:
                raise InvalidInput(f"witnesses.list.{i}.key", "witness_key", exc.message) from None
            witnesses.append(Witness(url, verifier))
        if len({w.name for w in witnesses}) != len(witnesses):
            raise InvalidInput("witnesses.list", "unique", "each witness may be listed once")
        threshold = section.get("THRESHOLD")
        threshold = len(witnesses) if threshold in (None, "") else _integer(threshold, "witnesses.threshold")
        if not 0 <= threshold <= len(witnesses):
            raise InvalidInput("witnesses.threshold", "range", f"expected 0 to {len(witnesses)} (the witnesses listed)")
        timeout = float(section.get("TIMEOUT_SECONDS") or 5.0)
        return cls(tuple(witnesses), threshold, timeout)

    def verifiers(self) -> list[CosignatureVerifier]:
        return [w.verifier for w in self.witnesses]


#: refusals shown at 0 from the start for each configured witness: the alerts watch 422 (the log's own
#: consistency proof refused) and a witness out of reach; other statuses appear when they happen
DECLARED_REFUSALS = ("unreachable", "422", "bad_cosignature", "no_cosignature")


def refusal_series(policy: WitnessPolicy) -> Series:
    return Series("log_witness_refusals", "Checkpoints a witness did not cosign, by outcome",
                  {"witness": [w.name for w in policy.witnesses], "outcome": DECLARED_REFUSALS})


def _integer(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(name, "integer", "expected a whole number") from None


def with_cosignatures(note: str, lines: Sequence[str]) -> str:
    """The log-signed note with cosignature lines appended (each ending in a newline)."""
    return note + "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class Witnessing:
    """The log's side of the witness protocol, for one process. ``sessions``
    opens a short transaction of its own (as the log store does)."""

    def __init__(self, sessions: Callable[[], Session], log_: EvidenceLog, policy: WitnessPolicy, metrics,
                 post: Callable[..., requests.Response] = requests.post):
        self.sessions = sessions
        self.log = log_
        self.policy = policy
        self.metrics = metrics
        self._post = post

    # -- reading -------------------------------------------------------------------------
    def lines_for(self, size: int) -> dict[str, str]:
        with self.sessions() as session:
            rows = session.execute(select(LogCosignature).where(LogCosignature.tree_size == size)).scalars()
            return {row.witness: row.line for row in rows}

    def valid_lines(self, note: str) -> dict[str, str]:
        """The kept cosignatures of configured witnesses that verify on this very
        checkpoint (a line kept for the same size of a rewritten log would not)."""
        body = parse_note(note).text
        stored = self.lines_for(Checkpoint.from_body(body).size)
        valid = {}
        for witness in self.policy.witnesses:
            line = stored.get(witness.name)
            if line is None:
                continue
            try:
                witness.verifier.verify_line(body, line)
            except Exception:  # noqa: BLE001 - not a cosignature of this checkpoint: leave it out
                continue
            valid[witness.name] = line
        return valid

    def witnessed(self, note: str) -> str:
        """The note with the configured witnesses' cosignatures of it."""
        lines = self.valid_lines(note)
        return with_cosignatures(note, [lines[name] for name in sorted(lines)])

    def heads(self) -> dict[str, LogWitnessHead]:
        with self.sessions() as session:
            return {row.witness: row for row in session.execute(select(LogWitnessHead)).scalars()}

    # -- cosigning ---------------------------------------------------------------------------
    def cosign(self, note: str) -> str:
        """Ask every configured witness that has not cosigned this checkpoint yet
        (in parallel, one round); answers the witnessed note."""
        if not self.policy.witnesses:
            return note
        checkpoint = Checkpoint.from_body(parse_note(note).text)
        have = self.valid_lines(note)
        missing = [w for w in self.policy.witnesses if w.name not in have]
        if missing:
            pool = eventlet.GreenPool(len(missing))
            for witness in missing:
                pool.spawn(self._cosign_one, witness, checkpoint, note)
            pool.waitall()
        return self.witnessed(note)

    def _cosign_one(self, witness: Witness, checkpoint: Checkpoint, note: str) -> None:
        known = self.heads().get(witness.name)
        old_size = known.size if known is not None else 0
        for _ in range(2):  # a 409 tells the size the witness knows: one more try from there
            if old_size > checkpoint.size:
                return  # the witness already cosigned a larger tree (a later checkpoint)
            try:
                answer = self._submit(witness, old_size, checkpoint, note)
            except requests.RequestException as exc:
                self._failed(witness, "unreachable", type(exc).__name__)
                return
            if answer.status_code == 200:
                self._accepted(witness, checkpoint, answer.text)
                return
            if answer.status_code == 409 and answer.headers.get("Content-Type", "").startswith(SIZE_MEDIA_TYPE):
                try:
                    old_size = int(answer.text.strip())
                except ValueError:
                    self._failed(witness, "409", "a size that is not a number")
                    return
                self._record_head(witness, old_size)
                continue
            self._failed(witness, str(answer.status_code), answer.text.strip()[:120])
            return

    def _submit(self, witness: Witness, old_size: int, checkpoint: Checkpoint, note: str) -> requests.Response:
        proof = ([] if old_size in (0, checkpoint.size)
                 else list(self.log.consistency_proof(old_size, checkpoint.size).hashes))
        if len(proof) > MAX_PROOF_LINES:  # cannot happen below 2**63 leaves; the protocol's own limit
            raise requests.RequestException("consistency proof longer than the protocol allows")
        body = f"old {old_size}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note
        return self._post(f"{witness.url}/add-checkpoint", data=body.encode("utf-8"), timeout=self.policy.timeout,
                          headers={"Content-Type": "text/plain; charset=utf-8"})

    def _accepted(self, witness: Witness, checkpoint: Checkpoint, text: str) -> None:
        body = checkpoint.body()
        cosignature = None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                candidate = Cosignature.parse_line(line)
            except MalformedNoteError:
                continue
            if (candidate.name, candidate.key_id) == (witness.name, witness.verifier.key_id):
                try:
                    witness.verifier.verify(body, candidate)
                except Exception:  # noqa: BLE001 - a bad cosignature is the witness's failure
                    self._failed(witness, "bad_cosignature", "a cosignature that does not verify")
                    return
                cosignature = candidate
                break
        if cosignature is None:
            self._failed(witness, "no_cosignature", "no cosignature by its configured key in the answer")
            return
        at = datetime.fromtimestamp(cosignature.timestamp, timezone.utc)
        with self.sessions() as session:
            kept = session.get(LogCosignature, (checkpoint.size, witness.name))
            if kept is None:
                session.add(LogCosignature(tree_size=checkpoint.size, witness=witness.name, line=cosignature.line(),
                                           cosigned_at=at))
            else:  # a line kept for this size that no longer verified: the witness's word now
                kept.line, kept.cosigned_at = cosignature.line(), at
            head = session.get(LogWitnessHead, witness.name) or LogWitnessHead(witness=witness.name, size=0)
            head.size = max(head.size or 0, checkpoint.size)
            head.cosigned_at, head.attempted_at, head.last_error = at, datetime.now(timezone.utc), None
            session.merge(head)
            session.commit()
        self.metrics.set("log_witness_cosigned_size", checkpoint.size, "Largest tree size each witness cosigned",
                         witness=witness.name)
        self.metrics.set("log_witness_cosigned_timestamp_seconds", cosignature.timestamp,
                         "When each witness last cosigned (POSIX seconds)", witness=witness.name)

    def _record_head(self, witness: Witness, size: int) -> None:
        with self.sessions() as session:
            head = session.get(LogWitnessHead, witness.name) or LogWitnessHead(witness=witness.name, size=0)
            head.size, head.attempted_at = size, datetime.now(timezone.utc)
            session.merge(head)
            session.commit()

    def _failed(self, witness: Witness, outcome: str, detail: str) -> None:
        log.warning("witness %s did not cosign: %s %s", witness.name, outcome, detail)
        self.metrics.inc("log_witness_refusals", "Checkpoints a witness did not cosign, by outcome",
                         witness=witness.name, outcome=outcome)
        with self.sessions() as session:
            head = session.get(LogWitnessHead, witness.name) or LogWitnessHead(witness=witness.name, size=0)
            head.attempted_at, head.last_error = datetime.now(timezone.utc), f"{outcome}: {detail}"[:200]
            session.merge(head)
            session.commit()
