"""Objects put through intents (services/common/object_intents.py) against a real
SeaweedFS with Object Lock and PostgreSQL or SQLite: whatever moment a change
fails at, no object is left behind for good, and a committed one ends locked.

The stores here use signing's tables (versioned bucket, locks noted on
``stored_objects``) and documents' (one object per key, no locks)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from services.common.clock import aware, utcnow
from services.common.database import Database
from services.common.errors import Unavailable
from services.common.object_intents import (
    INTENT_METADATA,
    OBJECT_INTENTS,
    IntentSettings,
    IntentStore,
    ObjectIntents,
)
from services.common.outbox import UnitOfWork
from services.common.storage import ObjectStore, S3Settings, StoredObject

pytestmark = pytest.mark.integration

NOW = timedelta(0)


@dataclass
class Bench:
    """A service's database and bucket, with the intents guarding them."""

    database: Database
    store: ObjectStore
    intents: ObjectIntents

    def worker(self) -> tuple[UnitOfWork, IntentStore]:
        """A worker's unit of work (no events, so no publisher) and its store."""
        unit = UnitOfWork(self.database.sessionmaker(), None, "test")
        return unit, IntentStore(self.intents, lambda: unit)

    def intent_rows(self) -> list:
        with self.database.session() as session:
            return session.execute(select(OBJECT_INTENTS)).all()

    def version_exists(self, key: str, version_id: str | None) -> bool:
        kwargs = {"VersionId": version_id} if version_id else {}
        try:
            self.store.client.head_object(Bucket=self.store.bucket, Key=key, **kwargs)
            return True
        except ClientError as exc:
            assert exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchVersion")
            return False


def _store(s3, bucket: str, **settings) -> ObjectStore:
    return ObjectStore(S3Settings(endpoint=s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key,
                                  bucket=bucket, **settings))


@pytest.fixture
def signing_bench(db_url_for, s3):
    from services.signing.models import STORED_OBJECTS

    url, schema = db_url_for("signing")
    database = Database(url, schema, "signing")
    database.migrate()
    store = _store(s3, f"t-intents-locked-{time.time_ns()}", versioning=True, object_lock_days=1)
    yield Bench(database, store, ObjectIntents(store, lambda: database, STORED_OBJECTS,
                                               IntentSettings(timedelta(minutes=10), lock_days=1)))
    database.dispose()


@pytest.fixture
def documents_bench(db_url_for, s3):
    from services.documents.models import STORED_OBJECTS

    url, schema = db_url_for("documents")
    database = Database(url, schema, "documents")
    database.migrate()
    store = _store(s3, f"t-intents-plain-{time.time_ns()}")
    yield Bench(database, store, ObjectIntents(store, lambda: database, STORED_OBJECTS,
                                               IntentSettings(timedelta(minutes=10), lock_days=0)))
    database.dispose()


def new_flow(bench: Bench) -> str:
    """A flow row for stored objects to belong to, committed."""
    import uuid

    from services.signing.models import FlowRow

    flow_id = str(uuid.uuid4())
    with bench.database.session() as session:
        session.add(FlowRow(id=flow_id, document_id=str(uuid.uuid4()), document_sha256="0" * 64, title="t",
                            state="waiting", current_index=0, initiator_person_id="p", expires_at=utcnow(),
                            void_confirmed_by="[]", current_pdf_key="k", current_pdf_sha256="0" * 64,
                            created_at=utcnow(), updated_at=utcnow()))
        session.commit()
    return flow_id


def store_signed_pdf(bench: Bench, unit: UnitOfWork, store: IntentStore, flow_id: str, data: bytes) -> StoredObject:
    """What FlowStore.store_pdf does: put, then the row naming the version, in the worker's transaction."""
    from services.signing.models import StoredObjectRow

    stored = store.put(data, owner_id=flow_id, prefix="flows/", content_type="application/pdf")
    unit.session.add(StoredObjectRow(flow_id=flow_id, kind="signed", key=stored.key, sha256=stored.sha256,
                                     version_id=stored.version_id, size=stored.size, created_at=utcnow()))
    return stored


def stored_rows(bench: Bench, key: str) -> list:
    from services.signing.models import StoredObjectRow

    with bench.database.session() as session:
        return list(session.execute(select(StoredObjectRow).where(StoredObjectRow.key == key)).scalars())


def _fail_at_commit(session) -> None:
    raise RuntimeError("the database went away at commit")


