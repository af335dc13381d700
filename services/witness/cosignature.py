"""Ed25519 checkpoint cosignatures, ``cosignature/v1`` of c2sp.org/tlog-cosignature.

A cosignature is a signed-note signature line (c2sp.org/signed-note) on a
checkpoint (c2sp.org/tlog-checkpoint)::

    — <cosigner name> base64(key id || u64 big-endian timestamp || 64-byte Ed25519 signature)

* key id = SHA-256(name || 0x0A || 0x04 || 32-byte public key)[:4] — type 0x04,
  not the 0x01 of plain Ed25519 note signatures, so the same key has two ids;
* the signed message is ``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the
  whole checkpoint body (the note text up to its final newline, no signature
  lines); the timestamp is POSIX seconds, 1 .. 2**63 - 1 (a witness never sends 0);
* a cosigner *verifier key* is the vkey ``<name>+<hex key id>+<base64(0x04 || key)>``;
  as transparency-dev/formats ``NewVerifierForCosignatureV1`` does, a plain
  Ed25519 vkey (type 0x01) of the same key is also accepted and read as 0x04;
* the private key is kept as a signed-note signer key
  ``PRIVATE+KEY+<name>+<0x01 key id>+<base64(0x01 || seed)>`` — the form
  golang.org/x/mod/sumdb/note writes and ``NewSignerForCosignatureV1`` reads.

:class:`CosignatureVerifier` has the ``name``, ``key_id`` and ``verifies`` of a
:class:`~services.signing.checkpoint.NoteVerifier`, so it can be handed to
:func:`~services.signing.checkpoint.open_note` next to a log's key to check a
cosigned checkpoint in one call, as Go's ``note.Open`` with a verifier list.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.signing.checkpoint import (
    ED25519_SIGNATURE_TYPE,
    BadSignatureError,
    Checkpoint,
    MalformedNoteError,
    NoteSignature,
    NoteSigner,
    UnknownKeyError,
    decode_key_string,
    key_id,
    parse_note,
    parse_signature_line,
)

COSIGNATURE_V1_TYPE = 0x04
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1
_TIMESTAMP_SIZE = 8
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64


def cosignature_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4]."""
    return key_id(name, public_key, COSIGNATURE_V1_TYPE)


