"""One party's sign step over HTTP on the deployed platform, against its floor.

Usage: .venv/bin/python bench/sign_step.py [--runs 10] [--concurrency 16] [--per-signer 3]
                                           [--profile bench/results] [--keys sealed|pkcs11]

The platform runs as deployed (bench/deployment.py: every service its own
process on PostgreSQL, RabbitMQ and SeaweedFS of the run's own). The first
signer of an IOU (no B-LTA; that is the last signer's extra) does, over HTTP
with a session token:

* ``POST /flows/{id}/signature`` (prepare: turn, certificate, PDF from S3,
  pyHanko prepare in the PDF worker, willingness started) - timed;
* reads the SMS code from the outbox and ``POST /willingness/{id}/confirm``
  - not timed: it is the person's part;
* ``POST /flows/{id}/sign`` (identity signs the digest with the grant,
  pyHanko completes with an RFC 3161 time stamp, the PDF goes to S3, the flow
  moves on, its event is logged) - timed.

Server time of the step = prepare + sign, p50 of ``--runs`` sequential steps,
``--pause`` seconds apart (a person does not sign two documents within a
millisecond; without the pause, what follows one step's commit - its events
published, its PDF locked - would be counted in the next step's prepare).
The concurrent phase has no pause: its throughput counts all the work.

Floor, in this process in the same run: the same IOU PDF (fetched from the
platform) signed by direct calls - pyHanko prepare, an ECDSA sign with the
key in memory, complete with an RFC 3161 stamp from a local TSA (HTTP on
127.0.0.1), one S3 put to the same SeaweedFS, one evidence-log append to the
same PostgreSQL. Throughput: ``--concurrency`` signers at once on the
platform (each signing ``--per-signer`` flows) against the floor run in one
process per core.

``--keys pkcs11`` (the default, as config.yaml's) runs identity and signing with
every private key on the embedded SoftHSM2 token (issue #16): the person's ECDSA
signature, the TSA's time stamp and the evidence log's checkpoint are then made
by the token; ``sealed`` unseals them in memory. The floor is the same for both.

``--profile DIR`` records py-spy flame graphs (SVG) of the signing, identity
and gateway processes during the concurrent phase.

Prints p50/p99 of each, the ratios, and the processes' RSS.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import profiling  # noqa: E402
from bench.deployment import SIGNATURE_IMAGE, BenchPlatform, Client, bench_platform, iou_between  # noqa: E402
from bench.timing import percentile, report  # noqa: E402

# --- the platform over HTTP -------------------------------------------------------------------------

def new_iou(platform: BenchPlatform, lender, borrower) -> str:
    """An IOU made, rendered and started by the lender over HTTP: its flow id."""
    client = platform.http(lender)
    document = client.post("/documents", {"template_id": "iou", "values": iou_between(lender, borrower),
                                          "initiator_role": "出借方"})
    client.post(f"/documents/{document['document_id']}/render")
    flow = client.post("/flows", {"document_id": document["document_id"],
                                  "parties": [{"role": "lender"}, {"role": "borrower"}]})
    return flow["flow_id"]


def sign_step(platform: BenchPlatform, client: Client, flow_id: str) -> tuple[float, float]:
    """The lender's sign step: (prepare seconds, sign seconds)."""
    started = time.perf_counter()
    pending = client.post(f"/flows/{flow_id}/signature", {"signature_image": SIGNATURE_IMAGE, "method": "sms"})
    prepared = time.perf_counter() - started
    code = platform.code(pending["willingness_id"])
    grant = client.post(f"/willingness/{pending['willingness_id']}/confirm", {"code": code})["grant"]
    started = time.perf_counter()
    flow = client.post(f"/flows/{flow_id}/sign", {"pending_id": pending["pending_id"], "grant": grant})
    signed = time.perf_counter() - started
    assert any(p["signed_at"] for p in flow["parties"]), flow
    return prepared, signed


def _family(pid: int) -> list[int]:
    """A process and its children (a service's worker processes)."""
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        children = []
    return [pid] + [int(c) for c in children]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far, with those of children that
    ended and were waited for (cutime, cstime): a PostgreSQL server process that ended within the run
    (a connection closed) still counts."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the PDF workers), in MB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


# --- the floor ----------------------------------------------------------------------------------------

