"""``esign up`` as the e2e tests start it (tests/e2e/test_up.py, test_replicas.py): free ports, its
own data directory, and what they read back (the summary's process table, metrics, /proc)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.common.s3server import free_port

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("identity", "documents", "signing", "notify", "gateway")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def processes_mentioning(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline or marker in environ:
            found.append(int(entry.name))
    return found


def process_table(summary: str) -> dict[str, dict]:
    """The "esign is up" summary's process lines: name -> pid, metrics URL, log path."""
    return {name: {"pid": int(pid), "metrics": metrics, "log": log} for name, pid, metrics, log in
            re.findall(r"^  (\S+) +pid (\d+) +metrics (\S+) +log (\S+)$", summary, re.M)}


def sealed_era_data_dir(data: Path, public_url: str) -> None:
    """A data directory as identity's and signing's first starts left it when ``sealed`` was the
    default (before the embedded SoftHSM2 token was): the development CA with its keys sealed in
    ``<data>/ca`` (``<role>-key.sealed``), the evidence log's key as the secret file
    ``<data>/secrets/evidence-log-key``, and the KEKs they are sealed under. Made in this process
    by the services' own code, with ``KEYS.BACKEND`` sealed (no token is touched here)."""
    from services.identity.ca_store import open_ca
    from services.identity.secrets import load_keys
    from services.signing.dependencies import log_verifier

    sealed = {"BACKEND": "sealed"}
    identity = {"DATA_DIR": str(data), "PUBLIC_URL": public_url, "SECRETS": {"GENERATE_MISSING": True},
                "KEYS": sealed}
    open_ca(identity, load_keys(identity).keyring)
    log_verifier({"DATA_DIR": str(data), "SECRETS": {"GENERATE_MISSING": True}, "KEYS": sealed})


def keys_on_the_embedded_token(data: Path) -> list[str]:
    """What of a data directory's keys is not where the embedded token puts them (``esign up``'s
    default): the CA's keys named by refs, none sealed; the log key's ref, no sealed file; the
    token under ``<data>/softhsm``. Empty when all is so."""
    problems = []
    ca_keys = sorted(path.name for path in (data / "ca").glob("*-key.*"))
    if ca_keys != ["issuing-key.ref", "ocsp-key.ref", "service-key.ref", "tsa-key.ref"]:
        problems.append(f"CA keys: {ca_keys}")
    secrets = data / "secrets"
    if (secrets / "evidence-log-key").exists() or not (secrets / "evidence-log-key.ref").is_file():
        problems.append("the evidence log's key is not (only) on the token")
    tokens = data / "softhsm" / "tokens"
    if not tokens.is_dir() or not any(tokens.iterdir()) or not (secrets / "softhsm-esign-pin").is_file():
        problems.append(f"no SoftHSM2 token in {tokens}")
    return problems


class EsignUp:
    """``esign up`` as a test starts it: free ports, its own data directory given with
    ``--data-dir`` (not ESIGN_DATA_DIR), one broker user for all (the first test covers
    the per-service users)."""

    def __init__(self, amqp_uri: str, data: Path):
        self.data = data
        self.gateway_port, self.s3_port = free_port(), free_port()
        self.env = dict(os.environ, AMQP_URI=amqp_uri, ESIGN_GATEWAY_PORT=str(self.gateway_port),
                        ESIGN_S3_PORT=str(self.s3_port), ESIGN_S3_METRICS_PORT=str(free_port()),
                        ESIGN_PUBLIC_URL=f"http://127.0.0.1:{self.gateway_port}",
                        ESIGN_TSA_URL=f"http://127.0.0.1:{self.gateway_port}/tsa", ESIGN_WITNESS_PORT="0",
                        ESIGN_BROKER_USERS="shared",
                        **{f"{name.upper()}_METRICS_PORT": str(free_port()) for name in SERVICES})
        for name in ("ESIGN_DATA_DIR", "ESIGN_S3_ENDPOINT", "ESIGN_S3_ACCESS_KEY", "ESIGN_S3_SECRET_KEY",
                     "ESIGN_SMS_OUTBOX"):
            self.env.pop(name, None)
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    def start(self, *args: str) -> "EsignUp":
        self.process = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--timeout", "150",
                                         "--data-dir", str(self.data), *args], cwd=REPO, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return self

    def wait_up(self) -> str:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if "Press Ctrl-C to stop." in line:
                break
        text = "".join(self.output)
        assert "esign is up." in text, text + "".join(
            (self.data / "logs" / f"{s}.log").read_text(errors="replace")[-2000:] for s in SERVICES
            if (self.data / "logs" / f"{s}.log").exists())
        return text

    def ctrl_c(self) -> float:
        """SIGINT, as a terminal's Ctrl-C sends it; seconds until esign up has exited."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            rest, _ = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            rest, _ = self.process.communicate()
        self.output.append(rest or "")
        return time.monotonic() - started

    def close(self) -> None:
        """Whatever a failed test left running: esign up, then its children (its process group)."""
        if self.process is not None and self.process.poll() is None:
            self.ctrl_c()
        for pid in processes_mentioning(str(self.data)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
