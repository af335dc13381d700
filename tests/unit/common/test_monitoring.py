"""``esign up --monitoring``'s Prometheus: settings from the environment, the generated
config (checked by the real promtool and run by the real Prometheus), and what it says
when RabbitMQ's Prometheus endpoint is off and cannot be turned on. The whole platform
with it runs in tests/e2e/test_monitoring.py."""
from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request

import pytest
import yaml

from services.common.errors import InvalidInput
from services.common.monitoring import (
    ALERT_RULES,
    MonitoringError,
    MonitoringSettings,
    PrometheusServer,
    platform_targets,
    prometheus_config,
    rabbitmq_endpoint_problem,
)
from services.common.s3server import free_port

PORTS = {"identity": 9101, "documents": "9102", "signing": 9103, "notify": 9104, "gateway": 9105}


def test_settings_default_to_compose_like_values_and_refuse_bad_ones():
    assert MonitoringSettings.from_env({}) == MonitoringSettings(9090, "15s", "7d", 15692, "prometheus")
    chosen = MonitoringSettings.from_env({"ESIGN_PROMETHEUS_PORT": "0", "ESIGN_PROMETHEUS_SCRAPE_INTERVAL": "1s"})
    assert chosen.port > 1024 and chosen.scrape_interval == "1s"
    for name, value in (("ESIGN_PROMETHEUS_PORT", "90x"), ("ESIGN_PROMETHEUS_SCRAPE_INTERVAL", "1 second"),
                        ("ESIGN_PROMETHEUS_RETENTION", "0d"), ("ESIGN_RABBITMQ_PROMETHEUS_PORT", "70000")):
        with pytest.raises(InvalidInput) as refused:
            MonitoringSettings.from_env({name: value})
        assert refused.value.args[0] == name


def test_the_config_scrapes_every_process_labelled_by_component_with_the_alert_rules():
    targets = platform_targets(PORTS, ["http://127.0.0.1:8201", "http://127.0.0.1:8202"], ("127.0.0.1", 15692, "/"))
    config = prometheus_config(targets, 9090, "1s")
    assert config["global"]["scrape_interval"] == config["global"]["evaluation_interval"] == "1s"
    assert config["rule_files"] == [str(ALERT_RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "esign", "witness", "rabbitmq"}
    esign = {static["targets"][0]: static["labels"] for static in jobs["esign"]["static_configs"]}
    assert esign == {f"127.0.0.1:{port}": {"component": service} for service, port in PORTS.items()}
    assert [s["targets"] for s in jobs["witness"]["static_configs"]] == [["127.0.0.1:8201"], ["127.0.0.1:8202"]]
    assert jobs["witness"]["metrics_path"] == "/metrics"
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/detailed"
    assert jobs["rabbitmq"]["params"] == {"vhost": ["/"], "family": ["queue_coarse_metrics", "queue_consumer_count"]}


def test_promtool_accepts_the_generated_config(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install the Debian package 'prometheus' (./dev bootstrap does)")
    targets = platform_targets(PORTS, ["http://127.0.0.1:8201"], ("127.0.0.1", 15692, "esign-test"))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(prometheus_config(targets, 9090, "1s")), encoding="utf-8")
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(ALERT_RULES) in result.stdout  # the rules were found and checked


def test_prometheus_starts_on_its_port_serves_queries_and_stops(tmp_path):
    settings = MonitoringSettings(port=free_port(), scrape_interval="1s")
    server = PrometheusServer(tmp_path / "prometheus", settings)
    server.start(prometheus_config([], settings.port, "1s"))
    try:
        with urllib.request.urlopen(server.url + "/api/v1/status/config", timeout=10) as answer:
            assert str(ALERT_RULES) in answer.read().decode()  # started with the generated config
        assert (tmp_path / "prometheus" / "data").is_dir()  # its TSDB under the data dir
    finally:
        server.stop()
    assert server.process.returncode == 0


def test_prometheus_missing_or_its_port_taken_is_said_plainly(tmp_path):
    missing = PrometheusServer(tmp_path, MonitoringSettings(port=free_port(), binary="no-such-prometheus"))
    with pytest.raises(MonitoringError, match="install the Debian package 'prometheus'"):
        missing.start(prometheus_config([], missing.settings.port, "1s"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = PrometheusServer(tmp_path, MonitoringSettings(port=taken.getsockname()[1]))
        with pytest.raises(MonitoringError, match="already in use: set ESIGN_PROMETHEUS_PORT"):
            busy.start(prometheus_config([], busy.settings.port, "1s"))


def test_rabbitmqs_endpoint_answering_needs_nothing():
    with socket.socket() as endpoint:
        endpoint.bind(("127.0.0.1", 0))
        endpoint.listen(1)
        assert rabbitmq_endpoint_problem("127.0.0.1", endpoint.getsockname()[1], run=_never) is None


def test_a_remote_broker_without_the_plugin_is_named_with_what_to_do():
    problem = rabbitmq_endpoint_problem("192.0.2.1", 15692, run=_never)  # TEST-NET: nothing answers
    assert "not reachable at 192.0.2.1:15692 (the broker is not on this machine)" in problem
    assert "rabbitmq-plugins enable rabbitmq_prometheus" in problem


def test_a_local_broker_gets_the_plugin_enabled_and_a_refusal_is_reported(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    asked = []

    def refuses(command, **kwargs):
        asked.append(command)
        return subprocess.CompletedProcess(command, 69, "", "Error: unable to perform an operation on node\n")

    problem = rabbitmq_endpoint_problem("127.0.0.1", free_port(), run=refuses)
    assert asked == [["/usr/sbin/rabbitmq-plugins", "enable", "rabbitmq_prometheus"]]
    assert "could not enable RabbitMQ's rabbitmq_prometheus plugin (rabbitmq-plugins exited 69" in problem
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "rabbitmq-plugins is not installed here" in rabbitmq_endpoint_problem("127.0.0.1", free_port(),
                                                                                 run=_never)


def _never(*args, **kwargs):
    raise AssertionError("rabbitmq-plugins must not run here")
