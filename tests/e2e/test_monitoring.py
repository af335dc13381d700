"""Dashboards that show real data: ``esign up --monitoring`` runs the platform and a real
Prometheus (the Debian package) scraping every process of it every second, with the
alert rules of deploy/prometheus/alerts.yml loaded. Two people register and two IOU flows
run (one signed by both, one declined); then every expression of every panel of the
Grafana dashboard, every template variable and every alert rule (comparisons made
``bool``, tests/support/promql.py) is evaluated through Prometheus's HTTP API, and any
that errors, answers no series, answers only NaN or names a metric without series fails
the test. A deliberately broken copy of one panel shows that such a query is caught.

One platform start for the module (about a minute of the CI's two cores)."""
from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from services.common.masking import mask_id_number, mask_name, mask_phone
from services.common.s3server import free_port
from tests.support import liveness_clip
from tests.support.promql import (
    PrometheusApi,
    Query,
    alert_queries,
    dashboard_queries,
    problems,
    with_variables,
)
from tests.support.stack import BORROWER, LENDER, Http, Stack, iou_values, write_stack_registry
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "esign.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
SERVICES = ("identity", "documents", "signing", "notify", "gateway")
#: what the test's Prometheus evaluates every panel with: a window over the whole run (Grafana's
#: $__rate_interval would be 4 scrape intervals), every service, the run's own vhost
RATE_WINDOW = "5m"


class MonitoredPlatform:
    def __init__(self, prometheus: PrometheusApi, vhost: str, output: str):
        self.prometheus = prometheus
        self.vhost = vhost
        self.output = output

    def variables(self) -> dict[str, str]:
        return {"__rate_interval": RATE_WINDOW, "__interval": "15s", "__range": RATE_WINDOW,
                "service": ".*", "vhost": self.vhost}