class Floor:
    """The sign step's cryptography and storage by direct calls (see the module docstring)."""

    def __init__(self, pdf: bytes, field: str, s3: dict, database_url: str):
        import boto3
        from botocore.config import Config
        from sqlalchemy.orm import sessionmaker

        from services.common.database import ensure_schema, make_engine
        from services.common.tsa import TsaSettings
        from services.signing.checkpoint import NoteSigner
        from services.signing.evidence_log import EvidenceLog, SqlLogStore
        from services.signing.models import EVIDENCE_LOG_TABLES, Base
        from services.signing.pades import DocumentSigner, SignerSettings
        from tests.support.pki import start_signing_environment

        self.env = start_signing_environment()
        self.pdf, self.field = pdf, field
        self.signer = DocumentSigner(SignerSettings(tsa=TsaSettings(self.env.tsa_url)), [self.env.pki.root.certificate])
        self.s3 = boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3["access_key"],
                               aws_secret_access_key=s3["secret_key"], region_name="us-east-1",
                               config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        self.bucket = s3["bucket"]
        schema = "bench_floor"
        ensure_schema(database_url, schema)
        self.engine = make_engine(database_url, schema)
        Base.metadata.create_all(self.engine, tables=EVIDENCE_LOG_TABLES)
        self.log = EvidenceLog(SqlLogStore(sessionmaker(self.engine)), NoteSigner.generate("floor.bench/log"))

    def step(self) -> None:
        import datetime as dt
        import hashlib

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, utils

        from services.signing.log_records import utc_timestamp
        from services.signing.pades import PartySignature

        person = self.env.pki.alice
        prepared = self.signer.prepare(self.pdf, PartySignature(
            self.field, person.certificate, (self.env.pki.issuing.certificate,), SIGNATURE_PNG, certify=True))
        signature = person.key.sign(prepared.digest_to_sign, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        signed = self.signer.complete(prepared, signature)
        digest = hashlib.sha256(signed).hexdigest()
        self.s3.put_object(Bucket=self.bucket, Key=f"floor/{uuid.uuid4().hex}.pdf", Body=signed)
        self.log.append({"flow_id": uuid.uuid4().hex, "event_type": "party_signed",
                         "timestamp": utc_timestamp(dt.datetime.now(dt.timezone.utc)), "document_hash": digest})

    def close(self) -> None:
        self.env.stop()
        self.engine.dispose()


SIGNATURE_PNG = None  # the decoded image, set in main


def floor_worker(spec_path: str) -> None:
    """One core's floor throughput (a process of its own): prints {"steps", "seconds"}."""
    import base64
    import json

    global SIGNATURE_PNG
    spec = json.loads(Path(spec_path).read_text())
    SIGNATURE_PNG = base64.b64decode(SIGNATURE_IMAGE)
    floor = Floor(base64.b64decode(spec["pdf"]), spec["field"], spec["s3"], spec["url"])
    try:
        floor.step()  # warm-up
        started = time.perf_counter()
        for _ in range(spec["steps"]):
            floor.step()
        print(json.dumps({"steps": spec["steps"], "seconds": time.perf_counter() - started}))
    finally:
        floor.close()


def floor_throughput(pdf: bytes, field: str, s3: dict, url: str, steps: int, processes: int) -> float:
    """Steps per second of ``processes`` floor processes at once (one per core)."""
    import base64
    import json
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"pdf": base64.b64encode(pdf).decode(), "field": field, "s3": s3, "url": url, "steps": steps}, f)
    try:
        workers = [subprocess.Popen([sys.executable, "-W", "ignore", __file__, "--floor-worker", f.name],
                                    stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        results = [json.loads(w.communicate(timeout=900)[0].strip().splitlines()[-1]) for w in workers]
    finally:
        os.unlink(f.name)
    return sum(r["steps"] for r in results) / max(r["seconds"] for r in results)


# --- the run ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="sequential sign steps (p50 of these)")
    parser.add_argument("--concurrency", type=int, default=16, help="signers at once for throughput")
    parser.add_argument("--per-signer", type=int, default=3, help="flows each concurrent signer signs")
    parser.add_argument("--pause", type=float, default=0.5,
                        help="seconds between sequential steps (work that follows a commit runs beside the answer)")
    parser.add_argument("--profile", type=Path, help="write py-spy flame graphs of the concurrent phase here")
    parser.add_argument("--keep", action="store_true", help="keep the platform's folder and logs")
    parser.add_argument("--keys", choices=["sealed", "pkcs11"], default=os.environ.get("ESIGN_KEYS_BACKEND", "pkcs11"),
                        help="where identity's and signing's private keys are (KEYS.BACKEND; pkcs11: the embedded"
                             " SoftHSM2 token under the platform's data folder)")
    parser.add_argument("--floor-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_worker:
        floor_worker(args.floor_worker)
        return
    os.environ["ESIGN_KEYS_BACKEND"] = args.keys  # the service processes inherit it (bench/deployment.py)
    import base64
    global SIGNATURE_PNG
    SIGNATURE_PNG = base64.b64decode(SIGNATURE_IMAGE)

    pairs = max(1, args.concurrency)
    print(f"starting the platform and registering {2 * pairs} people ...", flush=True)
    began = time.perf_counter()
    with bench_platform(people=2 * pairs, keep=args.keep) as platform:
        print(f"  ready in {time.perf_counter() - began:.0f} s", flush=True)
        people = platform.people
        lenders, borrowers = people[0::2], people[1::2]
        pids = platform.pids()
        rss_idle = {name: rss_mb(pid) for name, pid in pids.items()}

        # sequential steps: the first lender signs fresh IOUs one after another
        lender, borrower = lenders[0], borrowers[0]
        client = platform.http(lender)
        flows = [new_iou(platform, lender, borrower) for _ in range(args.runs + 2)]
        for flow_id in flows[:2]:  # warm-up: PDF workers, TSA connection, caches
            sign_step(platform, client, flow_id)
        prepare_times, sign_times, steps = [], [], []
        for flow_id in flows[2:]:
            eventlet.sleep(args.pause)  # a person between two documents: what follows a commit settles
            prepared, signed = sign_step(platform, client, flow_id)
            prepare_times.append(prepared)
            sign_times.append(signed)
            steps.append(prepared + signed)

        # concurrent signers, each on flows of its own
        work = {i: [new_iou(platform, lenders[i], borrowers[i]) for _ in range(args.per_signer)]
                for i in range(pairs)}
        profilers = profiling.start(args.profile, "sign_step", pids) if args.profile else []
        concurrent_steps: list[float] = []
        errors: list[str] = []

        def signer(i: int) -> None:
            own = platform.http(lenders[i])
            for flow_id in work[i]:
                try:
                    prepared, signed = sign_step(platform, own, flow_id)
                    concurrent_steps.append(prepared + signed)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    errors.append(str(exc)[:200])

        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        pool = eventlet.GreenPool(pairs)
        for i in range(pairs):
            pool.spawn(signer, i)
        pool.waitall()
        wall = time.perf_counter() - started
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        rss_load = {name: rss_mb(pid) for name, pid in pids.items()}
        profiling.stop(profilers)
        platform_rate = len(concurrent_steps) / wall

        # the floor, in the same run, against the same S3 and PostgreSQL
        pdf_client = platform.http(lender)
        flow = pdf_client.get(f"/flows/{flows[0]}")
        document_pdf = platform.deployed.rpc.documents.get_pdf(document_id=flow["document_id"])
        pdf = base64.b64decode(document_pdf["pdf"])
        field = next(p["signature_field"] for p in flow["parties"] if p["person_id"] == lender.person_id)
        s3 = platform.deployed.processes.s3
        s3_args = {"endpoint": s3.endpoint, "access_key": s3.access_key, "secret_key": s3.secret_key,
                   "bucket": "esign-signing-locked"}
        url = platform.deployed.processes.postgres.url
        floor = Floor(pdf, field, s3_args, url)
        floor.step()
        floor_times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            floor.step()
            floor_times.append(time.perf_counter() - t0)
        floor.close()
        cores = os.cpu_count() or 1
        per_core = max(2, (len(concurrent_steps) + cores - 1) // cores)
        floor_rate = floor_throughput(pdf, field, s3_args, url, per_core, cores)

    print(f"\nsign step of the first signer of an IOU, over HTTP, {args.runs} runs ({cores} cores), keys {args.keys}")
    report("prepare  POST /flows/{id}/signature", prepare_times, width=40)
    report("sign     POST /flows/{id}/sign", sign_times, width=40)
    step = report("server time (prepare + sign)", steps, width=40)
    floor_p50 = report("floor (pyHanko+ECDSA+TSA+S3+log, direct)", floor_times, width=40)
    print(f"ratio server time / floor: {step / floor_p50:.2f}   (target <= 1.5)")
    print(f"\n{pairs} concurrent signers x {args.per_signer} flows: {len(concurrent_steps)} steps in {wall:.1f} s, "
          f"{len(errors)} errors")
    if concurrent_steps:
        print(f"  step p50 {statistics.median(concurrent_steps) * 1000:.0f} ms  "
              f"p99 {percentile(concurrent_steps, 0.99) * 1000:.0f} ms")
    print(f"  platform {platform_rate:.2f} signatures/s; floor {floor_rate:.2f}/s on {cores} processes; "
          f"ratio {platform_rate / floor_rate:.2f}   (target >= 0.70)")
    for message in errors[:5]:
        print("  error:", message)
    print("\nper process (with its workers)   RSS idle MB  under load MB  CPU ms per signature  CPU % of one core")
    for name in pids:
        per_signature = cpu_used[name] / max(1, len(concurrent_steps)) * 1000
        print(f"  {name:<30} {rss_idle[name]:9.0f} {rss_load[name]:13.0f} {per_signature:19.0f} "
              f"{cpu_used[name] / wall * 100:17.0f}")
    if args.profile:
        print(f"\nflame graphs in {args.profile}/sign_step_*.svg")


if __name__ == "__main__":
    main()
