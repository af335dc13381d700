"""Envelope encryption of keys and personal data at rest, and blind indexes.

Each item is encrypted with its own random 256-bit data key under AES-256-GCM
(NIST SP 800-38D, 96-bit random nonce). The data key is wrapped with a
key-encryption key (KEK) using AES Key Wrap (RFC 3394) and stored beside the
ciphertext together with the KEK's id, so KEKs can be rotated: a
:class:`Keyring` holds several KEKs, seals with the active one, opens with
whichever a blob names, and :meth:`Keyring.rewrap` moves a blob to the active
KEK by re-wrapping only its data key (the ciphertext is not touched and the
plaintext is never handed out).

Associated data (for example a record id and a purpose, see
:func:`associated_data`) is bound into the GCM tag: a blob copied to another
record or used for another purpose does not open.

Sealed blob layout (``bytes``; :func:`to_text`/:func:`from_text` give a
JSON-safe URL-safe base64 form)::

    b"ESL1" | u8 len(key_id) | key_id (ASCII) | wrapped data key (40)
           | nonce (12) | ciphertext || tag (16)

A :class:`BlindIndex` is HMAC-SHA256 under a separate key, with the field
name mixed in, for equality look-ups ("is this ID number already
registered?") without storing the value in clear.

Every failure to open (wrong KEK, unknown key id, tampered or truncated blob,
other associated data) raises :class:`~services.common.errors.IntegrityError`
without saying more than which step failed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from services.common.config import read_secret
from services.common.errors import IntegrityError

KEY_BYTES = 32
MAGIC = b"ESL1"
_WRAPPED_BYTES = KEY_BYTES + 8  # RFC 3394 adds one 64-bit block
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
_WHAT = "sealed blob"


def decode_key(text: str | bytes) -> bytes:
    """Decode a 32-byte key written as hex or (URL-safe) base64, as kept in
    an environment variable or a key file. Raw 32 bytes pass through."""
    if isinstance(text, bytes) and len(text) == KEY_BYTES:
        return text
    raw = text.decode("ascii") if isinstance(text, bytes) else text
    raw = raw.strip()
    candidates = []
    if re.fullmatch(r"[0-9a-fA-F]{64}", raw):
        candidates.append(bytes.fromhex(raw))
    try:
        candidates.append(base64.b64decode(raw + "=" * (-len(raw) % 4),
                                           altchars=b"-_" if ("-" in raw or "_" in raw) else None, validate=True))
    except (binascii.Error, ValueError):
        pass
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise ValueError(f"expected a {KEY_BYTES}-byte key as 64 hex digits or base64")


def associated_data(*parts: str) -> bytes:
    """Unambiguous encoding of context strings (record id, purpose…) to bind
    into a blob: each part is length-prefixed, so ("ab", "c") != ("a", "bc")."""
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8")
        out += len(data).to_bytes(4, "big") + data
    return bytes(out)


@dataclass(frozen=True)
class SealedBlob:
    """The parsed parts of a sealed blob (no secret in it)."""

    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes  # includes the GCM tag

    def to_bytes(self) -> bytes:
        kid = self.key_id.encode("ascii")
        return MAGIC + bytes([len(kid)]) + kid + self.wrapped_key + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, blob: bytes) -> "SealedBlob":
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise IntegrityError(_WHAT, "expected bytes")
        blob = bytes(blob)
        if blob[:4] != MAGIC or len(blob) < 5:
            raise IntegrityError(_WHAT, "unknown format")
        kid_len = blob[4]
        pos = 5 + kid_len
        if len(blob) < pos + _WRAPPED_BYTES + _NONCE_BYTES + _TAG_BYTES:
            raise IntegrityError(_WHAT, "truncated")
        try:
            key_id = blob[5:pos].decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError(_WHAT, "malformed key id") from None
        wrapped = blob[pos:pos + _WRAPPED_BYTES]
        pos += _WRAPPED_BYTES
        nonce = blob[pos:pos + _NONCE_BYTES]
        return cls(key_id=key_id, wrapped_key=wrapped, nonce=nonce, ciphertext=blob[pos + _NONCE_BYTES:])


#: enough of a sealed blob's beginning to read its key id (:func:`sealed_key_id`)
HEADER_BYTES = len(MAGIC) + 1 + 255


def sealed_key_id(head: bytes) -> str | None:
    """The KEK id a sealed blob names, from its first :data:`HEADER_BYTES` (or
    more); None when the bytes are not sealed (no ``ESL1``)."""
    head = bytes(head)
    if head[:len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 1:
        return None
    end = len(MAGIC) + 1 + head[len(MAGIC)]
    if len(head) < end:
        raise IntegrityError(_WHAT, "truncated")
    try:
        return head[len(MAGIC) + 1:end].decode("ascii")
    except UnicodeDecodeError:
        raise IntegrityError(_WHAT, "malformed key id") from None


def to_text(blob: bytes) -> str:
    """JSON-safe form of a sealed blob (URL-safe base64, no padding)."""
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


def from_text(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, TypeError):
        raise IntegrityError(_WHAT, "not base64") from None


def seal_json(keyring: "Keyring", value: object, *context: str) -> str:
    """``value`` as canonical JSON (sorted keys, UTF-8), sealed and bound to
    ``context`` (service, purpose, record id), in its text form."""
    plain = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return to_text(keyring.seal(plain, associated_data(*context)))


def open_json(keyring: "Keyring", sealed: str | None, *context: str) -> Any:
    """What :func:`seal_json` sealed with the same ``context``; ``{}`` for nothing sealed."""
    if not sealed:
        return {}
    return json.loads(keyring.open(from_text(sealed), associated_data(*context)))


class Keyring:
    """KEKs by id, one of them active for sealing. Keys stay in memory only."""

    def __init__(self, keks: Mapping[str, bytes], active: str):
        if active not in keks:
            raise ValueError("the active key id is not in the keyring")
        for key_id, key in keks.items():
            if not _KEY_ID.match(key_id):
                raise ValueError("key ids are 1-64 characters of A-Z a-z 0-9 . _ : -")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"each KEK must be {KEY_BYTES} bytes")
        self._keks = dict(keks)
        self.active_key_id = active

    def __repr__(self) -> str:
        return f"Keyring(key_ids={sorted(self._keks)!r}, active={self.active_key_id!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keks)

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt under a fresh data key wrapped by the active KEK."""
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, bytes(plaintext), MAGIC + aad)
        wrapped = aes_key_wrap(self._keks[self.active_key_id], data_key)
        return SealedBlob(self.active_key_id, wrapped, nonce, ciphertext).to_bytes()

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Decrypt a blob sealed under any KEK of this keyring."""
        parsed = SealedBlob.from_bytes(blob)
        data_key = self._unwrap(parsed)
        try:
            return AESGCM(data_key).decrypt(parsed.nonce, parsed.ciphertext, MAGIC + aad)
        except InvalidTag:
            raise IntegrityError(_WHAT, "authentication failed (tampered data or other associated data)") from None

    def rewrap(self, blob: bytes) -> bytes:
        """Re-wrap the blob's data key under the active KEK. The ciphertext
        stays as it is, so associated data need not be known here; a blob
        already under the active KEK comes back unchanged."""
        parsed = SealedBlob.from_bytes(blob)
        if parsed.key_id == self.active_key_id:
            return parsed.to_bytes()
        data_key = self._unwrap(parsed)
        wrapped = aes_key_wrap(self._keks[self.active_key_id], data_key)
        return SealedBlob(self.active_key_id, wrapped, parsed.nonce, parsed.ciphertext).to_bytes()

    def needs_rewrap(self, blob: bytes) -> bool:
        return SealedBlob.from_bytes(blob).key_id != self.active_key_id

    def _unwrap(self, parsed: SealedBlob) -> bytes:
        kek = self._keks.get(parsed.key_id)
        if kek is None:
            raise IntegrityError(_WHAT, "sealed under a key id this keyring does not hold")
        try:
            return aes_key_unwrap(kek, parsed.wrapped_key)
        except InvalidUnwrap:
            raise IntegrityError(_WHAT, "data key does not unwrap (wrong KEK or tampered)") from None


class BlindIndex:
    """Keyed, deterministic digests for equality look-ups on personal data.

    Use a key that is not a KEK. ``field`` separates domains: the same value
    as an ID number and as a phone gives unrelated indexes."""

    def __init__(self, key: bytes):
        if not isinstance(key, bytes) or len(key) < KEY_BYTES:
            raise ValueError(f"blind-index key must be at least {KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "BlindIndex(<hidden>)"

    def digest(self, field: str, value: str) -> str:
        """Lower-case hex HMAC-SHA256 of ``value`` in the domain ``field``."""
        message = associated_data("esign-blind-index-v1", field, value)
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def keyring_from_secrets(secrets: Mapping, name: str, default_id: str, generate_in=None) -> Keyring:
    """A service's keyring from its ``SECRETS``: the active KEK (``KEK``,
    secret ``name``, key id ``default_id`` unless it says another) and the
    KEKs being rotated out (``RETIRED_KEKS``: ``[{id, env|file}]``, secret
    ``<name>-<id>``), which still open what they sealed."""
    spec = secrets.get("KEK") or {}
    active = str(spec.get("id") or default_id)
    keks = {active: read_secret(spec, name, generate_in=generate_in)}
    retired = secrets.get("RETIRED_KEKS") or []
    if isinstance(retired, str):  # from the environment: JSON
        import json

        try:
            retired = json.loads(retired)
        except ValueError:
            raise ValueError("RETIRED_KEKS: expected JSON [{\"id\": …, \"env\": … or \"file\": …}]") from None
    for old in retired:
        if str(old.get("id")) == active:
            raise ValueError(f"RETIRED_KEKS: {active!r} is the active KEK's id; give the new KEK a new id")
        keks[str(old["id"])] = read_secret(old, f"{name}-{old['id']}")
    return Keyring(keks, active=active)
