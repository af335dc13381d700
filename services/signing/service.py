"""The signing service: wires RPC and event entrypoints to signing flows,
PAdES signatures, the evidence log and reports."""
from __future__ import annotations

import logging

from services.common import events
from services.common.entrypoints import handles_event, rpc
from services.common.outbox import utcnow
from services.common.service_base import ServiceBase
from services.common.storage import Storage
from services.signing.models import RevokedCertificate

log = logging.getLogger(__name__)


class SigningService(ServiceBase):
    name = "signing"
    storage = Storage()

    @rpc
    def certificate_revoked(self, serial: str) -> bool:
        """Whether identity has announced this certificate serial as revoked."""
        return self.db.session.get(RevokedCertificate, serial) is not None

    @handles_event("identity", events.CERTIFICATE_REVOKED)
    def on_certificate_revoked(self, event: dict) -> None:
        """Remember revoked serials so a pending flow refuses to sign with them
        even before the next CRL is fetched."""
        data = event["data"]
        if self.db.session.get(RevokedCertificate, data["serial"]) is None:
            self.db.session.add(RevokedCertificate(
                serial=data["serial"], person_id=data.get("person_id"),
                reason=data.get("reason"), revoked_at=utcnow(),
            ))
