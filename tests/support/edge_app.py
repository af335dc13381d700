"""The gateway with a stand-in for the services, for tests of what happens at the
edge (sizes, rates) over a real socket: ``uvicorn --factory tests.support.edge_app:app``.
ESIGN_TEST_LIMITS (JSON) is the gateway's LIMITS section."""
from __future__ import annotations

import json
import os
import tempfile


class EchoRpc:
    """Answers every call with what it was asked (no service runs in these tests)."""

    def call(self, service, method, /, *args, **kwargs):
        if (service, method) == ("identity", "request_phone_code"):
            return {"challenge_id": "c" * 32, "expires_in": 300}
        return {"service": service, "method": method, "sizes": {k: len(str(v)) for k, v in kwargs.items()}}

    def close(self):
        pass


def app():
    from services.gateway.app import create_app

    limits = json.loads(os.environ.get("ESIGN_TEST_LIMITS", "{}"))
    return create_app({"AMQP_URI": "memory://", "DATA_DIR": tempfile.mkdtemp(prefix="edge-"), "LIMITS": limits},
                      rpc=EchoRpc())
