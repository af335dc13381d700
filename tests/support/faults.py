"""A platform of its own for fault injection (tests/reliability): a private
RabbitMQ node and a private PostgreSQL cluster that a test may stop, kill and
restart without touching the machine's own, a SeaweedFS, and every service as
a separate process (``esign run <service>``) that can be SIGKILLed and started
again. The test drives it over RPC with :class:`ReconnectingRpc`, which, like
a person pressing the button again, meets a fault as an error and can retry.

Nothing here is a stub: the services are the real processes, configured the
way ``esign up`` configures them, on PostgreSQL.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eventlet

from services.common.s3server import SeaweedPorts, SeaweedServer, free_port
from tests.support.stack import REPO, write_stack_registry
from tests.support.waiting import wait_for

SERVICES = ("identity", "documents", "signing", "notify", "gateway")
#: the failpoints a test deployment can arm (services/common/failpoints.py)
FAILPOINTS = ("notify.sms_handed_over", "identity.stamping_a_signature")


def _run(command: list[str], *, env: dict | None = None, timeout: float = 90, user: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    if user and os.geteuid() == 0:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=check)


class PrivateRabbit:
    """A RabbitMQ node of its own (name, ports, Mnesia and logs under ``root``),
    started with the machine's rabbitmq-server. The Debian wrapper runs the node
    as the ``rabbitmq`` user, so its folders belong to that user."""

    def __init__(self, root: Path, name: str):
        self.root = root
        self.node = f"{name}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.env = dict(os.environ, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                        RABBITMQ_DIST_PORT=str(self.dist_port),
                        RABBITMQ_CONFIG_FILE=str(root / "rabbitmq.conf"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=str(root / "enabled_plugins"),
                        RABBITMQ_MNESIA_BASE=str(root / "mnesia"), RABBITMQ_LOG_BASE=str(root / "log"),
                        RABBITMQ_PID_FILE=str(root / "node.pid"))

    @property
    def uri(self) -> str:
        return f"pyamqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> "PrivateRabbit":
        for folder in (self.root / "mnesia", self.root / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("rabbitmq")
                for path in [self.root, *self.root.rglob("*")]:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            except KeyError:
                pass
        _run(["rabbitmq-server", "-detached"], env=self.env)
        self.ctl("wait", str(self.root / "node.pid"), "--timeout", "90", timeout=100)
        return self

    def ctl(self, *args: str, timeout: float = 60) -> str:
        return _run(["rabbitmqctl", "-n", self.node, *args], env=self.env, timeout=timeout).stdout

    def pid(self) -> int | None:
        try:
            return int((self.root / "node.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """A clean stop of the whole node (queues and persistent messages kept on disk)."""
        _run(["rabbitmqctl", "-n", self.node, "stop", str(self.root / "node.pid")], env=self.env, check=False)

    def kill(self) -> None:
        """The node's process SIGKILLed: no chance to flush anything."""
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_gone(pid)
        (self.root / "node.pid").unlink(missing_ok=True)

    def restart(self, hard: bool = False) -> float:
        """Stop (or kill) and start again; returns the seconds the broker was away."""
        began = time.monotonic()
        self.kill() if hard else self.stop()
        self.start()
        return time.monotonic() - began


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb under ``root``, its own port), run as
    the ``postgres`` user when the tests run as root (initdb refuses root)."""

    def __init__(self, root: Path, settings: tuple[str, ...] = ()):
        self.root = root
        self.data = root / "data"
        self.settings = settings  # more ``name=value`` server settings (a benchmark's pg_stat_statements)
        self.port = free_port()
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "PrivatePostgres":
        if not self.data.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            if self.user:
                owner = pwd.getpwnam(self.user)
                os.chown(self.root, owner.pw_uid, owner.pw_gid)
            _run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync"], user=self.user)
        self._ctl("start", "-w", "-l", str(self.root / "postgres.log"), "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
                  + "".join(f" -c {setting}" for setting in self.settings))
        return self

    def _ctl(self, *args: str) -> None:
        _run([str(self.bin / "pg_ctl"), "-D", str(self.data), *args], user=self.user, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode, "-w")

    def restart(self, mode: str = "immediate") -> float:
        """``immediate``: the server stops without a checkpoint, as after a crash (it
        recovers from its WAL at start). Returns the seconds it was away."""
        began = time.monotonic()
        self.stop(mode)
        self.start()
        return time.monotonic() - began

    def query(self, sql: str, *params: Any) -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(self.url, connect_timeout=3)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            connection.close()


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@dataclass
class ServiceProcesses:
    """Every service as its own process, on the private broker, database and S3."""

    root: Path
    rabbit: PrivateRabbit
    postgres: PrivatePostgres
    s3: SeaweedServer
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    gateway_url: str = ""
    sms_outbox: Path = Path()
    #: services a test is stopping and starting itself (the supervisor leaves them alone)
    held: set = field(default_factory=set)
    #: processes that ended on their own and the supervisor started again, by service
    restarted: dict = field(default_factory=dict)
    #: (name, id_number) of more people the registry vouches for (the performer's face), beyond the stack's
    more_people: tuple = ()
    #: settings of the services' environment that replace the test deployment's (a benchmark's)
    overrides: dict = field(default_factory=dict)

    def configure(self) -> None:
        gateway_port = free_port()
        self.gateway_url = f"http://127.0.0.1:{gateway_port}"
        self.sms_outbox = self.root / "sms.jsonl"
        registry = write_stack_registry(self.root / "registry", self.more_people)
        env = dict(os.environ, PYTHONUNBUFFERED="1", AMQP_URI=self.rabbit.uri,
                   ESIGN_DATA_DIR=str(self.root / "data"), ESIGN_GATEWAY_PORT=str(gateway_port),
                   ESIGN_PUBLIC_URL=self.gateway_url, ESIGN_TSA_URL=f"{self.gateway_url}/tsa",
                   ESIGN_S3_ENDPOINT=self.s3.endpoint, ESIGN_S3_ACCESS_KEY=self.s3.access_key,
                   ESIGN_S3_SECRET_KEY=self.s3.secret_key, ESIGN_WITNESSES="[]",
                   IDENTITY_REGISTRY_FILE=str(registry), ESIGN_SMS_PROVIDER="console",
                   ESIGN_SMS_OUTBOX=str(self.sms_outbox), ESIGN_OUTBOX_RELAY_INTERVAL="0.3",
                   ESIGN_RPC_TIMEOUT="15",
                   # one lender and one borrower sign many IOUs in a few minutes
                   NOTIFY_RATE_PER_PHONE_PER_MINUTE="1000", NOTIFY_RATE_PER_PHONE_PER_HOUR="1000",
                   NOTIFY_RATE_PER_PHONE_PER_DAY="1000", NOTIFY_RATE_GLOBAL_LIMIT="1000",
                   # and their willingness codes, which have a budget of their own
                   NOTIFY_RATE_CODES_PER_PHONE_PER_MINUTE="1000", NOTIFY_RATE_CODES_PER_PHONE_PER_HOUR="1000",
                   NOTIFY_RATE_CODES_PER_PHONE_PER_DAY="1000",
                   # a killed notify's attempt is taken as dead after 20 s (the console vendor answers at once)
                   NOTIFY_RETRY_CLAIM_SECONDS="20",
                   ESIGN_FAILPOINTS=",".join(f"{name}={self.failpoint(name)}" for name in FAILPOINTS),
                   SIGNING_OBJECT_LOCK_DAYS="1", SIGNING_S3_BUCKET="esign-signing-locked")
        for service in ("identity", "documents", "signing", "notify"):
            env[f"{service.upper()}_DATABASE_URL"] = self.postgres.url
        for service in SERVICES:
            env[f"{service.upper()}_METRICS_PORT"] = str(free_port())
        for name in ("ESIGN_BROKER_USERS", "ESIGN_BROKER_USER_PREFIX"):
            env.pop(name, None)
        env.update(self.overrides)
        if env.get("ESIGN_KEYS_BACKEND", "pkcs11") == "pkcs11":
            # identity's and signing's embedded SoftHSM2 token (config.yaml's default), made before they
            # start at once, as esign up makes it: two first starts would both make it
            from services.common.keystore.softhsm import ensure_token
            from services.identity.ca_store import DEV_ROOT_TOKEN

            ensure_token(self.root / "data", env.get("ESIGN_TOKEN_LABEL", "esign"))
            ensure_token(self.root / "data", DEV_ROOT_TOKEN)  # identity's development root, on its own token
        self.env = env

    def start(self, service: str) -> subprocess.Popen:
        self.held.discard(service)
        log = open(self.root / f"{service}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "services.cli", "run", service], cwd=REPO, env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        log.close()
        self.processes[service] = process
        return process

    def start_all(self) -> None:
        for service in SERVICES:
            self.start(service)

    def supervise(self, interval: float = 0.5) -> None:
        """What Kubernetes or systemd does: a service process that ended is started again
        (a service exits when it cannot go on, see services/common/runner.py)."""
        while True:
            for service, process in list(self.processes.items()):
                if service not in self.held and process.poll() is not None:
                    self.restarted[service] = self.restarted.get(service, 0) + 1
                    self.start(service)
            eventlet.sleep(interval)

    def kill(self, service: str) -> None:
        self.held.add(service)
        process = self.processes[service]
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its worker pools too
        except ProcessLookupError:
            pass
        process.wait(30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)

    def log_tail(self, service: str, lines: int = 40) -> str:
        path = self.root / f"{service}.log"
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:]) if path.exists() else ""

    def failpoint(self, name: str) -> Path:
        """The file that arms failpoint ``name`` (services/common/failpoints.py) while it exists."""
        return self.root / f"failpoint-{name}"

    def arm(self, name: str) -> Path:
        path = self.failpoint(name)
        path.touch()
        return path

    def sms(self) -> list[dict]:
        if not self.sms_outbox.exists():
            return []
        return [json.loads(line) for line in self.sms_outbox.read_text("utf-8").splitlines() if line.strip()]


def _refused() -> tuple[type[BaseException], ...]:
    from nameko.exceptions import RemoteError

    from services.common.errors import EsignError

    return (RemoteError, EsignError)


#: a service's answer that refuses the call: nameko's RemoteError, or the platform's typed error
#: itself once services.common.errors is imported (it registers its classes with nameko)
REFUSED = _refused()


def error_type(exc: BaseException) -> str:
    """The name of the typed error a service answered with, however it arrived."""
    return getattr(exc, "exc_type", None) or type(exc).__name__


class Unreachable(Exception):
    """The call did not come back (broker away, service down, time-out): whether
    the service did it is unknown; the caller looks before doing it again."""


class _ServiceCalls:
    def __init__(self, rpc: "ReconnectingRpc", service: str):
        self._rpc, self._service = rpc, service

    def __getattr__(self, method: str):
        return lambda **kwargs: self._rpc.call(self._service, method, **kwargs)


class ReconnectingRpc:
    """RPC from the test to the private cluster, one standalone proxy per
    greenthread, made again after any fault; remote errors (the services' typed
    errors) pass through, anything else becomes :class:`Unreachable`."""

    def __init__(self, amqp_uri: str, timeout: float = 20):
        self.config = {"AMQP_URI": amqp_uri}
        self.timeout = timeout
        self._proxies: dict[int, Any] = {}

    def __getattr__(self, service: str) -> _ServiceCalls:
        if service.startswith("_"):
            raise AttributeError(service)
        return _ServiceCalls(self, service)

    def _proxy(self):
        from nameko.standalone.rpc import ClusterRpcProxy

        key = id(eventlet.getcurrent())
        if key not in self._proxies:
            context = ClusterRpcProxy(self.config, timeout=self.timeout)
            self._proxies[key] = (context, context.start())
        return self._proxies[key][1]

    def _drop(self) -> None:
        context, _ = self._proxies.pop(id(eventlet.getcurrent()), (None, None))
        if context is not None:
            try:
                with eventlet.Timeout(5, False):
                    context.stop()
            except Exception:
                pass

    def call(self, service: str, method: str, /, **kwargs):
        try:
            with eventlet.Timeout(self.timeout + 5):
                return getattr(getattr(self._proxy(), service), method)(**kwargs)
        except REFUSED:
            raise
        except (Exception, eventlet.Timeout) as exc:
            self._drop()
            raise Unreachable(f"{service}.{method}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        for context, _ in list(self._proxies.values()):
            try:
                with eventlet.Timeout(5, False):
                    context.stop()
            except Exception:
                pass
        self._proxies.clear()


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_healthy(processes: ServiceProcesses, rpc: ReconnectingRpc, timeout: float = 120) -> None:
    """Every service answers its health RPC with ok, and the gateway /healthz with 200."""
    deadline = time.monotonic() + timeout
    waiting = list(SERVICES)
    while waiting and time.monotonic() < deadline:
        for name, process in processes.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}:\n{processes.log_tail(name)}"
        service = waiting[0]
        try:
            if service == "gateway":
                ok = _get(processes.gateway_url + "/healthz") == 200
            else:
                ok = rpc.call(service, "health")["status"] == "ok"
        except (Unreachable, *REFUSED):
            ok = False
        if ok:
            waiting.pop(0)
        else:
            eventlet.sleep(0.3)
    assert not waiting, f"not healthy after {timeout}s: {waiting}\n{processes.log_tail(waiting[0])}"


@dataclass
class Deployed:
    root: Path
    processes: ServiceProcesses
    rpc: ReconnectingRpc


@contextmanager
def deployed_platform(prefix: str, keep: bool = False, more_people: tuple = (), supervised: bool = True,
                      postgres_settings: tuple[str, ...] = (), overrides: dict | None = None):
    """The platform as deployed, on a broker, database and S3 of its own (see the module), healthy;
    stopped and removed after (``keep``: its folder and logs stay). ``more_people``: (name,
    id_number) the registry vouches for besides the stack's people; ``supervised``: exited
    service processes are started again; ``postgres_settings``: more server settings; ``overrides``:
    settings of the services' environment that replace the test deployment's."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)  # the broker and database run as their own users and need to reach their folders
    rabbit = postgres = s3 = None
    processes = rpc = supervisor = None
    try:
        rabbit, postgres, s3 = make_cluster(root, postgres_settings)
        processes = ServiceProcesses(root, rabbit, postgres, s3, more_people=more_people,
                                     overrides=dict(overrides or {}))
        processes.configure()
        processes.start_all()
        if supervised:
            supervisor = eventlet.spawn(processes.supervise)
        rpc = ReconnectingRpc(rabbit.uri)
        wait_healthy(processes, rpc, timeout=180)
        yield Deployed(root, processes, rpc)
    finally:
        if supervisor is not None:
            supervisor.kill()
        if rpc is not None:
            rpc.close()
        if processes is not None:
            processes.stop_all()
        for part in (s3, postgres, rabbit):
            if part is not None:
                try:
                    part.kill() if part is rabbit else part.stop()
                except Exception:
                    pass
        if keep:
            print(f"platform kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def willingness_code(processes: ServiceProcesses, willingness_id: str, timeout: float = 60) -> str:
    """The SMS code of one willingness check, as its person reads it: identity's check names its code
    challenge, notify's delivery log the vendor message that carried it, the SMS outbox that message."""
    pg = processes.postgres

    def find():
        rows = pg.query("SELECT otp_challenge_id FROM identity.willingness_checks WHERE id = %s", willingness_id)
        if not rows or not rows[0][0]:
            return None
        sent = pg.query("SELECT vendor_message_id FROM notify.sms_messages WHERE ref_type = 'otp' AND ref_id = %s "
                        "AND vendor_message_id IS NOT NULL", rows[0][0])
        if not sent:
            return None
        for message in processes.sms():
            if message["message_id"] == sent[0][0]:
                return message["params"]["code"]
        return None

    code = wait_for(tolerant(find), timeout=timeout, interval=0.2)
    if not code:
        raise Unreachable(f"no SMS code for willingness {willingness_id} in {timeout}s")
    return code


def tolerant(fn):
    """While PostgreSQL restarts, looking finds nothing yet."""
    def call():
        try:
            return fn()
        except Exception:
            return None
    return call



def make_cluster(root: Path, postgres_settings: tuple[str, ...] = ()) -> tuple[PrivateRabbit, PrivatePostgres,
                                                                                SeaweedServer]:
    import secrets

    if not shutil.which("rabbitmq-server"):
        raise RuntimeError("rabbitmq-server not found: the reliability tests start a RabbitMQ node of their own")
    rabbit = PrivateRabbit(root / "rabbitmq", f"esign-faults-{secrets.token_hex(4)}").start()
    postgres = PrivatePostgres(root / "postgres", postgres_settings).start()
    s3 = SeaweedServer(root / "seaweedfs", "faults-" + secrets.token_hex(6), secrets.token_hex(20),
                       SeaweedPorts.free()).start()
    return rabbit, postgres, s3