def signed_message(body: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signature covers."""
    _check_timestamp(timestamp)
    return f"{HEADER}time {timestamp}\n{body}".encode("utf-8")


def _check_timestamp(timestamp: int) -> None:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedNoteError(f"expected a timestamp in 0 .. 2**63-1, found {timestamp}", "cosignature")


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Cosignature:
    """One parsed cosignature/v1 line; :meth:`CosignatureVerifier.verify` checks it."""

    name: str
    key_id: int
    timestamp: int
    signature: bytes

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> "Cosignature":
        """Read the timestamped signature out of a note signature's bytes (after the key id)."""
        if len(sig.signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            raise MalformedNoteError(
                f"expected {_TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE} bytes after the key id "
                f"(timestamp and Ed25519 signature), found {len(sig.signature)}",
                "cosignature",
            )
        timestamp = int.from_bytes(sig.signature[:_TIMESTAMP_SIZE], "big")
        _check_timestamp(timestamp)
        return cls(sig.name, sig.key_id, timestamp, sig.signature[_TIMESTAMP_SIZE:])

    @classmethod
    def parse_line(cls, line: str) -> "Cosignature":
        """Parse ``— <name> <base64>`` with or without its final newline."""
        return cls.from_note_signature(parse_signature_line(line.removesuffix("\n")))

    def note_signature(self) -> NoteSignature:
        return NoteSignature(self.name, self.key_id, self.timestamp.to_bytes(_TIMESTAMP_SIZE, "big") + self.signature)

    def line(self) -> str:
        """The signature line, newline included."""
        return self.note_signature().line()


@dataclass(frozen=True)
class CosignatureVerifier:
    """A trusted cosigner: name, cosignature/v1 key id and Ed25519 public key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey = field(compare=False)

    @classmethod
    def from_key_string(cls, text: str) -> "CosignatureVerifier":
        """Parse ``<name>+<hex key id>+<base64(0x04 || key)>`` (or the 0x01 vkey of the
        same key, whose id is then the 0x01 one), checking the id."""
        name, claimed_id, raw = decode_key_string(text.strip(), "witness_key")
        if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] not in (COSIGNATURE_V1_TYPE, ED25519_SIGNATURE_TYPE):
            raise MalformedNoteError(
                f"expected signature type 0x04 (or 0x01) and a {_ED25519_KEY_SIZE}-byte Ed25519 key, "
                f"found type {raw[:1].hex() or 'none'} and {max(len(raw) - 1, 0)} bytes",
                "witness_key",
            )
        wanted = key_id(name, raw[1:], raw[0])
        if claimed_id != wanted:
            raise MalformedNoteError(
                f"expected key id {wanted:08x} for this name, type and key, found {claimed_id:08x}", "witness_key"
            )
        return cls(name, cosignature_key_id(name, raw[1:]), Ed25519PublicKey.from_public_bytes(raw[1:]))

    def to_key_string(self) -> str:
        """The vkey with signature type 0x04."""
        encoded = base64.b64encode(bytes([COSIGNATURE_V1_TYPE]) + _raw(self.public_key)).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verifies(self, text: bytes, signature: bytes) -> bool:
        """The NoteVerifier interface: ``signature`` is timestamp || Ed25519 signature."""
        if len(signature) != _TIMESTAMP_SIZE + _ED25519_SIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:_TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        try:
            self.public_key.verify(signature[_TIMESTAMP_SIZE:], signed_message(text.decode("utf-8"), timestamp))
        except (InvalidSignature, UnicodeDecodeError):
            return False
        return True

    def verify(self, body: str, cosignature: Cosignature) -> None:
        """Raise unless ``cosignature`` is this cosigner's valid signature on ``body``."""
        if (cosignature.name, cosignature.key_id) != (self.name, self.key_id):
            raise UnknownKeyError(
                f"expected a cosignature by {self.name}+{self.key_id:08x}, "
                f"found one by {cosignature.name}+{cosignature.key_id:08x}"
            )
        if not self.verifies(body.encode("utf-8"), cosignature.note_signature().signature):
            raise BadSignatureError(
                f"expected a valid cosignature/v1 by {self.name}+{self.key_id:08x} at time "
                f"{cosignature.timestamp}, found one that does not verify"
            )

    def verify_line(self, body: str, line: str) -> Cosignature:
        cosignature = Cosignature.parse_line(line)
        self.verify(body, cosignature)
        return cosignature


class CosignatureSigner:
    """The witness key: signs checkpoint bodies as cosignature/v1. Its ``repr``
    never shows the key."""

    def __init__(self, signer: NoteSigner):
        self._signer = signer
        self.name = signer.name
        self.verifier = CosignatureVerifier(
            signer.name, cosignature_key_id(signer.name, _raw(signer.verifier.public_key)), signer.verifier.public_key
        )
        self.key_id = self.verifier.key_id

    @classmethod
    def generate(cls, name: str) -> "CosignatureSigner":
        return cls(NoteSigner.generate(name))

    @classmethod
    def from_key_string(cls, text: str) -> "CosignatureSigner":
        """Parse ``PRIVATE+KEY+<name>+<0x01 key id>+<base64(0x01 || seed)>``."""
        return cls(NoteSigner.from_key_string(text.strip()))

    def to_key_string(self) -> str:
        return self._signer.to_key_string()

    def cosign(self, body: str, timestamp: int) -> Cosignature:
        """Cosign a checkpoint body (checked to be one) at ``timestamp`` (>= 1)."""
        Checkpoint.from_body(body)
        if timestamp < 1:
            raise MalformedNoteError(f"expected a timestamp >= 1 (a witness never sends 0), found {timestamp}",
                                     "cosignature")
        signature = self._signer.sign(signed_message(body, timestamp))
        return Cosignature(self.name, self.key_id, timestamp, signature)

    def __repr__(self) -> str:
        return f"CosignatureSigner({self.name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True)
class WitnessCheck:
    """What a verifier concludes about a checkpoint's cosignatures under a policy."""

    valid: tuple[tuple[str, int], ...]  # (witness name, cosignature time) of each verified cosignature
    problems: tuple[str, ...]  # cosignatures by configured witnesses that do not verify
    threshold: int
    configured: int

    @property
    def witnessed(self) -> bool:
        return len(self.valid) >= self.threshold and not self.problems


def check_cosignatures(note: str, verifiers: Sequence[CosignatureVerifier], threshold: int) -> WitnessCheck:
    """Which configured witnesses validly cosigned ``note`` (other signature lines are ignored, as the spec says)."""
    parsed = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    valid, problems = [], []
    for signature in parsed.signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue
        try:
            cosignature = Cosignature.from_note_signature(signature)
            verifier.verify(parsed.text, cosignature)
        except Exception as exc:  # noqa: BLE001 - every failure is a problem to report, none a crash
            problems.append(f"{signature.name}: {getattr(exc, 'reason', exc)}")
            continue
        if signature.name not in [name for name, _ in valid]:
            valid.append((signature.name, cosignature.timestamp))
    return WitnessCheck(tuple(valid), tuple(problems), threshold, len(verifiers))
