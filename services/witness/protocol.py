"""The ``add-checkpoint`` request and the witness's answers, c2sp.org/tlog-witness.

Request body (every line ends in U+000A)::

    old <size>                 decimal, no leading zeros ("0" for zero)
    <base64 hash>              0 .. 63 consistency-proof lines, RFC 6962 §2.1.2
    ...
                               an empty line
    <checkpoint note>          c2sp.org/tlog-checkpoint, one or more signatures

Answers: 200 with the cosignature line(s); 400 a malformed body, or an old size
above the checkpoint's; 403 no trusted log signature, or a trusted one that
fails; 404 an unknown origin; 409 ``text/x.tlog.size`` ``<size>\\n`` when the
old size is not the size last cosigned; 422 a checkpoint inconsistent with
what was cosigned (bad proof, a proof from old size 0, a size-0 tree whose root
is not SHA-256(""), equal sizes with other roots). Each refusal is one
exception class carrying its status, so the mapping lives here and only here.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from services.signing.merkle import HASH_SIZE

MAX_PROOF_LINES = 63
SIZE_CONTENT_TYPE = "text/x.tlog.size"
SIGNATURES_CONTENT_TYPE = "text/plain; charset=utf-8"
_OLD_LINE = re.compile(rb"old (0|[1-9][0-9]{0,19})")


# --- refusals -----------------------------------------------------------------------


class WitnessRefusal(Exception):
    """The witness will not cosign. ``status`` is the HTTP status of the spec,
    ``outcome`` a short stable word for logs and metrics."""

    status = 500
    outcome = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def answer(self) -> "Answer":
        return Answer(self.status, f"{self.message}\n".encode("utf-8"), SIGNATURES_CONTENT_TYPE)


class MalformedRequest(WitnessRefusal):
    """400: the body is not an old size line, proof lines, an empty line and a
    checkpoint note, or the note or checkpoint is malformed."""

    status = 400
    outcome = "malformed"


class OldSizeBeyondCheckpoint(MalformedRequest):
    """400: the old size is larger than the submitted checkpoint's size."""

    outcome = "old_size_too_large"


class UnknownLog(WitnessRefusal):
    """404: no log with this origin is configured."""

    status = 404
    outcome = "unknown_log"


class UntrustedCheckpoint(WitnessRefusal):
    """403: no signature by a trusted key of the origin, or one that fails."""

    status = 403
    outcome = "forbidden"


class SizeConflict(WitnessRefusal):
    """409: the old size is not the size of the latest cosigned checkpoint."""

    status = 409
    outcome = "conflict"

    def __init__(self, size: int):
        super().__init__(f"expected old size {size}")
        self.size = size

    def answer(self) -> "Answer":
        return Answer(self.status, f"{self.size}\n".encode("ascii"), SIZE_CONTENT_TYPE)


class InconsistentCheckpoint(WitnessRefusal):
    """422: the checkpoint does not extend what was cosigned. ``reason`` is one of
    ``bad_proof``, ``proof_from_empty``, ``empty_tree_root``, ``root_mismatch``."""

    status = 422
    outcome = "inconsistent"

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


# --- the request ----------------------------------------------------------------------


@dataclass(frozen=True)
class AddCheckpointRequest:
    old_size: int
    proof: tuple[bytes, ...]
    #: the signed checkpoint note exactly as sent
    note: bytes


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Split an add-checkpoint body; raises :class:`MalformedRequest`."""
    first, sep, rest = body.partition(b"\n")
    if not sep:
        raise MalformedRequest("expected an 'old <size>' line ending in a newline")
    match = _OLD_LINE.fullmatch(first)
    if match is None:
        raise MalformedRequest("expected 'old <size>' in decimal without leading zeros on the first line")
    proof: list[bytes] = []
    while True:
        line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise MalformedRequest("expected an empty line between the proof and the checkpoint, found none")
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise MalformedRequest(f"expected at most {MAX_PROOF_LINES} consistency proof lines")
        proof.append(_decode_hash(line, len(proof) + 1))
    if not rest:
        raise MalformedRequest("expected a checkpoint after the empty line, found nothing")
    return AddCheckpointRequest(int(match.group(1)), tuple(proof), rest)


def _decode_hash(line: bytes, number: int) -> bytes:
    try:
        value = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest(f"expected standard base64 on proof line {number}") from None
    if len(value) != HASH_SIZE or base64.b64encode(value) != line:
        raise MalformedRequest(f"expected a canonical base64 {HASH_SIZE}-byte hash on proof line {number}, "
                               f"found {len(value)} bytes")
    return value


def format_add_checkpoint(old_size: int, proof: list[bytes] | tuple[bytes, ...], note: str | bytes) -> bytes:
    """The request body a log (or a test) sends."""
    if isinstance(note, str):
        note = note.encode("utf-8")
    lines = [f"old {old_size}\n".encode("ascii"), *(base64.b64encode(h) + b"\n" for h in proof), b"\n"]
    return b"".join(lines) + note


def parse_size_answer(body: bytes) -> int:
    """The size in a 409 answer's ``<size>\\n`` body."""
    text = body.decode("ascii")
    if not text.endswith("\n") or not text[:-1].isdigit():
        raise ValueError(f"expected '<size>\\n', found {text!r}")
    return int(text)


# --- answers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def cosigned_answer(lines: list[str] | tuple[str, ...]) -> Answer:
    """200: one or more signature lines, each ``— <name> <base64>\\n``."""
    return Answer(200, "".join(lines).encode("utf-8"), SIGNATURES_CONTENT_TYPE)
