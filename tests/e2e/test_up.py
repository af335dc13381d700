"""``esign up`` end to end: SeaweedFS and the five services as separate
processes with embedded defaults (SQLite, console SMS), on this run's
RabbitMQ vhost. Health over RPC, metrics moving, Ctrl-C leaving no process
behind in a few seconds, nothing surviving ``esign up`` killed outright, every
piece of state under ``--data-dir``, ports in use refused, and ``esign demo``
signing an IOU on it."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from services.common.s3server import free_port, port_open
from tests.support.esign_up import (
    REPO,
    SERVICES,
    EsignUp,
    get,
    keys_on_the_embedded_token,
    metric_value,
    process_table,
    processes_mentioning,
    sealed_era_data_dir,
)

pytestmark = pytest.mark.e2e


def test_up_runs_everything_and_stops_cleanly(amqp_uri, tmp_path):
    user_prefix = f"esign-up-{uuid.uuid4().hex[:8]}-"
    vhost = amqp_uri.rsplit("/", 1)[1]
    data = tmp_path / "esign-data"
    ports = {f"{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICES}
    gateway_port = free_port()
    env = dict(os.environ, ESIGN_DATA_DIR=str(data), AMQP_URI=amqp_uri, ESIGN_GATEWAY_PORT=str(gateway_port),
               ESIGN_S3_PORT=str(free_port()), ESIGN_PUBLIC_URL=f"http://127.0.0.1:{gateway_port}",
               ESIGN_TSA_URL=f"http://127.0.0.1:{gateway_port}/tsa", ESIGN_WITNESS_PORT="0",
               ESIGN_S3_METRICS_PORT=str(free_port()), ESIGN_BROKER_USER_PREFIX=user_prefix, **ports)
    for name in ("ESIGN_S3_ENDPOINT", "ESIGN_S3_ACCESS_KEY", "ESIGN_S3_SECRET_KEY"):
        env.pop(name, None)
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--timeout", "150"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(output)
        assert "esign is up." in text, text + "".join(
            (data / "logs" / f"{s}.log").read_text(errors="replace")[-2000:] for s in SERVICES
            if (data / "logs" / f"{s}.log").exists())
        assert f"http://127.0.0.1:{gateway_port}" in text
        for name in SERVICES:
            assert f"http://127.0.0.1:{ports[name.upper() + '_METRICS_PORT']}/metrics" in text
        # the embedded authority: a demo registry of synthetic people with photos, and how to join it
        registry = data / "identity-registry" / "registry.yaml"
        assert f"identity registry (the local authority): {registry}" in text
        assert "演示甲  110101199001010015  (obama.jpg)" in text and "esign registry add" in text
        child_pids = [int(pid) for pid in re.findall(r"\(pid (\d+),", text)]
        assert len(child_pids) == 5 + 2  # the services and two witnesses of the evidence log
        # each process with its pid, metrics and log, SeaweedFS's included; each metrics port answers
        table = process_table(text)
        assert set(table) == set(SERVICES) | {"witness-1", "witness-2", "seaweedfs"}
        assert table["documents"]["metrics"] == f"http://127.0.0.1:{ports['DOCUMENTS_METRICS_PORT']}/metrics"
        for name, process in table.items():
            assert Path(process["log"]).is_file() and Path(process["log"]).parent == data / "logs", name
            assert get(process["metrics"])[0] == 200, name
        child_pids.append(table["seaweedfs"]["pid"])
        witness_urls = re.findall(r"witness:  (http://\S+)", text)
        assert len(witness_urls) == 2

        status, body = get(f"http://127.0.0.1:{gateway_port}/healthz")
        assert status == 200, body
        health = json.loads(body)
        assert set(health["services"]) == {"identity", "documents", "signing", "notify"}
        assert all(answer["status"] == "ok" for answer in health["services"].values()), health
        assert health["services"]["signing"]["checks"]["storage"]["ok"] is True

        # every service's own /metrics shows its health RPC counter moving
        before = {}
        for name in ("identity", "documents", "signing", "notify"):
            _, metrics = get(f"http://127.0.0.1:{ports[name.upper() + '_METRICS_PORT']}/metrics")
            before[name] = metric_value(metrics, "esign_entrypoint_calls_total", service=name,
                                        entrypoint="health", outcome="ok")
            assert before[name] >= 1
        get(f"http://127.0.0.1:{gateway_port}/healthz")
        for name in ("identity", "documents", "signing", "notify"):
            _, metrics = get(f"http://127.0.0.1:{ports[name.upper() + '_METRICS_PORT']}/metrics")
            after = metric_value(metrics, "esign_entrypoint_calls_total", service=name,
                                 entrypoint="health", outcome="ok")
            assert after == before[name] + 1
        # the gateway's metrics are on its metrics port only, not on the public one
        _, gateway_metrics = get(f"http://127.0.0.1:{ports['GATEWAY_METRICS_PORT']}/metrics")
        assert metric_value(gateway_metrics, "esign_http_requests_total", route="/healthz") >= 2
        assert get(f"http://127.0.0.1:{gateway_port}/metrics")[0] == 404
        assert processes_mentioning(str(data))  # SeaweedFS and the services run with this data dir
        # the signing service has both witnesses cosign its checkpoints (every 5 s)
        def cosigned() -> int:
            note = json.loads(get(f"http://127.0.0.1:{gateway_port}/api/v1/log/checkpoint")[1])["checkpoint"]
            return sum(line.startswith("— witness-") for line in note.splitlines())

        deadline = time.monotonic() + 30
        while cosigned() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert cosigned() == 2
        # each service is connected to the broker as its own user, with only its own permissions
        assert f"broker users {user_prefix}<service> on vhost '{vhost}'" in text
        connected = subprocess.run(["rabbitmqctl", "-q", "list_connections", "user", "vhost"], capture_output=True,
                                   text=True, check=True).stdout.split("\n")
        users = {line.split("\t")[0] for line in connected if line.endswith("\t" + vhost)}
        assert {user_prefix + name for name in SERVICES} <= users, users
        s3_keys = {}
        for name, pid in re.findall(r"started (\w+) \(pid (\d+),", text):  # and no service logs in as another
            environ = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                           if b"=" in item)
            assert environ[b"AMQP_URI"].decode().startswith(f"pyamqp://{user_prefix}{name}:"), name
            s3_keys[name] = environ.get(b"ESIGN_S3_ACCESS_KEY", b"").decode()
        # documents and signing each with S3 keys of their own (allowed only their bucket); the others none
        assert s3_keys["documents"].startswith("esign-documents-") and s3_keys["signing"].startswith("esign-signing-")
        assert s3_keys["identity"] == s3_keys["notify"] == s3_keys["gateway"] == ""
        # a fresh data directory: identity's and signing's keys on the embedded SoftHSM2 token made there
        assert keys_on_the_embedded_token(data) == [] and "moving them onto" not in text
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            rest, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            rest = ""
        output.append(rest or "")
        for name in SERVICES:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", user_prefix + name], capture_output=True)
    assert up.returncode == 0, "".join(output)
    assert re.search(r"^stopped in \d+\.\d s\.$", "".join(output), re.M)
    time.sleep(0.5)
    leftovers = [pid for pid in child_pids if Path(f"/proc/{pid}").exists()]
    assert leftovers == []
    assert processes_mentioning(str(data)) == []


def test_up_says_clearly_when_rabbitmq_is_down(tmp_path):
    env = dict(os.environ, ESIGN_DATA_DIR=str(tmp_path), AMQP_URI=f"pyamqp://guest:guest@127.0.0.1:{free_port()}/")
    result = subprocess.run([sys.executable, "-m", "services.cli", "up"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "RabbitMQ is not reachable" in lines[0] and "rabbitmq-server -detached" in lines[0]


def files_under(folder: Path) -> dict[str, tuple[int, int]] | None:
    """Every file and folder under ``folder`` with its size and time; None when it does not exist."""
    if not folder.exists():
        return None
    return {str(path): (path.stat().st_size if path.is_file() else -1, path.stat().st_mtime_ns)
            for path in folder.rglob("*")}


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_demo_signs_an_iou_and_every_piece_of_state_stays_in_the_data_dir(amqp_uri, tmp_path):
    """The README's third command: esign demo on esign up --demo, in under a minute; the signed
    PDF valid for pyHanko and esign verify; nothing written under the repository's var/ (the SMS
    outbox stayed there whatever --data-dir said); Ctrl-C then stops it all in a few seconds
    (after use it took 6-19 s, when a service's worker pool hung its stop).

    The data directory is one from when keys were sealed by default (the CA's and the evidence
    log's keys sealed): esign up moves them onto the embedded SoftHSM2 token before anything
    starts, says so, and the demo signs with them there."""
    from tests.support.pdf_validation import pyhanko_statuses

    var_before = files_under(REPO / "var")
    data = tmp_path / "data"
    up = EsignUp(amqp_uri, data)
    sealed_era_data_dir(data, up.env["ESIGN_PUBLIC_URL"])
    up.start("--demo")
    try:
        text = up.wait_up()
        assert "identity: moved onto the embedded token: {\"ca_keys\": {\"moved\": 4}" in text, text
        assert 'signing: moved onto the embedded token: {"log_key": "moved"}' in text, text
        assert keys_on_the_embedded_token(data) == []
        assert "demo:     a photo file stands in for a live face" in text
        assert f"SMS:      {data / 'sms-outbox.jsonl'}" in text
        # a second esign up on the same data directory is refused, and says who holds it
        again = subprocess.run([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data)], cwd=REPO,
                               env=up.env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and f"esign up is already running on {data} (pid {up.process.pid})" in \
            again.stderr, again.stderr

        started = time.monotonic()
        demo = subprocess.run([sys.executable, "-m", "services.cli", "demo", "--data-dir", str(data)], cwd=REPO,
                              env=up.env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - started
        print(f"esign demo took {took:.1f} s")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert took < 60, demo.stdout
        pdf = Path(re.search(r"signed PDF: +(\S+)", demo.stdout).group(1))
        report = Path(re.search(r"signing report: +(\S+)", demo.stdout).group(1))
        root = Path(re.search(r"platform root: +(\S+)", demo.stdout).group(1))
        assert pdf.parent.parent == data / "demo" and report.is_file() and report.with_suffix(".pdf").is_file()
        statuses = pyhanko_statuses(pdf.read_bytes(), root.read_bytes())
        assert [name for name, _ in statuses] == ["sig_lender", "sig_borrower", "DocumentTimestamp"]
        assert all(status.intact and status.valid and status.trusted for _, status in statuses), statuses
        signed_report = json.loads(report.read_text("utf-8"))["report"]
        assert {check["assurance_level"] for check in signed_report["identity_checks"]} == {"authority_face"}
        # the esign verify line it prints checks PDF, report, log proofs and both witnesses, offline
        verify_line = re.search(r"^  (\S*esign verify .*)$", demo.stdout, re.M).group(1)
        verified = subprocess.run([sys.executable, "-m", "services.cli", *shlex.split(verify_line)[1:]], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "2 of 2 configured witnesses cosigned" in verified.stdout
        # each person's codes came to the outbox in the data directory; the demo prints no number
        outbox = [json.loads(line) for line in (data / "sms-outbox.jsonl").read_text("utf-8").splitlines()]
        assert {m["phone"] for m in outbox} == {"13800000001", "13800000002"}
        assert {m["template"] for m in outbox} >= {"phone_code", "willingness_code"}
        for secret in ("13800000001", "13800000002", "110101199001010015", "110101199001010023",
                       *(m["params"]["code"] for m in outbox if "code" in m["params"])):
            assert secret not in demo.stdout + demo.stderr
    finally:
        seconds = up.ctrl_c()
        up.close()
    print(f"esign up stopped {seconds:.1f} s after Ctrl-C (after esign demo)")
    assert up.process.returncode == 0, "".join(up.output)
    assert seconds < 10, "".join(up.output)
    assert "did not stop" not in "".join(up.output)
    assert processes_mentioning(str(data)) == []
    assert files_under(REPO / "var") == var_before  # nothing new, nothing changed (not even an empty var/)
    assert not Path(f"/tmp/seaweedfs-s3-{up.s3_port}.sock").exists()  # SeaweedFS's sockets: in the data dir
    assert not (data / "esign-up.json").exists()  # esign demo now says esign up is not running
    assert (data / "s3").is_dir() and (data / "witnesses").is_dir() and (data / "secrets").is_dir()


def test_nothing_survives_esign_up_killed_outright(amqp_uri, tmp_path):
    """kill -9 of esign up: every child (services, witnesses, SeaweedFS) has a parent-death
    signal and goes within seconds, and the ports are free for the next esign up (SeaweedFS,
    in a session of its own, used to stay on the S3 port, and the next esign up reused it).
    It runs with ESIGN_KEYS_BACKEND=sealed: esign up still starts with every key sealed."""
    data = tmp_path / "data"
    up = EsignUp(amqp_uri, data)
    up.env["ESIGN_KEYS_BACKEND"] = "sealed"  # a machine without a token: keys sealed, as before
    up.start()
    try:
        table = process_table(up.wait_up())
        assert set(table) == set(SERVICES) | {"witness-1", "witness-2", "seaweedfs"}
        assert (data / "secrets" / "evidence-log-key").is_file() and len(list((data / "ca").glob("*-key.sealed"))) == 4
        assert not (data / "softhsm").exists() and not list((data / "ca").glob("*-key.ref"))
        started = time.monotonic()
        up.process.kill()
        up.process.wait(10)
        deadline = started + 15
        while time.monotonic() < deadline and not all(gone(p["pid"]) for p in table.values()):
            time.sleep(0.1)
        took = time.monotonic() - started
        print(f"every child of esign up gone {took:.1f} s after kill -9")
        assert [name for name, p in table.items() if not gone(p["pid"])] == []
        assert took < 10
        assert processes_mentioning(str(data)) == []  # the services' worker processes too
        assert not port_open(up.s3_port) and not port_open(up.gateway_port)
    finally:
        up.close()


def test_up_refuses_a_port_in_use_and_says_how_to_use_an_s3_there(amqp_uri, tmp_path):
    """A server already on the S3 port is not taken silently for the platform's store."""
    data = tmp_path / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        up = EsignUp(amqp_uri, data)
        up.env["ESIGN_S3_PORT"] = str(port)
        refused = subprocess.run([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data)], cwd=REPO,
                                 env=up.env, capture_output=True, text=True, timeout=60)
        up.close()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"port {port}: S3 (ESIGN_S3_PORT)" in refused.stderr
    assert f"--s3-endpoint http://127.0.0.1:{port}" in refused.stderr
    assert "nothing started" in refused.stderr and not (data / "logs").exists()


def test_demo_without_a_platform_says_how_to_start_one(tmp_path):
    done = subprocess.run([sys.executable, "-m", "services.cli", "demo", "--data-dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"esign up is not running on {tmp_path}" in done.stderr and "esign up --demo" in done.stderr
