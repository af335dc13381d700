"""Signed checkpoints of the evidence log: C2SP signed notes
(https://c2sp.org/signed-note) carrying a C2SP transparency-log checkpoint
(https://c2sp.org/tlog-checkpoint), signed with Ed25519 (RFC 8032).

A checkpoint note looks like::

    esign.example/evidence-log          <- origin
    1042                                <- tree size, decimal
    q1Rt...base64 RFC 6962 root...=     <- root hash
                                        <- blank line ends the text
    — esign.example/evidence-log AbCd...base64(key id || signature)...

* key id = first 4 bytes (big-endian) of SHA-256(key name || 0x0A || 0x01 || public key),
  0x01 being the signed-note signature type of Ed25519;
* the signature covers the note text (everything up to and including the
  newline before the blank line);
* a verifier key is written ``<name>+<8 hex digits key id>+<base64(0x01 || public key)>``,
  and a signer key ``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>``, the
  forms Go's golang.org/x/mod/sumdb/note reads, so its tools can check our notes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from services.common.errors import IntegrityError, InvalidInput

ED25519_SIGNATURE_TYPE = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
#: the spec asks verifiers to accept at least 16; Go's reader stops at 100
MAX_SIGNATURES = 100
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_KEY_ID_SIZE = 4
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}")


# --- errors -----------------------------------------------------------------------


class MalformedNoteError(InvalidInput):
    """Text that is not a signed note, checkpoint or key in the C2SP format."""

    def __init__(self, reason: str, field_name: str = "note"):
        super().__init__(field_name, "signed_note_format", reason)
        self.args = (reason, field_name)


class UnknownKeyError(IntegrityError):
    """No signature on the note comes from a key the verifier trusts."""

    def __init__(self, reason: str):
        super().__init__("signed note", reason)
        self.args = (reason,)


class BadSignatureError(IntegrityError):
    """A signature by a trusted key does not verify: the note was altered or forged."""

    def __init__(self, reason: str):
        super().__init__("signed note", reason)
        self.args = (reason,)


class CheckpointOriginError(IntegrityError):
    """A correctly signed checkpoint names another log than the one expected."""

    def __init__(self, reason: str):
        super().__init__("checkpoint", reason)
        self.args = (reason,)


# --- keys -------------------------------------------------------------------------


def key_id(name: str, public_key: bytes, signature_type: int = ED25519_SIGNATURE_TYPE) -> int:
    """The C2SP key id of a key: SHA-256(name || 0x0A || type || key)[:4]; the type
    is 0x01 for Ed25519 note signatures (c2sp.org/tlog-cosignature uses 0x04)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_SIZE], "big")


def _check_key_name(name: str, field_name: str) -> None:
    if not name or any(ch.isspace() or ch == "+" for ch in name) or not name.isprintable():
        raise MalformedNoteError("expected a non-empty key name without spaces or '+'", field_name)


