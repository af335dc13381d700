"""Object storage on S3 (boto3): one bucket per owning service, objects
addressed by the SHA-256 of their content, verified on every read.

SeaweedFS (``weed mini``) is the embedded default and the test store; any S3
(AWS, MinIO, Ceph) works in deployment. The bucket is created if missing,
with versioning and, where asked and supported, Object Lock.

Objects are encrypted before they leave the service (envelope encryption with
the service's KEK, :mod:`services.common.sealing`: a fresh AES-256-GCM data
key per object, wrapped by the KEK and stored in the object with the KEK's id;
the bucket name and key are bound in as associated data): the store and whoever
holds its keys see ciphertext only. The key stays the SHA-256 of the plaintext,
checked after decryption. Objects stored before encryption (no ``ESL1``
header) still read.

Failures of the store (unreachable, 5xx) are retried a bounded number of times
by botocore and then raised as :class:`~services.common.errors.Unavailable`;
a put either stored the whole object under its hash or raised, so callers can
record the key only after a successful put and never reference a half-write.

A put may lock the object in the same request (``retain_days``); services put
through :mod:`services.common.object_intents` instead, which puts without
retention and locks the version (:meth:`ObjectStore.retain`) only once a row
refers to it, so an object no transaction kept can still be deleted.

:class:`ContentCache` keeps, in memory, objects a process made or read
(bounded, newest kept), by the SHA-256 it computed itself: a service that
reads back what it just stored (signing, the PDF a signature step produced,
for the next step) skips the round trip and the decryption. What it returns
is by construction the content with that hash.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from nameko.extensions import DependencyProvider

from services.common.database import DatabaseProvider
from services.common.errors import IntegrityError, NotFound, Unavailable
from services.common.object_intents import IntentSettings, IntentStore, ObjectIntents, ObjectReferences
from services.common.sealing import MAGIC, Keyring, associated_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int
    version_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "sha256": self.sha256, "size": self.size, "version_id": self.version_id}


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    versioning: bool = False
    object_lock_days: int = 0
    max_attempts: int = 3
    connect_timeout: float = 2.0
    read_timeout: float = 15.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "S3Settings":
        s3 = config.get("S3") or {}
        return cls(
            endpoint=s3.get("ENDPOINT") or None,
            access_key=str(s3.get("ACCESS_KEY") or ""),
            secret_key=str(s3.get("SECRET_KEY") or ""),
            bucket=str(s3["BUCKET"]),
            region=str(s3.get("REGION") or "us-east-1"),
            versioning=bool(s3.get("VERSIONING", False)),
            object_lock_days=int(s3.get("OBJECT_LOCK_DAYS") or 0),
            max_attempts=int(s3.get("MAX_ATTEMPTS") or 3),
        )


class ContentCache:
    """Contents by their SHA-256 (hex), least recently used dropped first once they
    hold more than ``limit_bytes``; an object larger than a quarter of it is not kept."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = max(0, int(limit_bytes))
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def add(self, data: bytes) -> str:
        """Keep ``data``; its SHA-256, computed here."""
        digest = hashlib.sha256(data).hexdigest()
        if len(data) * 4 > self.limit_bytes:
            return digest
        with self._lock:
            if digest not in self._items:
                self._items[digest] = bytes(data)
                self._size += len(data)
            self._items.move_to_end(digest)
            while self._size > self.limit_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)
        return digest

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            data = self._items.get(sha256)
            if data is None:
                self.misses += 1
                return None
            self._items.move_to_end(sha256)
            self.hits += 1
            return data

    def __len__(self) -> int:
        return len(self._items)


#: what S3 servers answer for a version without retention (AWS; SeaweedFS)
_NO_RETENTION = ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError")


def _unavailable(exc: Exception) -> Unavailable:
    if isinstance(exc, ClientError):
        return Unavailable("s3", exc.response.get("Error", {}).get("Code", "error"))
    return Unavailable("s3", type(exc).__name__)


