"""``esign verify FILE.pdf [--report REPORT.json] [--json] [--tsa-root PEM]
[--witness-key KEY ... --witness-threshold K]``: check a signed PDF and its
signing report offline, trusting only the platform root certificate (RFC 5280
path validation), the evidence log's public key (an Ed25519 C2SP signed-note
verifier key), the keys of independent witnesses, and, for time-stamps only,
the root of an external time-stamp authority that made the document time-stamp.

What is checked:

* every PAdES signature and document time-stamp of the PDF, its RFC 3161
  time-stamp and chain to the root (each line names the root reached, so two
  independent time sources show as two roots), and that nothing was appended
  after the last signature (:func:`services.signing.verification.verify_pdf`);
* with a report: the platform's signed note over the report's canonical JSON;
  that the report names this file's SHA-256 as the final PDF; the signed
  checkpoint, and that at least K of the N configured witnesses cosigned it
  (c2sp.org/tlog-cosignature; too few is "not witnessed", a failure: a log the
  platform rewrote gets no cosignature from a witness that saw the old one);
  every evidence leaf's RFC 9162 inclusion proof against that
  checkpoint; and that the leaves say what the report says (same flow, the
  report's fields, the ``prev_index`` chain unbroken from the flow's first
  event, the final event recorded with the final PDF's hash);
* per party, the identity assurance level the report states (and the one the
  party's signer certificate states, read from the PDF); and that a dispute
  of a party's identity is in the report exactly when the log records one.

Each check is a :class:`Check` saying what was expected and what was found,
so the output names exactly what failed. What holds but should give a reader
pause is a warning, not a failure: an identity that no authority verified
(self_declared), a signer certificate stating another level than the report,
a disputed identity. Exit status: 0 when every check holds (warnings or
not), 1 when one fails, 2 on a usage error (missing file, bad key, no root).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509

from services.common.assurance import LEVELS, AssuranceLevel
from services.common.errors import EsignError, InvalidInput
from services.signing.checkpoint import Checkpoint, MalformedNoteError, NoteVerifier, open_checkpoint
from services.signing.log_records import InclusionProof, verify_checkpointed_inclusion
from services.signing.report import verify_report_signature
from services.signing.verification import VerificationResult, verify_pdf
from services.witness.cosignature import CosignatureVerifier, check_cosignatures

ROOT_ENV = "ESIGN_ROOT_CERT"
LOG_KEY_ENV = "ESIGN_LOG_KEY"
#: where ``esign ca init`` leaves the root on a one-machine install
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "var" / "ca" / "root.pem"

#: the event that ends a flow in each final state, as the log records it
FINAL_EVENTS = {
    "completed": "flow_completed", "voided": "flow_voided", "declined": "flow_declined", "expired": "flow_expired",
    "cancelled": "flow_cancelled",
}
#: the log events that record a dispute of a party's identity (an unfinished flow is cancelled by it)
DISPUTE_EVENTS = ("flow_identity_disputed", "flow_cancelled")
#: report event fields copied from the leaf, which must agree with it
_EVENT_FIELDS = ("event_type", "timestamp", "party_id", "prev_index")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Check:
    """One thing verified: what, whether it held, what was expected and found."""

    subject: str
    ok: bool
    expected: str
    found: str

    def sentence(self) -> str:
        return f"{self.subject}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class OfflineResult:
    file_sha256: str
    checks: tuple[Check, ...]
    #: the full PDF verification (:meth:`VerificationResult.to_dict`), None if unreadable
    pdf: Mapping[str, Any] | None
    #: what holds but should give a reader pause (a self-declared or disputed identity)
    warnings: tuple[str, ...] = ()
    #: the agreement's status in words, when asked online (``--online``)
    status: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def problems(self) -> list[str]:
        return [check.sentence() for check in self.checks if not check.ok]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "file_sha256": self.file_sha256, "problems": self.problems,
            "warnings": list(self.warnings), "checks": [asdict(check) for check in self.checks], "pdf": self.pdf,
            "status": self.status,
        }


class _Malformed(Exception):
    """The report lacks a field or has one of the wrong type (named by path)."""


def load_roots(root_pems: Sequence[bytes], *, name: str = "root", required: bool = True) -> list[x509.Certificate]:
    """Every certificate of the PEM files given; at least one unless not ``required``."""
    roots: list[x509.Certificate] = []
    for i, pem in enumerate(root_pems):
        try:
            roots += x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise InvalidInput(f"{name}[{i}]", "pem",
                               "expected a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    if required and not roots:
        raise InvalidInput("root", "required", "expected the platform root certificate, found none")
    return roots


# --- the PDF ------------------------------------------------------------------------


def _pdf_checks(result: VerificationResult) -> list[Check]:
    checks = []
    if not result.signatures:
        checks.append(Check("PDF signatures", False, "at least one signature", "none"))
    for sig in result.signatures:
        held = f"{sig.signer}; intact, valid and trusted"
        held += f"; certificate states assurance {sig.assurance_level or 'none (issued before levels)'}"
        if sig.timestamp is not None:
            held += f"; time-stamped {sig.timestamp.time} by {sig.timestamp.tsa} (root {sig.timestamp.tsa_root})"
        checks.append(Check(
            f"PDF signature {sig.field_name}", sig.ok,
            "an intact, valid signature trusted up to the root, with a trusted time-stamp",
            "; ".join(sig.problems) if sig.problems else held,
        ))
    for stamp in result.document_timestamps:
        time = stamp.timestamp.time if stamp.timestamp else None
        checks.append(Check(
            f"PDF document time-stamp {stamp.field_name}", stamp.ok,
            "an intact time-stamp from a trusted TSA",
            ("; ".join(stamp.problems) if stamp.problems
             else f"time-stamped {time} by {stamp.signer} (root {stamp.root})"),
        ))
    if result.signatures or result.document_timestamps:
        checks.append(Check(
            "changes after the last signature", not result.modified_after_last_signature, "none",
            "bytes appended after the last signature or time-stamp" if result.modified_after_last_signature
            else "none",
        ))
    return checks


# --- the report -----------------------------------------------------------------------


def _field(data: Any, *path: str | int) -> Any:
    value = data
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            raise _Malformed(".".join(str(p) for p in path)) from None
    return value


def _reason(exc: EsignError) -> str:
    """What went wrong, without the error class's generic preamble."""
    return getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)


