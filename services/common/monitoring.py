"""Prometheus for the platform on one machine (``esign up --monitoring``).

Prometheus (the Debian package's ``/usr/bin/prometheus``, or ``ESIGN_PROMETHEUS_BIN``)
runs as a child of ``esign up``, with a config generated under
``<data>/prometheus/prometheus.yml`` and its TSDB in ``<data>/prometheus/data``. It
scrapes every process the command started, with the labels compose's
``deploy/prometheus/prometheus.yml`` gives them (the alert rules and the dashboard
select on ``component``, never on the job name):

* ``job="esign"``: each service's metrics port (identity, documents, signing, notify
  and the gateway's metrics port), ``component=<service>``;
* ``job="witness"``: each local witness of the evidence log (``/metrics`` on its own
  port), ``component="witness"``;
* ``job="rabbitmq"``: RabbitMQ's own endpoint (plugin ``rabbitmq_prometheus``, port
  15692): depth and consumers of each queue of the platform's vhost only
  (``/metrics/detailed?vhost=…&family=queue_coarse_metrics&family=queue_consumer_count``),
  ``component="rabbitmq"``. Where the plugin is off and the broker is on this machine,
  it is enabled (``rabbitmq-plugins enable rabbitmq_prometheus``); where that cannot be
  done, :func:`rabbitmq_endpoint_problem` says so and the queue panels stay empty
  (``up{component="rabbitmq"}`` is 0);
* ``job="prometheus"``: itself.

The rules are ``deploy/prometheus/alerts.yml``, loaded as they are. Settings come from
the environment: ``ESIGN_PROMETHEUS_PORT`` (9090; 0 takes a free port),
``ESIGN_PROMETHEUS_SCRAPE_INTERVAL`` (15s, also the rule evaluation interval; tests use
1s), ``ESIGN_PROMETHEUS_RETENTION`` (7d), ``ESIGN_RABBITMQ_PROMETHEUS_PORT`` (15692).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import yaml

from services.common.child_process import die_with_parent
from services.common.config import REPO_ROOT
from services.common.errors import EsignError, InvalidInput
from services.common.s3server import free_port, port_open

ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RABBITMQ_PLUGIN = "rabbitmq_prometheus"
#: the per-queue metric families of RabbitMQ's detailed endpoint the dashboard reads
RABBITMQ_FAMILIES = ("queue_coarse_metrics", "queue_consumer_count")
DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d)$")


class MonitoringError(EsignError):
    """Prometheus could not be started: what is missing, and what to do (``esign up`` stops)."""

    code = "monitoring"


@dataclass(frozen=True)
class MonitoringSettings:
    port: int = 9090
    scrape_interval: str = "15s"
    retention: str = "7d"
    rabbitmq_port: int = 15692
    binary: str = "prometheus"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "MonitoringSettings":
        settings = cls(
            port=_port(env.get("ESIGN_PROMETHEUS_PORT", "9090"), "ESIGN_PROMETHEUS_PORT"),
            scrape_interval=_duration(env.get("ESIGN_PROMETHEUS_SCRAPE_INTERVAL", "15s"),
                                      "ESIGN_PROMETHEUS_SCRAPE_INTERVAL"),
            retention=_duration(env.get("ESIGN_PROMETHEUS_RETENTION", "7d"), "ESIGN_PROMETHEUS_RETENTION"),
            rabbitmq_port=_port(env.get("ESIGN_RABBITMQ_PROMETHEUS_PORT", "15692"), "ESIGN_RABBITMQ_PROMETHEUS_PORT"),
            binary=env.get("ESIGN_PROMETHEUS_BIN") or "prometheus",
        )
        return replace(settings, port=free_port()) if settings.port == 0 else settings


def _port(value: str, name: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise InvalidInput(name, "port", f"expected a port number (0 for any free one), found {value!r}")
    return int(value)


def _duration(value: str, name: str) -> str:
    if not DURATION.match(value):
        raise InvalidInput(name, "duration", f"expected a Prometheus duration such as 15s or 7d, found {value!r}")
    return value


@dataclass(frozen=True)
class Target:
    """One scrape target: ``host:port`` with the labels Prometheus gives its series."""

    job: str
    address: str
    component: str
    path: str = "/metrics"
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)


def platform_targets(metrics_ports: Mapping[str, int | str | None | Sequence[int]], witness_urls: Iterable[str],
                     rabbitmq: tuple[str, int, str] | None) -> list[Target]:
    """The targets of the processes ``esign up`` runs: ``metrics_ports`` by service (a port, or
    one per replica),
    the witnesses' base URLs, and RabbitMQ's (host, Prometheus port, vhost)."""
    targets = [Target("esign", f"127.0.0.1:{int(port)}", service) for service, ports in metrics_ports.items()
               for port in (ports if isinstance(ports, (list, tuple)) else [ports]) if port]
    for url in witness_urls:
        parts = urllib.parse.urlsplit(url)
        targets.append(Target("witness", parts.netloc, "witness", (parts.path.rstrip("/") or "") + "/metrics"))
    if rabbitmq is not None:
        host, port, vhost = rabbitmq
        targets.append(Target("rabbitmq", f"{host}:{port}", "rabbitmq", "/metrics/detailed",
                              {"vhost": [vhost], "family": list(RABBITMQ_FAMILIES)}))
    return targets


def prometheus_config(targets: Sequence[Target], port: int, scrape_interval: str,
                      rules: Path = ALERT_RULES) -> dict:
    """Prometheus's configuration: one scrape config per (job, path, params), the alert rules."""
    scrape_configs = [{"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]
    jobs: dict[str, dict] = {}
    for target in targets:
        params = {key: list(values) for key, values in target.params.items()}
        job = jobs.get(target.job)
        if job is None:
            job = jobs[target.job] = {"job_name": target.job, "metrics_path": target.path, "static_configs": []}
            if params:
                job["params"] = params
            scrape_configs.append(job)
        elif (job["metrics_path"], job.get("params", {})) != (target.path, params):
            raise ValueError(f"job {target.job}: every target needs the same path and parameters")
        # the label is 'component', not 'service': the metrics carry their own 'service' label
        job["static_configs"].append({"targets": [target.address], "labels": {"component": target.component}})
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval,
                   "external_labels": {"platform": "esign"}},
        "rule_files": [str(rules)],
        "scrape_configs": scrape_configs,
    }