def _b64decode(text: str, what: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise MalformedNoteError(f"expected standard base64 for the {what}", field_name) from None


def decode_key_string(text: str, field_name: str = "verifier_key") -> tuple[str, int, bytes]:
    """Split a verifier key ``<name>+<hex key id>+<base64(type || key)>`` into its
    name, claimed key id and decoded bytes (type byte first), checking only the form;
    the caller checks the type and that the id matches."""
    name, sep1, rest = text.partition("+")
    hex_id, sep2, encoded = rest.partition("+")
    if not (sep1 and sep2):
        raise MalformedNoteError("expected '<name>+<key id>+<key>'", field_name)
    _check_key_name(name, field_name)
    if not _HEX_KEY_ID.fullmatch(hex_id):
        raise MalformedNoteError(f"expected an 8-digit lower-case hex key id, found {len(hex_id)} characters",
                                 field_name)
    return name, int(hex_id, 16), _b64decode(encoded, "public key", field_name)


def _public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: name, key id and public key."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey = field(compare=False)

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> "NoteVerifier":
        _check_key_name(name, "key_name")
        return cls(name, key_id(name, _public_bytes(public_key)), public_key)

    @classmethod
    def from_key_string(cls, text: str) -> "NoteVerifier":
        """Parse ``<name>+<hex key id>+<base64(0x01 || key)>``, checking the id."""
        name, claimed_id, raw = decode_key_string(text, "verifier_key")
        if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
            raise MalformedNoteError(
                f"expected signature type 0x01 and a {_ED25519_KEY_SIZE}-byte Ed25519 key, "
                f"found type {raw[:1].hex() or 'none'} and {max(len(raw) - 1, 0)} bytes",
                "verifier_key",
            )
        wanted = key_id(name, raw[1:])
        if claimed_id != wanted:
            raise MalformedNoteError(f"expected key id {wanted:08x} for this name and key, found {claimed_id:08x}",
                                     "verifier_key")
        return cls(name, wanted, Ed25519PublicKey.from_public_bytes(raw[1:]))

    def to_key_string(self) -> str:
        raw = bytes([ED25519_SIGNATURE_TYPE]) + _public_bytes(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def verifies(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """An Ed25519 note key that signs. Its ``repr`` never shows the key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        _check_key_name(name, "key_name")
        self.name = name
        self._private_key = private_key
        self.verifier = NoteVerifier.from_public_key(name, private_key.public_key())
        self.key_id = self.verifier.key_id

    @classmethod
    def generate(cls, name: str) -> "NoteSigner":
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key_string(cls, text: str) -> "NoteSigner":
        """Parse ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``."""
        if not text.startswith(PRIVATE_KEY_PREFIX):
            raise MalformedNoteError("expected a key starting 'PRIVATE+KEY+'", "signer_key")
        name, sep1, rest = text[len(PRIVATE_KEY_PREFIX):].partition("+")
        hex_id, sep2, encoded = rest.partition("+")
        if not (sep1 and sep2) or not _HEX_KEY_ID.fullmatch(hex_id):
            raise MalformedNoteError("expected 'PRIVATE+KEY+<name>+<key id>+<key>'", "signer_key")
        _check_key_name(name, "signer_key")
        raw = _b64decode(encoded, "private key", "signer_key")
        if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
            raise MalformedNoteError("expected signature type 0x01 and a 32-byte Ed25519 seed", "signer_key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if int(hex_id, 16) != signer.key_id:
            # never print the key; the id is public
            raise MalformedNoteError(f"expected key id {signer.key_id:08x} for this key, found {hex_id}", "signer_key")
        return signer

    def to_key_string(self) -> str:
        seed = self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        raw = bytes([ED25519_SIGNATURE_TYPE]) + seed
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{self.key_id:08x}+{base64.b64encode(raw).decode()}"

    def sign(self, text: bytes) -> bytes:
        return self._private_key.sign(text)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key_id={self.key_id:08x})"


# --- notes ------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = self.key_id.to_bytes(_KEY_ID_SIZE, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed note: its text and its signature lines, verified or not."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class OpenedNote:
    """A note with at least one signature by a trusted key that verified."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def _check_text(text: str, field_name: str = "note") -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("expected the note text to end with a newline", field_name)
    bad = next((ch for ch in text if ch < " " and ch != "\n"), None)
    if bad is not None:
        raise MalformedNoteError(f"expected no control characters other than newline, found U+{ord(bad):04X}",
                                 field_name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedNoteError("expected text encodable as UTF-8", field_name) from None


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    if not signers:
        raise InvalidInput("signers", "required", "expected at least one signer, found none")
    payload = text.encode("utf-8")
    lines = [NoteSignature(s.name, s.key_id, s.sign(payload)).line() for s in signers]
    return text + "\n" + "".join(lines)


def parse_note(message: str | bytes) -> Note:
    """Split a signed note into text and signatures without verifying them."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("expected UTF-8") from None
    _check_text(message)
    split = message.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("expected a blank line before the signatures, found none")
    text, block = message[: split + 1], message[split + 2:]
    if not block:
        raise MalformedNoteError("expected at least one signature line, found none")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"expected at most {MAX_SIGNATURES} signatures, found {len(lines)}")
    signatures = [parse_signature_line(line, number) for number, line in enumerate(lines, start=1)]
    return Note(text, tuple(signatures))


def parse_signature_line(line: str, number: int = 1) -> NoteSignature:
    """One signature line ``— <key name> base64(key id || signature)``, without its
    newline; ``number`` is its place in the note, for messages."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise MalformedNoteError(f"expected signature line {number} to start with an em dash and a space")
    name, sep, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
    if not sep:
        raise MalformedNoteError(f"expected '<key name> <signature>' on signature line {number}")
    _check_key_name(name, "note")
    blob = _b64decode(encoded, f"signature on line {number}", "note")
    if len(blob) <= _KEY_ID_SIZE:
        raise MalformedNoteError(f"expected more than 4 signature bytes on line {number}, found {len(blob)}")
    return NoteSignature(name, int.from_bytes(blob[:_KEY_ID_SIZE], "big"), blob[_KEY_ID_SIZE:])


def open_note(message: str | bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Parse and verify a signed note against trusted keys.

    As the spec requires: signatures by unknown keys (name and id not both
    matching) are ignored; a signature by a known key that fails rejects the
    whole note; a note with no verified signature is rejected.
    """
    note = parse_note(message)
    known = {(v.name, v.key_id): v for v in verifiers}
    payload = note.text.encode("utf-8")
    verified, unverified = [], []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
            continue
        if not verifier.verifies(payload, sig.signature):
            raise BadSignatureError(
                f"expected a valid Ed25519 signature by {sig.name}+{sig.key_id:08x}, found one that does not verify"
            )
        verified.append(sig)
    if not verified:
        found = ", ".join(f"{s.name}+{s.key_id:08x}" for s in note.signatures)
        trusted = ", ".join(f"{n}+{k:08x}" for n, k in known) or "none"
        raise UnknownKeyError(f"expected a signature by one of {trusted}, found signatures by {found}")
    return OpenedNote(note.text, tuple(verified), tuple(unverified))


# --- checkpoints --------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size and RFC 6962 root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text of c2sp.org/tlog-checkpoint."""
        if not self.origin or "\n" in self.origin:
            raise MalformedNoteError("expected a non-empty one-line origin", "checkpoint")
        if self.size < 0:
            raise MalformedNoteError(f"expected a tree size >= 0, found {self.size}", "checkpoint")
        if len(self.root_hash) != 32:
            raise MalformedNoteError(f"expected a 32-byte root hash, found {len(self.root_hash)} bytes", "checkpoint")
        if any(not line or "\n" in line for line in self.extensions):
            raise MalformedNoteError("expected non-empty one-line extension lines", "checkpoint")
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> "Checkpoint":
        _check_text(text, "checkpoint")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNoteError(f"expected at least 3 lines (origin, size, root), found {len(lines)}",
                                     "checkpoint")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise MalformedNoteError("expected a non-empty origin line", "checkpoint")
        if not _DECIMAL.fullmatch(size_text) or int(size_text) >= 1 << 63:
            raise MalformedNoteError("expected the tree size in decimal without leading zeros", "checkpoint")
        root = _b64decode(root_text, "root hash", "checkpoint")
        if len(root) != 32 or base64.b64encode(root).decode() != root_text:
            raise MalformedNoteError(f"expected a canonical base64 32-byte root hash, found {len(root)} bytes",
                                     "checkpoint")
        if any(not line for line in extensions):
            raise MalformedNoteError("expected non-empty extension lines", "checkpoint")
        return cls(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(message: str | bytes, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint and return it; ``origin`` defaults to the key name
    (the spec recommends the log's key name match its origin)."""
    opened = open_note(message, [verifier])
    checkpoint = Checkpoint.from_body(opened.text)
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise CheckpointOriginError(f"expected origin {expected!r}, found {checkpoint.origin!r}")
    return checkpoint
