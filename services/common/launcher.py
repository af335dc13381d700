"""``esign up``: the whole platform on one machine with embedded defaults.

SeaweedFS and each service run as separate processes; this process waits
until all are healthy, prints where they are, and on Ctrl-C (or SIGTERM)
stops every child and waits for it, so nothing is left behind. Children are
also asked by the kernel to die with this process (PR_SET_PDEATHSIG), in case
it is killed outright.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from services.common.config import REPO_ROOT, load_config, read_secret
from services.common.config import data_dir as config_data_dir
from services.common.s3server import S3Identity, SeaweedPorts, SeaweedServer, port_open

SERVICES = ("identity", "documents", "signing", "notify", "gateway")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def rabbitmq_problem(amqp_uri: str, timeout: float = 3.0) -> str | None:
    """None when the broker answers an AMQP login, else one line saying what to do."""
    from kombu import Connection

    try:
        with Connection(amqp_uri, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
        return None
    except Exception as exc:
        safe_uri = amqp_uri.split("@")[-1]
        return (f"RabbitMQ is not reachable at {safe_uri} ({type(exc).__name__}): start it with "
                f"'rabbitmq-server -detached' (or set AMQP_URI to a running broker)")


def _secret_text(data: Path, name: str) -> str:
    return read_secret({"file": str(data / "secrets" / name)}, name, generate_in=data).hex()


def up(data_dir: str | None = None, timeout: float = 120.0, monitoring: bool = False) -> int:
    if data_dir:
        os.environ["ESIGN_DATA_DIR"] = str(Path(data_dir).resolve())
    gateway_config = load_config("gateway")
    data = config_data_dir(gateway_config)
    problem = rabbitmq_problem(gateway_config["AMQP_URI"])
    if problem:
        print(problem, file=sys.stderr)
        return 2

    env = dict(os.environ, ESIGN_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    try:
        service_uris = broker_users(gateway_config["AMQP_URI"], data, env)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    env.setdefault("ESIGN_S3_ACCESS_KEY", "esign-" + _secret_text(data, "s3-access-key")[:16])
    env.setdefault("ESIGN_S3_SECRET_KEY", _secret_text(data, "s3-secret-key"))
    s3_port = int(os.environ.get("ESIGN_S3_PORT", "8333"))
    env.setdefault("ESIGN_S3_ENDPOINT", f"http://127.0.0.1:{s3_port}")
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    registry_lines = _demo_registry(data)

    children: list[tuple[str, subprocess.Popen]] = []
    seaweed: SeaweedServer | None = None
    stopping = {"signal": None}

    def _on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    s3_identities: dict[str, S3Identity] = {}
    try:
        if port_open(s3_port):
            print(f"S3 port {s3_port} is already in use: using the server there, with the keys given "
                  f"(set ESIGN_S3_PORT to start a fresh one)")
        else:
            ports = SeaweedPorts.free()  # its internal ports; only S3 is fixed
            ports.s3 = s3_port
            s3_identities = _s3_identities(data, env)
            seaweed = SeaweedServer(data / "s3", env["ESIGN_S3_ACCESS_KEY"], env["ESIGN_S3_SECRET_KEY"],
                                    ports, log_path=logs / "seaweedfs.log", identities=s3_identities)
            print(f"starting SeaweedFS (S3 on 127.0.0.1:{s3_port}; documents and signing each with keys "
                  f"for their own bucket only) ...", flush=True)
            seaweed.start()
        witnesses = _start_witnesses(data, env, logs)
        children.extend((f"witness {w.url}", w.process) for w in witnesses)
        for service in SERVICES:
            log = open(logs / f"{service}.log", "ab")
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "run", service], cwd=REPO_ROOT,
                env=_service_env(env, service, service_uris, s3_identities),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent, start_new_session=True,
            )
            log.close()
            children.append((service, process))
            print(f"started {service} (pid {process.pid}, log {logs / (service + '.log')})", flush=True)

        http = gateway_config.get("HTTP") or {}
        base = f"http://{http.get('HOST', '127.0.0.1')}:{http.get('PORT', 8000)}"
        if not _wait_healthy(base, children, timeout, stopping):
            return 1 if stopping["signal"] is None else 0
        watching = _start_monitoring(data, env, witnesses, gateway_config["AMQP_URI"], logs) if monitoring else None
        if watching is not None:
            children.append(("prometheus", watching.prometheus.process))
        print(f"\nesign is up.\n  gateway:  {base}  (API docs {base}/docs, health {base}/healthz)")
        for service in SERVICES:
            port = (load_config(service).get("METRICS") or {}).get("PORT")
            print(f"  metrics:  http://127.0.0.1:{port}/metrics   ({service})")
        for witness in witnesses:
            print(f"  witness:  {witness.url}  ({witness.key.split('+')[0]}, state {witness.state_dir})")
        print(f"  S3:       {env['ESIGN_S3_ENDPOINT']}\n  data:     {data}")
        for line in watching.summary() if watching is not None else []:
            print("  " + line)
        for line in registry_lines:
            print("  " + line)
        print("Press Ctrl-C to stop.", flush=True)
        while stopping["signal"] is None:
            for service, process in children:
                if process.poll() is not None:
                    print(f"{service} exited with {process.returncode}; stopping everything "
                          f"(see {logs / (service + '.log')})", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop_all(children, seaweed)


def _start_monitoring(data: Path, env: dict[str, str], witnesses: list, amqp_uri: str, logs: Path):
    """Prometheus scraping every process started here (services/common/monitoring.py)."""
    from services.common import monitoring

    ports = {service: (load_config(service).get("METRICS") or {}).get("PORT") for service in SERVICES}
    return monitoring.start_for_platform(data, env, ports, [w.url for w in witnesses], amqp_uri,
                                         logs / "prometheus.log", preexec_fn=_die_with_parent)


def _s3_identities(data: Path, env: dict[str, str]) -> dict[str, S3Identity]:
    """documents' and signing's own S3 keys (generated under <data>/secrets), each
    allowed only its bucket; the administrator's keys stay with esign up."""
    identities = {}
    for service, variable in (("documents", "DOCUMENTS_S3_BUCKET"), ("signing", "SIGNING_S3_BUCKET")):
        bucket = env.get(variable) or str(load_config(service)["S3"]["BUCKET"])
        identities[service] = S3Identity(f"esign-{service}-" + _secret_text(data, f"s3-{service}-access-key")[:12],
                                         _secret_text(data, f"s3-{service}-secret-key"), (bucket,))
    return identities


