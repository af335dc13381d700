"""Faults injected into a running platform, and what is left after recovery.

The platform (tests/support/faults.py) runs every service as its own process
on a RabbitMQ node and a PostgreSQL cluster of its own, so the test can
restart them, and on SeaweedFS. Lender and borrower sign IOUs by SMS code the
way a person does: prepare, read the code from the SMS outbox (matched to
the willingness check through identity's and notify's own records), confirm,
sign; after an error they look at the flow and press again.

After each fault, every flow is checked (:func:`audit`):
- it completed, or it is exactly where it was (no party half-signed: the
  current PDF carries one signature per signed party, one stored PDF and one
  evidence-log leaf per signature);
- no event lost (every service's outbox published, every notice of every
  flow sent) and none handled twice (no notice sent twice, no SMS the
  delivery log does not know, no two SMS for one code);
- no grant usable twice (every grant identity recorded as used is refused
  when presented again).
The counts go to ``ESIGN_RELIABILITY_RESULTS`` (a JSON file) when set, and
docs/reliability.md shows them for a run.
"""
from __future__ import annotations

import base64
import io
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import eventlet
import pytest
from eventlet import tpool

from tests.support.faults import (
    REFUSED,
    SERVICES,
    ReconnectingRpc,
    ServiceProcesses,
    Unreachable,
    deployed_platform,
    error_type,
    tolerant,
    wait_healthy,
    willingness_code,
)
from tests.support.stack import Stack, handwriting_png, iou_values, people
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

RESULTS: dict[str, dict] = {}
SEED = int(os.environ.get("ESIGN_FAULT_SEED", "20261206"))


@dataclass
class Cluster:
    processes: ServiceProcesses
    rpc: ReconnectingRpc
    stack: Stack
    lender: str
    borrower: str
    counts: Counter = field(default_factory=Counter)
    grants: list[tuple[str, str, str]] = field(default_factory=list)
    #: SMS outbox lines an earlier scenario already audited
    sms_seen: int = 0
    #: handovers in doubt settled so far, by how (notify.sms_messages.recovery)
    recoveries_seen: Counter = field(default_factory=Counter)

    @property
    def postgres(self):
        return self.processes.postgres

    @property
    def rabbit(self):
        return self.processes.rabbit


@pytest.fixture(scope="module")
def cluster():
    try:
        with deployed_platform("esign-faults-", keep=bool(os.environ.get("ESIGN_KEEP_FAULT_DIR"))) as platform:
            stack = Stack(platform.rpc, platform.processes.sms_outbox, platform.processes.gateway_url, platform.root,
                          signing_config={})
            lender, borrower = people(stack)
            yield Cluster(platform.processes, platform.rpc, stack, lender, borrower)
    finally:
        target = os.environ.get("ESIGN_RELIABILITY_RESULTS")
        if target and RESULTS:
            Path(target).write_text(json.dumps(RESULTS, indent=2, ensure_ascii=False), "utf-8")


# --- a person signing, as the web pages let them ------------------------------------------------------


def code_for(cluster: Cluster, willingness_id: str, timeout: float = 60) -> str:
    return willingness_code(cluster.processes, willingness_id, timeout)


def flow_of(cluster: Cluster, flow_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return cluster.rpc.signing.get_flow(flow_id=flow_id)
        except (Unreachable, *REFUSED) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"flow {flow_id} unreadable for {timeout}s: {exc}") from None
            eventlet.sleep(0.5)


def has_signed(flow: dict, person_id: str) -> bool:
    return any(p["person_id"] == person_id and p["signed_at"] for p in flow["parties"])


def sign_once(cluster: Cluster, flow_id: str, person_id: str, before_sign=None) -> dict:
    rpc = cluster.rpc
    pending = rpc.signing.prepare_signature(flow_id=flow_id, person_id=person_id, signature_image=handwriting_png(),
                                            method="sms")
    code = code_for(cluster, pending["willingness_id"])
    grant = rpc.identity.confirm_willingness(willingness_id=pending["willingness_id"], code=code)["grant"]
    cluster.grants.append((grant, person_id, pending["digest"]))
    if before_sign is not None:
        before_sign()
    return rpc.signing.sign(flow_id=flow_id, person_id=person_id, pending_id=pending["pending_id"], grant=grant)


