"""The signing service's files over real RabbitMQ, PostgreSQL and SeaweedFS with
Object Lock (COMPLIANCE, one day): a signature that fails between storing its
PDF and committing leaves no file behind for good, and every committed file
ends locked, even when the process stops between its commit and its lock
(services/common/object_intents.py)."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select

from services.common.database import Database
from services.common.errors import Unavailable
from services.common.object_intents import INTENT_METADATA, OBJECT_INTENTS, ObjectIntents
from services.common.storage import ObjectStore, S3Settings
from services.documents.service import DocumentsService
from services.notify.service import NotifyService
from services.signing.dependencies import load_keyring
from services.signing.flow_store import FlowStore
from services.signing.models import StoredObjectRow
from services.signing.service import SigningService
from tests.integration.test_signing_assurance import (
    FACE,
    IdentityRegistry,
    identity_stand_in,
    rendered_iou,
    sign,
    start,
)
from tests.support.pki import start_signing_environment
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki_env():
    environment = start_signing_environment()
    yield environment
    environment.stop()


class Signing:
    """signing's database and bucket, as the test sees them."""

    def __init__(self, config: dict):
        self.database = Database(config["DATABASE"]["URL"], config["DATABASE"]["SCHEMA"], "signing")
        self.store = ObjectStore(S3Settings.from_config(config), load_keyring(config))

    def objects(self, flow_id: str) -> list[StoredObjectRow]:
        with self.database.session() as session:
            return list(session.execute(select(StoredObjectRow).where(StoredObjectRow.flow_id == flow_id)
                                        .order_by(StoredObjectRow.id)).scalars())

    def intents(self) -> list:
        with self.database.session() as session:
            return session.execute(select(OBJECT_INTENTS)).all()

    def version_exists(self, key: str, version_id: str) -> bool:
        try:
            self.store.client.head_object(Bucket=self.store.bucket, Key=key, VersionId=version_id)
            return True
        except ClientError:
            return False

    def compliance_locked(self, key: str, version_id: str) -> bool:
        try:
            retention = self.store.client.get_object_retention(Bucket=self.store.bucket, Key=key,
                                                               VersionId=version_id)["Retention"]
        except ClientError:
            return False
        return retention["Mode"] == "COMPLIANCE"


@pytest.fixture
def signing(pki_env, service_config, run_container, tmp_path):
    """identity (the stand-in), documents, notify, and signing keeping its files locked for a day."""
    registry = IdentityRegistry.lender_and_borrower(pki_env.pki)
    run_container(identity_stand_in(registry), service_config("identity"))
    run_container(DocumentsService, service_config("documents"))
    run_container(NotifyService, service_config("notify", SMS={"PROVIDER": "console",
                                                               "OUTBOX_FILE": str(tmp_path / "sms.jsonl")}))
    config = service_config(
        "signing",  # the stand-in identity signs but does not stamp: signing asks the test TSA
        TSA={"URL": pki_env.tsa_url, "SIGNATURE_STAMPS": "url"}, ASSURANCE={"REQUIRED_LEVEL": FACE.value})
    # Object Lock is chosen when a bucket is made: signing's second bucket is the locked one
    config["S3"] = dict(config["S3"], OBJECT_LOCK_DAYS=1, BUCKET=config["S3"]["BUCKET"] + "-locked")
    run_container(SigningService, config)
    view = Signing(config)
    yield view
    view.database.dispose()


