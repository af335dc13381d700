"""Looking for private keys where none may be (issue #16's acceptance).

:func:`find_key_material` searches blobs (database values, S3 objects,
environment variables) for the encodings a private key travels in:

* PKCS#8 ``PrivateKeyInfo`` (RFC 5208) of an EC key (version 0, then
  id-ecPublicKey: a public key's ``SubjectPublicKeyInfo`` has no version, so
  it does not match) and of an Ed25519 key (RFC 8410), and SEC1
  ``ECPrivateKey`` (RFC 5915) on P-256: as DER, as hex, and as base64 at each
  of the three alignments a prefix can start at;
* PEM ``PRIVATE KEY`` armour, and a C2SP note key string (``PRIVATE+KEY+``);
* the raw 32-byte scalar (or Ed25519 seed) of a *known* key, in raw bytes,
  hex and base64.

:func:`database_blobs`, :func:`s3_blobs` and :func:`environment_blobs` gather
what to search: every value of every table of a service's database (read
through a connection the caller may hold in a transaction, so a test can
plant a key, find it, and roll it back), every version of every object of a
bucket, and every variable of the process environment.
"""
from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import MetaData, select

#: DER prefixes that only a private key starts with
DER_PREFIXES = {
    "PKCS#8 EC key": bytes.fromhex("020100301306072a8648ce3d0201"),
    "PKCS#8 Ed25519 key": bytes.fromhex("302e020100300506032b657004220420"),
    "SEC1 P-256 key": bytes.fromhex("30770201010420"),
}
TEXT_MARKERS = {"PEM private key": b"PRIVATE KEY", "note private key": b"PRIVATE+KEY+"}


def _base64_forms(data: bytes) -> list[bytes]:
    """``data``'s base64 as it appears inside a longer base64 text, at each of the three
    byte alignments: only the characters no neighbouring byte has a bit in."""
    forms = []
    for shift in range(3):  # unknown bytes before the data in its first 3-byte group
        encoded = base64.b64encode(bytes(shift) + data)
        start = (0, 2, 3)[shift]  # characters holding bits of those unknown bytes
        end = len(encoded) - (0, 3, 2)[(shift + len(data)) % 3]  # ... and of the bytes after the data
        if end - start >= 12:
            forms.append(encoded[start:end])
    return forms


def _needles(name: str, data: bytes) -> list[tuple[str, bytes]]:
    hexed = binascii.hexlify(data)
    found = [(name, data), (f"{name} (hex)", hexed), (f"{name} (HEX)", hexed.upper())]
    for form in _base64_forms(data):
        found.append((f"{name} (base64)", form))
        found.append((f"{name} (base64url)", form.replace(b"+", b"-").replace(b"/", b"_")))
    return found


def find_key_material(blobs: Iterable[tuple[str, bytes]], scalars: dict[str, bytes] | None = None
                      ) -> list[tuple[str, str]]:
    """``(where, what)`` for each blob holding a private key's encoding, or a known key's scalar."""
    needles = [needle for name, prefix in DER_PREFIXES.items() for needle in _needles(name, prefix)]
    needles += list(TEXT_MARKERS.items())
    for name, scalar in (scalars or {}).items():
        needles += _needles(f"the scalar of {name}", scalar)
    hits = []
    for where, blob in blobs:
        for what, needle in needles:
            if needle in blob:
                hits.append((where, what))
    return hits


def _as_bytes(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def database_blobs(connection, service: str) -> Iterator[tuple[str, bytes]]:
    """Every value of every table the connection's schema holds, one blob per row."""
    metadata = MetaData()
    metadata.reflect(bind=connection)
    for table in metadata.sorted_tables:
        for number, row in enumerate(connection.execute(select(table))):
            yield f"{service}.{table.name}[{number}]", b"\x00".join(_as_bytes(value) for value in row)


def s3_blobs(client, bucket: str) -> Iterator[tuple[str, bytes]]:
    """Every version of every object in ``bucket`` (its bytes, key and metadata), or every
    object where the store keeps no versions."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []):
            version = item.get("VersionId")
            versioned = bool(version) and version != "null"
            answer = client.get_object(Bucket=bucket, Key=item["Key"], **({"VersionId": version} if versioned else {}))
            yield (f"s3://{bucket}/{item['Key']}" + (f"?{version}" if versioned else ""),
                   answer["Body"].read() + _as_bytes(item["Key"]) + _as_bytes(answer.get("Metadata")))


def environment_blobs(environ: dict | None = None) -> Iterator[tuple[str, bytes]]:
    """Every variable of the process environment (name and value)."""
    for name, value in (os.environ if environ is None else environ).items():
        yield f"env {name}", _as_bytes(name) + b"=" + _as_bytes(value)


def files_named(directory: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in directory.glob(pattern)) if directory.is_dir() else []



def keys_not_on_token(identity_config: dict, signing_config: dict) -> list[str]:
    """What of identity's and signing's keys is not where ``KEYS.BACKEND: pkcs11`` puts it
    (an empty list when every key is on the token and only refs name them)."""
    import json

    from services.common.database import Database
    from services.identity.ca import ROOT_CERT_FILE, ROOT_KEY_FILE, ROOT_TOKEN_FILE
    from services.identity.ca_store import DEV_PASSPHRASE_FILE, DEV_ROOT_DIR, ca_settings
    from services.identity.models import AuditRecord, Certificate
    from services.signing import log_key

    problems = []
    database = Database.from_config(identity_config, "identity")
    try:
        with database.session() as session:
            rows = session.execute(select(Certificate)).scalars().all()
            signatures = [json.loads(refs) for refs in session.execute(
                select(AuditRecord.refs).where(AuditRecord.action == "sign_digest", AuditRecord.outcome == "ok")
            ).scalars()]
    finally:
        database.dispose()
    if not rows:
        problems.append("no certificate was issued")
    problems += [f"certificate {r.serial} holds a sealed key" for r in rows if r.private_key_sealed is not None]
    problems += [f"certificate {r.serial} names no key on the token" for r in rows if r.key_ref is None]
    if not signatures:
        problems.append("no signature was audited")
    problems += [f"a signature audited without the grant and the key: {refs}" for refs in signatures
                 if not (refs.get("grant_id") and refs.get("token_key_id"))]
    ca_dir = ca_settings(identity_config)[0]
    if files_named(ca_dir, "*-key.sealed") or len(files_named(ca_dir, "*-key.ref")) != 4:
        problems.append(f"CA.DIR keys: {files_named(ca_dir, '*-key.*')}")
    dev_root = ca_dir / DEV_ROOT_DIR
    if (dev_root / ROOT_CERT_FILE).exists() and not (dev_root / ROOT_TOKEN_FILE).exists():
        problems.append("the development root's key is not on its token")
    if (dev_root / ROOT_KEY_FILE).exists() or (ca_dir / DEV_PASSPHRASE_FILE).exists():
        problems.append("the development root's key or passphrase is in a file")
    if log_key.sealed_key_source(signing_config) is not None or not log_key.ref_path(signing_config).exists():
        problems.append("the evidence-log key is not on the token")
    return problems
