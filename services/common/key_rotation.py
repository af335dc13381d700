"""KEK rotation: move every sealed item of a service onto its active KEK.

Sealed items (personal data, person keys, CA keys) carry the id of the KEK that
wraps their data key (:mod:`services.common.sealing`). Rotating is then:

1. make a new KEK and give it a new id, keeping the old one as *retired*
   (``<SERVICE>_KEK`` / ``…_KEK_ID``, and ``…_RETIRED_KEKS`` = ``[{"id": "kek-1",
   "env": "ESIGN_KEK_OLD"}]`` or ``"file"``), and restart the service: new items
   are sealed under the new KEK, old ones still open;
2. ``esign keys rotate``: every sealed column of every table of the service's
   schema (any column named ``*_sealed``) and, for identity, every ``*.sealed``
   key file of its CA directory, and, for documents and signing, every object of
   their S3 bucket a row names (sealed client-side by
   :class:`~services.common.storage.ObjectStore`), is re-wrapped under the
   active KEK. Only the data key is re-wrapped: no plaintext is produced, no
   associated data needed; rows go in batches, each committed; files are
   replaced atomically. Running it again changes nothing;
3. ``esign keys rotate --check`` (or ``--dry-run``) counts items per key id
   (``by_key_id``, objects included; ``objects_by_key_id`` the objects alone):
   when none is left under the old id, drop it from ``…_RETIRED_KEKS`` and
   destroy it.

An object is put back under the same (content-addressed) key as every put is,
through an intent (:mod:`services.common.object_intents`), so stopping at any
moment loses nothing: intent; put of the re-wrapped bytes without retention
(the version learnt); one transaction pointing the rows that named the old
version at the new one (signing: ``retained_until`` NULL) and settling the
intent; then COMPLIANCE retention until the old version's retain-until (or the
rows' creation plus ``OBJECT_LOCK_DAYS``). Stopped before the commit, the rows
still name the old version and the reconciler deletes the unlocked new one;
after it, the reconciler locks the new one. In documents' unversioned bucket
the put replaces the object in place: the rows name the key, so the reconciler
only forgets the intent, never deletes the object.

Old versions in a versioned, Object-Locked bucket (signing's) cannot be
deleted: they stay, sealed under the retired KEK, until their retention ends.
Nothing names them any more; once the retired KEK is destroyed they are
unreadable (crypto-shredding). Objects stored before encryption (no ``ESL1``)
are left as they are and counted as ``(unsealed)``.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from sqlalchemy import MetaData, Table, func, select, update

from services.common.clock import aware, naive, now
from services.common.errors import NotFound
from services.common.sealing import HEADER_BYTES, Keyring, SealedBlob, from_text, sealed_key_id, to_text

if TYPE_CHECKING:
    from services.common.object_intents import ObjectIntents, ObjectReferences

log = logging.getLogger(__name__)

SEALED_SUFFIX = "_sealed"


def sealed_columns(metadata: MetaData) -> list[tuple[Table, list[str]]]:
    """Every table with sealed columns, and those columns (by the naming rule)."""
    found = []
    for table in metadata.sorted_tables:
        columns = [c.name for c in table.columns if c.name.endswith(SEALED_SUFFIX)]
        if columns:
            found.append((table, columns))
    return found


def rotate_tables(session, metadata: MetaData, keyring: Keyring, batch: int = 500,
                  dry_run: bool = False) -> Counter:
    """Re-wrap every sealed value not under the active KEK; ``{table.column: count}``."""
    rewrapped: Counter = Counter()
    for table, columns in sealed_columns(metadata):
        key = list(table.primary_key.columns)
        if len(key) != 1:
            raise ValueError(f"{table.name}: rotation needs a single-column primary key")
        pk = key[0]
        last = None
        while True:
            query = select(pk, *[table.c[name] for name in columns]).order_by(pk).limit(batch)
            if last is not None:
                query = query.where(pk > last)
            rows = session.execute(query).all()
            if not rows:
                break
            for row in rows:
                changes = {}
                for name, value in zip(columns, row[1:], strict=True):
                    if value is not None and keyring.needs_rewrap(from_text(value)):
                        changes[name] = to_text(keyring.rewrap(from_text(value)))
                        rewrapped[f"{table.name}.{name}"] += 1
                if changes and not dry_run:
                    session.execute(update(table).where(pk == row[0]).values(**changes))
            last = rows[-1][0]
            if not dry_run:
                session.commit()
    return rewrapped


def count_tables(session, metadata: MetaData) -> Counter:
    """Sealed values per KEK id."""
    ids: Counter = Counter()
    for table, columns in sealed_columns(metadata):
        for row in session.execute(select(*[table.c[name] for name in columns])):
            for value in row:
                if value is not None:
                    ids[SealedBlob.from_bytes(from_text(value)).key_id] += 1
    return ids


def sealed_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.sealed")) if directory.is_dir() else []


def rotate_files(paths: Iterable[Path], keyring: Keyring, dry_run: bool = False) -> int:
    """Re-wrap sealed key files, each replaced atomically (same mode, fsynced)."""
    done = 0
    for path in paths:
        blob = from_text(path.read_text("ascii").strip())
        if not keyring.needs_rewrap(blob):
            continue
        done += 1
        if dry_run:
            continue
        temporary = path.with_name(path.name + ".rotating")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, path.stat().st_mode & 0o777)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(to_text(keyring.rewrap(blob)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        directory_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    return done


def count_files(paths: Iterable[Path]) -> Counter:
    return Counter(SealedBlob.from_bytes(from_text(path.read_text("ascii").strip())).key_id for path in paths)


# -- objects in S3 -------------------------------------------------------------------

#: the owner recorded on the intents of re-wrapped objects
ROTATION_OWNER = "key-rotation"
#: what :func:`count_objects` counts objects stored in clear, and objects a row names but S3 lacks, under
UNSEALED, MISSING = "(unsealed)", "(missing)"


def referenced_objects(session, references: "ObjectReferences") -> list[tuple[str, str | None]]:
    """Every object version the service's rows name: ``(key, version_id)``,
    version None where the column records none (an unversioned bucket)."""
    found: set[tuple[str, str | None]] = set()
    for column in references.columns:
        columns = [column.key] + ([column.version_id] if column.version_id is not None else [])
        for row in session.execute(select(*columns).where(column.key.is_not(None)).distinct()):
            found.add((row[0], row[1] if len(row) > 1 else None))
    return sorted(found, key=lambda item: (item[0], item[1] or ""))


def _object_key_id(store, key: str, version_id: str | None) -> str:
    """The KEK id an object is sealed under (:data:`UNSEALED`, :data:`MISSING`), from its first bytes."""
    try:
        head, _ = store.get_raw(key, version_id, length=HEADER_BYTES)
    except NotFound:
        return MISSING
    return sealed_key_id(head) or UNSEALED


def count_objects(intents: "ObjectIntents") -> Counter:
    """Objects the service's rows name, per KEK id (only the first bytes of each are read)."""
    with intents._session() as session:
        objects = referenced_objects(session, intents.references)
    return Counter(_object_key_id(intents.store, key, version_id) for key, version_id in objects)