def _service_env(env: dict[str, str], service: str, amqp_uris: dict[str, str],
                 s3_identities: dict[str, S3Identity]) -> dict[str, str]:
    """A service's environment: its own broker user, and its own S3 keys where it
    stores files (the others get none: the administrator's keys stay with esign up)."""
    own = dict(env, AMQP_URI=amqp_uris[service])
    if service in s3_identities:
        own["ESIGN_S3_ACCESS_KEY"] = s3_identities[service].access_key
        own["ESIGN_S3_SECRET_KEY"] = s3_identities[service].secret_key
    elif s3_identities:
        own.pop("ESIGN_S3_ACCESS_KEY", None)
        own.pop("ESIGN_S3_SECRET_KEY", None)
    return own


def broker_users(admin_uri: str, data: Path, env: dict[str, str]) -> dict[str, str]:
    """Each service's own AMQP URI. ``ESIGN_BROKER_USERS``:

    - ``rabbitmqctl`` (the default): make a RabbitMQ user per service (``esign-identity`` ...,
      prefix ``ESIGN_BROKER_USER_PREFIX``) with the permissions of
      :mod:`services.common.broker_access`, passwords generated under ``<data>/secrets``;
    - ``shared``: every service uses ``AMQP_URI`` as given (development only: any
      service, the gateway included, may then call any RPC).
    """
    from services.common import broker_access

    mode = env.get("ESIGN_BROKER_USERS", "rabbitmqctl")
    if mode == "shared":
        print("ESIGN_BROKER_USERS=shared: every service uses one broker user and may call any RPC "
              "(development only)", file=sys.stderr)
        return {service: admin_uri for service in SERVICES}
    if mode != "rabbitmqctl":
        raise RuntimeError(f"ESIGN_BROKER_USERS: expected rabbitmqctl or shared, found {mode!r}")
    prefix = env.get("ESIGN_BROKER_USER_PREFIX", "esign-")
    vhost = urllib.parse.unquote(urllib.parse.urlsplit(admin_uri).path[1:]) or "/"
    passwords = {service: _secret_text(data, f"amqp-{service}") for service in SERVICES}
    try:
        broker_access.import_definitions(broker_access.definitions(vhost, passwords, prefix))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"could not make the services' broker users with rabbitmqctl ({exc}); run this "
                           f"where rabbitmqctl reaches the broker, or set ESIGN_BROKER_USERS=shared "
                           f"(development only)") from None
    print(f"broker users {prefix}<service> on vhost {vhost!r}: each service may call only its RPCs", flush=True)
    return {service: broker_access.amqp_uri(admin_uri, broker_access.user_name(service, prefix), passwords[service])
            for service in SERVICES}


