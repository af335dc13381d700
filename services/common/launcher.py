"""``esign up``: the whole platform on one machine with embedded defaults.

SeaweedFS, two local witnesses and each service run as separate processes;
this process waits until all are healthy, prints where each one is (pid, log,
metrics), and on Ctrl-C (or SIGTERM) stops every child and waits for it, so
nothing is left behind.

Nothing survives ``esign up`` killed outright either: every child is started
from the main thread with a parent-death signal
(:mod:`services.common.child_process`), and each in a session of its own, so
a Ctrl-C in the terminal reaches ``esign up`` alone, which stops the children
in order (the services first, the S3 store they write to last).

Every piece of state is under the data directory (``--data-dir``, default
``var/``): the SQLite files, secrets, CA, S3 data, witnesses, logs, caches and
the console SMS outbox. A port already in use is refused before anything
starts, the S3 port included: a server there is used only when named
(``--s3-endpoint`` or ``ESIGN_S3_ENDPOINT``), never picked up silently.

identity's and signing's private keys are on the embedded SoftHSM2 token under
the data directory (config.yaml's default); a data directory from when they
were sealed by default has them moved onto it before anything starts
(:func:`keys_onto_embedded_token`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from services.common import up_state
from services.common.child_process import die_with_parent
from services.common.config import REPO_ROOT, load_config, read_secret
from services.common.config import data_dir as config_data_dir
from services.common.database import database_url, normalise_url
from services.common.errors import InvalidInput
from services.common.s3server import S3Identity, SeaweedPorts, SeaweedServer, free_port, port_open

SERVICES = ("identity", "documents", "signing", "notify", "gateway")
#: what ``esign up --demo`` changes: a photo file proves a face (no liveness), and signing takes
#: that level. Certificates and reports then state authority_face, as they must.
DEMO_SETTINGS = {"IDENTITY_LIVENESS_REQUIRED": "false", "SIGNING_REQUIRED_ASSURANCE": "authority_face"}
#: how long the children have to stop before they are killed (a service gives up its own graceful
#: stop after 15 s: services/common/runner.py)
STOP_SECONDS = 20.0


class CannotStart(RuntimeError):
    """``esign up`` refuses to start; the message says what is wrong and what to do."""


class PortsInUse(CannotStart):
    """A port one of its processes would listen on is taken; the message names each."""


#: most processes ``--scale`` starts of one service on one machine
MAX_REPLICAS = 8


def parse_scale(text: str) -> dict[str, int]:
    """``--scale signing=2,identity=2``: processes per service (any of SERVICES; default 1).
    A bad entry is an InvalidInput naming ``--scale`` and the rule it breaks."""
    counts: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, equals, count = entry.partition("=")
        name = name.strip()
        if not equals:
            raise InvalidInput("--scale", "format", f"expected service=count, found {entry!r}")
        if name not in SERVICES:
            raise InvalidInput("--scale", "service", f"expected one of {', '.join(SERVICES)}, found {name!r}")
        if name in counts:
            raise InvalidInput("--scale", "unique", f"{name} is given twice")
        try:
            counts[name] = int(count.strip())
        except ValueError:
            raise InvalidInput("--scale", "integer", f"{name}: expected a whole number, found {count!r}") from None
        if not 1 <= counts[name] <= MAX_REPLICAS:
            raise InvalidInput("--scale", "range", f"{name}: expected 1 to {MAX_REPLICAS}, found {counts[name]}")
    return counts


def _refuse_scaled_sqlite(options: UpOptions) -> None:
    """Replicas of a service share its database: SQLite is one process's (its locks do not take
    rows, and a second writer waits or fails), so a service scaled out needs PostgreSQL."""
    lonely = [service for service in SERVICES if service != "gateway" and options.replicas(service) > 1
              and normalise_url(database_url(load_config(service), service)).startswith("sqlite")]
    if lonely:
        raise CannotStart("esign up --scale: " + ", ".join(
            f"{service}={options.replicas(service)} needs a database its processes share: set "
            f"{service.upper()}_DATABASE_URL to PostgreSQL (e.g. postgresql://esign@127.0.0.1/esign)"
            for service in lonely) + "; SQLite serves one process")


def _refuse_scaled_embedded_token(options: UpOptions, data: Path) -> None:
    """Replicas of identity or of signing would share the embedded SoftHSM2 token's files, and a
    key one process made was not found by the other in the replicas test (``key_missing``, twice
    in a row, not reproduced outside the services): a service scaled out keeps its keys on an HSM
    its processes share, or sealed under its KEK."""
    from services.common.key_migration import SERVICES as KEY_HOLDERS  # identity, signing
    from services.common.keystore import PKCS11
    from services.common.keystore.settings import KeyStoreSettings

    shared = []
    for service in KEY_HOLDERS:
        if options.replicas(service) <= 1:
            continue
        try:
            settings = KeyStoreSettings.from_config(dict(load_config(service), DATA_DIR=str(data)))
        except InvalidInput as exc:
            raise CannotStart(f"{service}: {exc}") from None
        if settings.backend == PKCS11 and settings.pkcs11.embedded:
            shared.append(service)
    if shared:
        raise CannotStart("esign up --scale: " + ", ".join(
            f"{service}={options.replicas(service)} keeps its keys on the embedded SoftHSM2 token, which "
            f"one process per service uses" for service in shared)
            + ": name an HSM its processes share (ESIGN_TOKEN_EMBEDDED=false, ESIGN_PKCS11_MODULE, ...) or keep"
            " the keys sealed (ESIGN_KEYS_BACKEND=sealed)")


@dataclass(frozen=True)
class UpOptions:
    """What ``esign up``'s command line chose (everything else is configuration)."""

    data_dir: str | None = None
    timeout: float = 120.0  # seconds for every process to be healthy
    s3_endpoint: str | None = None  # an S3 server already running, named by the user: no SeaweedFS
    demo: bool = False  # DEMO_SETTINGS, for esign demo
    monitoring: bool = False  # Prometheus scraping every process (services/common/monitoring.py)
    scale: Mapping[str, int] = field(default_factory=dict)  # processes of a service (parse_scale); default 1

    def replicas(self, service: str) -> int:
        return self.scale.get(service, 1)


