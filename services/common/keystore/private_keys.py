"""``cryptography`` private-key objects whose signatures come from a key store.

pyca/cryptography's builders (``x509.CertificateBuilder``,
``CertificateRevocationListBuilder``, ``ocsp.OCSPResponseBuilder``) call
``private_key.sign(data, algorithm)`` on any implementation of its
private-key interfaces (checked with cryptography 50.0.2), so the CA code
(services/identity/ca.py) signs certificates, CRLs and OCSP answers with a
key on the token as it signs with one in memory; ``NoteSigner`` takes an
Ed25519 one for the evidence log, and ``grants.sign_digest``'s
``ECDSA(Prehashed(SHA256()))`` call becomes :meth:`KeyStore.sign_digest`.

Such a key is never serialised: ``private_bytes`` and ``private_numbers``
raise ``TypeError`` (so ``seal_private_key`` of one fails loudly instead of
sealing nothing), and ECDH is refused (a signing key derives nothing).
Libraries that want the key's bytes themselves (certomancer's time stamper
and CRL builder, pyHanko's ``SimpleSigner``) need a signer of their own on
:meth:`KeyStore.sign_digest` instead.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from services.common.keystore import DIGEST_SIZES, EC_P256, ED25519, KeyRef, KeyStore, require_backend

_NAMES_BY_SIZE = {size: name for name, size in DIGEST_SIZES.items()}


def _never_serialised(*_args, **_kwargs):
    raise TypeError("a key in a key store is never serialised: it signs through the store")


class StoreEcPrivateKey(ec.EllipticCurvePrivateKey):
    """A P-256 key of a :class:`KeyStore`, as ``cryptography`` expects an EC private key."""

    def __init__(self, store: KeyStore, ref: KeyRef):
        require_backend(store.backend, ref, EC_P256)
        self._store, self._ref = store, ref
        self._public: ec.EllipticCurvePublicKey | None = None

    @property
    def ref(self) -> KeyRef:
        return self._ref

    @property
    def curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1()

    @property
    def key_size(self) -> int:
        return 256

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public is None:
            self._public = self._store.public_key(self._ref)
        return self._public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a key-store EC key signs with ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, Prehashed):  # ECDSA signs the digest's bytes whatever hash made them
            digest, name = bytes(data), _NAMES_BY_SIZE.get(algorithm.digest_size, "")
        else:
            hashed = hashes.Hash(algorithm)
            hashed.update(data)
            digest, name = hashed.finalize(), algorithm.name
        return self._store.sign_digest(self._ref, digest, name)

    def exchange(self, algorithm, peer_public_key) -> bytes:
        raise TypeError("a key-store signing key does no key agreement")

    private_numbers = _never_serialised
    private_bytes = _never_serialised

    def __copy__(self) -> "StoreEcPrivateKey":
        return self

    def __deepcopy__(self, memo) -> "StoreEcPrivateKey":
        return self

    def __repr__(self) -> str:
        return f"StoreEcPrivateKey({self._ref.label!r}, {self._ref.key_id})"


class StoreEd25519PrivateKey(ed25519.Ed25519PrivateKey):
    """An Ed25519 key of a :class:`KeyStore`, as ``cryptography`` expects one."""

    def __init__(self, store: KeyStore, ref: KeyRef):
        require_backend(store.backend, ref, ED25519)
        self._store, self._ref = store, ref
        self._public: ed25519.Ed25519PublicKey | None = None

    @property
    def ref(self) -> KeyRef:
        return self._ref

    def public_key(self) -> ed25519.Ed25519PublicKey:
        if self._public is None:
            self._public = self._store.public_key(self._ref)
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._store.sign(self._ref, data)

    private_bytes = _never_serialised
    private_bytes_raw = _never_serialised

    def __copy__(self) -> "StoreEd25519PrivateKey":
        return self

    def __deepcopy__(self, memo) -> "StoreEd25519PrivateKey":
        return self

    def __repr__(self) -> str:
        return f"StoreEd25519PrivateKey({self._ref.label!r}, {self._ref.key_id})"


def private_key(store: KeyStore, ref: KeyRef) -> StoreEcPrivateKey | StoreEd25519PrivateKey:
    """The ``cryptography`` private key that signs with ``ref`` through ``store``."""
    return StoreEcPrivateKey(store, ref) if ref.algorithm == EC_P256 else StoreEd25519PrivateKey(store, ref)
