"""KEK rotation re-wraps the objects services sealed into S3 (signing's versioned,
Object-Locked bucket; documents' unversioned one), against a real SeaweedFS and
PostgreSQL: afterwards every object opens with the new KEK alone, ``--check``
counts none under the old one, signing's new versions are locked like the old
ones, and a rotation stopped half-way leaves nothing the reconciler would lose.

Before: objects were neither re-wrapped nor counted, so destroying a retired KEK
once ``--check`` showed nothing under it lost every signed PDF and attachment."""
from __future__ import annotations

import base64
import copy
import os
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.common.clock import aware, utcnow
from services.common.database import Database
from services.common.errors import NotFound
from services.common.key_rotation import rotate_service
from services.common.object_intents import OBJECT_INTENTS, IntentSettings, IntentStore, ObjectIntents
from services.common.outbox import UnitOfWork
from services.common.sealing import HEADER_BYTES, sealed_key_id
from services.common.storage import ObjectStore, S3Settings

pytestmark = pytest.mark.integration

NOW = timedelta(0)


def _kek(path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("base64:" + base64.b64encode(os.urandom(32)).decode() + "\n")
    return str(path)


@pytest.fixture
def configs(service_config, s3, tmp_path):
    """``configs(service, **s3) -> (before, rotating, after)``: the service with kek-1;
    with kek-2 active and kek-1 retired; with kek-2 alone (kek-1 destroyed)."""

    def make(service: str, **s3_settings):
        old, new = _kek(tmp_path / "keys" / f"{service}-kek-1"), _kek(tmp_path / "keys" / f"{service}-kek-2")
        before = service_config(service, S3={"ENDPOINT": s3.endpoint, "ACCESS_KEY": s3.access_key,
                                             "SECRET_KEY": s3.secret_key,
                                             "BUCKET": f"t-rotate-{service}-{time.time_ns()}", **s3_settings})
        before["SECRETS"] = {"GENERATE_MISSING": True, "KEK": {"id": "kek-1", "file": old}}
        rotating = copy.deepcopy(before)
        rotating["SECRETS"]["KEK"] = {"id": "kek-2", "file": new}
        rotating["SECRETS"]["RETIRED_KEKS"] = [{"id": "kek-1", "file": old}]
        after = copy.deepcopy(rotating)
        del after["SECRETS"]["RETIRED_KEKS"]
        return before, rotating, after

    return make


def _intents(service: str, config: dict, database: Database) -> ObjectIntents:
    if service == "signing":  # the KEK keyring alone (load_keys would open the key store too)
        from services.signing.dependencies import load_keyring
        from services.signing.models import STORED_OBJECTS
    else:
        from services.documents.models import STORED_OBJECTS
        from services.documents.secrets import load_keys

        def load_keyring(config):
            return load_keys(config).keyring
    settings = S3Settings.from_config(config)
    return ObjectIntents(ObjectStore(settings, load_keyring(config)), lambda: database, STORED_OBJECTS,
                         IntentSettings.from_config(config, settings.object_lock_days))


def _kid(store: ObjectStore, key: str, version_id: str | None = None) -> str | None:
    return sealed_key_id(store.get_raw(key, version_id, length=HEADER_BYTES)[0])


def _signed_pdf(database: Database, intents: ObjectIntents, data: bytes, flow_id: str | None = None) -> str:
    """What FlowStore.store_pdf does (put through an intent, the row in the worker's
    transaction, locked after the commit), for a new flow or ``flow_id``'s."""
    from services.signing.models import FlowRow, StoredObjectRow

    unit = UnitOfWork(database.sessionmaker(), None, "test")
    if flow_id is None:
        flow_id = str(uuid.uuid4())
        unit.session.add(FlowRow(id=flow_id, document_id=str(uuid.uuid4()), document_sha256="0" * 64, title="t",
                                 state="waiting", current_index=0, initiator_person_id="p", expires_at=utcnow(),
                                 void_confirmed_by="[]", current_pdf_key="k", current_pdf_sha256="0" * 64,
                                 created_at=utcnow(), updated_at=utcnow()))
    stored = IntentStore(intents, lambda: unit).put(data, owner_id=flow_id, prefix="flows/",
                                                    content_type="application/pdf")
    unit.session.add(StoredObjectRow(flow_id=flow_id, kind="signed", key=stored.key, sha256=stored.sha256,
                                     version_id=stored.version_id, size=stored.size, created_at=utcnow()))
    unit.commit()
    unit.close()
    return flow_id


def _rows(database: Database) -> list:
    from services.signing.models import StoredObjectRow

    with database.session() as session:
        return list(session.execute(select(StoredObjectRow).order_by(StoredObjectRow.id)).scalars())


def _intent_rows(database: Database) -> list:
    with database.session() as session:
        return session.execute(select(OBJECT_INTENTS)).all()


def test_signing_objects_move_to_the_new_kek_and_stay_locked(configs):
    before, rotating, after = configs("signing", VERSIONING=True, OBJECT_LOCK_DAYS=1)
    database = Database.from_config(before, "signing")
    database.migrate()
    try:
        intents = _intents("signing", before, database)
        texts = [b"%PDF signed one", b"%PDF signed two", b"%PDF report"]
        flow = _signed_pdf(database, intents, texts[0])
        _signed_pdf(database, intents, texts[1], flow)
        _signed_pdf(database, intents, texts[2])
        _signed_pdf(database, intents, texts[0])  # the same bytes again: the same key, a second version
        old_rows = _rows(database)
        store = intents.store
        assert len({(r.key, r.version_id) for r in old_rows}) == 4 and len({r.key for r in old_rows}) == 3
        assert all(r.retained_until is not None for r in old_rows)
        assert {_kid(store, r.key, r.version_id) for r in old_rows} == {"kek-1"}

        check = rotate_service("signing", rotating, dry_run=True)
        assert check["objects_by_key_id"] == {"kek-1": 4} and check["rewrapped_objects"] == 4
        assert check["by_key_id"].get("kek-1") == 4
        assert [(r.key, r.version_id) for r in _rows(database)] == [(r.key, r.version_id) for r in old_rows]

        done = rotate_service("signing", rotating)
        assert done["rewrapped_objects"] == 4
        assert done["objects_by_key_id"] == {"kek-2": 4} and "kek-1" not in done["by_key_id"]
        again = rotate_service("signing", rotating)
        assert again["rewrapped_objects"] == 0 and again["objects_by_key_id"] == {"kek-2": 4}

        rows = _rows(database)
        assert _intent_rows(database) == []
        only_new = _intents("signing", after, database).store
        for old, row in zip(old_rows, rows, strict=False):
            assert row.key == old.key and row.version_id not in (None, old.version_id)
            assert _kid(store, row.key, row.version_id) == "kek-2"
            assert only_new.get(row.key, sha256=row.sha256, version_id=row.version_id) in texts
            # the new version is locked (COMPLIANCE) as long as the old one, and the row says so
            retention = store.client.get_object_retention(Bucket=store.bucket, Key=row.key,
                                                          VersionId=row.version_id)["Retention"]
            assert retention["Mode"] == "COMPLIANCE"
            assert abs(retention["RetainUntilDate"] - aware(old.retained_until)) < timedelta(seconds=1)
            assert abs(aware(row.retained_until) - aware(old.retained_until)) < timedelta(seconds=1)
            # the old version stays (locked) under kek-1: unreadable once kek-1 is destroyed
            assert _kid(store, old.key, old.version_id) == "kek-1"
        assert [only_new.get(r.key, sha256=r.sha256, version_id=r.version_id) for r in rows] == [
            texts[0], texts[1], texts[2], texts[0]]
        # the old KEK destroyed: --check still runs and finds nothing under it
        assert rotate_service("signing", after, dry_run=True)["objects_by_key_id"] == {"kek-2": 4}
        assert intents.reconcile(NOW).to_dict() == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}
    finally:
        database.dispose()