def _key_name(verifier: NoteVerifier) -> str:
    return f"{verifier.name}+{verifier.key_id:08x}"


def _report_signature_check(signed: Mapping[str, Any], verifier: NoteVerifier) -> Check:
    expected = f"the platform's signature by {_key_name(verifier)} over the report's canonical JSON"
    try:
        verify_report_signature(signed, verifier.to_key_string())
    except EsignError as exc:
        return Check("report signature", False, expected, _reason(exc))
    return Check("report signature", True, expected, f"a valid signature by {_key_name(verifier)}")


def _checkpoint(note: str, verifier: NoteVerifier,
                report_body: Mapping[str, Any]) -> tuple[list[Check], Checkpoint | None]:
    expected = f"a checkpoint signed by {_key_name(verifier)}"
    try:
        checkpoint = open_checkpoint(note, verifier)
    except EsignError as exc:
        return [Check("checkpoint signature", False, expected, _reason(exc))], None
    checks = [Check("checkpoint signature", True, expected,
                    f"tree size {checkpoint.size}, root {checkpoint.root_hash.hex()}")]
    size, root = _field(report_body, "evidence", "tree_size"), _field(report_body, "evidence", "root_hash")
    agrees = size == checkpoint.size and root == checkpoint.root_hash.hex()
    checks.append(Check("report's tree head", agrees,
                        f"tree size {checkpoint.size} and root {checkpoint.root_hash.hex()} (the checkpoint's)",
                        f"tree size {size} and root {root}"))
    return checks, checkpoint


