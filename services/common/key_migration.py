"""``esign keys migrate --to pkcs11``: move the sealed keys of identity and
signing onto the PKCS#11 token (issue #16, item 4).

What moves, per service (its ``KEYS.PKCS11`` names the token; its
``KEYS.BACKEND`` may still say ``sealed``: services are switched after):

* identity: every *active* certificate's person key (``certificates.private_key_sealed``
  → ``key_ref``), and the online CA's keys in ``CA.DIR`` (``<role>-key.sealed``
  → ``<role>-key.ref``: issuing CA, OCSP responder, TSA, platform service). A
  *revoked* certificate's key is not moved but destroyed: its sealed copy is
  removed (nothing may sign with it again).
* signing: the evidence log's Ed25519 key (the secret ``LOG_KEY`` →
  ``SECRETS.LOG_KEY_REF``); the same key, so the witnesses and every checkpoint
  and report signed so far still verify.

Each key moves the same way: unsealed in memory, imported as a non-extractable
signing key (:meth:`~services.common.keystore.pkcs11_token.Pkcs11KeyStore.import_private_key`),
then *verified*: the token's copy signs a fresh random message and the
signature is checked with the public key the certificate (or the sealed key)
states. Only then is its ref recorded and the sealed copy removed, for a person
key in one transaction (``key_ref`` set, ``private_key_sealed`` and its KEK id
cleared, only if the row still holds that sealed copy); for a file by writing
the ref (O_EXCL, synced) before removing the sealed file. A key whose token
copy does not verify is destroyed and its sealed copy kept
(:class:`~services.common.errors.IntegrityError`).

Idempotent and safe to stop: a key already on the token is skipped (a sealed
copy left beside a recorded ref, by a stop between the two steps, is removed
once the ref's key verifies); a key imported by a run that stopped before
recording it has a label nothing records (``<prefix>person/<serial>``,
``<prefix>ca/<role>/<serial>``, ``<prefix>evidence-log``) and is destroyed by
the next run before it imports again. ``--check`` counts what would move and
moves nothing (it does bring identity's schema to the newest, as a service
start would: the ``key_ref`` column).

The token is listed once per run (SoftHSM2 reads every object to find one;
see bench/README.md), and each imported key's handle is kept by the session
that made it, so a run over N keys costs O(N) token calls, not O(N²).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import select, update

from services.common.errors import IntegrityError
from services.common.keystore import EC_P256, PKCS11, KeyRef
from services.common.keystore.pkcs11_token import Pkcs11KeyStore
from services.common.keystore.settings import KeyStoreSettings, open_key_store
from services.common.sealing import from_text

log = logging.getLogger(__name__)

SERVICES = ("identity", "signing")


def token_config(config: dict) -> dict:
    """The service's config with ``KEYS.BACKEND`` pkcs11: the token its ``KEYS.PKCS11`` names."""
    return dict(config, KEYS=dict(config.get("KEYS") or {}, BACKEND=PKCS11))