class ObjectStore:
    """A bucket of content-addressed objects."""

    def __init__(self, settings: S3Settings, keyring: Keyring | None = None):
        if not settings.access_key or not settings.secret_key:
            # SeaweedFS accepts anonymous requests when no keys are set: refuse that.
            raise ValueError("S3 access key and secret key must be set")
        self.settings = settings
        self.bucket = settings.bucket
        self.keyring = keyring
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.endpoint,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name=settings.region,
            config=BotoConfig(
                retries={"max_attempts": settings.max_attempts, "mode": "standard"},
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
        )
        self._ready = False

    def ensure_bucket(self) -> None:
        if self._ready:
            return
        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                kwargs: dict[str, Any] = {"Bucket": self.bucket}
                if self.settings.object_lock_days:
                    kwargs["ObjectLockEnabledForBucket"] = True
                try:
                    self.client.create_bucket(**kwargs)
                except ClientError as create_exc:
                    if create_exc.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"
                    ):
                        raise
            if self.settings.versioning or self.settings.object_lock_days:
                self.client.put_bucket_versioning(
                    Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
                )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from None
        self._ready = True

    @property
    def versioned(self) -> bool:
        """Whether every put makes a new version (Object Lock implies versioning)."""
        return bool(self.settings.versioning or self.settings.object_lock_days)

    @staticmethod
    def key_of(data: bytes, prefix: str = "") -> str:
        """The key :meth:`put` stores ``data`` under: ``prefix`` + SHA-256 of the plaintext."""
        return prefix + hashlib.sha256(data).hexdigest()

    def put(self, data: bytes, *, prefix: str = "", content_type: str = "application/octet-stream",
            retain_days: int | None = None, metadata: dict[str, str] | None = None) -> StoredObject:
        """Store ``data`` under ``prefix + sha256``. S3 checks the SHA-256 on
        arrival, so a truncated upload is refused rather than stored.
        ``retain_days``: COMPLIANCE retention set by this same request (default
        ``OBJECT_LOCK_DAYS``; 0: none). ``metadata``: S3 user metadata."""
        self.ensure_bucket()
        digest = hashlib.sha256(data).digest()
        key = prefix + digest.hex()
        body = self.keyring.seal(data, self._aad(key)) if self.keyring is not None else data
        kwargs: dict[str, Any] = dict(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        days = self.settings.object_lock_days if retain_days is None else retain_days
        if days:
            kwargs["ObjectLockMode"] = "COMPLIANCE"
            kwargs["ObjectLockRetainUntilDate"] = datetime.now(timezone.utc) + timedelta(days=days)
        try:
            response = self.client.put_object(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from None
        return StoredObject(key, digest.hex(), len(data), response.get("VersionId"))

    def get(self, key: str, *, sha256: str | None = None, version_id: str | None = None) -> bytes:
        """Read an object and check it against its hash (the key's, or the one given)."""
        self.ensure_bucket()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            data = self.client.get_object(**kwargs)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchVersion"):
                raise NotFound("object", key) from None
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None
        if data[:len(MAGIC)] == MAGIC:
            if self.keyring is None:
                raise IntegrityError(f"object {key}", "encrypted, and this store holds no key to open it")
            data = self.keyring.open(data, self._aad(key))
        expected = sha256 or key.rsplit("/", 1)[-1]
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(f"object {key}", f"sha256 expected {expected[:16]}…, found {actual[:16]}…")
        return data

    def get_raw(self, key: str, version_id: str | None = None, length: int | None = None) -> tuple[bytes, str]:
        """An object's stored bytes as they are (sealed: not opened, not checked)
        and its content type; ``length``: only its first bytes (a sealed blob's
        header names its KEK,
        :func:`~services.common.sealing.sealed_key_id`). For KEK rotation."""
        self.ensure_bucket()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        if length is not None:
            kwargs["Range"] = f"bytes=0-{max(length, 1) - 1}"
        try:
            response = self.client.get_object(**kwargs)
            return response["Body"].read(), response.get("ContentType") or "application/octet-stream"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchVersion", "NotFound"):
                raise NotFound("object", key) from None
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None

    def put_raw(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
                metadata: dict[str, str] | None = None) -> str | None:
        """Store ``body`` as it is under ``key`` (the same content-addressed key
        its plaintext has: a re-wrapped blob), without retention; the version
        S3 made (None in an unversioned bucket, where it replaces the object)."""
        self.ensure_bucket()
        kwargs: dict[str, Any] = dict(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        try:
            return self.client.put_object(**kwargs).get("VersionId")
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from None

    def _aad(self, key: str) -> bytes:
        return associated_data("s3-object", self.bucket, key)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None

    def delete(self, key: str, version_id: str | None = None) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self.client.delete_object(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from None

    def retain(self, key: str, version_id: str | None, until: datetime, *, fresh: bool = False) -> datetime:
        """Lock one version in COMPLIANCE mode until at least ``until`` (S3 Object
        Lock); the date it is locked until. A version already locked as long or
        longer is left as it is: COMPLIANCE retention can be extended, never
        shortened, so asking again (a retry, the reconciler) is harmless.
        ``fresh``: a version this process just put without retention, whose
        retention is not read first (one S3 request fewer per object stored); if
        it was locked longer after all, S3 refuses the shorter date, the caller
        sees Unavailable, and the reconciler's lock (not fresh) reads it."""
        if not fresh:
            current = self.retention(key, version_id)
            if current is not None and current >= until:
                return current
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key,
                                  "Retention": {"Mode": "COMPLIANCE", "RetainUntilDate": until}}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            self.client.put_object_retention(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from None
        return until

    def retention(self, key: str, version_id: str | None = None) -> datetime | None:
        """Until when a version is locked in COMPLIANCE mode; None when it is not."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            retention = self.client.get_object_retention(**kwargs).get("Retention") or {}
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in _NO_RETENTION:
                return None
            if code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound"):
                raise NotFound("object", key) from None
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None
        if retention.get("Mode") != "COMPLIANCE" or retention.get("RetainUntilDate") is None:
            return None
        return retention["RetainUntilDate"].astimezone(timezone.utc)

    def versions_with(self, key: str, name: str, value: str) -> list[str | None]:
        """The versions of ``key`` whose user metadata ``name`` is ``value`` (None
        stands for the object of an unversioned bucket): finds the version a put
        made when the put's answer was lost."""
        try:
            if not self.versioned:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
                return [None] if (head.get("Metadata") or {}).get(name) == value else []
            found: list[str | None] = []
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key)
            for page in pages:
                for version in page.get("Versions") or ():
                    if version["Key"] != key:
                        continue
                    head = self.client.head_object(Bucket=self.bucket, Key=key, VersionId=version["VersionId"])
                    if (head.get("Metadata") or {}).get(name) == value:
                        found.append(version["VersionId"])
            return found
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return []
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None

    def ping(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return True  # reachable; created on first write
            raise _unavailable(exc) from None
        except BotoCoreError as exc:
            raise _unavailable(exc) from None
        return True


class Storage(DependencyProvider):
    """nameko dependency handing workers the service's :class:`ObjectStore`,
    encrypting with the keyring ``keyring_of(config)`` gives (the service's KEKs).

    With ``references`` (the columns of the service's tables that name its
    objects), workers get an :class:`~services.common.object_intents.IntentStore`
    instead: it reads the same way, and every put goes through an intent, so a
    failure before the worker's commit leaves nothing behind for good."""

    def __init__(self, keyring_of=None, references: ObjectReferences | None = None):
        self.keyring_of = keyring_of
        self.references = references
        self.intents: ObjectIntents | None = None

    def setup(self) -> None:
        config = self.container.config
        keyring = self.keyring_of(config) if self.keyring_of is not None else None
        settings = S3Settings.from_config(config)
        self.store = ObjectStore(settings, keyring)
        if self.references is not None:
            self.database = next(d for d in self.container.dependencies if isinstance(d, DatabaseProvider))
            self.intents = ObjectIntents(self.store, lambda: self.database.db, self.references,
                                         IntentSettings.from_config(config, settings.object_lock_days))

    def for_worker(self, worker_ctx) -> "ObjectStore | IntentStore":
        if self.intents is None:
            return self.store
        return IntentStore(self.intents, lambda: self.database.units[worker_ctx])

    def get_dependency(self, worker_ctx) -> "ObjectStore | IntentStore":
        return self.for_worker(worker_ctx)
