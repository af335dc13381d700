"""The ``sealed`` key store: keys generated in Python and kept sealed under a
KEK, for machines without a PKCS#11 token (the platform's behaviour before
issue #16).

Each key is PKCS#8 DER (RFC 5208) sealed by a
:class:`~services.common.sealing.Keyring` (AES-256-GCM under a data key
wrapped by the active KEK), bound by associated data to its id, label and
algorithm: a blob copied to another record does not open. The caller gives
the storage, a mapping from key id to :class:`SealedKey` (a dict in tests, a
table in a service); the store writes a record only after the key is sealed,
so a record is never half-made. To sign, the key is unsealed into memory for
that one call and dropped, as ``certificates.private_key`` does today.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from services.common.keystore import (
    EC_P256,
    ED25519,
    KEY_MISSING,
    SEALED,
    KeyRef,
    PublicKey,
    check_algorithm,
    check_digest,
    check_label,
    fault,
    new_key_id,
    require_backend,
)
from services.common.sealing import Keyring, associated_data

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


@dataclass(frozen=True)
class SealedKey:
    """One stored key: its label and algorithm in clear, the key sealed."""

    label: str
    algorithm: str
    sealed: bytes = field(repr=False)


def _aad(key_id: str, label: str, algorithm: str) -> bytes:
    return associated_data("esign-keystore-v1", key_id, label, algorithm)


class SealedKeyStore:
    """:class:`~services.common.keystore.KeyStore` over a keyring and a mapping of sealed keys."""

    backend = SEALED

    def __init__(self, keyring: Keyring, storage: MutableMapping[str, SealedKey] | None = None):
        self._keyring = keyring
        self._storage: MutableMapping[str, SealedKey] = {} if storage is None else storage

    def __repr__(self) -> str:
        return f"SealedKeyStore({self._keyring!r})"

    def generate(self, label: str, algorithm: str) -> KeyRef:
        check_label(label)
        check_algorithm(algorithm)
        key = ec.generate_private_key(ec.SECP256R1()) if algorithm == EC_P256 else ed25519.Ed25519PrivateKey.generate()
        ref = KeyRef(SEALED, algorithm, label, new_key_id())
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        self._storage[ref.key_id] = SealedKey(label, algorithm, self._keyring.seal(der, _aad(ref.key_id, label,
                                                                                             algorithm)))
        return ref

    def public_key(self, ref: KeyRef) -> PublicKey:
        return self._private_key(ref).public_key()

    def sign_digest(self, ref: KeyRef, digest: bytes, algorithm: str = "sha256") -> bytes:
        require_backend(SEALED, ref, EC_P256)
        digest = check_digest(digest, algorithm)
        return self._private_key(ref).sign(digest, ec.ECDSA(Prehashed(_HASHES[algorithm]())))

    def sign(self, ref: KeyRef, data: bytes) -> bytes:
        require_backend(SEALED, ref, ED25519)
        return self._private_key(ref).sign(bytes(data))

    def destroy(self, ref: KeyRef) -> bool:
        require_backend(SEALED, ref)
        return self._storage.pop(ref.key_id, None) is not None

    def list_refs(self, prefix: str) -> list[KeyRef]:
        return [KeyRef(SEALED, record.algorithm, record.label, key_id)
                for key_id, record in list(self._storage.items()) if record.label.startswith(prefix)]

    def close(self) -> None:
        pass

    def ping(self) -> None:
        pass

    def _private_key(self, ref: KeyRef):
        require_backend(SEALED, ref)
        record = self._storage.get(ref.key_id)
        if record is None or record.label != ref.label or record.algorithm != ref.algorithm:
            raise fault(KEY_MISSING)
        der = self._keyring.open(record.sealed, _aad(ref.key_id, record.label, record.algorithm))
        return serialization.load_der_private_key(der, password=None)
