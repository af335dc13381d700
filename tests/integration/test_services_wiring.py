"""The four back-end services wired over real RabbitMQ, PostgreSQL and
SeaweedFS: each handles a real event from another service."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher

from services.common import events
from services.common.clock import utcnow
from services.common.errors import Forbidden, InvalidInput
from services.common.outbox import envelope
from services.documents.service import DocumentsService
from services.identity.service import IdentityService
from services.notify.service import NotifyService
from services.signing.service import SigningService
from tests.support.flow_events import flow_event
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


def outbox_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def platform(service_config, run_container, tmp_path):
    secrets_dir = tmp_path / "secrets"
    identity_config = service_config("identity", SECRETS={
        "KEK": {"file": str(secrets_dir / "kek")},
        "BLIND_INDEX_KEY": {"file": str(secrets_dir / "blind")},
        "OTP_KEY": {"file": str(secrets_dir / "otp")},
        "GENERATE_MISSING": True,
    })
    outbox = tmp_path / "sms-outbox.jsonl"
    notify_config = service_config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)})
    containers = {
        "identity": run_container(IdentityService, identity_config),
        "notify": run_container(NotifyService, notify_config),
        "documents": run_container(DocumentsService, service_config("documents")),
        "signing": run_container(SigningService, service_config("signing")),
    }
    return containers, outbox


def test_health_of_every_service(platform, rpc_proxy):
    for name in ("identity", "documents", "signing", "notify"):
        answer = getattr(rpc_proxy, name).health()
        assert answer["status"] == "ok", answer
    assert rpc_proxy.documents.health()["checks"]["storage"]["ok"] is True


def test_phone_code_is_sent_once_and_confirms(platform, rpc_proxy):
    _, outbox = platform
    answer = rpc_proxy.identity.request_phone_code(phone="+86 138-0013-8000")
    assert answer["phone_masked"] == "138****8000"
    lines = wait_for(lambda: outbox_lines(outbox))
    assert len(lines) == 1 and lines[0]["phone"] == "13800138000" and lines[0]["template"] == "phone_code"
    code = lines[0]["params"]["code"]
    assert len(code) == 6 and code in lines[0]["text"]
    # notify's sms_sent event reaches identity, which drops the sealed code copy
    def delivered():
        try:
            rpc_proxy.identity.otp_message(challenge_id=answer["challenge_id"])
            return False
        except Forbidden:
            return True
    assert wait_for(delivered)
    wrong = "000000" if code != "000000" else "111111"
    with pytest.raises(Forbidden) as refused:
        rpc_proxy.identity.confirm_phone_code(challenge_id=answer["challenge_id"], code=wrong)
    assert refused.value.reason == "otp_wrong_code"
    assert rpc_proxy.identity.confirm_phone_code(challenge_id=answer["challenge_id"], code=code)["confirmed"]
    with pytest.raises(Forbidden):
        rpc_proxy.identity.confirm_phone_code(challenge_id=answer["challenge_id"], code=code)
    eventlet.sleep(0.5)
    assert len(outbox_lines(outbox)) == 1  # exactly one SMS


def test_phone_input_errors_name_the_field(platform, rpc_proxy):
    with pytest.raises(InvalidInput) as error:
        rpc_proxy.identity.request_phone_code(phone="12345")
    assert error.value.field == "phone"
    with pytest.raises(InvalidInput) as error:
        rpc_proxy.identity.request_phone_code(phone=13800138000)
    assert (error.value.field, error.value.rule) == ("phone", "string_type")


def test_signing_learns_revocations_from_identity_events(platform, rpc_proxy):
    containers, _ = platform
    dispatch = event_dispatcher(containers["identity"].config)
    event = envelope("identity", events.CERTIFICATE_REVOKED, {"serial": "abc123", "person_id": "p1",
                                                              "reason": "key_compromise"})
    assert rpc_proxy.signing.certificate_revoked(serial="abc123") is False
    dispatch("identity", events.CERTIFICATE_REVOKED, event)
    assert wait_for(lambda: rpc_proxy.signing.certificate_revoked(serial="abc123"))


def test_documents_hand_a_document_back_when_signing_is_declined(platform, rpc_proxy):
    containers, _ = platform
    from services.common.database import Database
    from services.documents.models import Document

    cfg = containers["documents"].config["DATABASE"]
    db = Database(cfg["URL"], cfg["SCHEMA"], "documents")
    document_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(Document(id=document_id, template_id="iou", template_version=1, status="rendered",
                             pdf_key="documents/x.pdf", pdf_sha256="a" * 64, created_at=utcnow(), updated_at=utcnow()))
        session.commit()
    db.dispose()
    rpc_proxy.documents.lock_for_signing(document_id=document_id, flow_id="f1", pdf_sha256="a" * 64)
    assert rpc_proxy.documents.get_document(document_id=document_id)["locked"] is True
    dispatch = event_dispatcher(containers["signing"].config)
    declined = flow_event(events.FLOW_DECLINED, "f1", [("p1", "出借人"), ("p2", "借款人")], document_id=document_id,
                          decliner_person_id="p2", reason="金额不对")
    dispatch("signing", events.FLOW_DECLINED, envelope("signing", events.FLOW_DECLINED, declined))
    assert wait_for(lambda: rpc_proxy.documents.get_document(document_id=document_id)["locked"] is False)