def rotate_objects(intents: "ObjectIntents", keyring: Keyring, dry_run: bool = False) -> int:
    """Re-wrap every object the service's rows name that is not under the active
    KEK (:func:`rewrap_object`); how many. Objects stored in clear or missing are
    left alone (and counted by :func:`count_objects`)."""
    with intents._session() as session:
        objects = referenced_objects(session, intents.references)
    done = 0
    for key, version_id in objects:
        kid = _object_key_id(intents.store, key, version_id)
        if kid == MISSING:
            log.warning("object %s (version %s) is named by a row but not in the bucket", key, version_id or "-")
            continue
        if kid in (UNSEALED, keyring.active_key_id):
            continue
        if dry_run or rewrap_object(intents, keyring, key, version_id):
            done += 1
    return done


def rewrap_object(intents: "ObjectIntents", keyring: Keyring, key: str, version_id: str | None) -> bool:
    """Put the object ``key`` (the version ``version_id``) back under the same
    key with its data key re-wrapped by :meth:`Keyring.rewrap` (nothing decrypted),
    through an intent as every put is (:mod:`services.common.object_intents`):
    intent, put without retention, one transaction moving the rows that named
    the old version to the new one (``retained_until`` NULL) and settling the
    intent, then the lock until the old version's retain-until (or the rows'
    creation plus ``OBJECT_LOCK_DAYS``). False when no row names it any more
    (the intent is left to the reconciler, which takes the copy back)."""
    from services.common.object_intents import INTENT_METADATA, ObjectIntents

    store = intents.store
    body, content_type = store.get_raw(key, version_id)
    moved = keyring.rewrap(body)
    until = _retained_until(intents, key, version_id) if intents.settings.lock_days else None
    intent_id = intents.open(key, ROTATION_OWNER)
    new_version = store.put_raw(key, moved, content_type=content_type, metadata={INTENT_METADATA: intent_id})
    if not store.versioned:
        new_version = None  # the object replaced in place; rows name the key only
    if new_version:
        intents.learn_version(intent_id, new_version)
    with intents._session() as session:
        if not _move_rows(session, intents.references, key, version_id, new_version, until):
            session.rollback()
            log.warning("object %s (version %s): no row names it any more; not re-wrapped", key, version_id or "-")
            return False
        ObjectIntents.settle(session, intent_id)
        session.commit()
    if until is not None and until > now():
        intents.lock(key, new_version, until)
    return True


