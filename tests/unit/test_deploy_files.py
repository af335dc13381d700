"""Checks of the deployment files: docker-compose.yml, deploy/k8s, the Prometheus
scrape config and alert rules (with the real promtool), the Grafana provisioning
and dashboard, and the Dockerfile.

The alert and dashboard queries are held to the metric names the platform's code
actually registers (read from services/), so a renamed metric breaks this test
rather than silently emptying a panel or disarming an alert.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.promql import comparisons_as_bool
from tests.support.promql import metric_names as promql_metric_names

#: libyaml's parser where PyYAML has it: the schema files and the rendered manifests are large, and
#: the pure-Python one took most of this module's time
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(stream):
    return yaml.load(stream, Loader=_LOADER)  # noqa: S506 - a safe loader


def _load_all(stream):
    return yaml.load_all(stream, Loader=_LOADER)  # noqa: S506 - a safe loader


ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
#: schemas of other projects, with their source and licence (tests/data/README.md)
DATA = ROOT / "tests" / "data"
ESIGN_SERVICES = ("identity", "documents", "signing", "notify", "gateway")
NAMEKO_SERVICES = ESIGN_SERVICES[:-1]
INFRA_SERVICES = ("rabbitmq", "postgres", "s3", "prometheus", "grafana")

# Environment variables whose values are secret, in any service.
# (SECRET_ or a trailing SECRET: ESIGN_GENERATE_SECRETS is a switch, not a secret)
SECRET_NAME = re.compile(r"(PASSWORD|PASS$|SECRET_|SECRET$|^ESIGN_KEK$|_KEY$|_KEY_ID$|TOKEN)")
URL_WITH_PASSWORD = re.compile(r"^[a-z0-9+]+://[^:@/]+:(?P<password>[^@]*)@")


def load_compose() -> dict:
    with open(ROOT / "docker-compose.yml", encoding="utf-8") as stream:
        return _load(stream)


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): ("" if v is None else str(v)) for k, v in env.items()}


def config_metrics_port(service: str) -> int:
    """The default metrics port written in services/<service>/config.yaml."""
    text = (ROOT / "services" / service / "config.yaml").read_text(encoding="utf-8")
    match = re.search(r"^\s*PORT:\s*\$\{[A-Z_]+_METRICS_PORT:(\d+)\}", text, re.MULTILINE)
    assert match, f"services/{service}/config.yaml has no METRICS PORT default"
    return int(match.group(1))


# --------------------------------------------------------------------- compose


def test_compose_has_every_service():
    services = load_compose()["services"]
    missing = [name for name in INFRA_SERVICES + ESIGN_SERVICES if name not in services]
    assert not missing, f"docker-compose.yml lacks services {missing}"


@pytest.mark.parametrize("name", ESIGN_SERVICES)
def test_compose_esign_service_runs_from_the_image(name):
    service = load_compose()["services"][name]
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["command"] == ["run", name]
    assert "healthcheck" in service, f"{name} has no healthcheck"
    env = environment(service)
    assert env.get("ESIGN_GENERATE_SECRETS") == "false", f"{name} would generate its own secrets"
    assert env.get("ESIGN_METRICS_ADDRESS") == "0.0.0.0", f"{name} metrics bind to loopback only"
    depends = service.get("depends_on") or {}
    assert isinstance(depends, dict) and depends, f"{name}: depends_on must name conditions"
    assert "rabbitmq" in depends
    for dependency, spec in depends.items():
        assert spec.get("condition") in ("service_healthy", "service_started",
                                          "service_completed_successfully"), (name, dependency)


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_compose_nameko_service_uses_its_postgres_database_and_metrics_port(name):
    service = load_compose()["services"][name]
    env = environment(service)
    url = env.get(f"{name.upper()}_DATABASE_URL", "")
    assert url.startswith("postgresql://") and "@postgres:" in url, f"{name} database URL: {url!r}"
    assert "postgres" in service["depends_on"]
    port = config_metrics_port(name)
    assert env.get(f"{name.upper()}_METRICS_PORT", str(port)) == str(port)
    assert str(port) in json.dumps(service["healthcheck"]["test"]), f"{name} healthcheck ignores port {port}"


def test_compose_storage_services_get_s3_settings():
    services = load_compose()["services"]
    for name in ("documents", "signing"):
        env = environment(services[name])
        assert env["ESIGN_S3_ENDPOINT"].startswith("http://s3:"), name
        assert services[name]["depends_on"]["s3"]["condition"] == "service_healthy"
    # SeaweedFS without keys accepts anonymous requests: it reads its identities from the
    # file the s3-identities job writes, and documents and signing each have keys of their own
    s3 = services["s3"]
    config = next(arg for arg in s3["command"] if arg.startswith("-s3.config="))[len("-s3.config="):]
    job = services["s3-identities"]
    out = job["command"][job["command"].index("--out") + 1]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in s3["volumes"]}
    job_volume = next(v.split(":")[0] for v in job["volumes"] if out.startswith(v.split(":")[1]))
    assert mounts[config.rsplit("/", 1)[0]] == job_volume and config.rsplit("/", 1)[1] == out.rsplit("/", 1)[1]
    assert s3["depends_on"]["s3-identities"]["condition"] == "service_completed_successfully"
    for name in ("documents", "signing"):
        env = environment(services[name])
        assert env["ESIGN_S3_ACCESS_KEY"].startswith(f"${{{name.upper()}_S3_ACCESS_KEY:?")
        assert env["ESIGN_S3_SECRET_KEY"].startswith(f"${{{name.upper()}_S3_SECRET_KEY:?")
        assert environment(job)[f"{name.upper()}_S3_ACCESS_KEY"] == env["ESIGN_S3_ACCESS_KEY"]


def test_compose_gateway_healthcheck_and_port():
    gateway = load_compose()["services"]["gateway"]
    assert "/healthz" in json.dumps(gateway["healthcheck"]["test"])
    assert environment(gateway)["ESIGN_GATEWAY_HOST"] == "0.0.0.0"
    assert any(str(port).endswith(":8000") for port in gateway.get("ports", []))


def test_compose_holds_no_literal_secret():
    services = load_compose()["services"]
    checked = 0
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                checked += 1
                assert value.startswith("${") and value.endswith("}"), (
                    f"{name}.{key} must come from the environment (${{...}}), not be written here")
            password = URL_WITH_PASSWORD.match(value)
            if password:
                checked += 1
                assert password.group("password").startswith("${"), f"{name}.{key} has a literal password"
            assert not value.startswith("base64:"), f"{name}.{key} holds a literal key"
    # the KEKs, S3 keys, database and broker passwords at least
    assert checked >= 15


def test_compose_required_secrets_fail_loudly_when_unset():
    """A required secret uses ${VAR:?message}, so compose refuses to start without it."""
    services = load_compose()["services"]
    for name, key in [("identity", "ESIGN_KEK"), ("identity", "ESIGN_BLIND_INDEX_KEY"),
                      ("identity", "ESIGN_OTP_KEY"),
                      ("postgres", "POSTGRES_PASSWORD"), ("broker-definitions", "ESIGN_BROKER_ADMIN_PASSWORD"),
                      ("grafana", "GF_SECURITY_ADMIN_PASSWORD"), ("documents", "ESIGN_S3_SECRET_KEY"),
                      ("documents", "DOCUMENTS_KEK"), ("documents", "ESIGN_INVITE_KEY"),
                      ("signing", "ESIGN_SIGNING_KEK"), ("signing", "ESIGN_LOG_SIGNING_KEY"),
                      ("notify", "NOTIFY_KEK"), ("notify", "NOTIFY_PHONE_INDEX_KEY")]:
        assert ":?" in environment(services[name])[key], f"{name}.{key} is not required"


def test_compose_gives_each_service_its_own_broker_user_loaded_at_boot():
    services = load_compose()["services"]
    job = services["broker-definitions"]
    job_env = environment(job)
    for name in ESIGN_SERVICES:
        uri = environment(services[name])["AMQP_URI"]
        variable = f"RABBITMQ_{name.upper()}_PASSWORD"
        assert uri.startswith(f"pyamqp://esign-{name}:${{{variable}:?"), uri
        assert job_env[f"ESIGN_BROKER_PASSWORD_{name.upper()}"].startswith(f"${{{variable}:?")
        # nobody else holds this service's broker password
        others = [other for other, service in services.items()
                  if other not in (name, "broker-definitions") and variable in json.dumps(service)]
        assert others == [], (name, others)
    assert job["command"][:2] == ["broker", "definitions"]
    out = job["command"][job["command"].index("--out") + 1]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["depends_on"]["broker-definitions"]["condition"] == "service_completed_successfully"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in rabbitmq["volumes"]}
    conf_source = mounts["/etc/rabbitmq/conf.d/20-esign.conf"]
    conf = (ROOT / conf_source).read_text(encoding="utf-8")
    loaded = re.search(r"^load_definitions\s*=\s*(\S+)", conf, re.MULTILINE).group(1)
    job_volume = next(v.split(":")[0] for v in job["volumes"] if out.startswith(v.split(":")[1]))
    assert mounts[str(Path(loaded).parent)] == job_volume  # RabbitMQ reads the file the job wrote
    assert Path(loaded).name == Path(out).name


def test_compose_mounts_monitoring_files_that_exist():
    services = load_compose()["services"]
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    mounts = " ".join(services["prometheus"]["volumes"])
    assert "deploy/prometheus/prometheus.yml" in mounts and "deploy/prometheus/alerts.yml" in mounts


#: how many numbers name one release of each third-party image (PostgreSQL: 16.6; SeaweedFS: 4.48)
RELEASE_NUMBERS = {"rabbitmq": 3, "postgres": 2, "chrislusf/seaweedfs": 2, "prom/prometheus": 3, "grafana/grafana": 3}


def project_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"),
                     re.MULTILINE).group(1)


def test_compose_every_service_is_pinned_checked_and_restarted():
    """Each image at a named version; each long-running service with a healthcheck and a restart
    policy; each job (a service others wait to complete) says it restarts never and has no health."""
    services = load_compose()["services"]
    jobs = {dependency for service in services.values()
            for dependency, spec in (service.get("depends_on") or {}).items()
            if spec.get("condition") == "service_completed_successfully"}
    assert jobs == {"broker-definitions", "s3-identities"}
    for name, service in services.items():
        image, _, tag = service["image"].rpartition(":")
        assert image and tag and tag != "latest", f"{name}: {service['image']} names no version"
        if image == "esign":
            assert tag == project_version(), f"{name}: esign:{tag}, the project is {project_version()}"
        else:
            assert image in RELEASE_NUMBERS, f"{name}: how does {image} number its releases? (RELEASE_NUMBERS)"
            # 3.13.7-management, 16.6-bookworm, v2.55.1: one release, not a moving line such as 3.13 or 16
            numbers = r"\.".join([r"\d+"] * RELEASE_NUMBERS[image])
            assert re.fullmatch(rf"v?{numbers}(-[a-z0-9]+)?", tag), f"{name}: {service['image']} is not one release"
        if name in jobs:
            assert service["restart"] == "no" and service["healthcheck"] == {"disable": True}, name
        else:
            assert service["restart"] in ("unless-stopped", "always"), name
            test = service["healthcheck"]["test"]
            assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
            assert {"interval", "timeout", "retries"} <= set(service["healthcheck"]), name
    kustomization = _load((DEPLOY / "k8s" / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["images"][0]["newTag"] == project_version()


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_compose_nameko_service_is_healthy_once_it_consumes(name):
    test = json.dumps(load_compose()["services"][name]["healthcheck"]["test"])
    assert f"127.0.0.1:{config_metrics_port(name)}/readyz" in test


def compose_schema_validator():
    import jsonschema

    schema = json.loads((DATA / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def compose_errors(document: dict) -> list[str]:
    return [f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in compose_schema_validator().iter_errors(document)]


def test_compose_file_matches_the_compose_specification():
    """Offline, against the Compose Specification's JSON schema (tests/data/compose-spec.json)."""
    assert compose_errors(load_compose()) == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda d: d["services"]["rabbitmq"].update(restartt="always"), "'restartt' does not match any of the regexes"),
    (lambda d: d["services"]["postgres"]["healthcheck"].update(intervall="5s"), "'intervall' does not match"),
    (lambda d: d["services"]["gateway"].update(ports="127.0.0.1:8000:8000"), "is not of type 'array'"),
    (lambda d: d["services"]["identity"]["depends_on"]["rabbitmq"].update(condition="service_ready"),
     "depends_on: {'rabbitmq': {'condition': 'service_ready'}"),
    (lambda d: d.update(volumez={}), "'volumez' does not match any of the regexes"),
])
def test_a_broken_compose_file_is_refused(breakage, expected):
    document = load_compose()
    breakage(document)
    errors = compose_errors(document)
    assert errors and expected in " ".join(errors), errors