def _start_witnesses(data: Path, env: dict[str, str], logs: Path) -> list:
    """Two witnesses of the evidence log on this machine (ESIGN_LOCAL_WITNESSES, default 2;
    ports from ESIGN_WITNESS_PORT, default 8201), unless ESIGN_WITNESSES names real ones.
    The signing service is told about them (ESIGN_WITNESSES) and needs all to cosign."""
    import json

    from services.signing.dependencies import load_keys
    from services.witness.local import LocalWitness

    count = int(env.get("ESIGN_LOCAL_WITNESSES", "2"))
    if env.get("ESIGN_WITNESSES") or count <= 0:
        return []
    signing = load_config("signing")
    signing["DATA_DIR"] = str(data)
    log_signer = load_keys(signing).log_signer  # the same key file the signing service will read
    first_port = int(env.get("ESIGN_WITNESS_PORT", "8201"))  # 0: any free ports
    started = []
    for n in range(1, count + 1):
        started.append(LocalWitness.start(data / "witnesses" / f"w{n}", f"witness-{n}.esign.local", log_signer.name,
                                          log_signer.verifier.to_key_string(), port=first_port and first_port + n - 1,
                                          log_path=logs / f"witness-{n}.log", preexec_fn=_die_with_parent,
                                          start_new_session=True))
        print(f"started witness {n} (pid {started[-1].process.pid}, {started[-1].url})", flush=True)
    env["ESIGN_WITNESSES"] = json.dumps([w.config_entry() for w in started])
    return started


def _demo_registry(data: Path) -> list[str]:
    """With the embedded 'registry' authority, a demo registry the newcomer can read (and join)."""
    from services.identity.proofing.demo import ensure_demo_registry
    from services.identity.settings import IdentitySettings

    settings = IdentitySettings.from_config(load_config("identity"))
    if settings.proofing.provider != "registry":
        return [f"identity proofing: {settings.proofing.provider}"]
    return ensure_demo_registry(settings.proofing.registry_file, data / "cache" / "demo-faces")


def _wait_healthy(base: str, children, timeout: float, stopping: dict[str, Any]) -> bool:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline and stopping["signal"] is None:
        for service, process in children:
            if process.poll() is not None:
                print(f"{service} exited with {process.returncode} during start-up; see its log",
                      file=sys.stderr)
                return False
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                if response.status == 200:
                    return True
        except Exception as exc:
            last = str(exc)
        time.sleep(0.5)
    if stopping["signal"] is None:
        print(f"services not healthy after {timeout:.0f}s ({last}); see logs", file=sys.stderr)
    return False


def _stop_all(children, seaweed: SeaweedServer | None) -> None:
    print("\nstopping ...", flush=True)
    for _service, process in children:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    for service, process in children:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{service} did not stop in time; killing it", file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
    if seaweed is not None:
        seaweed.stop()
    print("stopped.", flush=True)