def _same_version(column, version_id: str | None):
    return column.is_(None) if version_id is None else column == version_id


def _retained_until(intents: "ObjectIntents", key: str, version_id: str | None) -> datetime:
    """Until when the re-wrapped version is to be locked: as long as the old one
    (in S3, or as its rows note), else the rows' creation plus the retention period."""
    locks = intents.references.locks
    with intents._session() as session:
        rows = session.execute(select(locks.retained_until, locks.created_at)
                               .where(locks.key == key, _same_version(locks.version_id, version_id))).all()
    try:
        current = intents.store.retention(key, version_id)
    except NotFound:
        current = None
    known = [aware(row.retained_until) for row in rows if row.retained_until is not None]
    if current is not None:
        known.append(current)
    if known:
        return max(known)
    created = [row.created_at for row in rows if row.created_at is not None]
    return (aware(min(created)) if created else now()) + timedelta(days=intents.settings.lock_days)


def _move_rows(session, references: "ObjectReferences", key: str, old: str | None, new: str | None,
               until: datetime | None) -> bool:
    """Point the rows naming ``key`` at ``old`` to ``new``; whether any row names it."""
    locks = references.locks
    named = 0
    for column in references.columns:
        table = column.key.table
        if column.version_id is None:
            named += session.execute(select(func.count()).select_from(table).where(column.key == key)).scalar_one()
            continue
        values = {column.version_id: new}
        if locks is not None and locks.key.table is table:
            # not locked yet (the lock follows the commit); a retention already over needs no lock
            values[locks.retained_until] = None if until is None or until > now() else naive(until)
        named += session.execute(update(table).where(column.key == key, _same_version(column.version_id, old))
                                 .values(values)).rowcount
    return named > 0


# -- the services -------------------------------------------------------------------

SERVICES = ("identity", "documents", "notify", "signing")


def service_parts(service: str, config: dict) -> tuple[MetaData, Keyring, list[Path]]:
    """A service's table metadata, keyring (as the service builds it) and sealed files."""
    if service == "identity":
        from services.identity.ca_store import ca_settings
        from services.identity.models import Base
        from services.identity.secrets import load_keys

        return Base.metadata, load_keys(config).keyring, sealed_files(ca_settings(config)[0])
    if service == "documents":
        from services.documents.models import Base
        from services.documents.secrets import load_keys

        return Base.metadata, load_keys(config).keyring, []
    if service == "notify":
        from services.notify.models import Base
        from services.notify.service import _load_keys

        return Base.metadata, _load_keys(config)[0], []
    if service == "signing":
        from services.signing.dependencies import load_keyring
        from services.signing.models import Base

        return Base.metadata, load_keyring(config), []
    raise ValueError(f"unknown service {service!r}")


