"""Root conftest: eventlet must patch the standard library before anything
imports socket, threading or ssl (nameko's containers are eventlet greenthreads).

Shared fixtures for tests that talk to real systems:

- ``amqp_uri``: a RabbitMQ virtual host made for this test run and deleted
  after it, so no message left by an earlier run can satisfy a test (as the
  broker's administrator, guest, which the tests' own proxies use);
- ``amqp_users``: on that vhost, one RabbitMQ user per service with the
  permissions of services.common.broker_access, as deployed; every service a
  test starts connects as its own user;
- ``pg_url`` / ``db_url``: PostgreSQL on this machine (schemas made per test
  and dropped), and SQLite files, for tests parametrised over both;
- ``s3``: a SeaweedFS started for the run on free ports with random keys;
- ``service_config`` / ``run_container``: configs and running nameko containers.
"""
import eventlet

eventlet.monkey_patch()

import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

RUN_ID = uuid.uuid4().hex[:8]


def _consume_checking_often():
    """The containers the tests start in this process notice a stop within 0.1 s
    instead of kombu's 1 s between checks: each consumer of a container waits for
    that check when the container stops, seconds per test (the services' own
    processes keep kombu's default)."""
    from kombu.mixins import ConsumerMixin

    consume = ConsumerMixin.consume

    def often(self, limit=None, timeout=None, safety_interval=0.1, **kwargs):
        return consume(self, limit=limit, timeout=timeout, safety_interval=min(safety_interval, 0.1), **kwargs)

    ConsumerMixin.consume = often


_consume_checking_often()


def _reuse_pool_workers():
    """The many containers the tests start and stop in this process share their pools'
    worker processes (services/common/offload.py: reuse_workers_between_pools): a stopped
    documents container's render workers serve the next one instead of two new ones each
    importing reportlab and pyHanko (about 2 s of CPU each, over a hundred times a run)."""
    from services.common import offload

    offload.reuse_workers_between_pools()


