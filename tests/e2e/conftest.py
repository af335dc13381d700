"""The ``stack`` fixture: identity, documents, signing and notify on real
RabbitMQ, PostgreSQL and SeaweedFS, and the gateway as its own process (it
serves the CRL, OCSP and the time-stamp authority that signatures and pdfsig
reach over HTTP, and the web pages)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import eventlet
import pytest

from services.common.s3server import free_port
from services.documents.service import DocumentsService
from services.identity.service import IdentityService
from services.notify.service import NotifyService
from services.signing.dependencies import log_verifier
from services.signing.service import SigningService
from services.witness.local import LocalWitness
from tests.support import liveness_clip
from tests.support.stack import REPO, Stack, write_stack_registry


@pytest.fixture
def stack_factory(service_config, run_container, rpc_proxy, amqp_users, tmp_path):
    """``stack_factory(identity={...}, signing={...}) -> Stack``: the whole
    platform with config overrides for identity and signing (once per test)."""
    gateways, started_witnesses = [], []

    def make(identity: dict | None = None, signing: dict | None = None, witnesses: int = 2) -> Stack:
        if not liveness_clip.available():
            pytest.skip("the test stack proves faces live with short_clip.mp4, which exists only in the shared "
                        "faces folder (ESIGN_FACES_DIR)")
        gateway_port = free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        env = dict(os.environ, AMQP_URI=amqp_users["gateway"], ESIGN_DATA_DIR=str(tmp_path / "gateway"),
                   ESIGN_GATEWAY_PORT=str(gateway_port), GATEWAY_METRICS_PORT=str(free_port()),
                   ESIGN_PUBLIC_URL=gateway_url)
        gateways.append(subprocess.Popen([sys.executable, "-m", "services.cli", "run", "gateway"], cwd=REPO, env=env,
                                         stdout=open(tmp_path / "gateway.log", "wb"), stderr=subprocess.STDOUT))
        outbox = tmp_path / "sms.jsonl"
        registry = write_stack_registry(tmp_path / "registry")
        identity_config = service_config("identity", PUBLIC_URL=gateway_url,
                                         PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)})
        identity_config.update(identity or {})
        identity_container = run_container(IdentityService, identity_config)
        # the test runs days of a person's messages in seconds: a per-minute budget sized for it
        notify_config = service_config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)},
                                       RATE_LIMITS={"PER_PHONE_PER_MINUTE": 20, "PER_PHONE_PER_HOUR": 40,
                                                    "PER_PHONE_PER_DAY": 60, "CODE_PER_PHONE_PER_MINUTE": 20,
                                                    "CODE_PER_PHONE_PER_HOUR": 40, "CODE_PER_PHONE_PER_DAY": 60})
        run_container(NotifyService, notify_config)
        documents_config = service_config("documents", PUBLIC_URL=gateway_url)
        run_container(DocumentsService, documents_config)
        signing_config = service_config("signing", PUBLIC_URL=gateway_url, TSA={"URL": f"{gateway_url}/tsa"})
        signing_config["S3"]["OBJECT_LOCK_DAYS"] = 1  # signed files unchangeable (SeaweedFS supports Object Lock)
        # Object Lock is set when a bucket is made: a bucket of its own, whichever test made the plain one first
        signing_config["S3"]["BUCKET"] += "-locked"
        signing_config.update(signing or {})
        # independent witnesses of the evidence log, each its own process, cosigning every checkpoint
        verifier = log_verifier(signing_config)  # the key the signing service will sign with
        local = [LocalWitness.start(tmp_path / f"witness-{n}", f"witness-{n}.test", verifier.name,
                                    verifier.to_key_string(), log_path=tmp_path / f"witness-{n}.log")
                 for n in range(1, witnesses + 1)]
        started_witnesses.extend(local)
        signing_config.setdefault("WITNESSES", {"LIST": [w.config_entry() for w in local], "THRESHOLD": len(local)})
        signing_container = run_container(SigningService, signing_config)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(gateway_url + "/pki/root.pem", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                eventlet.sleep(0.3)
        made = Stack(rpc_proxy, outbox, gateway_url, tmp_path, signing_container.config)
        made.identity_container = identity_container
        made.identity_config, made.registry_file = identity_config, registry
        made.documents_config, made.notify_config = documents_config, notify_config
        made.witnesses = local
        made.restart_identity = lambda **overrides: run_container(IdentityService, dict(identity_config, **overrides))
        return made

    yield make
    for witness in started_witnesses:
        witness.stop()
    for gateway in gateways:
        gateway.terminate()
        gateway.wait(20)


#: a person in a browser logs in moments after registering: identity's gap between two codes
#: to one phone (OTP.MIN_RESEND_SECONDS, 60 s deployed) shortened, so the page's "too soon"
#: answer is still met (tests/support/browser.py: log_in waits it out) without a minute's wait
BROWSER_IDENTITY = {"OTP": {"MIN_RESEND_SECONDS": 5}}


@pytest.fixture
def stack(stack_factory, request):
    return stack_factory(identity=BROWSER_IDENTITY if request.node.get_closest_marker("browser") else None)
