"""The notify service: wires events and RPC to SMS templates, providers and
the delivery log."""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

from nameko.extensions import DependencyProvider
from nameko.rpc import RpcProxy
from sqlalchemy import select

from services.common import events
from services.common.config import REPO_ROOT, data_dir
from services.common.entrypoints import handles_event, rpc
from services.common.errors import NotFound
from services.common.masking import mask_phone
from services.common.outbox import utcnow
from services.common.service_base import ServiceBase
from services.notify.models import SmsMessage
from services.notify.providers import PermanentSmsError, SmsDeliveryError, build_provider
from services.notify.sms_templates import SmsTemplateCatalog

log = logging.getLogger(__name__)


class Sms:
    """What a worker gets: the template catalogue and the configured provider."""

    def __init__(self, catalog: SmsTemplateCatalog, provider, provider_name: str):
        self.catalog = catalog
        self.provider = provider
        self.provider_name = provider_name


class SmsProviderDependency(DependencyProvider):
    def setup(self) -> None:
        config = self.container.config
        sms = config.get("SMS") or {}
        name = str(sms.get("PROVIDER") or "console")
        if name == "console":
            outbox = Path(str(sms.get("OUTBOX_FILE") or data_dir(config) / "sms-outbox.jsonl"))
            if not outbox.is_absolute():
                outbox = REPO_ROOT / outbox
            outbox.parent.mkdir(parents=True, exist_ok=True)
            settings = {"provider": "console",
                        "console": {"outbox_path": str(outbox), "sign_name": sms.get("SIGN_NAME") or "电子签"}}
        else:
            settings = {"provider": name, name: {k.lower(): v for k, v in (sms.get(name.upper()) or {}).items()}}
        self.sms = Sms(SmsTemplateCatalog.load(), build_provider(settings), name)

    def get_dependency(self, worker_ctx) -> Sms:
        return self.sms


class NotifyService(ServiceBase):
    name = "notify"
    sms = SmsProviderDependency()
    identity = RpcProxy("identity")

    @handles_event("identity", events.OTP_REQUESTED)
    def on_otp_requested(self, event: dict) -> None:
        """Deliver a phone or willingness code. The event carries only the
        challenge id; the phone and code are fetched from identity over RPC."""
        challenge_id = event["data"]["challenge_id"]
        dedupe_key = f"otp:{challenge_id}"
        if self.db.session.execute(select(SmsMessage.id).where(SmsMessage.dedupe_key == dedupe_key)).first():
            return
        message = self.identity.otp_message(challenge_id)
        self._send(dedupe_key, message["phone"], message["template"], message["params"],
                   ref_type="otp", ref_id=challenge_id)

    def _send(self, dedupe_key: str, phone: str, template_id: str, params: dict,
              ref_type: str, ref_id: str) -> SmsMessage:
        rendered = self.sms.catalog.render(template_id, params)
        now = utcnow()
        message = SmsMessage(
            id=str(uuid.uuid4()), dedupe_key=dedupe_key, template_id=template_id,
            template_version=rendered.template.version, provider=self.sms.provider_name,
            phone_masked=mask_phone(phone), status="queued", attempts=0, created_at=now, updated_at=now,
        )
        self.db.session.add(message)
        self.db.commit()  # the intent is durable before anything leaves the building
        message.attempts += 1
        try:
            result = self.sms.provider.send(phone, rendered.template, rendered.params, rendered.text)
        except SmsDeliveryError as exc:
            # permanent: never retried; transient: stays queued for the retry scheduler
            message.status = "failed" if isinstance(exc, PermanentSmsError) else "queued"
            message.last_error = exc.code[:200]
            message.updated_at = utcnow()
            self.db.emit(events.SMS_FAILED, {"message_id": message.id, "template": template_id,
                                             "ref_type": ref_type, "ref_id": ref_id, "error": exc.code})
            self.metrics.inc("sms", "SMS by outcome", template=template_id, provider=self.sms.provider_name,
                             outcome=message.status)
            return message
        message.status = "sent"
        message.vendor_message_id = result.vendor_message_id
        message.sent_at = message.updated_at = utcnow()
        self.db.emit(events.SMS_SENT, {"message_id": message.id, "template": template_id,
                                       "ref_type": ref_type, "ref_id": ref_id})
        self.metrics.inc("sms", "SMS by outcome", template=template_id, provider=self.sms.provider_name,
                         outcome="sent")
        return message

    @rpc
    def delivery_status(self, message_id: str) -> dict:
        message = self.db.session.get(SmsMessage, message_id)
        if message is None:
            raise NotFound("sms_message", message_id)
        return {"id": message.id, "template": message.template_id, "status": message.status,
                "phone_masked": message.phone_masked, "attempts": message.attempts,
                "vendor_message_id": message.vendor_message_id}