_reuse_pool_workers()
PG_URL = os.environ.get("ESIGN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
RABBIT_HOST = os.environ.get("ESIGN_TEST_RABBIT", "guest:guest@127.0.0.1:5672")


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_uri():
    """A fresh RabbitMQ vhost for this run (rabbitmqctl; CI runs as root)."""
    if not shutil.which("rabbitmqctl"):
        pytest.fail("rabbitmqctl not found: the integration tests need a local RabbitMQ")
    vhost = f"esign-test-{RUN_ID}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, RABBIT_HOST.split(":")[0], ".*", ".*", ".*")
    yield f"pyamqp://{RABBIT_HOST}/{vhost}"
    try:
        _rabbitmqctl("delete_vhost", vhost)
    except subprocess.SubprocessError:
        pass


@pytest.fixture(scope="session")
def amqp_users(amqp_uri):
    """``{service: AMQP URI}``: each service's own user on the run's vhost."""
    from services.common import broker_access

    vhost = amqp_uri.rsplit("/", 1)[1]
    _forget_users_of_gone_runs()
    prefix = f"esign-test-{RUN_ID}-"
    passwords = {service: secrets.token_urlsafe(16) for service in broker_access.CLIENTS}
    broker_access.import_definitions(broker_access.definitions(vhost, passwords, prefix))
    yield {service: broker_access.amqp_uri(amqp_uri, broker_access.user_name(service, prefix), password)
           for service, password in passwords.items()}
    _delete_users([broker_access.user_name(service, prefix) for service in passwords])


def _delete_users(names: list[str]) -> None:
    """All at once: each rabbitmqctl starts an Erlang node of its own, seconds apiece."""
    running = [subprocess.Popen(["rabbitmqctl", "-q", "delete_user", name], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for name in names]
    for process in running:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def _forget_users_of_gone_runs() -> None:
    """Users an interrupted run left behind (its vhost is gone): deleted, so they do not pile up."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, timeout=60)
    users = subprocess.run(["rabbitmqctl", "-q", "list_users"], capture_output=True, text=True, timeout=60)
    if listed.returncode or users.returncode:
        return
    vhosts = set(listed.stdout.split())
    gone = []
    for line in users.stdout.splitlines():
        name = line.split("\t")[0]
        run = name[len("esign-test-"):].split("-")[0] if name.startswith("esign-test-") else None
        if run and f"esign-test-{run}" not in vhosts:
            gone.append(name)
    _delete_users(gone)


@pytest.fixture
def dispatch_as(amqp_uri, amqp_users):
    """``dispatch_as(source)(source, event_type, payload)``: publish an event as the
    service that owns it would (its broker user may publish only its own events)."""
    from nameko.standalone.events import event_dispatcher

    return lambda source: event_dispatcher({"AMQP_URI": amqp_users.get(source, amqp_uri)})


class SchemaPool:
    """PostgreSQL schemas handed out to tests, dropped at the end of the run."""

    def __init__(self, url: str):
        self.url = url
        self.schemas: list[str] = []

    def new(self, prefix: str) -> str:
        name = f"{prefix}_{RUN_ID}_{len(self.schemas)}"
        self.schemas.append(name)
        return name

    def drop_all(self) -> None:
        from sqlalchemy import create_engine, text

        from services.common.database import normalise_url

        engine = create_engine(normalise_url(self.url))
        # one transaction per schema: dropping hundreds of schemas at once takes a lock per
        # object and runs out of PostgreSQL's lock table (max_locks_per_transaction)
        for schema in self.schemas:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session")
def pg_schemas():
    pool = SchemaPool(PG_URL)
    yield pool
    pool.drop_all()


def _database_settings(backend: str, service: str, pg_schemas: SchemaPool, tmp_path: Path) -> dict:
    """A service's DATABASE config: a fresh PostgreSQL schema or a SQLite file."""
    if backend == "postgresql":
        return {"URL": PG_URL, "SCHEMA": pg_schemas.new(service)}
    return {"URL": f"sqlite:///{tmp_path / (service + '.db')}", "SCHEMA": None}


@pytest.fixture(params=["postgresql", "sqlite"])
def db_backend(request):
    return request.param


@pytest.fixture
def db_url_for(db_backend, pg_schemas, tmp_path):
    """``db_url_for(service) -> (url, schema)`` on the parametrised backend."""

    def make(service: str):
        database = _database_settings(db_backend, service, pg_schemas, tmp_path)
        return database["URL"], database["SCHEMA"]

    return make


#: the buckets each storing service may use in this run (signing's Object Lock tests use a second one)
S3_BUCKETS = {"documents": (f"esign-documents-{RUN_ID}",),
              "signing": (f"esign-signing-{RUN_ID}", f"esign-signing-{RUN_ID}-locked")}


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """SeaweedFS for the run: the administrator's keys (tests' own stores), and an
    identity per storing service allowed only its buckets (S3_BUCKETS)."""
    from services.common.s3server import S3Identity, SeaweedPorts, SeaweedServer

    identities = {service: S3Identity(f"{service}-" + secrets.token_hex(6), secrets.token_hex(20), buckets)
                  for service, buckets in S3_BUCKETS.items()}
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"), "test-" + secrets.token_hex(8),
                           secrets.token_hex(20), SeaweedPorts.free(), identities=identities)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def service_config(amqp_uri, amqp_users, pg_schemas, s3, softhsm_home, tmp_path):
    """``service_config(service, backend="postgresql", **overrides) -> dict``; a
    platform service connects to the broker as its own user. identity and signing
    keep their keys on the process's SoftHSM2 token, as their config.yaml's default
    does, under label prefixes of this test's own (tests/support/softhsm.py); a test
    about sealed keys passes ``KEYS=SEALED_KEYS``."""
    from tests.support.softhsm import pkcs11_keys

    run = uuid.uuid4().hex[:10]  # one per test: a service configured twice finds its keys again

    def make(service: str, backend: str = "postgresql", **overrides):
        database = _database_settings(backend, service, pg_schemas, tmp_path)
        config = {
            "AMQP_URI": amqp_users.get(service, amqp_uri),
            "DATA_DIR": str(tmp_path / "data"),
            "max_workers": 10,
            "DATABASE": database,
            # the relay is the safety net for a publish that failed after its commit: polled at
            # the deployed default, not 5 times a second by each of the containers a test runs
            "OUTBOX": {"RELAY_INTERVAL": 1.0},
            "METRICS": {"PORT": 0},
            "S3": {"ENDPOINT": s3.endpoint, "BUCKET": f"esign-{service}-{RUN_ID}", "VERSIONING": service == "signing",
                   # a storing service uses its own S3 identity, allowed only its buckets
                   "ACCESS_KEY": s3.identities[service].access_key if service in s3.identities else s3.access_key,
                   "SECRET_KEY": s3.identities[service].secret_key if service in s3.identities else s3.secret_key},
            "SECRETS": {"GENERATE_MISSING": True},  # generated under DATA_DIR/secrets
        }
        if service in ("identity", "signing"):
            config["KEYS"] = pkcs11_keys(softhsm_home, service, run)
        config.update(overrides)
        return config

    return make


@pytest.fixture(scope="session")
def softhsm_home(tmp_path_factory):
    """The SoftHSM2 token home of this test process (tests/support/softhsm.py): every test that
    uses a PKCS#11 token uses this one, which SoftHSM2 reads once per process."""
    from services.common.keystore.softhsm import CONF_ENV
    from tests.support.softhsm import token_home

    before = os.environ.get(CONF_ENV)
    yield token_home(tmp_path_factory.mktemp("softhsm"))
    if before is None:
        os.environ.pop(CONF_ENV, None)
    else:
        os.environ[CONF_ENV] = before


@pytest.fixture
def run_container():
    """Start nameko containers in this process; all are stopped at teardown."""
    from nameko.containers import ServiceContainer

    containers = []

    def start(service_cls, config):
        container = ServiceContainer(service_cls, config)
        container.start()
        containers.append(container)
        return container

    yield start
    # all at once: each stop mostly waits for its consumers to notice, seconds per container in a row
    stopping = [eventlet.spawn(container.stop) for container in reversed(containers)]
    for thread in stopping:
        thread.wait()


@pytest.fixture
def rpc_proxy(amqp_uri):
    """A standalone RPC proxy on the test vhost (one per test)."""
    from nameko.standalone.rpc import ClusterRpcProxy

    context = ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=30)
    proxy = context.start()
    yield proxy
    context.stop()