def sign_until_done(cluster: Cluster, flow_id: str, person_id: str, attempts: int = 40) -> int:
    """Sign, and after any error look at the flow and sign again if needed; the tries it took."""
    for attempt in range(1, attempts + 1):
        if has_signed(flow_of(cluster, flow_id), person_id):
            return attempt - 1
        try:
            sign_once(cluster, flow_id, person_id)
            cluster.counts["signatures"] += 1
            return attempt
        except Unreachable as exc:  # "<service>.<method>: ..." or "no SMS code ..."
            cluster.counts["unanswered:" + str(exc).split(":")[0][:40]] += 1
        except REFUSED as exc:
            cluster.counts[f"error:{error_type(exc)}"] += 1
        eventlet.sleep(0.5)
    raise AssertionError(f"{person_id} could not sign {flow_id} in {attempts} tries: {dict(cluster.counts)}")


def new_flow(cluster: Cluster) -> str:
    for _ in range(60):
        try:
            rendered = cluster.stack.document("iou", iou_values())
            return cluster.stack.start(rendered,
                                       [(cluster.lender, "lender"), (cluster.borrower, "borrower")])["flow_id"]
        except (Unreachable, *REFUSED):
            eventlet.sleep(0.5)
    raise AssertionError("no flow could be started")


def drive(cluster: Cluster, flow_id: str) -> None:
    sign_until_done(cluster, flow_id, cluster.lender)
    sign_until_done(cluster, flow_id, cluster.borrower)


# --- what is left -----------------------------------------------------------------------------------


def signatures_in(pdf: bytes) -> int:
    from pyhanko.pdf_utils.generic import NameObject
    from pyhanko.pdf_utils.reader import PdfFileReader

    return sum(1 for signature in PdfFileReader(io.BytesIO(pdf)).embedded_signatures  # not the document time stamp
               if signature.sig_object.get("/Type") != NameObject("/DocTimeStamp"))


def settle(cluster: Cluster, timeout: float = 240) -> tuple[dict, float]:
    """Wait until every service's outbox is published, no SMS is in doubt and every flow event
    is in the evidence tree: the rows still waiting per service, and the seconds it took."""
    pg = cluster.postgres
    began = time.monotonic()

    def waiting():
        return {service: pg.query(f"SELECT count(*) FROM {service}.outbox WHERE published_at IS NULL")[0][0]
                for service in ("identity", "documents", "signing", "notify")}

    def in_doubt():  # SMS handed over before a crash: settled once their claim runs out
        return pg.query("SELECT count(*) FROM notify.sms_messages WHERE status = 'sending'")[0][0]

    def unintegrated():  # flow events sequenced, not yet in the tree (a killed integrator's lease runs 30 s)
        return pg.query("SELECT count(*) FROM signing.log_sequenced")[0][0]

    def quiet():  # nothing waiting, twice, a relay round apart (notices still being sent add rows)
        if any(waiting().values()) or in_doubt() or unintegrated():
            return False
        eventlet.sleep(2.5)
        return not any(waiting().values()) and not in_doubt() and not unintegrated()

    wait_for(tolerant(quiet), timeout=timeout, interval=0.3)
    return waiting(), round(time.monotonic() - began, 1)