def test_a_signing_rotation_stopped_after_its_put_is_taken_back_and_redone(configs, monkeypatch):
    """Stopped between the put and the commit: the rows still name the old version,
    the reconciler deletes the new (unlocked) one, and rotating again finishes."""
    from services.common import key_rotation

    before, rotating, after = configs("signing", VERSIONING=True, OBJECT_LOCK_DAYS=1)
    database = Database.from_config(before, "signing")
    database.migrate()
    try:
        intents = _intents("signing", before, database)
        _signed_pdf(database, intents, b"%PDF interrupted")
        [old] = _rows(database)

        def stopped(*args, **kwargs):
            raise RuntimeError("killed before the commit")

        monkeypatch.setattr(key_rotation, "_move_rows", stopped)
        with pytest.raises(RuntimeError):
            rotate_service("signing", rotating)
        monkeypatch.undo()
        [intent] = _intent_rows(database)
        assert intent.owner_id == key_rotation.ROTATION_OWNER and intent.version_id not in (None, old.version_id)
        [row] = _rows(database)
        assert (row.version_id, row.retained_until) == (old.version_id, old.retained_until)
        assert intents.reconcile(NOW).removed == 1  # the unnamed re-wrapped copy, never locked
        assert _intent_rows(database) == []
        with pytest.raises(NotFound):
            intents.store.get_raw(old.key, intent.version_id)

        assert rotate_service("signing", rotating)["rewrapped_objects"] == 1
        [row] = _rows(database)
        assert _intents("signing", after, database).store.get(
            row.key, sha256=row.sha256, version_id=row.version_id) == b"%PDF interrupted"
        assert intents.store.retention(row.key, row.version_id) is not None
    finally:
        database.dispose()