def _inclusion_checks(events: Sequence[Mapping[str, Any]], note: str, verifier: NoteVerifier) -> list[Check]:
    checks = []
    for position, event in enumerate(events):
        index = _field(event, "index")
        subject = f"evidence leaf {index} ({event.get('event_type')})"
        expected = "an inclusion proof leading to the checkpoint's root"
        try:
            leaf = _field(event, "leaf")
            proof = InclusionProof.from_dict(_field(event, "proof"))
            if proof.leaf_index != index:
                raise _Malformed(f"evidence.events.{position}.proof.leaf_index (is {proof.leaf_index}, not {index})")
            verify_checkpointed_inclusion(leaf.encode("utf-8"), proof, note, verifier)
        except EsignError as exc:
            checks.append(Check(subject, False, expected, _reason(exc)))
        except (_Malformed, KeyError, TypeError, ValueError, AttributeError) as exc:
            checks.append(Check(subject, False, expected, f"a malformed proof ({exc})"))
        else:
            checks.append(Check(subject, True, expected, f"leaf {index} proven in a tree of {proof.tree_size}"))
    return checks


def _content_checks(report_body: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Check]:
    """The leaves must say what the report says and form the flow's whole chain."""
    flow_id = _field(report_body, "flow", "flow_id")
    original = _field(report_body, "document", "original_pdf_sha256")
    final = _field(report_body, "document", "final_pdf_sha256")
    state = _field(report_body, "flow", "state")
    problems: list[tuple[str, str, str]] = []
    records = []
    for event in events:
        index = _field(event, "index")
        try:
            record = json.loads(_field(event, "leaf"))
            if not isinstance(record, dict):
                raise TypeError
        except (ValueError, TypeError):
            problems.append((f"evidence leaf {index}", "canonical JSON of an event record",
                             "text that is not a JSON object"))
            continue
        records.append((index, record))
        if record.get("flow_id") != flow_id:
            problems.append((f"evidence leaf {index}", f"an event of flow {flow_id}",
                             f"one of flow {record.get('flow_id')}"))
        for name in _EVENT_FIELDS:
            if event.get(name) != record.get(name):
                problems.append((f"evidence leaf {index} {name}", f"{record.get(name)!r} (what the leaf says)",
                                 f"{event.get(name)!r} in the report"))
    previous = None
    for index, record in records:
        if previous is not None and index <= previous:
            problems.append(("evidence order", "events in increasing log order", f"leaf {index} after leaf {previous}"))
        if record.get("prev_index") != previous:
            what = "the flow's first event (prev_index null)" if previous is None else f"prev_index {previous}"
            problems.append((f"evidence chain at leaf {index}", what,
                             f"prev_index {record.get('prev_index')}: an event of the flow is missing from the report"))
        previous = index
    by_type = {record.get("event_type"): record for _, record in records}
    # the first flow_sent names the original; later ones (to the next party) the PDF signed so far
    sent = next((record for _, record in records if record.get("event_type") == "flow_sent"), None)
    if sent is not None and sent.get("document_hash") != original:
        problems.append(("flow_sent leaf", f"document hash {original} (the report's original PDF)",
                         str(sent.get("document_hash"))))
    final_event = FINAL_EVENTS.get(state)
    if final_event is not None and final_event not in by_type:
        problems.append(("evidence of the outcome", f"a {final_event} leaf for a {state} flow", "none"))
    completed = by_type.get("flow_completed")
    if completed is not None and completed.get("document_hash") != final:
        problems.append(("flow_completed leaf", f"document hash {final} (the report's final PDF)",
                         str(completed.get("document_hash"))))
    if not problems:
        return [Check("evidence contents", True, "leaves that agree with the report and chain from the first event",
                      f"{len(records)} events of flow {flow_id}, chained by prev_index")]
    return [Check(subject, False, expected, found) for subject, expected, found in problems]