def test_a_signature_failing_before_its_commit_leaves_no_file_and_committed_files_are_locked(
        signing, rpc_proxy, monkeypatch):
    flow_id = start(rpc_proxy, rendered_iou(rpc_proxy))["flow_id"]
    # locked once committed: by the step that follows the commit, beside the answer
    assert wait_for(lambda: signing.objects(flow_id)[0].retained_until is not None)
    [original] = signing.objects(flow_id)
    assert original.kind == "original" and original.retained_until is not None
    assert signing.compliance_locked(original.key, original.version_id)
    assert signing.intents() == []

    def time_stamp_authority_down(*args, **kwargs):  # after the signed PDF is stored, before the commit
        raise Unavailable("tsa", "down")

    monkeypatch.setattr(FlowStore, "apply", time_stamp_authority_down)
    with pytest.raises(Unavailable):
        sign(rpc_proxy, flow_id, "p-borrower")
    monkeypatch.undo()
    assert [o.kind for o in signing.objects(flow_id)] == ["original"]
    [intent] = signing.intents()
    assert intent.owner_id == flow_id and intent.object_key.startswith("flows/")
    # the signed PDF nothing refers to: stored, and (unlike before intents) not locked, so it can go
    # the intent does not record the version its put made; the version carries the intent's id
    [version_id] = signing.store.versions_with(intent.object_key, INTENT_METADATA, intent.id)
    assert signing.version_exists(intent.object_key, version_id)
    assert not signing.compliance_locked(intent.object_key, version_id)

    counts = rpc_proxy.signing.reconcile_objects_now(older_than_seconds=3600)
    assert counts == {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}  # too recent: maybe in progress
    assert rpc_proxy.signing.reconcile_objects_now(older_than_seconds=0)["removed"] == 1
    assert not signing.version_exists(intent.object_key, version_id)
    assert signing.intents() == []

    # the flow is as it was: the same person signs again, then the other party; every file is locked
    assert rpc_proxy.signing.get_flow(flow_id=flow_id)["parties"][0]["signed_at"] is None
    sign(rpc_proxy, flow_id, "p-borrower")
    assert sign(rpc_proxy, flow_id, "p-lender")["state"] == "completed"
    rpc_proxy.signing.report(flow_id=flow_id)
    assert wait_for(lambda: all(o.retained_until is not None for o in signing.objects(flow_id)))
    stored = signing.objects(flow_id)
    assert [o.kind for o in stored] == ["original", "signed", "final", "report_json", "report_pdf"]
    assert all(o.retained_until is not None and signing.compliance_locked(o.key, o.version_id) for o in stored)
    assert signing.intents() == []
    assert rpc_proxy.signing.reconcile_objects_now(older_than_seconds=0) == \
        {"removed": 0, "forgotten": 0, "locked": 0, "failed": 0}
    assert rpc_proxy.signing.verify(pdf=rpc_proxy.signing.get_signed_pdf(flow_id=flow_id)["pdf"])["ok"] is True


def test_a_file_committed_but_not_locked_is_locked_by_the_reconciler(signing, rpc_proxy, monkeypatch):
    flow_id = start(rpc_proxy, rendered_iou(rpc_proxy))["flow_id"]

    assert wait_for(lambda: signing.objects(flow_id)[0].retained_until is not None)  # the original's lock
    refused = []

    def stopped(*args, **kwargs):  # the process stops right after the commit
        refused.append(args)
        raise Unavailable("s3", "stopped")

    monkeypatch.setattr(ObjectIntents, "lock", stopped)
    signed = sign(rpc_proxy, flow_id, "p-borrower")
    assert wait_for(lambda: refused)  # the lock that follows the commit was tried, and failed
    monkeypatch.undo()
    assert signed["parties"][0]["signed_at"] is not None  # the signature itself is committed
    [_, unlocked] = signing.objects(flow_id)
    assert unlocked.kind == "signed" and unlocked.retained_until is None
    assert not signing.compliance_locked(unlocked.key, unlocked.version_id)

    counts = rpc_proxy.signing.reconcile_objects_now(older_than_seconds=0)
    assert (counts["removed"], counts["locked"]) == (0, 1)
    [_, locked] = signing.objects(flow_id)
    assert locked.retained_until is not None and signing.compliance_locked(locked.key, locked.version_id)
    assert signing.version_exists(locked.key, locked.version_id)