def verify_on_token(store: Pkcs11KeyStore, ref: KeyRef,
                    public: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> None:
    """The token's copy of ``ref`` signs a fresh message that ``public`` verifies, or IntegrityError."""
    message = os.urandom(32)
    try:
        if ref.algorithm == EC_P256:
            digest = hashes.Hash(hashes.SHA256())
            digest.update(message)
            value = digest.finalize()
            public.verify(store.sign_digest(ref, value), value, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            public.verify(store.sign(ref, message), message)
    except Exception as exc:  # InvalidSignature, or a key of the wrong kind
        raise IntegrityError("migrated key", f"the token's copy of {ref.label} does not sign as the key it"
                                             f" replaces ({type(exc).__name__})") from None


def import_verified(store: Pkcs11KeyStore, label: str, private_key, public,
                    leftovers: list[KeyRef] = ()) -> KeyRef:
    """Destroy ``leftovers`` (keys an interrupted run imported under ``label`` and never recorded),
    import ``private_key`` under ``label`` and verify it against ``public``; destroyed if it fails."""
    for stale in leftovers:
        store.destroy(stale)
        log.warning("key %s under %s was imported by a run that stopped before recording it: destroyed",
                    stale.key_id, stale.label)
    ref = store.import_private_key(label, private_key)
    try:
        verify_on_token(store, ref, public)
    except BaseException:
        store.destroy(ref)
        raise
    return ref


def _by_label(refs: list[KeyRef]) -> dict[str, list[KeyRef]]:
    found: dict[str, list[KeyRef]] = {}
    for ref in refs:
        found.setdefault(ref.label, []).append(ref)
    return found


def _unrecorded(found: dict[str, list[KeyRef]], label: str, recorded: KeyRef | None = None) -> list[KeyRef]:
    return [ref for ref in found.get(label, []) if recorded is None or ref.key_id != recorded.key_id]


def _write_atomically(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    _sync_directory(path.parent)


def _remove(path: Path) -> None:
    path.unlink()
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- identity --------------------------------------------------------------------------


def migrate_person_keys(session, keyring, store: Pkcs11KeyStore, prefix: str, dry_run: bool = False,
                        batch: int = 200) -> Counter:
    """Move every active certificate's sealed key onto the token, one transaction per row;
    drop the sealed keys of revoked certificates. Counts by what happened."""
    from services.identity.ca import certificate_from_pem, unseal_private_key
    from services.identity.models import Certificate
    from services.identity.person_keys import ACTIVE, key_aad

    counts: Counter = Counter()
    person_prefix = prefix + "person/"
    on_token = _by_label(store.list_refs(person_prefix))
    last = None
    while True:
        query = select(Certificate).where(Certificate.private_key_sealed.is_not(None)).order_by(Certificate.serial)
        rows = session.execute((query.where(Certificate.serial > last) if last else query).limit(batch)
                               ).scalars().all()
        if not rows:
            break
        last = rows[-1].serial
        for row in rows:
            sealed, serial = row.private_key_sealed, row.serial
            guard = (Certificate.serial == serial, Certificate.private_key_sealed == sealed)
            if row.status != ACTIVE:
                counts["revoked_sealed_removed"] += 1
                if not dry_run:
                    session.execute(update(Certificate).where(*guard).values(private_key_sealed=None, key_id=None))
                    session.commit()
                continue
            public = certificate_from_pem(row.certificate_pem.encode()).public_key()
            if row.key_ref is not None:  # recorded on the token by an earlier run; its sealed copy is left
                verify_on_token(store, KeyRef.from_text(row.key_ref), public)
                counts["sealed_copy_removed"] += 1
                if not dry_run:
                    session.execute(update(Certificate).where(*guard).values(private_key_sealed=None, key_id=None))
                    session.commit()
                continue
            counts["moved"] += 1
            if dry_run:
                continue
            key = unseal_private_key(keyring, from_text(sealed), key_aad(serial))
            label = person_prefix + serial
            ref = import_verified(store, label, key, public, _unrecorded(on_token, label))
            del key
            moved = session.execute(update(Certificate).where(*guard).values(
                key_ref=ref.to_text(), private_key_sealed=None, key_id=None)).rowcount
            if moved != 1:  # the row changed under the run (revoked, say): the copy is no one's
                session.rollback()
                store.destroy(ref)
                counts["moved"] -= 1
                counts["changed_meanwhile"] += 1
                continue
            session.commit()
    return counts


def migrate_ca_keys(directory: Path, keyring, store: Pkcs11KeyStore, prefix: str, dry_run: bool = False) -> Counter:
    """Move the CA directory's sealed keys onto the token (``<role>-key.ref`` replaces ``.sealed``)."""
    from services.identity import ca
    from services.identity.ca_store import (
        ROLES,
        _key_aad,
        key_ref_path,
        role_certificate,
        sealed_key_path,
    )

    counts: Counter = Counter()
    if not directory.is_dir():
        return counts
    on_token = _by_label(store.list_refs(prefix + "ca/"))
    for role in ROLES:
        sealed_path, ref_path = sealed_key_path(directory, role), key_ref_path(directory, role)
        if not sealed_path.exists():
            counts["already_on_token" if ref_path.exists() else "absent"] += 1
            continue
        certificate = role_certificate(directory, role)
        if ref_path.exists():  # recorded by an earlier run that stopped before removing the sealed copy
            verify_on_token(store, KeyRef.from_text(ref_path.read_text("ascii").strip()), certificate.public_key())
            counts["sealed_copy_removed"] += 1
            if not dry_run:
                _remove(sealed_path)
            continue
        counts["moved"] += 1
        if dry_run:
            continue
        key = ca.unseal_private_key(keyring, from_text(sealed_path.read_text("ascii").strip()),
                                    _key_aad(role, certificate))
        label = f"{prefix}ca/{role}/{format(certificate.serial_number, 'x')}"
        ref = import_verified(store, label, key, certificate.public_key(), _unrecorded(on_token, label))
        del key
        try:
            _write_atomically(ref_path, ref.to_text() + "\n")
        except BaseException:
            store.destroy(ref)
            raise
        _remove(sealed_path)
    return counts


def migrate_identity(config: dict, store: Pkcs11KeyStore, dry_run: bool = False) -> dict:
    from services.common.database import Database
    from services.identity.ca_store import ca_settings
    from services.identity.secrets import load_keys

    prefix = KeyStoreSettings.from_config(config).label_prefix
    keyring = load_keys(config).keyring
    database = Database.from_config(config, "identity")
    try:
        database.migrate()  # the key_ref column: the schema a service start would bring
        with database.session() as session:
            people = migrate_person_keys(session, keyring, store, prefix, dry_run)
    finally:
        database.dispose()
    ca_keys = migrate_ca_keys(ca_settings(config)[0], keyring, store, prefix, dry_run)
    return {"service": "identity", "person_keys": dict(people), "ca_keys": dict(ca_keys)}


# -- signing ---------------------------------------------------------------------------


def migrate_signing(config: dict, store: Pkcs11KeyStore, dry_run: bool = False) -> dict:
    """Move the evidence log's sealed key onto the token (the same key), then remove the sealed file."""
    from services.common.config import read_secret
    from services.signing import log_key

    label, path = log_key.label(config), log_key.ref_path(config)
    source = log_key.sealed_key_source(config)
    result = {"service": "signing", "log_key": "absent"}
    if source is None:
        result["log_key"] = "already_on_token" if path.exists() else "absent"
        return result
    seed_spec = dict((config.get("SECRETS") or {}).get("LOG_KEY") or {})
    if not seed_spec.get("file"):
        seed_spec["file"] = str(log_key.configured_path(config, "LOG_KEY", log_key.SEED_FILE))
    key = ed25519.Ed25519PrivateKey.from_private_bytes(read_secret(seed_spec, "evidence-log-key")[:32])
    with log_key.locked(path):
        if path.exists():
            verify_on_token(store, log_key.read_ref(path, label), key.public_key())
            result["log_key"] = "sealed_copy_removed"
        else:
            result["log_key"] = "moved"
            if dry_run:
                return result
            leftovers = [ref for ref in store.list_refs(label) if ref.label == label]
            ref = import_verified(store, label, key, key.public_key(), leftovers)
            try:
                log_key.write_ref(path, ref)
            except BaseException:
                store.destroy(ref)
                raise
            _sync_directory(path.parent)
        if dry_run:
            return result
        if source.startswith("environment variable"):
            # the process cannot unset another's environment: the operator removes it from the deployment
            result["remove"] = source
        else:
            _remove(Path(source))
    return result


def sealed_leftovers(service: str, config: dict) -> list[str]:
    """Where ``service`` still keeps a sealed key, found from files alone (no database, no token):
    what ``esign up`` checks at every start. identity: the CA directory's ``<role>-key.sealed``
    files; signing: the evidence log's sealed key (a file, or an environment variable while no ref
    names its copy on the token). A sealed-era data directory has them (each service makes them
    at its first sealed start); the person keys in identity's database move with the CA's keys
    (:func:`migrate_identity`), and until they do identity signs with them through the KEK."""
    if service not in SERVICES:
        raise ValueError(f"only {', '.join(SERVICES)} hold private keys, not {service!r}")
    if service == "identity":
        from services.identity.ca_store import ROLES, ca_settings, sealed_key_path

        directory = ca_settings(config)[0]
        return [str(path) for path in (sealed_key_path(directory, role) for role in ROLES) if path.exists()]
    from services.signing import log_key

    source = log_key.sealed_key_source(config)
    if source is None or (source.startswith("environment variable") and log_key.ref_path(config).exists()):
        return []  # an environment variable left after the move is the operator's to remove (migrate says so)
    return [source]


def migrate_service(service: str, config: dict, dry_run: bool = False) -> dict:
    """Move one service's sealed keys onto the token its ``KEYS.PKCS11`` names."""
    if service not in SERVICES:
        raise ValueError(f"only {', '.join(SERVICES)} hold private keys, not {service!r}")
    store = open_key_store(token_config(config))
    try:
        result = (migrate_identity if service == "identity" else migrate_signing)(config, store, dry_run)
    finally:
        store.close()
    return dict(result, to=PKCS11, dry_run=dry_run)
