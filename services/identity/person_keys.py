"""A person's signing key (issue #16, item 3): made when their certificate is
issued, used only under a willingness grant claimed for that very signature,
destroyed when the certificate is revoked.

Custody follows ``KEYS.BACKEND`` (:mod:`services.common.keystore`):

* ``pkcs11``: the key pair is generated on the token, labelled
  ``<LABEL_PREFIX>person/<certificate serial>``; the certificate row records
  its :class:`~services.common.keystore.KeyRef` (``key_ref``) in the same
  transaction as the certificate. The private key never leaves the token.
* ``sealed``: generated in memory and sealed under the KEK, bound to the
  serial (``private_key_sealed``), as before issue #16.

A row that still holds a sealed copy signs through the KEK whatever the
backend, until ``esign keys migrate --to pkcs11`` moves it onto the token.

Signing (:meth:`PersonKeys.sign_digest`) takes the grant itself, as
:func:`~services.identity.grants.check_grant` returned it and the caller
claimed it: the key signs the grant's digest for the grant's certificate, or
nothing. :meth:`services.identity.willingness.Willingness.sign_digest` is the
one place that checks, claims, signs and audits (with the grant's id and the
key's id).

Nothing half-made is kept: a key generated for a certificate whose
transaction then fails is destroyed at once (:meth:`PersonKeys.discard_unrecorded`,
after checking that no committed row names it), and one left by a process
that died in between is the reconciler's (:meth:`PersonKeys.reconcile`, run
periodically under a lease): a key on the token that no *active*
certificate names, generated more than ``RECONCILE_GRACE_SECONDS`` ago, is
destroyed. That includes the keys of revoked certificates, which revocation
destroys right after its commit (:meth:`PersonKeys.destroy_after_commit`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.errors import InvalidInput
from services.common.keystore import EC_P256, KEY_MISSING, TOKEN_MISSING, KeyRef, KeyStore, fault
from services.common.keystore.reconcile import DEFAULT_MAX_DESTROY, Reconciliation, reconcile
from services.common.keystore.settings import KeyStoreSettings
from services.common.sealing import Keyring, associated_data, from_text, to_text
from services.identity import audit, grants
from services.identity.models import Certificate

log = logging.getLogger(__name__)

ACTIVE = "active"  # services.identity.certificates.ACTIVE (imported there from here would be circular)
DIGEST_BYTES = grants.DIGEST_BYTES


def key_aad(serial: str) -> bytes:
    """The associated data binding a sealed person key to its certificate serial."""
    return associated_data("person_key", serial)


@dataclass(frozen=True)
class NewKey:
    """A person key just made, for the certificate ``serial``: exactly one of
    ``ref`` (on the token) and ``sealed`` (with the KEK's id) is set."""

    serial: str
    public_key: ec.EllipticCurvePublicKey
    ref: KeyRef | None = None
    sealed: str | None = None
    kek_id: str | None = None

    @property
    def key_ref_text(self) -> str | None:
        return self.ref.to_text() if self.ref is not None else None

    def audit_refs(self) -> dict:
        """What the audit trail says of the key: its id on the token, or the KEK sealing it."""
        return {"token_key_id": self.ref.key_id} if self.ref is not None else {"key_id": self.kek_id}


class PersonKeys:
    """Person keys of one worker: ``store`` is the token (``None`` when keys are sealed)."""

    def __init__(self, store: KeyStore | None, keyring: Keyring, settings: KeyStoreSettings,
                 sessions: Callable[[], Session] | None = None):
        self.store = store
        self.keyring = keyring
        self.settings = settings
        self.prefix = settings.label_prefix + "person/"
        self._sessions = sessions
        self._made: list[KeyRef] = []

    # -- making --------------------------------------------------------------------------

    def label(self, serial: str) -> str:
        return f"{self.prefix}{serial}"

    def generate(self, serial: str) -> NewKey:
        """A new key for the certificate ``serial`` (hex), on the token or sealed."""
        if self.store is None:
            key = ec.generate_private_key(ec.SECP256R1())
            der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            return NewKey(serial, key.public_key(), sealed=to_text(self.keyring.seal(der, key_aad(serial))),
                          kek_id=self.keyring.active_key_id)
        ref = self.store.generate(self.label(serial), EC_P256)
        self._made.append(ref)
        public = self.store.public_key(ref)
        if not isinstance(public, ec.EllipticCurvePublicKey):  # pragma: no cover - generate made an EC key
            raise InvalidInput("key_ref.algorithm", "mismatch", "expected an EC P-256 key")
        return NewKey(serial, public, ref=ref)

    def discard_unrecorded(self) -> int:
        """After a failed issue: destroy the keys this object generated that no committed row
        names (a commit that failed only in its answer may have recorded one: that one stays).
        Best effort: what fails here is left to the reconciler. How many were destroyed."""
        made, self._made = self._made, []
        destroyed = 0
        for ref in made:
            try:
                if self._sessions is not None:
                    with self._sessions() as session:
                        if _named(session, ref):
                            continue
                if self.store is not None and self.store.destroy(ref):
                    destroyed += 1
                    log.warning("person key %s (%s) destroyed: its certificate was never recorded", ref.key_id,
                                ref.label)
            except Exception as exc:  # noqa: BLE001 - the reconciler finishes what this cannot
                log.warning("person key %s not destroyed after a failed issue (%s); the reconciler will",
                            ref.key_id, type(exc).__name__)
        return destroyed

    def recorded(self) -> None:
        """The keys generated so far are named by a committed row: nothing to discard."""
        self._made = []

    # -- signing -------------------------------------------------------------------------

    def sign_digest(self, row: Certificate, grant: grants.SigningGrant, digest: bytes) -> bytes:
        """ECDSA (DER, RFC 3279) over ``digest`` with the key of ``row``, for ``grant``: a grant
        :func:`~services.identity.grants.check_grant` passed and the caller claimed (``used_at``
        set), for this certificate and this digest. Anything else is refused before the key is
        touched; a token fault is ``Unavailable("key_store", reason)``."""
        digest = bytes(digest)
        if len(digest) != DIGEST_BYTES:
            raise InvalidInput("digest", "length", f"expected {DIGEST_BYTES} bytes of SHA-256")
        if not isinstance(grant, grants.SigningGrant) or grant.used_at is None:
            raise InvalidInput("grant", "unclaimed", "expected a grant checked and claimed for this signature")
        if grant.certificate_serial != int(row.serial, 16) or grant.document_digest != digest.hex():
            raise InvalidInput("grant", "mismatch", "expected the grant of this certificate and this digest")
        if row.status != ACTIVE:
            raise InvalidInput("certificate", "revoked", "expected an active certificate")
        if row.private_key_sealed is not None:
            key = self._unsealed(row)
            return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        if row.key_ref is None:
            raise fault(KEY_MISSING)
        if self.store is None:
            log.error("certificate %s has its key on a PKCS#11 token, but KEYS.BACKEND is sealed", row.serial)
            raise fault(TOKEN_MISSING)
        return self.store.sign_digest(KeyRef.from_text(row.key_ref), digest)

    def _unsealed(self, row: Certificate) -> ec.EllipticCurvePrivateKey:
        der = self.keyring.open(from_text(row.private_key_sealed), key_aad(row.serial))
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInput("private_key", "algorithm", "expected an EC private key")
        return key

    # -- destroying ----------------------------------------------------------------------

    def destroy_after_commit(self, row: Certificate, after_commit: Callable[[Callable[[], None]], None]) -> None:
        """Once the revocation of ``row`` commits, destroy its key on the token and audit that.
        Before the commit it would leave an active certificate without a key if the commit failed;
        after it, a failure (or a crash) leaves a key no active certificate names: the reconciler's."""
        if row.key_ref is None or self.store is None:
            return
        ref, serial, person_id = KeyRef.from_text(row.key_ref), row.serial, row.person_id
        after_commit(lambda: self.destroy(ref, serial, person_id))

    def destroy(self, ref: KeyRef, serial: str, person_id: str | None) -> bool:
        """Destroy a revoked certificate's key on the token; audited (``key_destroyed``)."""
        if self.store is None:
            return False
        destroyed = self.store.destroy(ref)
        if self._sessions is not None:
            with self._sessions() as session:
                audit.record(session, "key_destroyed", "ok" if destroyed else "already_gone", person_id=person_id,
                             actor="service", serial=serial, token_key_id=ref.key_id)
                session.commit()
        return destroyed

    # -- the reconciler ------------------------------------------------------------------

    def reconcile(self, session: Session, dry_run: bool = False,
                  offload: Callable[..., Reconciliation] = lambda fn, *args: fn(*args)) -> Reconciliation | None:
        """Destroy person keys on the token that no active certificate names and that were
        generated more than the grace ago (``None`` when keys are sealed). The token's part
        runs through ``offload`` (``eventlet.tpool.execute`` in a service: listing reads every
        key on the token); the database's stays with the caller."""
        if self.store is None:
            return None
        done = offload(reconcile, self.store, active_refs(session), self.prefix, self.settings.reconcile_grace,
                       None, DEFAULT_MAX_DESTROY, dry_run)
        for ref in done.destroyed:
            row = session.get(Certificate, ref.label[len(self.prefix):])  # the label names the serial
            audit.record(session, "key_destroyed", "unrecorded" if not dry_run else "would_destroy",
                         person_id=row.person_id if row is not None else None, actor="service",
                         serial=row.serial if row is not None else None, token_key_id=ref.key_id)
        session.commit()
        return done


def active_refs(session: Session) -> list[KeyRef]:
    """The refs of every active certificate's key on a token."""
    rows = session.execute(select(Certificate.key_ref).where(Certificate.status == ACTIVE,
                                                             Certificate.key_ref.is_not(None))).scalars()
    return [KeyRef.from_text(text) for text in rows]


def _named(session: Session, ref: KeyRef) -> bool:
    return session.execute(select(Certificate.serial).where(Certificate.key_ref == ref.to_text())
                           .limit(1)).first() is not None