@dataclass
class Child:
    """A process this ``esign up`` started, and what the summary says of it."""

    name: str
    process: subprocess.Popen
    log: Path
    metrics: str | None = None
    serves: str | None = None
    #: how to start it again (a service's process: esign up restarts one that dies)
    restart: Callable[[], subprocess.Popen] | None = None
    restarts: list[float] = field(default_factory=list)  # when it was restarted (monotonic)

    def record(self) -> up_state.Process:
        return up_state.Process(self.name, self.process.pid, str(self.log), self.metrics, self.serves)


@dataclass
class Children:
    """Every child in start order (witnesses, services), and SeaweedFS, which stops last."""

    items: list[Child] = field(default_factory=list)
    seaweed: SeaweedServer | None = None

    def add(self, child: Child) -> Child:
        self.items.append(child)
        return child

    def first_exited(self) -> Child | None:
        return next((c for c in self.items if c.process.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM to every service and witness at once, then SeaweedFS once they are gone.

        The signal goes to each child itself, not to its process group: a service stops the
        worker processes of its pools on its own, once their running jobs are done (signalled
        too, they died under it, and its stop hung: services/common/offload.py). Only a child
        still running after STOP_SECONDS is killed, with its whole group."""
        print("\nstopping ...", flush=True)
        started = time.monotonic()
        for child in self.items:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = started + STOP_SECONDS
        for child in self.items:
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{child.name} did not stop in {STOP_SECONDS:.0f} s; killing it (see {child.log})",
                      file=sys.stderr)
                try:
                    os.killpg(child.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                child.process.wait(5)
        if self.seaweed is not None:
            self.seaweed.stop()
        print(f"stopped in {time.monotonic() - started:.1f} s.", flush=True)


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


def up(options: UpOptions) -> int:
    if options.data_dir:
        os.environ["ESIGN_DATA_DIR"] = str(Path(options.data_dir).resolve())
    if options.demo:
        os.environ.update(DEMO_SETTINGS)  # before any config is read: the identity registry's too
    gateway_config = load_config("gateway")
    data = config_data_dir(gateway_config)
    problem = rabbitmq_problem(gateway_config["AMQP_URI"])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        lock = up_state.hold(data)
    except up_state.AlreadyRunning as exc:
        print(exc, file=sys.stderr)
        return 2
    with lock:
        try:
            return _up(options, gateway_config, data)
        except CannotStart as exc:
            print(exc, file=sys.stderr)
            return 2
        finally:
            up_state.withdraw(data)


def _up(options: UpOptions, gateway_config: dict, data: Path) -> int:
    stopping: dict[str, Any] = {"signal": None}

    def _on_signal(signum, _frame):
        stopping["signal"] = signum

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    env = dict(os.environ, ESIGN_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    _refuse_scaled_sqlite(options)
    _refuse_scaled_embedded_token(options, data)
    s3 = _s3_plan(options, env)
    _refuse_ports_in_use(_fixed_ports(gateway_config, env, s3, options.monitoring))
    from services.common.key_migration import SERVICES as KEY_HOLDERS  # identity, signing

    keys_onto_embedded_token({service: dict(load_config(service), DATA_DIR=str(data)) for service in KEY_HOLDERS})
    try:
        service_uris = broker_users(gateway_config["AMQP_URI"], data, env)
    except RuntimeError as exc:
        raise CannotStart(str(exc)) from None
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    registry_lines = _demo_registry(data)
    if stopping["signal"] is not None:
        return 0
    http = gateway_config.get("HTTP") or {}
    base = f"http://{http.get('HOST', '127.0.0.1')}:{http.get('PORT', 8000)}"
    children = Children()
    try:
        try:
            s3_identities = _start_seaweed(data, env, s3, logs, children)
            witnesses = _start_witnesses(data, env, logs, children)
        except RuntimeError as exc:  # did not start: what it said, and where its log is
            raise CannotStart(str(exc)) from None
        for service in SERVICES:
            for replica in range(1, options.replicas(service) + 1):
                child = children.add(_spawn_service(service, replica, options.replicas(service),
                                                    _service_env(env, service, service_uris, s3_identities),
                                                    logs, base))
                print(f"started {child.name} (pid {child.process.pid}, log {child.log})", flush=True)
        if not _wait_healthy(base, children, options.timeout, stopping):
            return 1 if stopping["signal"] is None else 0
        watching = _start_monitoring(data, env, witnesses, gateway_config["AMQP_URI"], logs, children) \
            if options.monitoring else None
        platform = up_state.RunningPlatform(
            pid=os.getpid(), data_dir=str(data), gateway=base, sms_outbox=_sms_outbox(),
            registry_file=_registry_file(), demo=options.demo,
            witness_keys=tuple(w.key for w in witnesses),
            processes=tuple(c.record() for c in children.items)
            + ((_seaweed_record(children.seaweed),) if children.seaweed else ()))
        print(_summary(platform, witnesses, s3["endpoint"],
                       (watching.summary() if watching is not None else []) + registry_lines), flush=True)
        up_state.publish(data, platform)
        print("Press Ctrl-C to stop.", flush=True)
        while stopping["signal"] is None:
            exited = children.first_exited()
            if exited is not None:
                if not _restarted(exited):
                    print(f"{exited.name} exited with {exited.process.returncode}; stopping everything "
                          f"(see {exited.log})", file=sys.stderr)
                    return 1
                platform = dataclasses.replace(platform, processes=tuple(c.record() for c in children.items)
                                               + platform.processes[len(children.items):])
                up_state.publish(data, platform)  # its new pid
            time.sleep(0.5)
        return 0
    finally:
        children.stop()


#: a service process that dies is started again, unless it died this often within RESTART_WINDOW
MAX_RESTARTS, RESTART_WINDOW = 3, 60.0


def _restarted(child: Child) -> bool:
    """Start a service's process again after it died (killed, out of memory ...): the others of
    the platform keep working, and a request its death interrupted was either answered or seen to
    fail by its client (RabbitMQ hands an unanswered RPC to another replica). False when the child
    is not a service's, or when it keeps dying: then esign up stops everything."""
    now = time.monotonic()
    child.restarts[:] = [at for at in child.restarts if now - at < RESTART_WINDOW]
    if child.restart is None or len(child.restarts) >= MAX_RESTARTS:
        return False
    code = child.process.returncode
    child.process = child.restart()
    child.restarts.append(now)
    print(f"{child.name} exited with {code}; started it again (pid {child.process.pid}, "
          f"{len(child.restarts)} of {MAX_RESTARTS} restarts a minute; see {child.log})", file=sys.stderr, flush=True)
    return True


def _spawn_service(service: str, replica: int, replicas: int, env: dict[str, str], logs: Path, base: str) -> Child:
    """Process ``replica`` of ``service`` (named ``signing``, ``signing-2`` ...). Every replica consumes
    the service's queues; the first keeps the configured metrics port, the others get free ones.
    Gateways share their HTTP port (HTTP.REUSE_PORT: the kernel spreads the connections)."""
    env = dict(env)
    variable = f"{service.upper()}_METRICS_PORT"
    if replica > 1:
        env[variable] = str(free_port())
    port = env.get(variable) or (load_config(service).get("METRICS") or {}).get("PORT")
    if service == "gateway" and replicas > 1:
        env["ESIGN_GATEWAY_REUSE_PORT"] = "true"
    name = service if replica == 1 else f"{service}-{replica}"
    argv = [sys.executable, "-m", "services.cli", "run", service]
    child = _spawn(name, argv, env, logs, metrics=f"http://127.0.0.1:{port}/metrics" if port else None,
                   serves=base if service == "gateway" else None)
    child.restart = lambda: _spawn(name, argv, env, logs).process
    return child


def _spawn(name: str, argv: list[str], env: dict[str, str], logs: Path, metrics: str | None = None,
           serves: str | None = None) -> Child:
    """A child in a session of its own that dies with this process (its log: ``<logs>/<name>.log``)."""
    _require_main_thread()
    log_path = logs / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, preexec_fn=die_with_parent(), start_new_session=True)
    return Child(name, process, log_path, metrics, serves)


def _require_main_thread() -> None:
    """The parent-death signal fires when the *thread* that forked a child ends, not its process:
    a child started from another thread would be stopped when that thread returns."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("esign up starts its children from the main thread only")


# -- keys --------------------------------------------------------------------------------------
def keys_onto_embedded_token(configs: Mapping[str, dict]) -> dict[str, dict]:
    """Before anything starts: where a service's ``KEYS`` is the embedded SoftHSM2 token
    (``BACKEND`` pkcs11 with ``EMBEDDED``, config.yaml's default), the sealed keys of a data
    directory made when sealed was the default are moved onto the token, by the code of
    ``esign keys migrate --to pkcs11`` (signing refuses a sealed log key on pkcs11, and a new
    key would break the witnesses' trust). They are found from files alone
    (:func:`~services.common.key_migration.sealed_leftovers`), so a start with nothing sealed
    costs a few ``stat`` calls and one ``softhsm2-util --show-slots``: the token is made here
    (:func:`~services.common.keystore.softhsm.ensure_token`, nothing activated in this process)
    before the services start, so they never race to make it. Never for a configured HSM
    (``EMBEDDED`` false): moving keys onto it is the operator's step, and the service's own
    refusal says which. ``configs``: the config of each service, by name; what moved is printed
    and returned, by service."""
    import shutil

    from services.common import key_migration
    from services.common.keystore import PKCS11
    from services.common.keystore.settings import KeyStoreSettings
    from services.common.keystore.softhsm import UTIL, SoftHsmUnavailable, ensure_token

    moved, made = {}, set()
    for service, config in configs.items():
        try:
            settings = KeyStoreSettings.from_config(config)
        except InvalidInput as exc:  # the service would stop on it too: said once, before anything starts
            raise CannotStart(f"{service}: {exc}") from None
        if settings.backend != PKCS11 or not settings.pkcs11.embedded:
            continue
        if shutil.which(UTIL) is None:
            raise CannotStart(f"{service} keeps its keys on the embedded SoftHSM2 token (KEYS.BACKEND pkcs11), "
                              f"but {UTIL} is not installed: ./dev bootstrap installs it (apt-get install "
                              "softhsm2), or start with ESIGN_KEYS_BACKEND=sealed (keys sealed under the KEK)")
        token = (str(settings.pkcs11.embedded_dir or config_data_dir(config)), settings.pkcs11.token.token_label)
        wanted = [token]
        if service == "identity":  # and the development root's token, while identity has its dev CA to make
            from services.identity.ca_store import development_tokens

            wanted += [(token[0], label) for label in development_tokens(config)]
        for each in wanted:
            if each not in made:  # made here, once: identity and signing starting at once would both make it
                try:
                    ensure_token(*each)
                except (SoftHsmUnavailable, OSError, ValueError) as exc:
                    raise CannotStart(f"{service}: the embedded SoftHSM2 token {each[1]}: {exc}") from None
                made.add(each)
        found = key_migration.sealed_leftovers(service, config)
        if not found:
            continue
        print(f"{service}: sealed keys of an earlier data directory ({', '.join(found)}): moving them onto "
              f"the embedded SoftHSM2 token (esign keys migrate --to pkcs11) ...", flush=True)
        try:
            result = key_migration.migrate_service(service, config)
        except Exception as exc:  # noqa: BLE001 - said by kind and words (no key or PIN is in them); nothing started
            raise CannotStart(f"esign up: moving {service}'s sealed keys onto the embedded token failed "
                              f"({type(exc).__name__}: {exc}); nothing was started. What moved stays moved and "
                              f"the next esign up (or 'esign keys migrate --to pkcs11 --service {service}') "
                              "finishes the rest; '--check' counts it") from None
        moved[service] = result
        summary = {key: value for key, value in result.items() if key not in ("service", "to", "dry_run")}
        print(f"{service}: moved onto the embedded token: {json.dumps(summary, sort_keys=True)}", flush=True)
        if "remove" in result:
            print(f"{service}: the sealed log key is still given by {result['remove']}: remove it", file=sys.stderr,
                  flush=True)
    return moved


# -- S3 ----------------------------------------------------------------------------------------
def _s3_plan(options: UpOptions, env: dict[str, str]) -> dict[str, Any]:
    """Where S3 is: a SeaweedFS this process starts (``ESIGN_S3_PORT``, default 8333), or the
    server the user named (``--s3-endpoint`` or ``ESIGN_S3_ENDPOINT``) with its keys."""
    external = options.s3_endpoint or os.environ.get("ESIGN_S3_ENDPOINT")
    if external:
        missing = [name for name in ("ESIGN_S3_ACCESS_KEY", "ESIGN_S3_SECRET_KEY") if not env.get(name)]
        if missing:
            raise CannotStart(f"the S3 server at {external} needs its keys: set {' and '.join(missing)}")
        env["ESIGN_S3_ENDPOINT"] = external
        return {"endpoint": external, "port": None, "metrics_port": None}
    port = int(env.get("ESIGN_S3_PORT", "8333"))
    metrics_port = int(env.get("ESIGN_S3_METRICS_PORT") or 0) or free_port()  # 0: any free port (printed)
    env["ESIGN_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
    data = Path(env["ESIGN_DATA_DIR"])
    env.setdefault("ESIGN_S3_ACCESS_KEY", "esign-" + _secret_text(data, "s3-access-key")[:16])
    env.setdefault("ESIGN_S3_SECRET_KEY", _secret_text(data, "s3-secret-key"))
    return {"endpoint": env["ESIGN_S3_ENDPOINT"], "port": port, "metrics_port": metrics_port}


def _start_seaweed(data: Path, env: dict[str, str], s3: dict[str, Any], logs: Path,
                   children: Children) -> dict[str, S3Identity]:
    if s3["port"] is None:
        print(f"S3: the server at {s3['endpoint']} (not started here); documents and signing use the keys "
              f"given (ESIGN_S3_ACCESS_KEY), one for both", flush=True)
        return {}
    _require_main_thread()
    ports = SeaweedPorts.free()  # its internal ports; S3 and metrics are fixed
    ports.s3, ports.metrics = s3["port"], s3["metrics_port"]
    identities = _s3_identities(data, env)
    children.seaweed = SeaweedServer(data / "s3", env["ESIGN_S3_ACCESS_KEY"], env["ESIGN_S3_SECRET_KEY"],
                                     ports, log_path=logs / "seaweedfs.log", identities=identities)
    print(f"starting SeaweedFS (S3 on 127.0.0.1:{ports.s3}; documents and signing each with keys "
          f"for their own bucket only) ...", flush=True)
    children.seaweed.start()
    return identities


def _seaweed_record(seaweed: SeaweedServer) -> up_state.Process:
    metrics = f"http://127.0.0.1:{seaweed.ports.metrics}/metrics" if seaweed.ports.metrics else None
    return up_state.Process("seaweedfs", seaweed.process.pid, str(seaweed.log_path), metrics, seaweed.endpoint)


def _s3_identities(data: Path, env: dict[str, str]) -> dict[str, S3Identity]:
    """documents' and signing's own S3 keys (generated under <data>/secrets), each
    allowed only its bucket; the administrator's keys stay with esign up."""
    identities = {}
    for service, variable in (("documents", "DOCUMENTS_S3_BUCKET"), ("signing", "SIGNING_S3_BUCKET")):
        bucket = env.get(variable) or str(load_config(service)["S3"]["BUCKET"])
        identities[service] = S3Identity(f"esign-{service}-" + _secret_text(data, f"s3-{service}-access-key")[:12],
                                         _secret_text(data, f"s3-{service}-secret-key"), (bucket,))
    return identities


# -- ports -------------------------------------------------------------------------------------
def _fixed_ports(gateway_config: dict, env: dict[str, str], s3: dict[str, Any], monitoring: bool) -> dict[int, str]:
    """Every port a process of this platform will listen on that is not chosen free at start."""
    http = gateway_config.get("HTTP") or {}
    ports = {int(http.get("PORT", 8000)): "the gateway (ESIGN_GATEWAY_PORT)"}
    for service in SERVICES:
        port = (load_config(service).get("METRICS") or {}).get("PORT")
        if port:
            ports[int(port)] = f"{service}'s metrics ({service.upper()}_METRICS_PORT)"
    if s3["port"] is not None:
        ports[s3["port"]] = "S3 (ESIGN_S3_PORT)"
        if s3["metrics_port"]:
            ports[s3["metrics_port"]] = "SeaweedFS's metrics (ESIGN_S3_METRICS_PORT)"
    first = int(env.get("ESIGN_WITNESS_PORT", "8201"))
    if first and not env.get("ESIGN_WITNESSES"):
        for n in range(int(env.get("ESIGN_LOCAL_WITNESSES", "2"))):
            ports[first + n] = f"witness {n + 1} (ESIGN_WITNESS_PORT + {n})"
    prometheus = int(env.get("ESIGN_PROMETHEUS_PORT") or "9090")  # 0: any free port
    if monitoring and prometheus:
        ports[prometheus] = "Prometheus (ESIGN_PROMETHEUS_PORT)"
    return ports


def _refuse_ports_in_use(ports: dict[int, str]) -> None:
    busy = {port: what for port, what in sorted(ports.items()) if port_open(port)}
    if not busy:
        return
    lines = [f"  port {port}: {what}" for port, what in busy.items()]
    advice = ("Another program listens there (an earlier esign up's process left running?): stop it, "
              "or set the variable named to a free port.")
    s3_port = next((port for port, what in busy.items() if what.startswith("S3 ")), None)
    if s3_port is not None:
        advice += (f" To use an S3 server already running there, name it: --s3-endpoint "
                   f"http://127.0.0.1:{s3_port} with its keys in ESIGN_S3_ACCESS_KEY and ESIGN_S3_SECRET_KEY.")
    raise PortsInUse("esign up: ports already in use, nothing started:\n" + "\n".join(lines) + "\n" + advice)


# -- processes ---------------------------------------------------------------------------------
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


def _start_witnesses(data: Path, env: dict[str, str], logs: Path, children: Children) -> list:
    """Two witnesses of the evidence log on this machine (ESIGN_LOCAL_WITNESSES, default 2;
    ports from ESIGN_WITNESS_PORT, default 8201), unless ESIGN_WITNESSES names real ones.
    The signing service is told about them (ESIGN_WITNESSES) and needs all to cosign."""
    from services.signing.dependencies import log_verifier
    from services.witness.local import LocalWitness

    count = int(env.get("ESIGN_LOCAL_WITNESSES", "2"))
    if env.get("ESIGN_WITNESSES") or count <= 0:
        return []
    _require_main_thread()
    signing = load_config("signing")
    signing["DATA_DIR"] = str(data)
    verifier = log_verifier(signing)  # the key the signing service will sign with (on the token, or sealed)
    first_port = int(env.get("ESIGN_WITNESS_PORT", "8201"))  # 0: any free ports
    started = []
    for n in range(1, count + 1):
        log = logs / f"witness-{n}.log"
        witness = LocalWitness.start(data / "witnesses" / f"w{n}", f"witness-{n}.esign.local", verifier.name,
                                     verifier.to_key_string(), port=first_port and first_port + n - 1,
                                     log_path=log, preexec_fn=die_with_parent(), start_new_session=True)
        started.append(witness)
        children.add(Child(f"witness-{n}", witness.process, log, f"{witness.url}/metrics", witness.url))
        print(f"started witness {n} (pid {witness.process.pid}, {witness.url})", flush=True)
    env["ESIGN_WITNESSES"] = json.dumps([w.config_entry() for w in started])
    return started


def _start_monitoring(data: Path, env: dict[str, str], witnesses: list, amqp_uri: str, logs: Path,
                      children: Children):
    """Prometheus scraping every process started here (services/common/monitoring.py), once
    they are healthy; it is a child like the others."""
    from services.common import monitoring

    _require_main_thread()
    ports: dict[str, list[int]] = {}
    for child in children.items:
        service = child.name.split("-")[0]
        if service in SERVICES and child.metrics:
            ports.setdefault(service, []).append(urllib.parse.urlsplit(child.metrics).port)
    watching = monitoring.start_for_platform(data, env, ports, [w.url for w in witnesses], amqp_uri,
                                             logs / "prometheus.log", preexec_fn=die_with_parent())
    prometheus = watching.prometheus
    children.add(Child("prometheus", prometheus.process, prometheus.log_path, f"{prometheus.url}/metrics",
                       prometheus.url))
    return watching


def _demo_registry(data: Path) -> list[str]:
    """With the embedded 'registry' authority, a demo registry the newcomer can read (and join)."""
    from services.identity.proofing.demo import ensure_demo_registry
    from services.identity.settings import IdentitySettings

    settings = IdentitySettings.from_config(load_config("identity"))
    if settings.proofing.provider != "registry":
        return [f"identity proofing: {settings.proofing.provider}"]
    return ensure_demo_registry(settings.proofing.registry_file, data / "cache" / "demo-faces")


def _registry_file() -> str | None:
    from services.identity.settings import IdentitySettings

    proofing = IdentitySettings.from_config(load_config("identity")).proofing
    return str(proofing.registry_file) if proofing.provider == "registry" and proofing.registry_file else None


def _sms_outbox() -> str | None:
    from services.notify.settings import console_outbox

    outbox = console_outbox(load_config("notify"))
    return str(outbox) if outbox else None


def _wait_healthy(base: str, children: Children, timeout: float, stopping: dict[str, Any]) -> bool:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline and stopping["signal"] is None:
        exited = children.first_exited()
        if exited is not None:
            print(f"{exited.name} exited with {exited.process.returncode} during start-up; see {exited.log}",
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
        print(f"services not healthy after {timeout:.0f}s ({last}); see the logs in {children.items[-1].log.parent}",
              file=sys.stderr)
    return False


def _summary(platform: up_state.RunningPlatform, witnesses: list, s3_endpoint: str,
             registry_lines: list[str]) -> str:
    base = platform.gateway
    lines = ["", "esign is up.", f"  gateway:  {base}  (API docs {base}/docs, health {base}/healthz)"]
    width = max(len(p.name) for p in platform.processes)
    for process in platform.processes:
        lines.append(f"  {process.name:<{width}}  pid {process.pid:<7}  metrics {process.metrics or '-':<38}  "
                     f"log {process.log}")
    for witness in witnesses:
        lines.append(f"  witness:  {witness.url}  ({witness.key.split('+')[0]}, state {witness.state_dir})")
    lines.append(f"  S3:       {s3_endpoint}")
    if platform.sms_outbox:
        lines.append(f"  SMS:      {platform.sms_outbox}  (the console provider: one JSON line a message)")
    lines.append(f"  data:     {platform.data_dir}")
    if platform.demo:
        lines.append("  demo:     a photo file stands in for a live face (IDENTITY_LIVENESS_REQUIRED=false, "
                     "SIGNING_REQUIRED_ASSURANCE=authority_face),")
        lines.append("            and certificates and reports say so (authority_face): never for real people. "
                     "Now run: .venv/bin/esign demo")
    lines.extend("  " + line for line in registry_lines)
    return "\n".join(lines)