def _describe_check(check: Mapping[str, Any]) -> str:
    """An identity check in one line: level, who checked, score, liveness, account."""
    level = AssuranceLevel(check["assurance_level"])
    said = f"{level.value} ({level.label}); provider {check.get('provider')}"
    if check.get("request_id"):
        said += f", request id {check['request_id']}"
    if check.get("score") is not None:
        said += f"; {check.get('score_kind')} {check['score']} (threshold {check.get('threshold')})"
    said += f"; liveness {check.get('liveness')}; checked {check.get('checked_at') or 'never'}"
    return said + f"; account {check.get('account_status')}"


def _identity_checks(body: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                     pdf_result: VerificationResult | None, warnings: list[str]) -> list[Check]:
    """Per party, the assurance level the report states (warning when no
    authority vouched for it, or the signer certificate states another), and
    the dispute: in the report exactly when the log records one."""
    parties = {_field(party, "person_id"): party for party in _field(body, "parties")}

    def who(person_id: str) -> str:
        party = parties.get(person_id)
        return f"{party.get('role')} {party.get('name')}" if party else str(person_id)

    fields = {_field(sig, "person_id"): _field(sig, "field_name") for sig in _field(body, "signatures")}
    certified = {sig.field_name: sig.assurance_level for sig in (pdf_result.signatures if pdf_result else ())}
    checks = []
    for position, check in enumerate(_field(body, "identity_checks")):
        if not isinstance(check, Mapping):
            raise _Malformed(f"identity_checks.{position}")
        person_id = _field(check, "person_id")
        stated = check.get("assurance_level")
        if stated is None:  # a version 1 report: identity checks before assurance levels
            warnings.append(f"identity of {who(person_id)}: the report states no assurance level "
                            f"(report version {body.get('version')})")
            continue
        subject = f"identity of {who(person_id)}"
        if stated not in LEVELS:
            checks.append(Check(subject, False, f"an assurance level ({', '.join(LEVELS)})", repr(stated)))
            continue
        checks.append(Check(subject, True, f"an assurance level ({', '.join(LEVELS)})", _describe_check(check)))
        if not AssuranceLevel(stated).authority_checked:
            warnings.append(f"identity of {who(person_id)} is self-declared: not verified by an authority")
        field_name = fields.get(person_id)
        if field_name in certified:
            in_certificate = certified[field_name] or AssuranceLevel.SELF_DECLARED.value
            if in_certificate != stated:
                warnings.append(f"identity of {who(person_id)}: the report states {stated}, the signer certificate "
                                f"in {field_name} states {certified[field_name] or 'none (issued before levels)'}")
    logged = [r for r in records if r.get("event_type") in DISPUTE_EVENTS and r.get("disputed_person_id")]
    dispute = body.get("dispute")
    if dispute is None and not logged:
        return checks
    expected = ("no dispute, as the log records none" if not logged else
                f"the dispute of {logged[0]['disputed_person_id']}'s identity the log records "
                f"({logged[0]['event_type']})")
    if dispute is None:
        checks.append(Check("identity dispute", False, expected, "none in the report"))
        return checks
    if not isinstance(dispute, Mapping):
        raise _Malformed("dispute")
    person_id = _field(dispute, "person_id")
    agrees = any(r["disputed_person_id"] == person_id for r in logged)
    checks.append(Check("identity dispute", agrees, expected,
                        f"a dispute of {person_id}'s identity at {_field(dispute, 'at')} "
                        f"({_field(dispute, 'reason')})"))
    warnings.append(f"identity of {who(person_id)} was disputed at {_field(dispute, 'at')} "
                    f"({_field(dispute, 'reason')}): the account is frozen and its certificates revoked; "
                    f"the signatures of that party may not be theirs")
    return checks


def _leaf_records(events: Sequence[Mapping[str, Any]]) -> list[dict]:
    records = []
    for event in events:
        try:
            record = json.loads(_field(event, "leaf"))
        except ValueError:
            continue  # named by the content checks
        if isinstance(record, dict):
            records.append(record)
    return records


