"""KEK rotation: move every sealed item of a service onto its active KEK.

Sealed items (personal data, person keys, CA keys) carry the id of the KEK that
wraps their data key (:mod:`services.common.sealing`). Rotating is then:

1. make a new KEK and give it a new id, keeping the old one as *retired*
   (``<SERVICE>_KEK`` / ``…_KEK_ID``, and ``…_RETIRED_KEKS`` = ``[{"id": "kek-1",
   "env": "ESIGN_KEK_OLD"}]`` or ``"file"``), and restart the service: new items
   are sealed under the new KEK, old ones still open;
2. ``esign keys rotate``: every sealed column of every table of the service's
   schema (any column named ``*_sealed``) and, for identity, every ``*.sealed``
   key file of its CA directory, is re-wrapped under the active KEK. Only the
   data key is re-wrapped: no plaintext is produced, no associated data needed;
   rows go in batches, each committed; files are replaced atomically. Running
   it again changes nothing;
3. ``esign keys rotate --check`` counts items per key id: when none is left
   under the old id, drop it from ``…_RETIRED_KEKS`` and destroy it.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from sqlalchemy import MetaData, Table, select, update

from services.common.sealing import Keyring, SealedBlob, from_text, to_text

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
                for name, value in zip(columns, row[1:]):
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
        from services.signing.dependencies import load_keys
        from services.signing.models import Base

        return Base.metadata, load_keys(config).keyring, []
    raise ValueError(f"unknown service {service!r}")


def rotate_service(service: str, config: dict, dry_run: bool = False) -> dict:
    """Rotate one service (``config`` as it runs); what was re-wrapped and what remains."""
    from services.common.database import Database

    metadata, keyring, files = service_parts(service, config)
    database = Database.from_config(config, service)
    try:
        with database.session() as session:
            columns = rotate_tables(session, metadata, keyring, dry_run=dry_run)
            remaining = count_tables(session, metadata)
        rewrapped_files = rotate_files(files, keyring, dry_run=dry_run)
        remaining += count_files(files)
    finally:
        database.dispose()
    return {"service": service, "active_key_id": keyring.active_key_id, "rewrapped": dict(columns),
            "rewrapped_files": rewrapped_files, "by_key_id": dict(remaining)}


def main(argv: list[str] | None = None) -> int:
    """``esign keys rotate [--service S] [--check]``."""
    import argparse
    import json

    from services.common.config import load_config

    parser = argparse.ArgumentParser(prog="esign keys", description="key-encryption keys (KEKs)")
    commands = parser.add_subparsers(dest="command", required=True)
    rotate = commands.add_parser("rotate", help="re-wrap every sealed item under the active KEK")
    rotate.add_argument("--service", action="append", choices=SERVICES,
                        help="only this service (repeatable; default all)")
    rotate.add_argument("--check", action="store_true", help="count sealed items per key id, change nothing")
    args = parser.parse_args(argv)
    for service in args.service or SERVICES:
        result = rotate_service(service, load_config(service), dry_run=args.check)
        print(json.dumps(result, ensure_ascii=False, sort_keys=True))
    return 0
