"""One party's sign step end to end, against the same work done in-process.

Usage: .venv/bin/python bench/sign_rpc.py [N]     (default N = 15 flows)

End to end: identity, documents, signing and notify run in this process as
nameko containers on a throwaway RabbitMQ vhost, with SQLite files and a
SeaweedFS started for the run; the gateway runs as its own process (it serves
the time-stamp authority and the OCSP/CRL URLs). The measured step is what a
person's click costs: ``prepare_signature`` (RPC: turn check, certificate,
PDF from S3, pyHanko prepare in the worker process, willingness started),
the SMS code arriving through notify, ``confirm_willingness`` (grant), and
``sign`` (identity signs the digest, pyHanko completes with an RFC 3161 time
stamp over HTTP, the new PDF goes to S3, the flow moves on in one commit).

Floor: the same signature by direct library calls in one process
(DocumentSigner.prepare, an in-memory ECDSA key, complete with a local TSA),
as bench/pades.py measures it. Prints p50/p99 of both and the ratio.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import secrets  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.timing import report  # noqa: E402

warnings.filterwarnings("ignore")

from nameko.containers import ServiceContainer  # noqa: E402
from nameko.standalone.rpc import ClusterRpcProxy  # noqa: E402

from services.common.s3server import SeaweedPorts, SeaweedServer, free_port  # noqa: E402
from services.documents.service import DocumentsService  # noqa: E402
from services.identity.service import IdentityService  # noqa: E402
from services.notify.service import NotifyService  # noqa: E402
from services.signing.service import SigningService  # noqa: E402
from tests.support.stack import BORROWER, LENDER, Stack, handwriting_png, party, write_stack_registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]






def floor_samples(runs: int) -> list[float]:
    """The sign step by direct library calls (see bench/pades.py)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils

    from services.common.tsa import TsaSettings
    from services.signing.pades import DocumentSigner, PartySignature, SignerSettings
    from tests.support.pki import handwritten_png as stamp_png
    from tests.support.pki import start_signing_environment, two_party_pdf

    env = start_signing_environment()
    try:
        signer = DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [env.pki.root.certificate])
        person = env.pki.alice
        blank, png = two_party_pdf(), stamp_png()
        field = "Party1"
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            prepared = signer.prepare(blank, PartySignature(field, person.certificate, (env.pki.issuing.certificate,),
                                                            png, certify=True))
            signature = person.key.sign(prepared.digest_to_sign, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
            signer.complete(prepared, signature)
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        env.stop()


def main(runs: int) -> None:
    run_id = uuid.uuid4().hex[:8]
    vhost = f"esign-bench-{run_id}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                   capture_output=True)
    amqp_uri = f"pyamqp://guest:guest@127.0.0.1:5672/{vhost}"
    workdir = Path(tempfile.mkdtemp(prefix="esign-bench-"))
    s3 = SeaweedServer(workdir / "s3", "bench-" + secrets.token_hex(6), secrets.token_hex(20),
                       SeaweedPorts.free()).start()
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "gateway"], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, AMQP_URI=amqp_uri, ESIGN_DATA_DIR=str(workdir / "gateway"),
                 ESIGN_GATEWAY_PORT=str(gateway_port), GATEWAY_METRICS_PORT=str(free_port())))
    containers = []
    try:
        def config(service: str, **extra) -> dict:
            base = {"AMQP_URI": amqp_uri, "DATA_DIR": str(workdir / service), "max_workers": 10,
                    "DATABASE": {"URL": f"sqlite:///{workdir / (service + '.db')}"}, "METRICS": {"PORT": 0},
                    "OUTBOX": {"RELAY_INTERVAL": 0.2}, "SECRETS": {"GENERATE_MISSING": True},
                    "S3": {"ENDPOINT": s3.endpoint, "ACCESS_KEY": s3.access_key, "SECRET_KEY": s3.secret_key,
                           "BUCKET": f"bench-{service}-{run_id}", "VERSIONING": service == "signing"}}
            base.update(extra)
            return base

        outbox = workdir / "sms.jsonl"
        registry = write_stack_registry(workdir / "registry")
        for cls, cfg in ((IdentityService, config("identity", PUBLIC_URL=gateway_url,
                                                  PROOFING={"PROVIDER": "registry", "REGISTRY_FILE": str(registry)})),
                         (NotifyService, config("notify", SMS={"PROVIDER": "console", "OUTBOX_FILE": str(outbox)},
                                                RATE_LIMITS={"PER_PHONE_PER_MINUTE": 1000, "PER_PHONE_PER_HOUR": 5000,
                                                             "PER_PHONE_PER_DAY": 10000, "GLOBAL_LIMIT": 1000,
                                                             "CODE_PER_PHONE_PER_MINUTE": 1000,
                                                             "CODE_PER_PHONE_PER_HOUR": 5000,
                                                             "CODE_PER_PHONE_PER_DAY": 10000})),
                         (DocumentsService, config("documents")),
                         (SigningService,
                          config("signing", PUBLIC_URL=gateway_url, TSA={"URL": gateway_url + "/tsa"}))):
            container = ServiceContainer(cls, cfg)
            container.start()
            containers.append(container)
        for _ in range(120):
            try:
                urllib.request.urlopen(gateway_url + "/pki/root.pem", timeout=3)
                break
            except OSError:
                eventlet.sleep(0.5)
        with ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60) as rpc:
            stack = Stack(rpc, outbox, gateway_url, workdir, {})
            lender = stack.person(*LENDER)
            borrower = stack.person(*BORROWER)
            values = {"initiator_role": "借款方", "lender": party(LENDER), "borrower": party(BORROWER),
                      "amount": "10005", "purpose": "家庭装修", "annual_rate": "3.65", "start_date": "2026-11-01",
                      "repayment_date": "2027-02-01", "repayment_method": "一次性还本付息", "remark": ""}
            flows = [stack.start(stack.document("iou", values), [(borrower, "borrower"), (lender, "lender")])["flow_id"]
                     for _ in range(runs + 1)]
            stack.sign(flows[0], borrower, phone=BORROWER[2])  # warm-up: worker processes, TSA, caches
            samples = []
            for flow_id in flows[1:]:
                started = time.perf_counter()
                stack.sign(flow_id, borrower, phone=BORROWER[2])
                samples.append(time.perf_counter() - started)
            assert handwriting_png()
    finally:
        for container in reversed(containers):
            container.stop()
        gateway.terminate()
        gateway.wait(20)
        s3.stop()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    floor = floor_samples(runs)
    print(f"one party's sign step, {runs} runs each")
    end_to_end = report("end to end (RPC, SMS willingness, S3)", samples)
    direct = report("floor (in-process library calls)", floor)
    print(f"ratio end-to-end / floor: {end_to_end / direct:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