@pytest.mark.parametrize("failure", ["abandoned", "commit_fails"])
def test_an_object_put_for_a_change_that_never_commits_is_deleted(signing_bench, failure):
    bench = signing_bench
    flow_id = new_flow(bench)
    unit, store = bench.worker()
    stored = store_signed_pdf(bench, unit, store, flow_id, b"%PDF a signature that never commits " + failure.encode())
    if failure == "commit_fails":
        unit.before_commit(_fail_at_commit)
        with pytest.raises(RuntimeError):
            unit.commit()
    unit.rollback()  # the worker's failure handling (or its teardown)
    unit.close()
    # what the failure left: an unlocked version, named by an intent only
    assert bench.version_exists(stored.key, stored.version_id)
    assert bench.store.retention(stored.key, stored.version_id) is None
    [intent] = bench.intent_rows()
    # the intent does not record the version (a transaction per object): the version carries the intent's id
    assert (intent.object_key, intent.version_id, intent.owner_id) == (stored.key, None, flow_id)
    assert bench.store.versions_with(stored.key, INTENT_METADATA, intent.id) == [stored.version_id]
    assert stored_rows(bench, stored.key) == []

    assert bench.intents.reconcile().to_dict() == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}  # young
    assert bench.intents.reconcile(NOW).removed == 1
    assert not bench.version_exists(stored.key, stored.version_id)
    assert bench.intent_rows() == []
    assert bench.intents.reconcile(NOW).to_dict() == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}


def test_a_committed_object_is_locked_and_kept(signing_bench):
    bench = signing_bench
    flow_id = new_flow(bench)
    unit, store = bench.worker()
    before = utcnow()
    stored = store_signed_pdf(bench, unit, store, flow_id, b"%PDF signed and committed")
    unit.commit()
    unit.close()
    until = bench.store.retention(stored.key, stored.version_id)  # COMPLIANCE (None otherwise)
    assert until is not None and aware(before) + timedelta(days=1) - timedelta(minutes=1) < until
    retention = bench.store.client.get_object_retention(Bucket=bench.store.bucket, Key=stored.key,
                                                        VersionId=stored.version_id)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    [row] = stored_rows(bench, stored.key)
    assert row.retained_until is not None and abs(aware(row.retained_until) - until) < timedelta(seconds=1)
    assert bench.intent_rows() == []

    assert bench.intents.reconcile(NOW).to_dict() == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}
    assert bench.store.get(stored.key, version_id=stored.version_id) == b"%PDF signed and committed"
    with pytest.raises(ClientError):  # and S3 itself refuses to delete it
        bench.store.client.delete_object(Bucket=bench.store.bucket, Key=stored.key, VersionId=stored.version_id)


def test_an_object_stored_through_an_intent_costs_one_put_and_one_lock_in_s3(signing_bench):
    """What a put through an intent asks of S3: the object, then (after the commit) its lock; the new
    version's retention is not read first, nor is the version written back to the intent."""
    bench = signing_bench
    flow_id = new_flow(bench)
    calls: list[str] = []

    def record(model, **kwargs):
        calls.append(model.name)

    events = bench.store.client.meta.events
    events.register("before-call.s3", record)
    try:
        unit, store = bench.worker()
        stored = store_signed_pdf(bench, unit, store, flow_id, b"%PDF counted requests")
        unit.commit()
        unit.close()
    finally:
        events.unregister("before-call.s3", record)
    assert [call for call in calls if "Object" in call] == ["PutObject", "PutObjectRetention"], calls
    assert bench.store.retention(stored.key, stored.version_id) is not None


def test_a_fresh_lock_shorter_than_the_version_has_is_refused_and_the_reconciler_keeps_the_longer(signing_bench):
    """``retain(fresh=True)`` does not read the retention: were the version locked longer already, S3
    refuses the shorter date (Unavailable), and a lock that reads it first keeps the longer one."""
    bench = signing_bench
    stored = bench.store.put(b"%PDF locked long ago", prefix="flows/", retain_days=0)
    bench.store.retain(stored.key, stored.version_id, aware(utcnow()) + timedelta(days=3))
    longer = bench.store.retention(stored.key, stored.version_id)  # as S3 keeps it (whole seconds)
    with pytest.raises(Unavailable):
        bench.store.retain(stored.key, stored.version_id, longer - timedelta(days=2), fresh=True)
    assert bench.store.retain(stored.key, stored.version_id, longer - timedelta(days=2)) == longer
    assert bench.store.retention(stored.key, stored.version_id) == longer


