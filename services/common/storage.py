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
"""
from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from nameko.extensions import DependencyProvider

from services.common.errors import IntegrityError, NotFound, Unavailable
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

    def put(self, data: bytes, *, prefix: str = "", content_type: str = "application/octet-stream",
            retain_days: int | None = None) -> StoredObject:
        """Store ``data`` under ``prefix + sha256``. S3 checks the SHA-256 on
        arrival, so a truncated upload is refused rather than stored."""
        self.ensure_bucket()
        digest = hashlib.sha256(data).digest()
        key = prefix + digest.hex()
        body = self.keyring.seal(data, self._aad(key)) if self.keyring is not None else data
        kwargs: dict[str, Any] = dict(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
        )
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
    encrypting with the keyring ``keyring_of(config)`` gives (the service's KEKs)."""

    def __init__(self, keyring_of=None):
        self.keyring_of = keyring_of

    def setup(self) -> None:
        config = self.container.config
        keyring = self.keyring_of(config) if self.keyring_of is not None else None
        self.store = ObjectStore(S3Settings.from_config(config), keyring)

    def get_dependency(self, worker_ctx) -> ObjectStore:
        return self.store