def _document_with_attachment(database: Database, intents: ObjectIntents, pdf: bytes, image: bytes,
                              thumbnail: bytes) -> None:
    from services.documents.models import Attachment, Document

    unit = UnitOfWork(database.sessionmaker(), None, "test")
    store = IntentStore(intents, lambda: unit)
    document_id = str(uuid.uuid4())
    stored_pdf = store.put(pdf, owner_id=document_id, prefix="documents/", content_type="application/pdf")
    stored_image = store.put(image, owner_id=document_id, prefix="attachments/", content_type="image/png")
    stored_thumb = store.put(thumbnail, owner_id=document_id, prefix="thumbnails/", content_type="image/png")
    unit.session.add(Document(id=document_id, template_id="t", template_version=1, status="rendered",
                              pdf_key=stored_pdf.key, pdf_sha256=stored_pdf.sha256, created_at=utcnow(),
                              updated_at=utcnow()))
    unit.session.flush()
    unit.session.add(Attachment(document_id=document_id, field="f", sha256=stored_image.sha256, label="l",
                                mime="image/png", width=1, height=1, size=stored_image.size,
                                object_key=stored_image.key, thumbnail_key=stored_thumb.key, created_at=utcnow()))
    unit.commit()
    unit.close()


def test_documents_objects_are_rewrapped_in_place_and_never_taken_back(configs, monkeypatch):
    from services.common import key_rotation
    from services.common.key_rotation import referenced_objects

    before, rotating, after = configs("documents")
    database = Database.from_config(before, "documents")
    database.migrate()
    try:
        intents = _intents("documents", before, database)
        _document_with_attachment(database, intents, b"%PDF doc", b"png image", b"png thumb")
        _document_with_attachment(database, intents, b"%PDF doc 2", b"png image", b"png thumb")  # shared image
        with database.session() as session:
            objects = referenced_objects(session, intents.references)
        assert len(objects) == 4 and all(version is None for _, version in objects)

        assert rotate_service("documents", rotating, dry_run=True)["objects_by_key_id"] == {"kek-1": 4}
        # stopped between the put (in place) and the commit: the reconciler must keep the object
        monkeypatch.setattr(key_rotation, "_move_rows", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError):
            rotate_service("documents", rotating)
        monkeypatch.undo()
        assert len(_intent_rows(database)) == 1
        assert intents.reconcile(NOW).to_dict()["removed"] == 0
        assert _intent_rows(database) == []

        done = rotate_service("documents", rotating)
        assert done["rewrapped_objects"] == 3  # the interrupted one was already put back under kek-2
        assert done["objects_by_key_id"] == {"kek-2": 4} and "kek-1" not in done["by_key_id"]
        assert rotate_service("documents", rotating)["rewrapped_objects"] == 0
        only_new = _intents("documents", after, database).store
        assert sorted(only_new.get(key) for key, _ in objects) == sorted(
            [b"%PDF doc", b"%PDF doc 2", b"png image", b"png thumb"])
        assert all(_kid(intents.store, key) == "kek-2" for key, _ in objects)
        assert rotate_service("documents", after, dry_run=True)["objects_by_key_id"] == {"kek-2": 4}
        assert intents.reconcile(NOW).removed == 0 and _intent_rows(database) == []
    finally:
        database.dispose()
