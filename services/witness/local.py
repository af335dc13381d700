"""Witnesses on this machine, for ``esign up`` and the tests: a state
directory made once (key, the platform log's key registered) and a
``esign witness run`` process per witness.

On one machine they show the protocol working end to end; they are not
independent of the platform (the same operator runs them). Real
independence needs witnesses run by others: see :mod:`services.witness`.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from services.witness.config import KEY_FILE, LOGS_FILE, add_log, init_state_dir, load_signer, read_logs

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"witness (\S+) listening on (http://\S+)")


def prepare(state_dir: Path, name: str, origin: str, log_key: str) -> str:
    """Make the witness's state directory if needed and make it trust the log's
    key for ``origin``; answers the witness's verifier key."""
    if not (state_dir / KEY_FILE).exists():
        init_state_dir(state_dir, name)
    if log_key not in read_logs(state_dir / LOGS_FILE).key_strings().get(origin, []):
        add_log(state_dir, origin, log_key)
    return load_signer(state_dir).verifier.to_key_string()


@dataclass
class LocalWitness:
    """A running ``esign witness run`` process."""

    state_dir: Path
    key: str
    process: subprocess.Popen
    url: str

    @classmethod
    def start(cls, state_dir: Path, name: str, origin: str, log_key: str, port: int = 0,
              log_path: Path | None = None, timeout: float = 30.0, **popen) -> "LocalWitness":
        key = prepare(state_dir, name, origin, log_key)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # never a pipe nobody reads
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "witness", "run", "--state-dir", str(state_dir),
             "--listen", f"127.0.0.1:{port}"], cwd=REPO, stdout=subprocess.PIPE, stderr=out, text=True, **popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            found = LISTENING.search(line or "")
            if found:
                witness = cls(state_dir, key, process, found.group(2))
                witness.wait_healthy(deadline - time.monotonic())
                return witness
            if process.poll() is not None:
                break
        process.kill()
        raise RuntimeError(f"witness in {state_dir} did not start (exit {process.poll()})")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def config_entry(self) -> dict:
        """This witness as the signing service's WITNESSES.LIST takes it."""
        return {"url": self.url, "key": self.key}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