def compose_required_variables() -> list[str]:
    return sorted(set(re.findall(r"\$\{([A-Z0-9_]+):\?", (ROOT / "docker-compose.yml").read_text(encoding="utf-8"))))


def test_compose_env_script_makes_every_required_secret_and_never_overwrites(tmp_path):
    out = tmp_path / "compose.env"
    done = subprocess.run(["sh", str(DEPLOY / "compose-env.sh"), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_mode & 0o077 == 0, "the secrets file is readable by others"
    values = dict(line.split("=", 1) for line in out.read_text().splitlines() if line and not line.startswith("#"))
    missing = [name for name in compose_required_variables() if not values.get(name)]
    assert not missing, f"deploy/compose-env.sh does not make {missing}"
    for name, value in values.items():
        if "PASSWORD" in name:
            assert re.fullmatch(r"[0-9a-f]{24,}", value), name  # URL-safe: it goes into AMQP and database URLs
        if name.endswith(("_KEK", "_KEY")) and not name.endswith("ACCESS_KEY") and "S3" not in name:
            assert value.startswith("base64:") and len(value) > 40, name
    first = out.read_text()
    again = subprocess.run(["sh", str(DEPLOY / "compose-env.sh"), str(out)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode != 0 and out.read_text() == first, "an existing secrets file was replaced"
    assert "/.env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_docker_compose_accepts_the_file_offline(tmp_path):
    """Debian's docker-compose (1.29, `apt-get install docker-compose`) checks the file without a
    daemon. It predates the top-level ``name``, which it is given as ``-p`` instead."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose not installed (apt-get install docker-compose); the schema test still ran")
    document = load_compose()
    project = document.pop("name")
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    env.update({name: "x" + name.lower() for name in compose_required_variables()})
    command = [tool, "-f", str(copy), "--project-directory", str(ROOT), "-p", project, "config", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # and it does check: an unknown key is refused
    document["services"]["rabbitmq"]["restartt"] = "always"
    copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0 and "restartt" in refused.stdout + refused.stderr
    # without a required secret it refuses to start
    del env["POSTGRES_PASSWORD"]
    document["services"]["rabbitmq"].pop("restartt")
    copy.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    unset = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert unset.returncode != 0 and "POSTGRES_PASSWORD" in unset.stdout + unset.stderr


# --------------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_in_the_documented_order_and_drops_root():
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, re.MULTILINE)
    for package in ("poppler-utils", "libnss3-tools", "fonts-hanazono", "fonts-wqy-zenhei", "openssl"):
        assert package in text, package
    steps = ["pip install -r requirements.lock", "pip install --no-deps face-recognition==1.3.0",
             "pip install --no-deps ."]
    positions = [text.find(step) for step in steps]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["esign"\]\s*$', text, re.MULTILINE)


# --------------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted((DEPLOY / "k8s").rglob("*.y*ml")):
        with open(path, encoding="utf-8") as stream:
            found += [(path, doc) for doc in _load_all(stream) if doc]
    assert found, "no manifests under deploy/k8s"
    return found


def k8s_object(kind: str, name: str) -> dict:
    matches = [doc for _, doc in k8s_documents() if doc.get("kind") == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


@pytest.mark.parametrize("name", ESIGN_SERVICES)
def test_k8s_deployment_has_resources_probes_and_secret_references(name):
    deployment = k8s_object("Deployment", name)
    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items(), "selector does not match the pod"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["run", name]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name} {bound}"
    assert "livenessProbe" in container and "readinessProbe" in container
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == config_metrics_port(name)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env = {item["name"]: item for item in container.get("env", [])}
    for item in env.values():
        # secrets only by reference: a literal value is allowed for non-secret names only
        if SECRET_NAME.search(item["name"]) or item["name"].endswith("DATABASE_URL"):
            assert "value" not in item and item["valueFrom"]["secretKeyRef"]["name"] == "esign-secrets", item
    # its own broker user, with its own password (the only broker secret it sees)
    assert env["AMQP_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{name.upper()}_AMQP_PASSWORD"
    assert env["AMQP_URI"]["value"] == f"pyamqp://esign-{name}:$(AMQP_PASSWORD)@$(ESIGN_AMQP_ADDRESS)/"
    names = list(env)
    assert names.index("AMQP_PASSWORD") < names.index("AMQP_URI") > names.index("ESIGN_AMQP_ADDRESS")
    assert not [key for key in env if "AMQP_PASSWORD" in key and key != "AMQP_PASSWORD"]
    assert {"configMapRef": {"name": "esign-config"}} in container["envFrom"]


def test_k8s_broker_users_job_applies_every_services_permissions():
    job = k8s_object("Job", "broker-users")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["broker", "apply"] and "--management-url" in container["args"]
    env = {item["name"]: item["valueFrom"] for item in container["env"]}
    for name in ESIGN_SERVICES:
        assert env[f"ESIGN_BROKER_PASSWORD_{name.upper()}"]["secretKeyRef"]["key"] == f"{name.upper()}_AMQP_PASSWORD"
    assert env["ESIGN_BROKER_MANAGEMENT_PASSWORD"]["secretKeyRef"]["key"] == "BROKER_ADMIN_PASSWORD"
    assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    config = k8s_object("ConfigMap", "esign-config")["data"]
    assert config["ESIGN_BROKER_MANAGEMENT_URL"].startswith("http") and ":" in config["ESIGN_AMQP_ADDRESS"]


def test_k8s_gateway_is_ready_on_healthz_and_exposes_http():
    deployment = k8s_object("Deployment", "gateway")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 8000 and readiness["port"] in ("http", 8000)
    service_ports = {p["name"]: p for p in k8s_object("Service", "gateway")["spec"]["ports"]}
    assert service_ports["http"]["port"] == 8000


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_k8s_nameko_probes_check_the_metrics_port(name):
    deployment = k8s_object("Deployment", name)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        spec = container[probe]
        target = spec.get("tcpSocket") or spec.get("httpGet")
        assert target or "exec" in spec, f"{name} {probe}"
        if target:
            assert target["port"] in ("metrics", config_metrics_port(name))


@pytest.mark.parametrize("name", ESIGN_SERVICES)
def test_k8s_service_is_scraped_on_the_metrics_port(name):
    service = k8s_object("Service", name)
    deployment = k8s_object("Deployment", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    annotations = service["metadata"]["annotations"]
    port = config_metrics_port(name)
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert port in [p["port"] for p in service["spec"]["ports"]]
    # alerts.yml selects targets by this label
    assert service["metadata"]["labels"]["component"] == name


def test_k8s_gateway_hpa_scales_it_on_cpu():
    """The gateway takes HTTP, not messages: a plain CPU HPA, the only autoscaler of its Deployment."""
    hpa = k8s_object("HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"


def max_workers(service: str) -> int:
    text = (ROOT / "services" / service / "config.yaml").read_text(encoding="utf-8")
    return int(re.search(r"^max_workers:\s*\$\{[A-Z_]+:(\d+)\}", text, re.MULTILINE).group(1))


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_k8s_keda_scales_each_rpc_service_on_its_queues_and_cpu(name):
    scaled = k8s_object("ScaledObject", name)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == name and spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 2 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    assert set(triggers) == {"rabbitmq", "cpu"}
    assert triggers["cpu"]["metricType"] == "Utilization" and 0 < int(triggers["cpu"]["metadata"]["value"]) <= 80
    rabbit = triggers["rabbitmq"]["metadata"]
    # http: the management API counts ready and unacknowledged messages (the work in hand)
    assert rabbit["protocol"] == "http" and rabbit["mode"] == "QueueLength"
    assert rabbit.get("excludeUnacknowledged", "false") == "false"
    # per replica, below its number of workers: it scales out before every worker is busy
    assert 1 <= float(rabbit["value"]) < max_workers(name)
    assert triggers["rabbitmq"]["authenticationRef"]["name"] == k8s_object("TriggerAuthentication",
                                                                         "esign-rabbitmq")["metadata"]["name"]
    assert "host" not in rabbit, "the broker's URL holds a password: it comes from the TriggerAuthentication"


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_k8s_keda_counts_the_services_own_work_queues_and_no_other(name):
    from services.common import broker_access

    rabbit = next(t for t in k8s_object("ScaledObject", name)["spec"]["triggers"] if t["type"] == "rabbitmq")
    metadata = rabbit["metadata"]
    assert metadata["useRegex"] == "true" and metadata["operation"] == "sum"
    pattern = re.compile(metadata["queueName"])
    uuid = "9b2f6c1e-3d4a-4c55-9e61-1f0a7d3c2b10"
    own = [f"rpc-{name}"] + [f"evt-{source}-{event}--{name}.on_{event}"
                             for source, events in broker_access.EVENT_SUBSCRIPTIONS[name].items() for event in events]
    for queue in own:
        assert pattern.search(queue), queue
    others = [f"rpc.reply-{name}-{uuid}", f"rpc-{name}-{uuid}", f"rpc-{name}x"]
    for other in broker_access.RPC_SERVERS:
        if other != name:
            others += [f"rpc-{other}"] + [f"evt-{source}-{event}--{other}.on_{event}" for source, events
                                          in broker_access.EVENT_SUBSCRIPTIONS[other].items() for event in events]
    for queue in others:
        assert not pattern.search(queue), queue


def test_k8s_no_deployment_has_two_autoscalers():
    """KEDA makes an HPA for each ScaledObject; a second HPA on the same Deployment would fight it."""
    objects = rendered_k8s()
    scaled = {o["spec"]["scaleTargetRef"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    hpas = {o["metadata"]["name"]: o for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    hpa_targets = [hpa["spec"]["scaleTargetRef"]["name"] for hpa in hpas.values()]
    assert len(hpa_targets) == len(set(hpa_targets))
    assert not set(hpa_targets) & set(scaled), "a Deployment with a ScaledObject has a plain HPA too"
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    assert set(hpa_targets) | set(scaled) == deployments, "every Deployment has exactly one autoscaler"
    for target, scaled_object in scaled.items():
        # KEDA's HPA keeps the old plain HPA's name and takes it over on upgrade
        assert scaled_object["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["name"] == target
        assert scaled_object["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"] == "true"
        assert target not in hpas
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_k8s_cpu_heavy_services_may_scale_furthest():
    most = {name: k8s_object("ScaledObject", name)["spec"]["maxReplicaCount"] for name in NAMEKO_SERVICES}
    most["gateway"] = k8s_object("HorizontalPodAutoscaler", "gateway")["spec"]["maxReplicas"]
    for heavy in ("identity", "signing"):
        for light in ("documents", "notify", "gateway"):
            assert most[heavy] > most[light], most


def test_k8s_keda_reads_the_broker_as_a_user_that_may_only_read_statistics():
    auth = k8s_object("TriggerAuthentication", "esign-rabbitmq")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("host", "esign-secrets", "KEDA_RABBITMQ_HOST")
    template = (DEPLOY / "k8s" / "secret-template" / "esign-secrets.yaml").read_text(encoding="utf-8")
    assert re.search(r"KEDA_RABBITMQ_HOST=\"http://esign-keda:\$monitor@rabbitmq\.esign\.svc:15672/\"", template)
    assert 'BROKER_MONITOR_PASSWORD="$monitor"' in template
    (container,) = k8s_object("Job", "broker-users")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--monitor-user") + 1] == "esign-keda"
    env = {item["name"]: item["valueFrom"] for item in container["env"]}
    assert env["ESIGN_BROKER_MONITOR_PASSWORD"]["secretKeyRef"]["key"] == "BROKER_MONITOR_PASSWORD"


@pytest.mark.parametrize("name", ESIGN_SERVICES)
def test_k8s_disruption_budget_and_spread_keep_replicas_apart(name):
    deployment = k8s_object("Deployment", name)
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    budget = k8s_object("PodDisruptionBudget", name)
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    spread = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway" and constraint["maxSkew"] == 1
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]


@pytest.mark.parametrize("name", NAMEKO_SERVICES)
def test_k8s_nameko_service_is_ready_on_its_own_health_rpc(name):
    (container,) = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
    readiness = container["readinessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "metrics"}
    # the check waits at most 2 s for the answer (services/common/readiness.py)
    from services.common.readiness import READY_TIMEOUT_SECONDS

    assert readiness["timeoutSeconds"] > READY_TIMEOUT_SECONDS
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"  # liveness: the worker pools


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r}: write it in Mi or Gi"
    return int(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize("name", ESIGN_SERVICES)
def test_k8s_memory_requests_cover_the_measured_peak(name):
    """The measured figures are written beside the resources; request and limit follow them."""
    text = (DEPLOY / "k8s" / f"{name}.yaml").read_text(encoding="utf-8")
    measured = re.search(r"memory measured \(RSS[^)]*\)[^#]*?(\d+) idle after start.*?(\d+) at peak", text, re.DOTALL)
    assert measured, f"{name}.yaml does not say what memory was measured"
    idle, peak = (int(value) for value in measured.groups())
    (container,) = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
    request = _mebibytes(container["resources"]["requests"]["memory"])
    limit = _mebibytes(container["resources"]["limits"]["memory"])
    assert idle <= peak <= request < limit, (idle, peak, request, limit)
    assert limit >= 1.5 * peak, "too little room above the measured peak"
    assert request <= 2 * peak, "the request reserves far more than was ever used"


def test_k8s_namespace_configmap_and_secret_template():
    documents = k8s_documents()
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in documents if "metadata" in doc}
    assert ("Namespace", "esign") in kinds and ("ConfigMap", "esign-config") in kinds
    secrets = [(path, doc) for path, doc in documents if doc["kind"] == "Secret"]
    assert [doc["metadata"]["name"] for _, doc in secrets] == ["esign-secrets"]
    path, secret = secrets[0]
    values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
    assert {"ESIGN_KEK", "TENCENT_FACEID_SECRET_ID", "TENCENT_FACEID_SECRET_KEY",
            "BROKER_ADMIN_PASSWORD"} <= set(values)
    assert {f"{name.upper()}_AMQP_PASSWORD" for name in ESIGN_SERVICES} <= set(values)
    assert all(value in ("", None) for value in values.values()), "the Secret template holds values"
    assert "kubectl" in path.read_text(encoding="utf-8") and "create secret" in path.read_text(encoding="utf-8")
    config = k8s_object("ConfigMap", "esign-config")["data"]
    assert not [key for key in config if SECRET_NAME.search(key)], "secret-looking keys in the ConfigMap"
    assert config["ESIGN_GENERATE_SECRETS"] == "false" and config["ESIGN_METRICS_ADDRESS"] == "0.0.0.0"
    assert int(config["SIGNING_OBJECT_LOCK_DAYS"]) >= 3650  # signed files kept under Object Lock


def test_k8s_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = _load((DEPLOY / "k8s" / "kustomization.yaml").read_text(encoding="utf-8"))
    resources = kustomization["resources"]
    for resource in resources:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    assert {f"{name}.yaml" for name in ESIGN_SERVICES} <= set(resources)
    assert not [r for r in resources if "secret" in r], "applying the manifests would blank the real Secret"


# --------------------------------------------------------------------- offline validation
#
# What `kubectl apply -k deploy/k8s` would send, rendered by kubectl itself (kustomize, no
# cluster), each object checked against its schema: the core kinds against Kubernetes'
# OpenAPI schemas (kubernetes-validate, strict: an unknown field is an error, as the API
# server's strict field validation makes it), KEDA's kinds against the openAPIV3Schema of
# KEDA's CRDs (tests/data/, with their source). No network at test time.

#: the Kubernetes API the manifests are checked against (the kubectl here is v1.32)
K8S_VERSION = "1.32"
KEDA_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.schema.yaml",
                ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.schema.yaml"}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found: it renders deploy/k8s (kubectl kustomize) for the schema checks")
    return path


_RENDERED: list[dict] = []


def rendered_k8s() -> list[dict]:
    """The objects ``kubectl kustomize deploy/k8s`` renders (once per run)."""
    if not _RENDERED:
        done = subprocess.run([kubectl(), "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        _RENDERED.extend(doc for doc in _load_all(done.stdout) if doc)
    return [json.loads(json.dumps(doc)) for doc in _RENDERED]  # a copy each time: tests may break theirs


#: the ObjectMeta fields these manifests use; a CRD leaves metadata to the API server
_OBJECT_META = {"type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                               "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                               "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}}


def strict(schema):
    """An OpenAPI v3 structural schema as the API server applies it with strict field
    validation: an object's fields are the listed ones (unless it preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        tightened["additionalProperties"] = False
    return tightened


_KEDA_VALIDATORS: dict = {}


def keda_validator(api_version: str, kind: str):
    import jsonschema

    key = (api_version, kind)
    if key not in _KEDA_VALIDATORS:
        schema = strict(_load((DATA / KEDA_SCHEMAS[key]).read_text(encoding="utf-8")))
        schema["properties"]["metadata"] = _OBJECT_META
        jsonschema.Draft7Validator.check_schema(schema)
        _KEDA_VALIDATORS[key] = jsonschema.Draft7Validator(schema)
    return _KEDA_VALIDATORS[key]


def schema_errors(obj: dict) -> list[str]:
    """What is wrong with one rendered object, as its schema says; empty when it is valid."""
    import kubernetes_validate

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in KEDA_SCHEMAS:
        errors = sorted(keda_validator(*key).iter_errors(obj), key=lambda e: list(e.absolute_path))
        messages = [f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in errors]
        spec = obj.get("spec") or {}
        # the CRD's CEL rule (x-kubernetes-validations), which JSON Schema cannot say
        if key[1] == "ScaledObject" and spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            messages.append("spec: minReplicaCount must be less than or equal to maxReplicaCount")
        return messages
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[0]} {key[1]}: neither Kubernetes {K8S_VERSION} nor tests/data knows it"]
    return []


def test_kubectl_kustomize_renders_every_manifest():
    objects = rendered_k8s()
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    for name in ESIGN_SERVICES:
        for kind in ("Deployment", "Service", "PodDisruptionBudget"):
            assert (kind, name) in kinds
    for name in NAMEKO_SERVICES:
        assert ("ScaledObject", name) in kinds
    assert ("TriggerAuthentication", "esign-rabbitmq") in kinds and ("Job", "broker-users") in kinds
    assert all(o["metadata"].get("namespace") == "esign" for o in objects if o["kind"] != "Namespace")
    assert not [o for o in objects if o["kind"] == "Secret"], "applying the manifests would blank the real Secret"


def test_every_rendered_object_matches_its_schema():
    problems = {f"{o['kind']}/{o['metadata']['name']}": schema_errors(o) for o in rendered_k8s()}
    assert not {name: errors for name, errors in problems.items() if errors}


def _first(kind: str, name: str) -> dict:
    return next(o for o in rendered_k8s() if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("breakage, expected", [
    (lambda o: o["spec"].update(replicas="2"), "'2' is not of type 'integer'"),
    (lambda o: o["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={"tcpSocket": {"port": 1}}),
     "readinesProbe"),
    (lambda o: o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].update(memory=[512]),
     "memory: [512] is not valid"),
    (lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"].update(periodSeconds="10s"),
     "'10s' is not of type 'integer'"),
])
def test_a_broken_deployment_is_refused(breakage, expected):
    deployment = _first("Deployment", "signing")
    assert schema_errors(deployment) == []
    breakage(deployment)
    errors = schema_errors(deployment)
    assert errors and expected in " ".join(errors), errors


@pytest.mark.parametrize("breakage, expected", [
    (lambda o: o["spec"].update(minReplicasCount=o["spec"].pop("minReplicaCount")), "minReplicasCount"),
    (lambda o: o["spec"].update(pollingInterval="15"), "'15' is not of type 'integer'"),
    (lambda o: o["spec"]["triggers"][0]["metadata"].update(value=7), "7 is not of type 'string'"),
    (lambda o: o["spec"].pop("triggers"), "'triggers' is a required property"),
    (lambda o: o["spec"]["fallback"].update(behavior="whenever"), "'whenever' is not one of"),
    (lambda o: o["spec"].update(minReplicaCount=20), "minReplicaCount must be less than or equal"),
    (lambda o: o["metadata"].update(lables={"a": "b"}), "lables"),
])
def test_a_broken_scaled_object_is_refused(breakage, expected):
    scaled = _first("ScaledObject", "signing")
    assert schema_errors(scaled) == []
    breakage(scaled)
    errors = schema_errors(scaled)
    assert errors and expected in " ".join(errors), errors


def test_a_broken_trigger_authentication_is_refused():
    auth = _first("TriggerAuthentication", "esign-rabbitmq")
    assert schema_errors(auth) == []
    del auth["spec"]["secretTargetRef"][0]["key"]
    assert "'key' is a required property" in " ".join(schema_errors(auth))
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_the_stored_schemas_name_their_source_and_licence():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    assert "Apache License" in (DATA / "LICENSE-APACHE-2.0").read_text(encoding="utf-8")
    for name in KEDA_SCHEMAS.values():
        header = (DATA / name).read_text(encoding="utf-8").split("\n", 6)[:6]
        assert "kedacore/keda" in "".join(header) and "commit " in "".join(header) and "Apache" in "".join(header)
        assert name in readme
    import hashlib

    digest = hashlib.sha256((DATA / "compose-spec.json").read_bytes()).hexdigest()
    assert "compose-spec/compose-spec, commit" in readme and digest in readme, "compose-spec.json was changed"


# --------------------------------------------------------------------- promtool


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (Debian) to check the alert rules")
    return path


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_accepts_the_alert_rules():
    result = run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_scrape_config(tmp_path):
    config = _load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    rule_files = config.get("rule_files") or []
    assert rule_files, "prometheus.yml loads no rule files"
    config["rule_files"] = [str((PROMETHEUS / path).resolve()) for path in rule_files]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_promtool("check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(PROMETHEUS / "alerts.yml") in result.stdout  # the rules were loaded, not skipped


def test_promtool_unit_tests_of_the_alerts_pass():
    """deploy/prometheus/alerts.test.yml feeds synthetic series and says which alerts must fire."""
    result = run_promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_every_service_metrics_port():
    config = _load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {}
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = static.get("labels", {})
    for name in ESIGN_SERVICES:
        target = f"{name}:{config_metrics_port(name)}"
        assert target in targets, f"{target} is not scraped"
        # the label alerts.yml and the dashboard select on; 'service' would clobber the metrics' own
        assert targets[target].get("component") == name
        assert "service" not in targets[target]
    # queue depth and consumers: RabbitMQ's own endpoint, the per-queue families of the vhost
    (rabbitmq,) = [job for job in config["scrape_configs"] if job["job_name"] == "rabbitmq"]
    assert rabbitmq["static_configs"] == [{"targets": ["rabbitmq:15692"], "labels": {"component": "rabbitmq"}}]
    assert rabbitmq["metrics_path"] == "/metrics/detailed"
    assert set(rabbitmq["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}


# --------------------------------------------------------------------- metric names

def test_promql_metric_names_reads_selectors_not_functions_or_labels():
    expr = ('histogram_quantile(0.99, sum by (service, le) (rate(a_seconds_bucket{kind="rpc"}[5m])))'
            ' > 2 and on(service) b_total offset 1h or vector(0) / up{job="x"} unless c:recorded')
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_total", "up", "c:recorded"}


def test_comparisons_as_bool_leaves_label_matchers_and_strings_alone():
    expr = ('(sum by (s) (rate(a{outcome!="ok", x=~"5..", y="a>b"}[5m])) / sum by (s) (rate(a[5m]))) > 0.05\n'
            'and sum(b) >= bool 3 * (c == 1 or vector(0)) and on (w) d<=2 and e != 0 unless f < 1')
    assert comparisons_as_bool(expr) == (
        '(sum by (s) (rate(a{outcome!="ok", x=~"5..", y="a>b"}[5m])) / sum by (s) (rate(a[5m]))) > bool 0.05\n'
        'and sum(b) >= bool 3 * (c == bool 1 or vector(0)) and on (w) d<= bool 2 and e != bool 0 unless f < bool 1')


#: what RabbitMQ's rabbitmq_prometheus plugin exports at /metrics/detailed for the families
#: queue_coarse_metrics and queue_consumer_count, which the dashboard reads (checked against a
#: running broker by tests/e2e/test_monitoring.py)
RABBITMQ_PLUGIN_METRICS = {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages_unacked",
                           "rabbitmq_detailed_queue_messages", "rabbitmq_detailed_queue_consumers"}


def exported_metric_names() -> set[str]:
    """Every metric name the services register, read from their source."""
    counters, histograms, gauges = set(), set(), set()
    for path in (ROOT / "services").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        counters.update(re.findall(r"\bcounter\(\s*[\"'](\w+)[\"']", source))
        histograms.update(re.findall(r"\bhistogram\(\s*[\"'](\w+)[\"']", source))
        # BusinessMetrics: inc("sms", ...) registers esign_sms_total; observe("x", ...) esign_x
        counters.update(f"esign_{name}_total" for name in re.findall(r"\.inc\(\s*[\"'](\w+)[\"']", source))
        histograms.update(f"esign_{name}" for name in re.findall(r"\.observe\(\s*[\"'](\w+)[\"']", source))
        # gauges: BusinessMetrics.set("x", ...) registers esign_x; gauge(...) and the witness's collectors
        gauges.update(f"esign_{name}" for name in re.findall(r"\.set\(\s*[\"'](\w+)[\"']", source))
        gauges.update(re.findall(r"\b(?:gauge|GaugeMetricFamily)\(\s*[\"'](\w+)[\"']", source))
        counters.update(f"{name}_total" for name in
                        re.findall(r"\b(?:Counter|CounterMetricFamily)\(\s*[\"'](\w+)[\"']", source))
    names = set(counters) | set(gauges) | {"up"} | RABBITMQ_PLUGIN_METRICS
    for histogram in histograms:
        names |= {histogram + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_the_platform_exports_the_metrics_the_monitoring_relies_on():
    exported = exported_metric_names()
    for name in ("esign_entrypoint_calls_total", "esign_entrypoint_latency_seconds_bucket",
                 "esign_http_requests_total", "esign_http_request_seconds_bucket",
                 "esign_sms_total", "esign_otp_requested_total", "esign_otp_checks_total"):
        assert name in exported, f"{name} is not registered anywhere in services/"


def alert_rules() -> list[dict]:
    groups = _load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_alert_expressions_only_name_exported_metrics():
    exported = exported_metric_names()
    for rule in alert_rules():
        names = promql_metric_names(rule["expr"])
        assert names, f"{rule['alert']} selects no metric"
        unknown = names - exported
        assert not unknown, f"{rule['alert']} uses metrics nobody exports: {sorted(unknown)}"


def test_alerts_cover_the_failure_modes_ops_asked_for():
    rules = alert_rules()

    def having(*fragments: str) -> list[str]:
        return [r["alert"] for r in rules if all(f in r["expr"] for f in fragments)]

    assert having("up{", "== 0"), "no service-down alert"
    assert having("esign_entrypoint_calls_total", 'outcome="internal_error"', "> 0.05"), "no RPC error ratio alert"
    assert having("histogram_quantile(0.99", "esign_entrypoint_latency_seconds_bucket", "by (service"), "no p99"
    assert having("esign_sms_total", "failed"), "no SMS failure alert"
    assert having("esign_sms_total", "given_up"), "no SMS given-up alert"
    assert having("esign_otp_checks_total", "wrong_code"), "no OTP brute-force alert"
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]


# --------------------------------------------------------------------- Grafana


def dashboard_queries(dashboard: dict) -> list[str]:
    queries = []
    for panel in dashboard["panels"]:
        for child in [panel] + panel.get("panels", []):
            queries += [target["expr"] for target in child.get("targets", [])]
    return queries


def test_grafana_datasource_and_dashboard_provisioning():
    datasources = _load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))["datasources"]
    (prometheus,) = [d for d in datasources if d["type"] == "prometheus"]
    assert prometheus["url"] == "http://prometheus:9090"
    providers = _load(
        (DEPLOY / "grafana/provisioning/dashboards/esign.yml").read_text(encoding="utf-8"))["providers"]
    grafana_volumes = load_compose()["services"]["grafana"]["volumes"]
    for provider in providers:
        # the provider's path is where compose mounts deploy/grafana/dashboards
        assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana_volumes

    dashboards = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
    assert dashboards, "no dashboard JSON"
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == prometheus["uid"], panel["title"]


def test_dashboard_shows_rates_errors_latency_sms_and_otp_from_exported_metrics():
    exported = exported_metric_names()
    (path,) = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
    queries = dashboard_queries(json.loads(path.read_text(encoding="utf-8")))
    for query in queries:
        unknown = promql_metric_names(query) - exported
        assert not unknown, f"dashboard query uses metrics nobody exports: {sorted(unknown)} in {query}"
    joined = "\n".join(queries)
    assert "sum by (service) (rate(esign_entrypoint_calls_total" in joined
    assert 'outcome="internal_error"' in joined
    for quantile in ("0.5", "0.99"):
        assert re.search(rf"histogram_quantile\({quantile}, sum by \([^)]*entrypoint[^)]*\) "
                         r"\(rate\(esign_entrypoint_latency_seconds_bucket", joined), quantile
    assert re.search(r"sum by \([^)]*outcome[^)]*\) \(increase\(esign_sms_total", joined)
    assert re.search(r"sum by \([^)]*outcome[^)]*\) \(increase\(esign_otp_checks_total", joined)


def test_dashboard_covers_what_ops_asked_for():
    """RED per service and RPC, queues and consumers, saturation, flows by state, SMS by outcome,
    evidence-log size and witness lag, certificates issued and revoked, the sign step's p95."""
    (path,) = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
    joined = "\n".join(dashboard_queries(json.loads(path.read_text(encoding="utf-8"))))
    for fragment in ("sum by (service, entrypoint) (rate(esign_entrypoint_calls_total{kind=\"rpc\"",
                     "rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_consumers",
                     "esign_service_workers_max", "esign_worker_pool_job_seconds_sum", "esign_worker_pool_workers",
                     "max by (state) (esign_flows)", "sum by (outcome, provider) (increase(esign_sms_total",
                     "esign_log_checkpoint_size", "esign_log_witness_cosigned_size",
                     "esign_log_witness_cosigned_timestamp_seconds", "esign_certificates_issued_total",
                     "esign_certificates_revoked_total",
                     "histogram_quantile(0.95, sum by (stage, le) (rate(esign_sign_step_seconds_bucket"):
        assert fragment in joined, f"no panel query has {fragment}"


def test_grafana_readme_documents_every_panel_with_its_query():
    (path,) = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
    readme = (DEPLOY / "grafana/README.md").read_text(encoding="utf-8")
    for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
        if panel["type"] == "row":
            continue
        assert f"**{panel['title']}**" in readme, f"deploy/grafana/README.md lacks the panel {panel['title']!r}"
        for target in panel["targets"]:
            assert target["expr"] in readme, f"deploy/grafana/README.md lacks the query {target['expr']}"