def _witness_checks(note: str, witnesses: Sequence[CosignatureVerifier], threshold: int,
                    warnings: list[str]) -> list[Check]:
    """At least ``threshold`` of the configured witnesses cosigned the checkpoint
    (c2sp.org/tlog-cosignature): only then is the log's checkpoint more than the
    log's own word. Too few is "not witnessed", a failed check."""
    if threshold <= 0:
        warnings.append("no witness policy (threshold 0): the checkpoint rests on the log's own key alone")
        return []
    result = check_cosignatures(note, witnesses, threshold)
    named = "; ".join(f"{name} at {_utc(ts)}" for name, ts in result.valid) or "none"
    found = f"{len(result.valid)} of {result.configured} configured witnesses cosigned: {named}"
    if result.problems:
        found += f"; cosignatures that do not verify: {'; '.join(result.problems)}"
    expected = f"cosignatures by at least {threshold} of the {result.configured} configured witnesses"
    return [Check("witnesses" if result.witnessed else "witnesses: not witnessed", result.witnessed, expected, found)]


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _report_checks(pdf_sha256: str, signed: Any, verifier: NoteVerifier | None,
                   pdf_result: VerificationResult | None, warnings: list[str],
                   witnesses: Sequence[CosignatureVerifier] = (), threshold: int = 0) -> list[Check]:
    if not isinstance(signed, Mapping) or not isinstance(signed.get("report"), Mapping):
        return [Check("report", False, "a signed report {report, signature}", "no report object")]
    if verifier is None:
        return [Check("log public key", False, "the log's public key to check the report and its proofs",
                      "none given")]
    body = signed["report"]
    checks = [_report_signature_check(signed, verifier)]
    try:
        final = _field(body, "document", "final_pdf_sha256")
        checks.append(Check("final PDF hash", final == pdf_sha256, f"the report's final PDF SHA-256 {final}",
                            f"the file's SHA-256 {pdf_sha256}"))
        if pdf_result is not None:
            listed = len(_field(body, "signatures"))
            found = len(pdf_result.signatures)
            checks.append(Check("number of signatures", listed == found,
                                f"{listed} signatures (as the report lists)", f"{found} in the PDF"))
        events = _field(body, "evidence", "events")
        note = _field(body, "evidence", "checkpoint")
        if not isinstance(events, list) or not events or not isinstance(note, str):
            raise _Malformed("evidence.events / evidence.checkpoint")
        checkpoint_checks, checkpoint = _checkpoint(note, verifier, body)
        checks += checkpoint_checks
        if checkpoint is not None:
            checks += _witness_checks(note, witnesses, threshold, warnings)
            checks += _inclusion_checks(events, note, verifier)
        checks += _content_checks(body, events)
        checks += _identity_checks(body, _leaf_records(events), pdf_result, warnings)
    except _Malformed as exc:
        checks.append(Check("report contents", False, "a report as esign produces it", f"missing or malformed {exc}"))
    return checks


def verify_offline(pdf_bytes: bytes, root_pems: Sequence[bytes], report: Mapping[str, Any] | None = None,
                   log_public_key: str | None = None, *, now=None,
                   tsa_root_pems: Sequence[bytes] = (), witness_keys: Sequence[str] = (),
                   witness_threshold: int | None = None) -> OfflineResult:
    """Check ``pdf_bytes`` (and the signed ``report``, if given) with only the
    root certificates, the log key and the witnesses' keys; ``tsa_root_pems``
    are roots trusted for time-stamps only (an external document time-stamp
    authority's). The report's checkpoint must carry cosignatures by at least
    ``witness_threshold`` (default: all) of ``witness_keys``.
    Raises ``InvalidInput`` for unusable inputs (no root, a malformed key); a
    failed check is a result, not an error."""
    witnesses = [_witness_verifier(key, i) for i, key in enumerate(witness_keys)]
    threshold = len(witnesses) if witness_threshold is None else witness_threshold
    if not 0 <= threshold <= len(witnesses):
        raise InvalidInput("witness_threshold", "range", f"expected 0 to {len(witnesses)} (the witness keys given)")
    roots = load_roots(root_pems)
    tsa_roots = load_roots(tsa_root_pems, name="tsa_root", required=False)
    verifier = NoteVerifier.from_key_string(log_public_key) if log_public_key else None
    pdf_sha256 = hashlib.sha256(pdf_bytes).hexdigest()
    checks: list[Check] = []
    warnings: list[str] = []
    try:
        pdf_result = verify_pdf(pdf_bytes, roots, timestamp_roots=tsa_roots, now=now)
    except InvalidInput as exc:
        pdf_result = None
        checks.append(Check("PDF file", False, "a readable PDF", exc.message))
    else:
        checks += _pdf_checks(pdf_result)
    if report is not None:
        checks += _report_checks(pdf_sha256, report, verifier, pdf_result, warnings, witnesses, threshold)
    return OfflineResult(pdf_sha256, tuple(checks), pdf_result.to_dict() if pdf_result else None, tuple(warnings))