def pytest_sessionfinish(session, exitstatus):
    """Every test is over: stop the worker processes a test's pool left running. An idle worker of
    a pool nobody shut down kept the interpreter's exit waiting for good (seen once, after a run
    whose 1862 tests had all passed)."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()


def pytest_addoption(parser):
    parser.addoption("--shard", default=None, metavar="K/N",
                     help="run only every Nth collected test, starting at the Kth (0-based): "
                          "tests/support/parallel.py runs N of these processes at once")


#: a test's cost in seconds by folder, where tests/shard_weights.json does not know its module
SHARD_WEIGHTS = {"bench": 34.0, "e2e": 20.0, "reliability": 35.0, "integration": 2.4, "unit": 0.1}
#: a module lighter than this (seconds) runs in one shard: split, it would pay its imports and
#: first calls (fonts, models, key generation) once in every shard
KEEP_WHOLE_BELOW = 10.0
#: measured seconds per module (``ESIGN_TEST_RECORD_WEIGHTS=1 ./dev test`` writes it): ``{module: [seconds, tests]}``
WEIGHTS_FILE = Path(__file__).parent / "shard_weights.json"


def _measured_weights() -> dict[str, float]:
    """Seconds per test of each module, from the last recorded run."""
    import json

    try:
        recorded = json.loads(WEIGHTS_FILE.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {module: seconds / tests for module, (seconds, tests) in recorded.items() if tests}


def _shares_a_module_fixture(item) -> bool:
    """Whether the test uses a fixture made once per module (or class): its module's tests stay together."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values())


def shard_items(items: list, k: int, n: int) -> list:
    """The tests shard ``k`` of ``n`` runs. Each test, or each whole module where its tests share a
    module fixture (a platform started once for them, never twice) or where the module weighs less
    than KEEP_WHOLE_BELOW, or each group of modules that share what their process keeps (SHARD_TOGETHER
    in tests/support/parallel.py), goes to the shard with the least weight so far (seconds: WEIGHTS_FILE as
    measured, else SHARD_WEIGHTS), the heaviest first; a shard runs its tests in collection order."""
    from tests.support.parallel import shard_group

    measured = _measured_weights()

    def per_test(module: str) -> float:
        folder = module.split("/")[1] if module.startswith("tests/") else ""
        return measured.get(module, SHARD_WEIGHTS.get(folder, 1.0))

    sizes: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        sizes[module] = sizes.get(module, 0) + 1
    units: list[list] = []
    grouped: dict[str, list] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        together = shard_group(module)  # modules that share what their process keeps (tests/support/parallel.py)
        if together or _shares_a_module_fixture(item) or per_test(module) * sizes[module] < KEEP_WHOLE_BELOW:
            group = together or module
            if group not in grouped:
                grouped[group] = []
                units.append(grouped[group])
            grouped[group].append(item)
        else:
            units.append([item])

    def weight(unit: list) -> float:
        return sum(per_test(item.nodeid.split("::")[0]) for item in unit)

    # the heaviest first, each to the lightest shard so far; each shard then runs in collection order
    loads = [0] * n
    mine = set()
    for unit in sorted(units, key=weight, reverse=True):
        target = loads.index(min(loads))
        loads[target] += weight(unit)
        if target == k:
            mine.update(map(id, unit))
    return [item for item in items if id(item) in mine]


def pytest_collection_modifyitems(config, items):
    """``--shard K/N``: this process runs its share of the tests (:func:`shard_items`)."""
    shard = config.getoption("--shard")
    if not shard:
        return
    k, n = (int(part) for part in shard.split("/"))
    if not 0 <= k < n:
        raise pytest.UsageError(f"--shard {shard}: expected K/N with 0 <= K < N")
    kept = shard_items(items, k, n)
    chosen = set(map(id, kept))
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in chosen])
    items[:] = kept


def pytest_runtest_logreport(report):
    """With ESIGN_TEST_DURATIONS (a file; tests/support/parallel.py sets it), each module's seconds are counted."""
    if os.environ.get("ESIGN_TEST_DURATIONS"):
        module = report.nodeid.split("::")[0]
        seconds, tests = _DURATIONS.get(module, (0.0, 0))
        _DURATIONS[module] = (seconds + report.duration, tests + (report.when == "call"))


_DURATIONS: dict[str, tuple[float, int]] = {}


def pytest_unconfigure(config):
    from services.common import offload

    offload.close_parked_workers()
    path = os.environ.get("ESIGN_TEST_DURATIONS")
    if path and _DURATIONS:
        import json

        Path(path).write_text(json.dumps({module: [round(seconds, 2), tests]
                                          for module, (seconds, tests) in sorted(_DURATIONS.items())}))