@pytest.fixture(scope="module")
def platform(amqp_uri, tmp_path_factory):
    """``esign up --monitoring`` on the run's vhost, two flows run through it, and
    Prometheus caught up with them; every process stopped after the module."""
    if not liveness_clip.available():
        pytest.skip("people are proved live with short_clip.mp4, only in the shared faces folder (ESIGN_FACES_DIR)")
    from nameko.standalone.rpc import ClusterRpcProxy

    tmp = tmp_path_factory.mktemp("monitoring")
    data, user_prefix = tmp / "esign-data", f"esign-mon-{uuid.uuid4().hex[:8]}-"
    vhost = amqp_uri.rsplit("/", 1)[1]
    gateway_port, prometheus_port = free_port(), free_port()
    env = dict(os.environ, ESIGN_DATA_DIR=str(data), AMQP_URI=amqp_uri, ESIGN_GATEWAY_PORT=str(gateway_port),
               ESIGN_S3_PORT=str(free_port()), ESIGN_PUBLIC_URL=f"http://127.0.0.1:{gateway_port}",
               ESIGN_TSA_URL=f"http://127.0.0.1:{gateway_port}/tsa", ESIGN_WITNESS_PORT="0",
               ESIGN_BROKER_USER_PREFIX=user_prefix, ESIGN_PROMETHEUS_PORT=str(prometheus_port),
               ESIGN_PROMETHEUS_SCRAPE_INTERVAL="1s", ESIGN_METRICS_REFRESH_SECONDS="1",
               IDENTITY_REGISTRY_FILE=str(write_stack_registry(tmp / "registry")),
               ESIGN_SMS_OUTBOX=str(tmp / "sms.jsonl"), NOTIFY_RATE_PER_PHONE_PER_MINUTE="20",
               NOTIFY_RATE_CODES_PER_PHONE_PER_MINUTE="20",
               **{f"{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICES})
    for name in ("ESIGN_S3_ENDPOINT", "ESIGN_S3_ACCESS_KEY", "ESIGN_S3_SECRET_KEY", "ESIGN_WITNESSES"):
        env.pop(name, None)
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--monitoring", "--timeout", "150"],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    proxy = None
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(output)
        assert "esign is up." in text, text + _log_tails(data)
        assert f"prometheus: http://127.0.0.1:{prometheus_port}" in text, text
        assert "monitoring:" not in text, text  # no part left unscraped (RabbitMQ's endpoint reachable)
        api = PrometheusApi(f"http://127.0.0.1:{prometheus_port}")
        # Prometheus has seen every process before anything happens (it waits a few seconds to start scraping)
        assert wait_for(lambda: _every_target_scraped_after(api, 0), timeout=30, interval=0.5), api.get(
            "/api/v1/targets")

        context = ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=60)
        proxy = context.start()
        stack = Stack(proxy, tmp / "sms.jsonl", f"http://127.0.0.1:{gateway_port}", tmp, {})
        # registered over HTTP as people do: the gateway's routes see real traffic
        lender, borrower = (Http(stack).register(*person).person_id for person in (LENDER, BORROWER))
        signed = stack.start(stack.document("iou", iou_values()), [(lender, "lender"), (borrower, "borrower")])
        stack.sign(signed["flow_id"], lender, phone=LENDER[2])
        stack.sign(signed["flow_id"], borrower, phone=BORROWER[2])
        declined = stack.start(stack.document("iou", iou_values(amount="500")),
                               [(lender, "lender"), (borrower, "borrower")])
        proxy.signing.decline(flow_id=declined["flow_id"], person_id=lender, reason="金额不对")
        _wait_until_scraped_after(api, stack, time.time())
        yield MonitoredPlatform(api, vhost, text)
    finally:
        if proxy is not None:
            context.stop()
        up.send_signal(signal.SIGINT)
        try:
            rest, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            rest, _ = up.communicate(timeout=10)
        output.append(rest or "")
        deleting = [subprocess.Popen(["rabbitmqctl", "-q", "delete_user", user_prefix + name],  # at once: seconds each
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name in SERVICES]
        for process in deleting:
            process.wait(60)
    assert up.returncode == 0, "".join(output)


def _wait_until_scraped_after(api: PrometheusApi, stack: Stack, moment: float) -> None:
    """Prometheus holds the flows' effects: the flows counted by state, the evidence log's
    checkpoint cosigned by both witnesses, the last notices sent, and every target scraped
    after that."""
    def caught_up() -> bool:
        return (api.value('max(esign_flows{state="completed"})') == 1
                and api.value('max(esign_flows{state="declined"})') == 1
                and (api.value("max(esign_log_checkpoint_size)") or 0) > 0
                and api.value("count(max(esign_log_checkpoint_size) - on() group_right "
                              "max by (witness) (esign_log_witness_cosigned_size) == 0)") == 2)

    assert wait_for(caught_up, timeout=60, interval=0.5), "Prometheus never showed the flows' effects"
    assert wait_for(lambda: [m for m in stack.sms() if m["template"] == "flow_declined"], timeout=30)
    moment = max(moment, time.time())

    assert wait_for(lambda: _every_target_scraped_after(api, moment + 1), timeout=30, interval=0.5), api.get(
        "/api/v1/targets")


def _every_target_scraped_after(api: PrometheusApi, moment: float) -> bool:
    targets = api.get("/api/v1/targets")["data"]["activeTargets"]
    return bool(targets) and all(t["health"] == "up" and _seconds(t["lastScrape"]) > moment for t in targets)


def _seconds(rfc3339: str) -> float:
    """Prometheus's times (RFC 3339 with nanoseconds, in its local zone) as POSIX seconds."""
    from datetime import datetime

    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", rfc3339)).timestamp()


def _log_tails(data: Path) -> str:
    return "".join(f"\n--- {path.name}\n" + path.read_text(errors="replace")[-2000:]
                   for path in sorted((data / "logs").glob("*.log")))


def test_prometheus_scrapes_every_process_with_the_alert_rules_loaded(platform):
    targets = platform.prometheus.get("/api/v1/targets")["data"]["activeTargets"]
    components = sorted(t["labels"].get("component", t["labels"]["job"]) for t in targets)
    assert components == sorted([*SERVICES, "prometheus", "rabbitmq", "witness", "witness"])
    assert all(t["health"] == "up" for t in targets), [(t["scrapeUrl"], t["lastError"]) for t in targets]
    (rabbitmq,) = [t for t in targets if t["labels"]["job"] == "rabbitmq"]
    assert f"vhost={platform.vhost}" in rabbitmq["scrapeUrl"]  # only the platform's own queues
    groups = platform.prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    expected = {query.where.split(" ", 1)[1] for query in alert_queries(ALERTS)}
    assert set(loaded) == expected and set(loaded.values()) == {"ok"}, loaded


def test_the_flows_show_in_prometheus_as_they_happened(platform):
    """Values, not only series: what the two flows did, as Prometheus scraped it."""
    value = platform.prometheus.value
    assert value('max(esign_flows{state="completed"})') == 1
    assert value('max(esign_flows{state="declined"})') == 1
    assert value('max(esign_flows{state="waiting"})') == 0
    assert value('sum(esign_signatures_total{method="sms"})') == 2
    assert value('sum(esign_flow_events_total{event="flow_declined"})') == 1
    assert value('sum(esign_certificates_issued_total{level="authority_face_liveness"})') == 2
    assert value('sum(esign_sign_step_seconds_count{stage="prepare"})') == 2
    assert value('sum(esign_sign_step_seconds_count{stage="sign_final"})') == 1
    assert value('sum(esign_worker_pool_job_seconds_count{pool="identity.faces"})') >= 2
    assert value('max(esign_service_workers_max{service="signing"})') == 10
    # every job and step the flows made counts in rate(), the first ones too (their series exist from the start)
    for pool in ("identity.faces", "documents.render", "signing.pdf"):
        p95 = value(f'histogram_quantile(0.95, sum by (le) (rate(esign_worker_pool_job_seconds_bucket{{pool="{pool}"}}'
                    f'[{RATE_WINDOW}])))')
        assert 0 < p95 < 60, (pool, p95)
    for stage in ("prepare", "sign", "sign_final"):
        p95 = value(f'histogram_quantile(0.95, sum by (le) (rate(esign_sign_step_seconds_bucket{{stage="{stage}"}}'
                    f'[{RATE_WINDOW}])))')
        assert 0 < p95 < 60, (stage, p95)
    # notify consumes each event queue it handles, one consumer each (its one process)
    consumers = platform.prometheus.query(
        f'rabbitmq_detailed_queue_consumers{{vhost="{platform.vhost}", queue=~"evt-signing-.+--notify\\\\..+"}}')
    assert len(consumers) >= 3 and all(float(sample["value"][1]) == 1 for sample in consumers), consumers
    # nothing personal in any label of any series: the people's names, ID numbers and phones, masked or not
    labels = {value_ for sample in platform.prometheus.query('{__name__=~"esign_.+|rabbitmq_detailed_.+"}')
              for value_ in sample["metric"].values()}
    personal = {item for name, id_number, phone in (LENDER, BORROWER)
                for item in (name, id_number, phone, mask_name(name), mask_id_number(id_number), mask_phone(phone))}
    assert not [value_ for value_ in labels if any(item in value_ for item in personal)]


def test_every_panel_variable_and_alert_query_returns_series(platform):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [with_variables(query, platform.variables())
               for query in dashboard_queries(dashboard) + alert_queries(ALERTS)]
    assert len(queries) > 50
    found = problems(platform.prometheus, queries)
    assert not found, "queries that would show nothing:\n" + "\n".join(found)
    vhosts = platform.prometheus.query(
        next(q.expr for q in queries if q.where == "variable $vhost"))
    assert platform.vhost in {sample["metric"]["vhost"] for sample in vhosts}


def test_a_panel_naming_a_metric_nobody_exports_is_reported(platform):
    """The check goes red: a copy of the dashboard whose 'Flows by state' panel names
    esign_flow_states (no such metric) is reported, and only that panel."""
    broken = copy.deepcopy(json.loads(DASHBOARD.read_text(encoding="utf-8")))
    (panel,) = [p for p in broken["panels"] if p["title"] == "Flows by state"]
    panel["targets"][0]["expr"] = panel["targets"][0]["expr"].replace("esign_flows", "esign_flow_states")
    queries = [with_variables(query, platform.variables()) for query in dashboard_queries(broken)]
    found = problems(platform.prometheus, queries)
    assert found == ["panel 'Flows by state' A: no series for max by (state) (esign_flow_states)",
                     "panel 'Flows by state' A: metric esign_flow_states has no series"], found
    # and a query Prometheus cannot parse is an error, not an empty answer
    (error,) = problems(platform.prometheus, [Query("panel 'typo'", "sum by (state (esign_flows)")])
    assert re.match(r"panel 'typo': error bad_data: ", error), error