def _witness_verifier(key: str, position: int) -> CosignatureVerifier:
    try:
        return CosignatureVerifier.from_key_string(key)
    except MalformedNoteError as exc:
        raise InvalidInput(f"witness_key.{position}", "witness_key", exc.message) from None


# --- command line -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esign verify",
        description="Verify a signed PDF (and its signing report), or a whole evidence package, offline, with "
                    "only the platform root certificate, the evidence log's public key and the witnesses' keys. "
                    "For a package, anchors not given are taken from the package, with a warning.",
    )
    parser.add_argument("file", metavar="FILE", help="the signed PDF, or an evidence package (证据包, ZIP)")
    parser.add_argument("--report", metavar="REPORT.json", help="the signed report (签约报告) JSON")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--root", metavar="PATH",
                        help=f"platform root certificate (PEM); default ${ROOT_ENV} or {DEFAULT_ROOT}")
    parser.add_argument("--tsa-root", metavar="PATH", action="append", default=[],
                        help="root certificate (PEM) of an external time-stamp authority, trusted for time "
                             "stamps only (repeatable)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--log-key", metavar="KEY", help=f"log verifier key <name>+<id>+<key>; default ${LOG_KEY_ENV}")
    keys.add_argument("--log-key-file", metavar="PATH", help="file holding the log verifier key")
    parser.add_argument("--witness-key", metavar="KEY", action="append", default=None,
                        help="a witness's verifier key <name>+<id>+<key> (repeatable); default: the witnesses "
                             "of the signing configuration (ESIGN_WITNESSES)")
    parser.add_argument("--witness-threshold", metavar="K", type=int, default=None,
                        help="cosignatures needed (default: ESIGN_WITNESS_THRESHOLD, else all the keys given)")
    parser.add_argument("--online", metavar="URL",
                        help="also ask the platform at URL whether the agreement is in force, and check the "
                             "answer's evidence-log proofs and witness cosignatures (esign verify --online)")
    return parser


class _UsageError(Exception):
    pass


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise _UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None


def _root_path(option: str | None) -> str:
    path = option or os.environ.get(ROOT_ENV)
    if path:
        return path
    if DEFAULT_ROOT.is_file():
        return str(DEFAULT_ROOT)
    raise _UsageError(f"no platform root certificate: pass --root PATH or set {ROOT_ENV}")


def _log_key(args: argparse.Namespace) -> str | None:
    if args.log_key_file:
        return _read(args.log_key_file, "log key file").decode("utf-8", "replace").strip()
    return args.log_key or os.environ.get(LOG_KEY_ENV) or None


def _with_online_status(result: OfflineResult, url: str, key: str | None, witness_keys: list[str],
                        threshold: int | None) -> OfflineResult:
    """The offline result and the agreement's status, from ``url`` and checked (:mod:`.online_status`)."""
    from services.signing.online_status import check_status, fetch_status

    if not key:
        raise _UsageError(f"checking the status needs the log public key: pass --log-key or set {LOG_KEY_ENV}")
    try:
        answer = fetch_status(url, result.file_sha256)
    except OSError as exc:
        raise _UsageError(str(exc)) from None
    wanted = len(witness_keys) if threshold is None else threshold
    found, words = check_status(answer, result.file_sha256, key, witness_keys, wanted)
    checks = tuple(Check(c.subject, c.ok, c.expected, c.found) for c in found)
    return replace(result, checks=result.checks + checks, status=f"{words} (from {url}, checked above)")


