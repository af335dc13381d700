"""The identity service: wires RPC and event entrypoints to the identity
domain (ID-number rules, phone codes, faces, CA, key vault, grants)."""
from __future__ import annotations

import logging

from sqlalchemy import text

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.outbox import utcnow
from services.common.service_base import ServiceBase

log = logging.getLogger(__name__)


class IdentityService(ServiceBase):
    name = "identity"

    @handles_event("notify", events.SMS_SENT)
    def on_sms_sent(self, event: dict) -> None:
        """A phone code reached the vendor: remember when, and drop the sealed
        copy of the code kept only for delivery."""
        data = event["data"]
        if data.get("ref_type") != "otp":
            return
        self.db.session.execute(
            text("UPDATE otp_challenges SET delivered_at = :now, code_sealed = NULL, status = "
                 "CASE WHEN status = 'pending' THEN 'delivered' ELSE status END WHERE id = :id"),
            {"now": utcnow(), "id": data.get("ref_id")},
        )