def test_a_crash_between_commit_and_lock_is_locked_by_the_reconciler(signing_bench, monkeypatch):
    bench = signing_bench
    flow_id = new_flow(bench)
    unit, store = bench.worker()
    stored = store_signed_pdf(bench, unit, store, flow_id, b"%PDF committed, then the process stopped")

    def stopped(*args, **kwargs):
        raise Unavailable("s3", "stopped before the lock")

    monkeypatch.setattr(bench.store, "retain", stopped)
    unit.commit()  # committed; the lock after it failed (logged)
    unit.close()
    monkeypatch.undo()
    [row] = stored_rows(bench, stored.key)
    assert row.retained_until is None
    assert bench.store.retention(stored.key, stored.version_id) is None

    done = bench.intents.reconcile(NOW)
    assert (done.removed, done.locked) == (0, 1)
    until = bench.store.retention(stored.key, stored.version_id)  # counted from when the row was stored
    assert until is not None and abs(until - (aware(row.created_at) + timedelta(days=1))) < timedelta(seconds=1)
    [row] = stored_rows(bench, stored.key)
    assert row.retained_until is not None
    assert bench.version_exists(stored.key, stored.version_id)
    assert bench.intents.reconcile(NOW).locked == 0


def test_only_the_version_of_the_failed_change_is_deleted_when_identical_bytes_are_kept(signing_bench):
    """Content addressing: a second put of the same bytes is a new version of the
    same key. The version the failed change made goes; the locked one stays."""
    bench = signing_bench
    data = b"%PDF the same bytes, twice"
    unit, store = bench.worker()
    kept = store_signed_pdf(bench, unit, store, new_flow(bench), data)
    unit.commit()
    unit.close()
    unit, store = bench.worker()
    failed = store_signed_pdf(bench, unit, store, new_flow(bench), data)
    unit.rollback()
    unit.close()
    assert failed.key == kept.key and failed.version_id != kept.version_id

    assert bench.intents.reconcile(NOW).removed == 1
    assert not bench.version_exists(failed.key, failed.version_id)
    assert bench.store.retention(kept.key, kept.version_id) is not None
    assert bench.store.get(kept.key, version_id=kept.version_id) == data
    assert bench.store.get(kept.key) == data  # the key still reads


def test_an_intent_whose_object_a_row_names_is_forgotten_and_the_object_locked(signing_bench):
    """A change that committed its row without settling its intent (it cannot
    happen through the unit of work, but the reconciler does not rely on that)."""
    bench = signing_bench
    unit, store = bench.worker()
    stored = store_signed_pdf(bench, unit, store, new_flow(bench), b"%PDF committed, intent left")
    unit._before_commit.clear()  # noqa: SLF001 - the settling step skipped
    unit._after_commit.clear()  # noqa: SLF001 - and the lock
    unit.commit()
    unit.close()
    assert len(bench.intent_rows()) == 1

    done = bench.intents.reconcile(NOW)
    assert (done.removed, done.forgotten, done.locked) == (0, 1, 1)
    assert bench.intent_rows() == [] and bench.version_exists(stored.key, stored.version_id)
    assert bench.store.retention(stored.key, stored.version_id) is not None


def test_a_put_whose_answer_was_lost_is_found_by_its_intent(signing_bench, monkeypatch):
    """The process stopped after the put, before it learnt the version: the
    version carrying the intent's id is deleted, and no other."""
    bench = signing_bench
    data = b"%PDF put, answer lost"
    unit, store = bench.worker()
    other = store_signed_pdf(bench, unit, store, new_flow(bench), data)  # an identical, committed one
    unit.commit()
    unit.close()

    unit, store = bench.worker()
    store.put(data, owner_id="flow-x", prefix="flows/")  # the version is not written to the intent
    unit.rollback()  # and the process stops before its commit
    unit.close()
    [intent] = bench.intent_rows()
    assert intent.version_id is None
    [lost] = bench.store.versions_with(other.key, INTENT_METADATA, intent.id)
    assert lost != other.version_id

    assert bench.intents.reconcile(NOW).removed == 1
    assert not bench.version_exists(other.key, lost)
    assert bench.version_exists(other.key, other.version_id)

    # stopped between the intent and the put: nothing to delete, the intent goes
    intent_id = bench.intents.open("flows/" + "e" * 64, "flow-y")
    done = bench.intents.reconcile(NOW)
    assert (done.removed, done.forgotten) == (0, 1) and bench.intent_rows() == []
    assert intent_id