def _witness_policy(args: argparse.Namespace) -> tuple[list[str], int | None]:
    """The witness keys and threshold: from the options, else the signing configuration's."""
    if args.witness_key is not None:
        return args.witness_key, args.witness_threshold
    from services.common.config import load_config
    from services.signing.witnesses import WitnessPolicy

    policy = WitnessPolicy.from_config(load_config("signing").get("WITNESSES"))
    threshold = args.witness_threshold if args.witness_threshold is not None else policy.threshold
    return [w.verifier.to_key_string() for w in policy.witnesses], threshold


def _human(path: str, result: OfflineResult) -> str:
    lines = [f"esign verify {path}", f"  SHA-256 {result.file_sha256}"]
    for check in result.checks:
        lines.append(f"  ✓ {check.subject}: {check.found}" if check.ok else f"  ✗ {check.sentence()}")
    lines += [f"  ⚠ WARNING: {warning}" for warning in result.warnings]
    if result.status:
        lines.append(f"  ► agreement status: {result.status}")
    failed = sum(not c.ok for c in result.checks)
    warned = f" ({len(result.warnings)} warnings)" if result.warnings else ""
    lines.append(f"OK: all {len(result.checks)} checks hold{warned}" if result.ok
                 else f"FAILED: {failed} of {len(result.checks)} checks failed{warned}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``esign verify``; 0 all checks hold, 1 a check failed, 2 usage error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return EXIT_USAGE if exc.code not in (0, None) else EXIT_OK
    try:
        pdf = _read(args.file, "PDF")
        from services.signing.package_verify import is_package

        if is_package(pdf):
            result = _verify_package(pdf, args)
        else:
            result = _verify_pdf(pdf, args)
    except (_UsageError, InvalidInput) as exc:
        print(f"esign verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2, default=str))
    else:
        print(_human(args.file, result))
    return EXIT_OK if result.ok else EXIT_FAILED


def _verify_package(data: bytes, args: argparse.Namespace) -> OfflineResult:
    """``esign verify PACKAGE.zip``: anchors from the options or the environment, else the package's (warned)."""
    from services.signing.package_verify import verify_package

    if args.report:
        raise _UsageError("an evidence package carries its own report: drop --report")
    root_path = args.root or os.environ.get(ROOT_ENV)
    roots = [_read(root_path, "root certificate")] if root_path else []
    key = _log_key(args)
    tsa_roots = [_read(path, "time-stamp authority root") for path in args.tsa_root] or None
    result = verify_package(data, root_pems=roots, log_public_key=key, witness_keys=args.witness_key,
                            witness_threshold=args.witness_threshold, tsa_root_pems=tsa_roots)
    if args.online and result.pdf is not None:
        keys = args.witness_key or []
        result = _with_online_status(result, args.online, key, keys, args.witness_threshold)
    return result


def _verify_pdf(pdf: bytes, args: argparse.Namespace) -> OfflineResult:
    """``esign verify FILE.pdf [--report REPORT.json]``."""
    root = _read(_root_path(args.root), "root certificate")
    key = _log_key(args)
    report = None
    if args.report:
        try:
            report = json.loads(_read(args.report, "report"))
        except ValueError:
            raise _UsageError(f"the report {args.report} is not JSON") from None
        if not key:
            raise _UsageError(f"checking a report needs the log public key: pass --log-key or set {LOG_KEY_ENV}")
    tsa_roots = [_read(path, "time-stamp authority root") for path in args.tsa_root]
    witness_keys, threshold = _witness_policy(args)
    result = verify_offline(pdf, [root], report, key, tsa_root_pems=tsa_roots, witness_keys=witness_keys,
                            witness_threshold=threshold)
    if args.online:
        result = _with_online_status(result, args.online, key, witness_keys, threshold)
    return result


if __name__ == "__main__":
    sys.exit(main())
