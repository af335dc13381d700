"""Key custody: one interface for every private key the platform holds.

Custody
=======

A private key is *generated where it will be used* and is *used without
being read*. Callers hold a :class:`KeyRef`, a plain value naming the key
(backend, algorithm, label, id) that they store in their database; they
never hold key material. Two backends implement :class:`KeyStore`:

* ``pkcs11`` (:mod:`.pkcs11_token`): the key pair is generated on a PKCS#11
  token (an HSM / 密码机; SoftHSM2 on one machine) with ``CKA_TOKEN``,
  ``CKA_PRIVATE``, ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false, so
  the token refuses to hand out ``CKA_VALUE`` and to wrap the key
  (PKCS#11 v2.40 §4.9). What never leaves the token: the private scalar.
  What does: public keys (``CKA_EC_POINT``), signatures, and the ref.
* ``sealed`` (:mod:`.sealed`): today's behaviour, for machines without a
  token. The key is generated in Python, kept only as PKCS#8 sealed under
  the service's KEK (:class:`~services.common.sealing.Keyring`), and
  unsealed in memory for each signature.

The ref
=======

``KeyRef.key_id`` is 16 bytes written as 32 hex digits: the key's
``CKA_ID`` on a token, the record's key in sealed storage. Its first 48 bits
are the generation time in milliseconds since 1970 (the layout of a UUIDv7,
RFC 9562 §5.7, without the version bits), so the reconciler
(:mod:`.reconcile`) can tell a key generated a moment ago (its record may
not be committed yet) from one orphaned by a process that died between
generating the key and recording its ref. The label names a purpose and a
record (``esign/person/<certificate serial>``, ``esign/ca/issuing``), never a
person's name or ID number: anyone who may list the token may read labels.

Signatures
==========

* :meth:`KeyStore.sign_digest` — ECDSA P-256 over a digest computed
  elsewhere (CMS signed attributes for PAdES, a TBSCertificate, a CRL, an
  OCSP response, a time-stamp token), answered as a DER ``Ecdsa-Sig-Value``
  (RFC 3279 §2.2.3): what CMS and pyHanko embed. PKCS#11's ``CKM_ECDSA``
  answers raw ``r || s``; the token backend converts.
* :meth:`KeyStore.sign` — Ed25519 (RFC 8032, pure, no prehash) over the
  message itself: the evidence log's C2SP signed notes. On a token this is
  ``CKM_EDDSA``, which SoftHSM2 has since 2.6.0 (built with OpenSSL 1.1.1 or
  later; Debian's 2.6.1 has it).

Modules
=======

:mod:`.pkcs11_token` (the token store), :mod:`.sealed` (the sealed store),
:mod:`.private_keys` (``cryptography`` key objects that sign through a store,
for the CA's builders and the note signer), :mod:`.reconcile` (unrecorded
keys), :mod:`.softhsm` (the embedded token), :mod:`.settings` (``KEYS``, and
:func:`~.settings.open_key_store`).

Faults
======

A backend that cannot do what is asked raises
:class:`~services.common.errors.Unavailable` with ``system`` ``"key_store"``
and a reason from :data:`FAULTS`; nothing half-generated is returned (a key
made on a token before a fault is left for the reconciler). Messages never
carry a PIN, a KEK or key material.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.common.errors import InvalidInput, Unavailable

#: ``Unavailable.system`` of every key-store fault
SYSTEM = "key_store"

# -- algorithms
EC_P256 = "ec-p256"  #: ECDSA on NIST P-256 (secp256r1): CA, TSA, OCSP, report signer, person keys
ED25519 = "ed25519"  #: Ed25519 (RFC 8032): the evidence log's checkpoint signer
ALGORITHMS = (EC_P256, ED25519)

#: digests :meth:`KeyStore.sign_digest` accepts, by name and length
DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

# -- backends
PKCS11 = "pkcs11"
SEALED = "sealed"
BACKENDS = (SEALED, PKCS11)

# -- fault reasons (``Unavailable("key_store", reason)``)
TOKEN_MISSING = "token_missing"  # the module does not load, or no token has the configured label
WRONG_PIN = "wrong_pin"  # the token refused the PIN (incorrect, or of a length it never accepts)
PIN_LOCKED = "pin_locked"  # too many wrong PINs: the token's security officer must unlock it
TOKEN_FULL = "token_full"  # no room for another key (CKR_DEVICE_MEMORY, or the storage below its floor)
SESSION_LOST = "session_lost"  # the session or the token went away mid-call, and a retry did not help
KEY_MISSING = "key_missing"  # no key has the ref's id (destroyed, or a token restored from an older copy)
TOKEN_BUSY = "token_busy"  # every session was in use for longer than the wait allowed
UNSUPPORTED_ALGORITHM = "unsupported_algorithm"  # the token lacks the mechanism
TOKEN_ERROR = "token_error"  # any other failure the token reported (CKR_GENERAL_ERROR, CKR_DEVICE_ERROR, ...)
FAULTS = (TOKEN_MISSING, WRONG_PIN, PIN_LOCKED, TOKEN_FULL, SESSION_LOST, KEY_MISSING, TOKEN_BUSY,
          UNSUPPORTED_ALGORITHM, TOKEN_ERROR)

KEY_ID_BYTES = 16
_KEY_ID = re.compile(r"[0-9a-f]{32}\Z")
#: printable ASCII without spaces; a label is public (see the module docstring)
_LABEL = re.compile(r"[A-Za-z0-9._:/+-]{1,128}\Z")

PublicKey = Union[ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey]


def fault(reason: str) -> Unavailable:
    """The typed error of a key-store fault; ``reason`` is one of :data:`FAULTS`."""
    if reason not in FAULTS:
        raise ValueError(f"unlisted key-store fault {reason!r}")
    return Unavailable(SYSTEM, reason)


def new_key_id(now: float | None = None) -> str:
    """A fresh key id: 48 bits of milliseconds since 1970, then 80 random bits, as 32 hex digits."""
    millis = int((time.time() if now is None else now) * 1000)
    return (millis.to_bytes(6, "big") + os.urandom(KEY_ID_BYTES - 6)).hex()


def check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.match(label):
        raise InvalidInput("label", "format", "expected 1-128 characters of A-Z a-z 0-9 . _ : / + -")
    return label


def check_algorithm(algorithm: str) -> str:
    if algorithm not in ALGORITHMS:
        raise InvalidInput("algorithm", "allowed_values", f"expected one of {', '.join(ALGORITHMS)}")
    return algorithm


def check_digest(digest: bytes, algorithm: str) -> bytes:
    """``digest`` as bytes, its length checked against the named hash."""
    size = DIGEST_SIZES.get(algorithm)
    if size is None:
        raise InvalidInput("digest_algorithm", "allowed_values", f"expected one of {', '.join(DIGEST_SIZES)}")
    if not isinstance(digest, (bytes, bytearray, memoryview)) or len(digest) != size:
        raise InvalidInput("digest", "length", f"expected {size} bytes of {algorithm}")
    return bytes(digest)


@dataclass(frozen=True)
class KeyRef:
    """What a record keeps to name a key: never key material.

    ``to_text``/``from_text`` give its stored form, canonical JSON
    (``{"algorithm":"ec-p256","backend":"pkcs11","key_id":"…","label":"…"}``).
    """

    backend: str
    algorithm: str
    label: str
    key_id: str

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InvalidInput("key_ref.backend", "allowed_values", f"expected one of {', '.join(BACKENDS)}")
        check_algorithm(self.algorithm)
        check_label(self.label)
        if not isinstance(self.key_id, str) or not _KEY_ID.match(self.key_id):
            raise InvalidInput("key_ref.key_id", "format", "expected 32 lower-case hex digits")

    @property
    def id_bytes(self) -> bytes:
        return bytes.fromhex(self.key_id)

    @property
    def created_at(self) -> _dt.datetime:
        """When the key was generated, from the first 48 bits of its id."""
        millis = int.from_bytes(self.id_bytes[:6], "big")
        return _dt.datetime.fromtimestamp(millis / 1000, _dt.timezone.utc)

    def to_dict(self) -> dict[str, str]:
        return {"backend": self.backend, "algorithm": self.algorithm, "label": self.label, "key_id": self.key_id}

    def to_text(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, value: dict) -> "KeyRef":
        if not isinstance(value, dict) or set(value) != {"backend", "algorithm", "label", "key_id"}:
            raise InvalidInput("key_ref", "format", "expected backend, algorithm, label and key_id")
        return cls(**{name: str(value[name]) for name in ("backend", "algorithm", "label", "key_id")})

    @classmethod
    def from_text(cls, text: str) -> "KeyRef":
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            raise InvalidInput("key_ref", "format", "expected the JSON of a key ref") from None
        return cls.from_dict(value)


@runtime_checkable
class KeyStore(Protocol):
    """Generates keys, signs with them, destroys them; never hands one out."""

    #: :data:`PKCS11` or :data:`SEALED`: the ``backend`` of every ref this store makes
    backend: str

    def generate(self, label: str, algorithm: str) -> KeyRef:
        """A new key pair under ``label`` (:data:`EC_P256` or :data:`ED25519`)."""
        ...

    def public_key(self, ref: KeyRef) -> PublicKey:
        """The ``cryptography`` public key of ``ref`` (for certificates and verification)."""
        ...

    def sign_digest(self, ref: KeyRef, digest: bytes, algorithm: str = "sha256") -> bytes:
        """ECDSA over a precomputed ``digest`` of the named hash: DER Ecdsa-Sig-Value (RFC 3279)."""
        ...

    def sign(self, ref: KeyRef, data: bytes) -> bytes:
        """Ed25519 over ``data`` itself (RFC 8032): 64 bytes."""
        ...

    def destroy(self, ref: KeyRef) -> bool:
        """Destroy the key pair; False if there was none (destroying twice is harmless)."""
        ...

    def list_refs(self, prefix: str) -> list[KeyRef]:
        """Every key whose label starts with ``prefix`` (for the reconciler)."""
        ...

    def close(self) -> None:
        """Let go of sessions and logins; the store is not used afterwards."""
        ...

    def ping(self) -> None:
        """Raise the store's fault if it cannot serve now (health checks)."""
        ...


def require_backend(store_backend: str, ref: KeyRef, algorithm: str | None = None) -> None:
    """Refuse a ref of another backend (or, when given, another algorithm) than expected."""
    if not isinstance(ref, KeyRef):
        raise InvalidInput("key_ref", "type", "expected a KeyRef")
    if ref.backend != store_backend:
        raise InvalidInput("key_ref.backend", "mismatch", f"expected a {store_backend} key, found {ref.backend}")
    if algorithm is not None and ref.algorithm != algorithm:
        raise InvalidInput("key_ref.algorithm", "mismatch", f"expected an {algorithm} key, found {ref.algorithm}")