def test_a_change_slower_than_the_grace_period_cannot_commit_a_deleted_object(signing_bench):
    bench = signing_bench
    flow_id = new_flow(bench)
    unit, store = bench.worker()
    stored = store_signed_pdf(bench, unit, store, flow_id, b"%PDF stored, then a very long pause")
    assert bench.intents.reconcile(NOW).removed == 1  # taken back meanwhile
    with pytest.raises(Unavailable) as refused:
        unit.commit()
    assert "object_taken_back" in str(refused.value)
    unit.rollback()
    unit.close()
    assert stored_rows(bench, stored.key) == []  # no row names the deleted version


def test_documents_objects_of_a_failed_change_are_deleted_unless_another_change_holds_the_key(documents_bench):
    """documents' bucket keeps one object per key (no versions), and locks none."""
    import uuid

    from services.documents.models import Attachment, Document

    bench = documents_bench
    document_id = str(uuid.uuid4())
    with bench.database.session() as session:
        session.add(Document(id=document_id, template_id="iou", template_version=1, status="draft",
                             created_at=utcnow(), updated_at=utcnow()))
        session.commit()
    image = b"\xff\xd8 an attachment"

    # a failed add_attachment: its image goes
    unit, store = bench.worker()
    failed = store.put(image, owner_id=document_id, prefix="attachments/")
    assert failed.version_id is None
    unit.rollback()
    unit.close()
    assert bench.intents.reconcile(NOW).to_dict() == {"removed": 1, "forgotten": 0, "locked": 0, "failed": 0}
    assert not bench.version_exists(failed.key, None) and bench.intent_rows() == []

    # failed again, while another call putting the same bytes is still running: the object is theirs too
    unit, store = bench.worker()
    store.put(image, owner_id=document_id, prefix="attachments/")
    unit.rollback()
    unit.close()
    [abandoned] = bench.intent_rows()
    with bench.database.session() as session:  # the failed one is the older
        session.execute(OBJECT_INTENTS.update().where(OBJECT_INTENTS.c.id == abandoned.id)
                        .values(created_at=utcnow() - timedelta(hours=1)))
        session.commit()
    running, running_store = bench.worker()
    kept = running_store.put(image, owner_id=document_id, prefix="attachments/")
    assert bench.intents.reconcile(timedelta(minutes=30)).forgotten == 1
    assert bench.version_exists(kept.key, None)
    running.session.add(Attachment(document_id=document_id, field="images", sha256=kept.sha256, label="x",
                                   mime="image/jpeg", width=1, height=1, size=kept.size, object_key=kept.key,
                                   thumbnail_key=kept.key, created_at=utcnow()))
    running.commit()
    running.close()
    assert bench.intent_rows() == []
    assert bench.intents.reconcile(NOW).to_dict() == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}
    assert bench.store.get(kept.key) == image
    with bench.database.session() as session:
        assert session.execute(select(func.count()).select_from(Attachment)).scalar_one() == 1


def test_a_put_after_the_worker_wrote_goes_through_on_postgresql_and_is_refused_at_once_on_sqlite(
        signing_bench, db_backend):
    """On SQLite the intent's own transaction would wait for the worker's write lock (for
    the whole busy timeout, then fail): a put comes before the worker writes. PostgreSQL
    writers of different rows do not wait for each other: the put goes through."""
    from services.signing.models import RevokedCertificate

    bench = signing_bench
    unit, store = bench.worker()
    unit.session.add(RevokedCertificate(serial="01", revoked_at=utcnow()))
    unit.session.flush()  # the worker's transaction holds a write lock
    started = time.monotonic()
    if db_backend == "postgresql":
        store.put(b"%PDF in time", owner_id="flow-z", prefix="flows/")
        assert time.monotonic() - started < 5
        unit.rollback()
        unit.close()
        assert len(bench.intent_rows()) == 1  # the change failed: its object is left to the reconciler
        return
    with pytest.raises(RuntimeError, match="before the worker's transaction writes"):
        store.put(b"%PDF too late", owner_id="flow-z", prefix="flows/")
    assert time.monotonic() - started < 5
    unit.rollback()
    unit.close()
    assert bench.intent_rows() == [] and not bench.version_exists(ObjectStore.key_of(b"%PDF too late", "flows/"), None)
