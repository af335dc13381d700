"""The platform as deployed, for the benchmarks that measure it over HTTP.

Every service is its own process (``esign run <service>``) on a RabbitMQ
node, a PostgreSQL cluster and a SeaweedFS of the benchmark's own (the
fault-injection harness, tests/support/faults.py, starts them), so a run
measures what a deployment on one machine does and leaves the machine's own
broker and database alone. identity's and signing's private keys are on the
embedded SoftHSM2 token under the platform's data folder, as config.yaml's
default has them (``ESIGN_KEYS_BACKEND=sealed`` in the environment: sealed).
People are registered the way the tests register them (phone code, the
registry vouching for name and ID number, a live face proof, a certificate),
then act over HTTP with their session tokens.

The caller must have run ``eventlet.monkey_patch()`` first.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import eventlet
import requests

from bench.outbox_tail import OutboxTail
from services.common.idnumber import check_character
from tests.support.faults import Deployed, ReconnectingRpc, deployed_platform
from tests.support.stack import Stack, handwriting_png

API = "/api/v1"
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str
    id_number: str
    phone: str
    token: str


def synthetic_people(count: int) -> list[tuple[str, str, str]]:
    """``count`` distinct (name, ID number, phone): valid GB 11643 numbers, mainland mobiles."""
    people = []
    born = dt.date(1970, 1, 1)
    for n in range(count):
        name = _SURNAMES[n % len(_SURNAMES)] + _GIVEN[(n // len(_SURNAMES)) % len(_GIVEN)] + _GIVEN[n % len(_GIVEN)]
        first17 = "110105" + (born + dt.timedelta(days=37 * n)).strftime("%Y%m%d") + f"{n % 1000:03d}"
        people.append((name, first17 + check_character(first17), f"1860000{n:04d}"))
    return people


class OutboxCodes:
    """Each code in the console SMS outbox by its vendor message id, read as the outbox grows."""

    def __init__(self, path: Path):
        self.tail = OutboxTail(path)
        self.codes: dict[str, str] = {}

    def code_of(self, vendor_message_id: str) -> str | None:
        if vendor_message_id not in self.codes:
            for _, message in self.tail.new_messages():
                if "code" in message.get("params", {}):
                    self.codes[message["message_id"]] = message["params"]["code"]
        return self.codes.get(vendor_message_id)


@dataclass
class BenchPlatform:
    deployed: Deployed
    stack: Stack
    people: list[Person]
    outbox: OutboxCodes = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.outbox = OutboxCodes(self.deployed.processes.sms_outbox)

    @property
    def url(self) -> str:
        return self.deployed.processes.gateway_url

    def code(self, willingness_id: str, timeout: float = 60) -> str:
        """The SMS code of a willingness check, as its person reads it (identity's check names its
        challenge, notify's delivery log the vendor message, the outbox that message's code). The
        outbox is read as it grows, not parsed whole on every look (the harness must stay light)."""
        pg = self.deployed.processes.postgres
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = pg.query("SELECT m.vendor_message_id FROM identity.willingness_checks w JOIN "
                            "notify.sms_messages m ON m.ref_type = 'otp' AND m.ref_id = w.otp_challenge_id "
                            "WHERE w.id = %s AND m.vendor_message_id IS NOT NULL", willingness_id)
            if rows:
                code = self.outbox.code_of(rows[0][0])
                if code:
                    return code
            eventlet.sleep(0.05)
        raise RuntimeError(f"no SMS code for willingness {willingness_id} in {timeout}s")

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.deployed.processes.processes.items()}

    def http(self, person: Person) -> "Client":
        return Client(self.url, person.token)


#: what a benchmark runs as deployed, not as the reliability tests do: the outbox relay's round at its
#: default (config.yaml: 1 s), where the tests poll every 0.3 s to see a crash's events sooner
BENCH_OVERRIDES = {"ESIGN_OUTBOX_RELAY_INTERVAL": "1.0"}

#: seconds a set-up RPC may wait (a face proof queued behind others on a loaded machine)
REGISTRATION_RPC_TIMEOUT = 90


@contextmanager
def bench_platform(people: int = 2, keep: bool = False, statements: bool = False) -> Iterator[BenchPlatform]:
    """The deployed platform with ``people`` registered people with certificates; ``statements``:
    PostgreSQL counts its statements (pg_stat_statements, see :func:`statement_counts`).

    Registration is set-up, not what a benchmark measures: two at a time (identity's face pool is one
    process by default, so more at once only queue behind it), through an RPC client that waits for
    that queue (a live face proof costs about 3 s of CPU; four queued on a busy CI machine passed the
    deployment's 20 s RPC time-out once)."""
    wanted = synthetic_people(people)
    with deployed_platform("esign-bench-", keep=keep, more_people=tuple((n, i) for n, i, _ in wanted),
                           supervised=False,
                           postgres_settings=("shared_preload_libraries=pg_stat_statements",) if statements else (),
                           overrides=BENCH_OVERRIDES) as deployed:
        setup_rpc = ReconnectingRpc(deployed.rpc.config["AMQP_URI"], timeout=REGISTRATION_RPC_TIMEOUT)
        stack = Stack(setup_rpc, deployed.processes.sms_outbox, deployed.processes.gateway_url, deployed.root,
                      signing_config={})

        def register(entry) -> Person:
            name, id_number, phone = entry
            person_id = stack.person(name, id_number, phone)
            return Person(person_id, name, id_number, phone, stack.tokens[person_id])

        try:
            registered = list(eventlet.GreenPool(2).imap(register, wanted))
        finally:
            setup_rpc.close()
        stack.rpc = deployed.rpc  # what the benchmark does goes through the deployment's client
        yield BenchPlatform(deployed, stack, registered)


def reset_statement_counts(platform: BenchPlatform) -> None:
    platform.deployed.processes.postgres.query(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()")


def statement_counts(platform: BenchPlatform) -> list[tuple[int, float, str]]:
    """(calls, total execution ms, statement) since :func:`reset_statement_counts`, most called first
    (a platform from ``bench_platform(statements=True)``)."""
    rows = platform.deployed.processes.postgres.query(
        "SELECT calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
        "WHERE position('pg_stat_statements' in query) = 0 ORDER BY calls DESC")
    return [(int(calls), float(ms), text) for calls, ms, text in rows]


class Client:
    """One person's HTTP client (keep-alive), as an app would hold it."""

    def __init__(self, base: str, token: str):
        self.base = base + API
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict | None = None) -> dict:
        answer = self.session.post(self.base + path, data=json.dumps(body or {}),
                                   headers={"Content-Type": "application/json"}, timeout=60)
        if answer.status_code >= 400:
            raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def get(self, path: str) -> dict:
        answer = self.session.get(self.base + path, timeout=60)
        if answer.status_code >= 400:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()


def iou_between(lender: Person, borrower: Person, amount: str = "2000") -> dict:
    """An IOU's values between two registered people (a one-off repayment)."""
    def party(p: Person) -> dict:
        return {"name": p.name, "id_number": p.id_number, "phone": p.phone}

    return {"initiator_role": "出借方", "lender": party(lender), "borrower": party(borrower), "amount": amount,
            "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2027-12-01",
            "repayment_method": "一次性还本付息", "remark": ""}


SIGNATURE_IMAGE = handwriting_png()