def audit(cluster: Cluster, flows: list[str], scenario: str, injected: dict, completed: bool = True) -> dict:
    """Check and count what the faults left behind (see the module's docstring)."""
    pg, rpc = cluster.postgres, cluster.rpc
    unpublished, drained_after = settle(cluster)
    # the borrower asked to sign (the lender sent it and signs first: not asked); both told it is done
    expected_notices = {"sign_request": 1, "flow_completed": 2}
    states, half_signed, leaves_duplicated, notices_missing, notices_twice = Counter(), 0, 0, 0, 0
    leaf_counts = Counter()
    for flow_id in flows:
        flow = flow_of(cluster, flow_id)
        states[flow["state"]] += 1
        signed = sum(1 for p in flow["parties"] if p["signed_at"])
        pdf = base64.b64decode(rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
        stored = [o for o in flow["objects"] if o["kind"] in ("signed", "final")]
        if signatures_in(pdf) != signed or len(stored) != signed:
            half_signed += 1
        leaves = [json.loads(bytes(row[0])) for row in
                  pg.query("SELECT leaf_data FROM signing.log_leaves WHERE flow_id = %s", flow_id)]
        # a record twice: the same content but for when it was logged and where it chains
        kinds = Counter(json.dumps({k: v for k, v in leaf.items() if k not in ("timestamp", "prev_index")},
                                   sort_keys=True) for leaf in leaves)
        leaves_duplicated += sum(n - 1 for n in kinds.values() if n > 1)
        leaf_counts[len(leaves)] += 1
        if flow["state"] == "completed":
            sent = Counter(m["template"] for m in wait_for(
                lambda flow_id=flow_id: _notices(cluster, flow_id, expected_notices), timeout=60))
            notices_missing += sum(max(0, n - sent[t]) for t, n in expected_notices.items())
            notices_twice += sum(max(0, sent[t] - n) for t, n in expected_notices.items())
    # every SMS the outbox holds is one the delivery log recorded as that message, once
    every_line = cluster.processes.sms()
    lines = every_line[cluster.sms_seen:]  # this scenario's
    cluster.sms_seen = len(every_line)
    known = {row[0] for row in pg.query("SELECT vendor_message_id FROM notify.sms_messages "
                                        "WHERE vendor_message_id IS NOT NULL")}
    unknown_sms = sum(1 for m in lines if m["message_id"] not in known)
    codes_twice = sum(n - 1 for n in Counter(
        row[0] for row in pg.query("SELECT ref_id FROM notify.sms_messages WHERE ref_type = 'otp' AND status = 'sent'")
    ).values() if n > 1)
    sms_lines_twice = sum(n - 1 for n in Counter(m["message_id"] for m in lines).values() if n > 1)
    recoveries = Counter({row[0]: row[1] for row in pg.query(
        "SELECT recovery, count(*) FROM notify.sms_messages WHERE recovery IS NOT NULL GROUP BY recovery")})
    settled_in_doubt = dict(recoveries - cluster.recoveries_seen)  # this scenario's
    cluster.recoveries_seen = recoveries
    still_in_doubt = pg.query("SELECT count(*) FROM notify.sms_messages WHERE status = 'sending'")[0][0]
    grants_reused = grants_used = 0
    for grant, person_id, digest in cluster.grants:
        from hashlib import sha256

        used = pg.query("SELECT used_at FROM identity.signing_grants WHERE token_hash = %s",
                        sha256(grant.encode()).hexdigest())
        if not used or used[0][0] is None:
            continue
        grants_used += 1
        try:
            rpc.identity.sign_digest(grant=grant, person_id=person_id, digest=digest)
            grants_reused += 1
        except REFUSED:
            pass
    result = {
        "injected": injected, "flows": len(flows), "states": dict(states),
        "signatures": cluster.counts["signatures"], "retries": {k: v for k, v in cluster.counts.items()
                                                                 if k != "signatures"},
        "half_signed_documents": half_signed, "evidence_leaves_duplicated": leaves_duplicated,
        "leaves_per_flow": dict(leaf_counts), "events_unpublished": sum(unpublished.values()),
        "outbox_drained_after_seconds": drained_after,
        "notices_missing": notices_missing, "notices_sent_twice": notices_twice,
        "sms_unknown_to_delivery_log": unknown_sms, "sms_written_twice": sms_lines_twice,
        "sms_in_doubt_settled": settled_in_doubt, "sms_still_in_doubt": still_in_doubt,
        "codes_sent_twice": codes_twice, "grants_used": grants_used, "grants_usable_twice": grants_reused,
        "service_processes_that_exited": dict(cluster.processes.restarted),
    }
    cluster.processes.restarted.clear()
    RESULTS[scenario] = result
    print(f"\n{scenario}: {json.dumps(result, ensure_ascii=False)}")
    cluster.counts.clear()
    cluster.grants.clear()
    if completed:
        assert states == {"completed": len(flows)}, result
        assert len(leaf_counts) == 1, f"flows with different evidence: {result}"
    assert half_signed == 0 and leaves_duplicated == 0, result
    assert sum(unpublished.values()) == 0, result
    assert notices_missing == 0 and notices_twice == 0, result
    assert unknown_sms == 0 and sms_lines_twice == 0 and codes_twice == 0, result
    assert "resent_outcome_unknown" not in settled_in_doubt, result  # the console vendor always knows
    assert grants_reused == 0, result
    return result


def _notices(cluster: Cluster, flow_id: str, expected: dict) -> list[dict]:
    found = [m for m in cluster.processes.sms() if m["template"] in expected and flow_id in json.dumps(m["params"])]
    return found if len(found) >= sum(expected.values()) else []


def run_drivers(cluster: Cluster, flows: list[str]):
    pool = eventlet.GreenPool(len(flows))
    threads = [pool.spawn(drive, cluster, flow_id) for flow_id in flows]
    return pool, threads


def wait_for_signatures(cluster: Cluster, threads, count: int, timeout: float = 120) -> None:
    def done():
        for thread in threads:
            if thread.dead:
                thread.wait()  # a driver that failed says why
        return cluster.counts["signatures"] >= count

    assert wait_for(done, timeout=timeout), dict(cluster.counts)


def join(threads, timeout: float = 300) -> None:
    with eventlet.Timeout(timeout):
        for thread in threads:
            thread.wait()


# --- the faults ---------------------------------------------------------------------------------------


def signing_through(cluster: Cluster, flows: int, fault, scenario: str, what: str, away: str) -> None:
    """``flows`` IOU flows signed by both parties at once; ``fault()`` (returning the seconds
    the part was away) once a fifth of the signatures are done; then the audit."""
    made = [new_flow(cluster) for _ in range(flows)]
    _pool, threads = run_drivers(cluster, made)
    wait_for_signatures(cluster, threads, max(1, 2 * flows // 5))
    in_flight = 2 * flows - cluster.counts["signatures"]
    seconds = tpool.execute(fault)
    join(threads)
    audit(cluster, made, scenario, {"fault": what, "signatures_still_to_do_at_the_fault": in_flight,
                                     away: round(seconds, 1)})


def test_rabbitmq_restarted_with_twenty_flows_in_progress(cluster):
    signing_through(cluster, 20, cluster.rabbit.restart, "rabbitmq_restart",  # a clean stop, then a start
                    "RabbitMQ node stopped and started while 20 IOU flows were being signed", "broker_away_seconds")


def test_rabbitmq_killed_with_flows_in_progress(cluster):
    signing_through(cluster, 10, lambda: cluster.rabbit.restart(hard=True), "rabbitmq_sigkill",
                    "RabbitMQ node SIGKILLed and started while 10 IOU flows were being signed", "broker_away_seconds")


def test_postgresql_restarted_with_flows_in_progress(cluster):
    signing_through(cluster, 10, cluster.postgres.restart, "postgresql_restart",  # 'immediate': recovery from WAL
                    "PostgreSQL stopped in immediate mode (as a crash) and started while 10 flows were being signed",
                    "database_away_seconds")


def _unchanged(cluster: Cluster, flow_id: str, before: dict) -> None:
    after = flow_of(cluster, flow_id)
    assert (after["state"], after["current_pdf_sha256"], after["parties"], after["objects"]) == (
        before["state"], before["current_pdf_sha256"], before["parties"], before["objects"])


def test_s3_down_during_the_store_of_a_signed_pdf(cluster):
    flow_id = new_flow(cluster)
    sign_until_done(cluster, flow_id, cluster.lender)
    before = flow_of(cluster, flow_id)
    s3 = cluster.processes.s3
    try:
        with pytest.raises(REFUSED) as refused:
            sign_once(cluster, flow_id, cluster.borrower, before_sign=lambda: tpool.execute(s3.stop))
        assert error_type(refused.value) == "Unavailable", refused.value
        _unchanged(cluster, flow_id, before)
        with pytest.raises(REFUSED) as render_refused:  # documents stores its rendered PDFs there too
            cluster.stack.document("iou", iou_values())
        assert error_type(render_refused.value) == "Unavailable", render_refused.value
    finally:
        tpool.execute(s3.start)  # whatever happened, the next scenarios have their S3
    sign_until_done(cluster, flow_id, cluster.borrower)
    audit(cluster, [flow_id], "s3_down", {
        "fault": "SeaweedFS stopped after the borrower's willingness was confirmed, before the sign step "
                 "stored the signed PDF; a render attempted while it was down; then started"})


def test_tsa_down_before_the_document_time_stamp(cluster):
    """The platform TSA over HTTP (the gateway's /tsa) stamps the finished document (PAdES B-LTA) when
    no outside authority is configured. Killed before the last signature, that signature is refused
    whole (Unavailable) and the flow left as it was; once the TSA is back, it signs."""
    flow_id = new_flow(cluster)
    sign_until_done(cluster, flow_id, cluster.lender)
    before = flow_of(cluster, flow_id)
    processes = cluster.processes
    try:
        with pytest.raises(REFUSED) as refused:
            sign_once(cluster, flow_id, cluster.borrower, before_sign=lambda: processes.kill("gateway"))
        assert error_type(refused.value) == "Unavailable", refused.value
        _unchanged(cluster, flow_id, before)
    finally:
        processes.start("gateway")
    wait_healthy(cluster.processes, cluster.rpc)
    drive(cluster, flow_id)
    audit(cluster, [flow_id], "tsa_down", {
        "fault": "the time-stamp authority of the document time stamp (the gateway's /tsa) SIGKILLed after "
                 "the last signer's willingness was confirmed, before the sign step finalised the PDF; then "
                 "started"})


def killed_at(cluster: Cluster, failpoint: str, scenario: str, fault: str) -> dict:
    """A flow signed through with ``failpoint`` armed (its process SIGKILLs itself there once); audited."""
    armed = cluster.processes.arm(failpoint)
    flow_id = new_flow(cluster)
    drive(cluster, flow_id)
    assert not armed.exists(), f"nothing passed the failpoint {failpoint}"
    return audit(cluster, [flow_id], scenario, {"fault": fault})


def test_identity_killed_while_stamping_a_signature(cluster):
    """identity stamps each signature in the RPC that makes it (the platform TSA's key is identity's).
    A failpoint kills identity between making the signature and stamping it, before the grant's use
    commits: nothing of that step may be kept, and the signer gets through on a retry."""
    result = killed_at(cluster, "identity.stamping_a_signature", "identity_killed_while_stamping",
                       "identity SIGKILLed by a failpoint after signing the lender's digest, before the time "
                       "stamp and the commit of the grant's use; started again by its supervisor")
    assert result["service_processes_that_exited"] == {"identity": 1}, result


def test_notify_killed_between_the_vendor_taking_an_sms_and_its_record(cluster):
    """The narrowest window: the SMS vendor has the message, notify's record of it is not committed.
    A failpoint kills notify exactly there (the first SMS of a flow); the restarted notify must find
    the message with the vendor once the attempt's claim runs out, record it, and not send it again."""
    result = killed_at(cluster, "notify.sms_handed_over", "notify_killed_after_handover",
                       "notify SIGKILLed by a failpoint right after the SMS vendor (the console outbox) took the "
                       "flow's first SMS, before the delivery log recorded it; started again by its supervisor")
    assert result["service_processes_that_exited"] == {"notify": 1}, result
    assert result["sms_in_doubt_settled"] == {"vendor_accepted": 1}, result


@pytest.mark.parametrize("service", SERVICES)
def test_service_sigkilled_at_a_random_point_of_a_sign_step(cluster, service):
    """The sign step (signing.sign: identity signs the digest with the grant, the TSA stamps,
    S3 stores, the log appends) with ``service`` SIGKILLed at a random moment of it."""
    chooser = random.Random(f"{SEED}:{service}")
    flows = [new_flow(cluster) for _ in range(3)]
    for flow_id in flows:
        sign_until_done(cluster, flow_id, cluster.lender)
    delays, outcomes = [], Counter()
    for flow_id in flows:
        delay = round(chooser.uniform(0.0, 0.5), 3)
        delays.append(delay)

        def kill_later(delay: float = delay) -> None:
            eventlet.sleep(delay)
            cluster.processes.kill(service)
            cluster.processes.start(service)

        killer = []
        outcomes[_sign_and_tell(cluster, flow_id, cluster.borrower,
                                before_sign=lambda killer=killer: killer.append(eventlet.spawn(kill_later)))] += 1
        killer[0].wait()
        wait_healthy(cluster.processes, cluster.rpc)
        sign_until_done(cluster, flow_id, cluster.borrower)
    audit(cluster, flows, f"sigkill_{service}", {
        "fault": f"{service} SIGKILLed (with its worker processes) during the borrower's sign step, "
                 f"at a random moment after the step began (seed {SEED}), then started again",
        "kill_delays_seconds": delays, "interrupted_sign_steps": dict(outcomes)})


def _sign_and_tell(cluster: Cluster, flow_id: str, person_id: str, before_sign) -> str:
    try:
        sign_once(cluster, flow_id, person_id, before_sign=before_sign)
        cluster.counts["signatures"] += 1
        return "signed"
    except Unreachable:
        return "unanswered"
    except REFUSED as exc:
        return f"refused: {error_type(exc)}"