def service_objects(service: str) -> "ObjectReferences | None":
    """The columns naming a service's objects in S3 (None: it stores none)."""
    if service == "documents":
        from services.documents.models import STORED_OBJECTS

        return STORED_OBJECTS
    if service == "signing":
        from services.signing.models import STORED_OBJECTS

        return STORED_OBJECTS
    return None


def rotate_service(service: str, config: dict, dry_run: bool = False) -> dict:
    """Rotate one service (``config`` as it runs); what was re-wrapped and what
    remains. ``by_key_id`` counts everything sealed (columns, files, objects) per
    KEK id; ``objects_by_key_id`` the objects alone, with those stored in clear
    or missing from the bucket under ``(unsealed)`` / ``(missing)``."""
    from services.common.database import Database
    from services.common.object_intents import IntentSettings, ObjectIntents
    from services.common.storage import ObjectStore, S3Settings

    metadata, keyring, files = service_parts(service, config)
    references = service_objects(service)
    database = Database.from_config(config, service)
    rewrapped_objects, objects = 0, Counter()
    try:
        with database.session() as session:
            columns = rotate_tables(session, metadata, keyring, dry_run=dry_run)
            remaining = count_tables(session, metadata)
        rewrapped_files = rotate_files(files, keyring, dry_run=dry_run)
        remaining += count_files(files)
        if references is not None:
            settings = S3Settings.from_config(config)
            intents = ObjectIntents(ObjectStore(settings, keyring), lambda: database, references,
                                    IntentSettings.from_config(config, settings.object_lock_days))
            rewrapped_objects = rotate_objects(intents, keyring, dry_run=dry_run)
            objects = count_objects(intents)
            remaining += Counter({kid: n for kid, n in objects.items() if kid not in (UNSEALED, MISSING)})
    finally:
        database.dispose()
    result = {"service": service, "active_key_id": keyring.active_key_id, "rewrapped": dict(columns),
              "rewrapped_files": rewrapped_files, "by_key_id": dict(remaining)}
    if references is not None:
        result.update(rewrapped_objects=rewrapped_objects, objects_by_key_id=dict(objects))
    return result


def main(argv: list[str] | None = None) -> int:
    """``esign keys rotate [--service S] [--check | --dry-run]``;
    ``esign keys migrate --to pkcs11 [--service S] [--check]`` (:mod:`services.common.key_migration`)."""
    import argparse
    import json

    from services.common.config import load_config

    parser = argparse.ArgumentParser(prog="esign keys", description="key-encryption keys (KEKs), key custody")
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="re-wrap every sealed item under the active KEK")
    rotate.add_argument("--service", action="append", choices=SERVICES,
                        help="only this service (repeatable; default all)")
    rotate.add_argument("--check", "--dry-run", dest="check", action="store_true",
                        help="count sealed items (and S3 objects) per key id and what would be re-wrapped; "
                             "change nothing")
    from services.common import key_migration

    migrate = commands.add_parser("migrate", help="move sealed private keys onto the PKCS#11 token KEYS.PKCS11 names")
    migrate.add_argument("--to", required=True, choices=["pkcs11"], help="where the keys go")
    migrate.add_argument("--service", action="append", choices=key_migration.SERVICES,
                         help="only this service (repeatable; default identity and signing)")
    migrate.add_argument("--check", "--dry-run", dest="check", action="store_true",
                         help="count what would move; change nothing")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        for service in args.service or key_migration.SERVICES:
            result = key_migration.migrate_service(service, load_config(service), dry_run=args.check)
            print(json.dumps(result, ensure_ascii=False, sort_keys=True))
        return 0
    for service in args.service or SERVICES:
        result = rotate_service(service, load_config(service), dry_run=args.check)
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    return 0
