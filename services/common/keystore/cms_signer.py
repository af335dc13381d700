"""A pyHanko CMS signer (RFC 5652 SignedData) over a private key it never reads.

pyHanko's :class:`~pyhanko.sign.signers.pdf_cms.Signer` leaves the raw
signature to a subclass (``async_sign_raw``), so a key may live anywhere
(pyHanko's own ``PKCS11Signer`` is one such subclass). :class:`KeySigner`
takes a ``cryptography`` EC private key object and calls its ``sign``: an
in-memory key, or a :class:`~services.common.keystore.private_keys.StoreEcPrivateKey`
whose ``sign`` is :meth:`KeyStore.sign_digest` on the token. The platform's
time-stamp authority (:mod:`services.common.tsa`) signs its tokens through
it; ``SimpleSigner`` would need the key's bytes.

:func:`run_now` drives pyHanko's coroutines without an event loop: signing
with a key involves no I/O, so they finish without ever suspending (a
nameko worker is an eventlet greenthread, where an asyncio loop per
signature is neither wanted nor safe). One that does suspend is refused.
"""
from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko_certvalidator.registry import SimpleCertificateStore

T = TypeVar("T")

_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
#: a DER ECDSA P-256 signature is at most 72 bytes: what a dry run (pyHanko's size estimate) answers
_ECDSA_P256_MAX_SIGNATURE = 72


def asn1_certificate(certificate) -> asn1_x509.Certificate:
    """asn1crypto's form of a ``cryptography`` certificate (pyHanko works in asn1crypto)."""
    if isinstance(certificate, asn1_x509.Certificate):
        return certificate
    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


class KeySigner(Signer):
    """ECDSA P-256 CMS signatures by ``private_key`` for ``certificate`` (with ``chain`` embedded)."""

    def __init__(self, certificate, private_key: ec.EllipticCurvePrivateKey, chain: Sequence = ()):
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise TypeError("a KeySigner signs with an EC private key object")
        cert = asn1_certificate(certificate)
        super().__init__(signing_cert=cert,
                         cert_registry=SimpleCertificateStore.from_certs([cert, *map(asn1_certificate, chain)]))
        self._key = private_key

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(_ECDSA_P256_MAX_SIGNATURE)
        algorithm = _HASHES.get(digest_algorithm)
        if algorithm is None:
            raise ValueError(f"expected one of {', '.join(_HASHES)}, found {digest_algorithm}")
        return self._key.sign(bytes(data), ec.ECDSA(algorithm()))

    async def unsigned_attrs(self, digest_algorithm, signature, signed_attrs, timestamper=None, dry_run=False):
        # nothing to add without a time stamper; pyHanko's default gathers its (no) providers with
        # asyncio.as_completed, which wants an event loop even for none
        if timestamper is None:
            return None
        return await super().unsigned_attrs(digest_algorithm, signature, signed_attrs, timestamper, dry_run)

    def __repr__(self) -> str:
        return f"KeySigner({self.signing_cert.subject.human_friendly!r})"


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without suspending (see the module docstring)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the signing coroutine waited for I/O; expected it to complete at once")