def rabbitmq_endpoint_problem(host: str, port: int, enable: bool = True, wait: float = 20.0,
                              run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str | None:
    """None when RabbitMQ's Prometheus endpoint answers at ``host:port``. Otherwise, with
    the broker on this machine and ``rabbitmq-plugins`` at hand, enable the plugin and wait
    for the endpoint; answers one line saying what is wrong and what to do when it cannot."""
    if port_open(port, host):
        return None
    local = host in ("127.0.0.1", "localhost", "::1")
    plugins = shutil.which("rabbitmq-plugins")
    how = f"enable it where the broker runs: rabbitmq-plugins enable {RABBITMQ_PLUGIN}"
    if not enable or not local or plugins is None:
        where = "the broker is not on this machine" if not local else "rabbitmq-plugins is not installed here"
        return (f"RabbitMQ's Prometheus endpoint is not reachable at {host}:{port} ({where}): the queue depth and "
                f"consumer panels stay empty; {how}")
    try:
        done = run([plugins, "enable", RABBITMQ_PLUGIN], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not enable RabbitMQ's {RABBITMQ_PLUGIN} plugin ({type(exc).__name__}): {how}"
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return (f"could not enable RabbitMQ's {RABBITMQ_PLUGIN} plugin (rabbitmq-plugins exited {done.returncode}: "
                f"{detail[0][:200]}): {how}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if port_open(port, host):
            return None
        time.sleep(0.5)
    return (f"RabbitMQ's {RABBITMQ_PLUGIN} plugin is enabled but nothing answers on {host}:{port} after {wait:g} s "
            f"(is prometheus.tcp.port set to another port? ESIGN_RABBITMQ_PROMETHEUS_PORT)")


class PrometheusServer:
    """A Prometheus process with its config and TSDB under ``root``."""

    def __init__(self, root: Path, settings: MonitoringSettings, log_path: Path | None = None):
        self.root = root
        self.settings = settings
        self.log_path = log_path or root / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self, config: dict, timeout: float = 60.0, preexec_fn: Callable[[], None] | None = None,
              start_new_session: bool = True) -> None:
        """Prometheus with ``config``, ready within ``timeout`` seconds; ``preexec_fn`` defaults to
        the parent-death signal (services/common/child_process.py): it dies with this thread."""
        preexec_fn = preexec_fn or die_with_parent()
        binary = shutil.which(self.settings.binary)
        if binary is None:
            raise MonitoringError(f"{self.settings.binary} not found: install the Debian package 'prometheus' "
                               f"(./dev bootstrap does) or set ESIGN_PROMETHEUS_BIN")
        rules = [Path(path) for path in config.get("rule_files", [])]
        missing = [str(path) for path in rules if not path.is_file()]
        if missing:
            raise MonitoringError(f"alert rules not found: {', '.join(missing)}")
        if port_open(self.settings.port):
            raise MonitoringError(f"port {self.settings.port} is already in use: set ESIGN_PROMETHEUS_PORT "
                               f"(0 for any free port)")
        self.root.mkdir(parents=True, exist_ok=True)
        config_file = self.root / "prometheus.yml"
        config_file.write_text("# written by esign up --monitoring (services/common/monitoring.py)\n"
                               + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config_file}", f"--storage.tsdb.path={self.root / 'data'}",
                 f"--storage.tsdb.retention.time={self.settings.retention}",
                 f"--web.listen-address=127.0.0.1:{self.settings.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                preexec_fn=preexec_fn, start_new_session=start_new_session,
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MonitoringError(f"Prometheus exited with {self.process.returncode} at start; its log "
                                   f"{self.log_path} ends: {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise MonitoringError(f"Prometheus not ready on {self.url} after {timeout:g} s; see {self.log_path}")

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@dataclass
class PlatformMonitoring:
    """What ``esign up --monitoring`` started, and what it could not reach."""

    prometheus: PrometheusServer
    problems: list[str]

    def summary(self) -> list[str]:
        lines = [f"prometheus: {self.prometheus.url}  (alert rules {ALERT_RULES.relative_to(REPO_ROOT)}, "
                 f"scrape every {self.prometheus.settings.scrape_interval}, data {self.prometheus.root / 'data'})"]
        return lines + [f"monitoring: {problem}" for problem in self.problems]


def start_for_platform(data: Path, env: Mapping[str, str],
                       metrics_ports: Mapping[str, int | str | None | Sequence[int]],
                       witness_urls: Iterable[str], amqp_uri: str, log_path: Path | None = None,
                       preexec_fn: Callable[[], None] | None = None) -> PlatformMonitoring:
    """Prometheus scraping every process of ``esign up`` (called once they are healthy)."""
    settings = MonitoringSettings.from_env(env)
    broker = urllib.parse.urlsplit(amqp_uri)
    host = broker.hostname or "127.0.0.1"
    vhost = urllib.parse.unquote(broker.path[1:]) or "/"
    problem = rabbitmq_endpoint_problem(host, settings.rabbitmq_port)
    targets = platform_targets(metrics_ports, witness_urls, (host, settings.rabbitmq_port, vhost))
    server = PrometheusServer(data / "prometheus", settings, log_path)
    server.start(prometheus_config(targets, settings.port, settings.scrape_interval), preexec_fn=preexec_fn)
    return PlatformMonitoring(server, [problem] if problem else [])
