"""S3 storage against a real SeaweedFS: content addressing, hash checks on
read, versioning, and a bounded, typed failure when the store is away."""
from __future__ import annotations

import hashlib
import time

import pytest

from services.common.errors import IntegrityError, NotFound, Unavailable
from services.common.s3server import free_port
from services.common.storage import ObjectStore, S3Settings

pytestmark = pytest.mark.integration


def store_for(s3, bucket: str, **kwargs) -> ObjectStore:
    return ObjectStore(S3Settings(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                                  bucket=bucket, **kwargs))


def test_put_then_get_by_hash_creates_bucket(s3):
    store = store_for(s3, f"t-roundtrip-{time.time_ns()}")
    data = "借条 — 壹万零伍元整".encode() * 100
    stored = store.put(data, prefix="docs/", content_type="application/pdf")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.key == "docs/" + stored.sha256 and stored.size == len(data)
    assert store.get(stored.key) == data
    assert store.exists(stored.key)
    with pytest.raises(NotFound):
        store.get("docs/" + "0" * 64)


def test_objects_are_encrypted_before_they_leave_the_service(s3):
    import os

    from services.common.sealing import Keyring

    keyring = Keyring({"kek-1": os.urandom(32)}, "kek-1")
    bucket = f"t-sealed-{time.time_ns()}"
    store = ObjectStore(S3Settings(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                                   bucket=bucket), keyring)
    data = "借款人 张三 身份证号码 11010519491231002X".encode() * 50
    stored = store.put(data, prefix="docs/")
    assert stored.key == "docs/" + hashlib.sha256(data).hexdigest() and stored.size == len(data)
    raw = store.client.get_object(Bucket=bucket, Key=stored.key)["Body"].read()
    assert raw[:4] == b"ESL1" and "11010519491231002X".encode() not in raw
    assert store.get(stored.key) == data
    # another service's KEK does not open it, nor does a store without one
    other = ObjectStore(store.settings, Keyring({"kek-1": os.urandom(32)}, "kek-1"))
    with pytest.raises(IntegrityError):
        other.get(stored.key)
    with pytest.raises(IntegrityError, match="encrypted"):
        ObjectStore(store.settings).get(stored.key)
    # the ciphertext is bound to its key: copied under another name it does not open
    store.client.copy_object(Bucket=bucket, Key="docs/" + "1" * 64, CopySource={"Bucket": bucket, "Key": stored.key})
    with pytest.raises(IntegrityError):
        store.get("docs/" + "1" * 64, sha256=stored.sha256)
    # objects stored before encryption still read
    legacy = ObjectStore(store.settings).put(b"stored in clear, earlier", prefix="docs/")
    assert store.get(legacy.key) == b"stored in clear, earlier"


def test_read_detects_content_that_does_not_match_its_hash(s3):
    store = store_for(s3, f"t-tamper-{time.time_ns()}")
    stored = store.put(b"original bytes")
    # someone with raw access to the bucket replaces the object
    store.client.put_object(Bucket=store.bucket, Key=stored.key, Body=b"tampered bytes")
    with pytest.raises(IntegrityError):
        store.get(stored.key)


def test_versioned_bucket_keeps_every_version(s3):
    store = store_for(s3, f"t-versions-{time.time_ns()}", versioning=True)
    first = store.put(b"version one")
    assert first.version_id
    store.client.put_object(Bucket=store.bucket, Key=first.key, Body=b"overwritten")
    # the recorded version still reads back, and its hash still holds
    assert store.get(first.key, version_id=first.version_id) == b"version one"


def test_wrong_credentials_are_refused(s3):
    store = ObjectStore(S3Settings(endpoint=s3.endpoint, access_key="nobody", secret_key="wrong",
                                   bucket=f"t-auth-{time.time_ns()}"))
    with pytest.raises(Unavailable):
        store.put(b"x")


def test_unreachable_store_fails_typed_and_bounded():
    store = ObjectStore(S3Settings(endpoint=f"http://127.0.0.1:{free_port()}", access_key="a", secret_key="b",
                                   bucket="t-down", max_attempts=2, connect_timeout=0.5, read_timeout=1))
    started = time.monotonic()
    with pytest.raises(Unavailable) as error:
        store.put(b"never stored")
    assert error.value.system == "s3"
    assert time.monotonic() - started < 15


def test_keys_are_required():
    with pytest.raises(ValueError):
        ObjectStore(S3Settings(endpoint="http://127.0.0.1:1", access_key="", secret_key="", bucket="b"))


def test_each_service_has_an_s3_identity_allowed_only_its_own_buckets(s3):
    from tests.conftest import S3_BUCKETS

    def store(service: str, bucket: str) -> ObjectStore:
        identity = s3.identities[service]
        return ObjectStore(S3Settings(endpoint=s3.endpoint, access_key=identity.access_key,
                                      secret_key=identity.secret_key, bucket=bucket))

    signing_bucket, documents_bucket = S3_BUCKETS["signing"][0], S3_BUCKETS["documents"][0]
    signed = store("signing", signing_bucket).put(b"a signed PDF", prefix="flows/")
    store("documents", documents_bucket).put(b"an attachment", prefix="attachments/")
    with pytest.raises(Unavailable) as denied:  # documents' keys cannot read signing's files
        store("documents", signing_bucket).get(signed.key)
    assert denied.value.reason in ("AccessDenied", "403")
    with pytest.raises(Unavailable):  # nor write there, nor make buckets of their own
        store("documents", signing_bucket).put(b"forged", prefix="flows/")
    with pytest.raises(Unavailable):
        store("documents", f"t-another-{time.time_ns()}").put(b"x")
