"""The witness as a process, killed with SIGKILL at random moments.

``python -m services.cli witness run`` serves a state directory; a client feeds
it the checkpoints of a growing evidence log (services.signing.evidence_log on
a MemoryLogStore) in a tight loop, with consistency proofs from the size it
believes the witness has, and now and then a refused request (a stale old size:
409; a proof with a flipped bit: 422). A timer SIGKILLs the witness at a random
moment, mid-request or not; it is restarted on the same directory. Each time:

* the state on disk opens and passes SQLite's integrity check, and its note
  verifies under the log's key and the witness's own cosignature key, with the
  root the log really has at that size — never torn;
* its size is never below the largest size for which the client received a
  cosignature (a 200 is only sent after the commit is durable);
* after a restart the client learns the witness's size from a 409 and goes on
  being cosigned;
* a refused request leaves the cosigned state exactly as it was (a 422 for a
  bad proof of a validly signed checkpoint adds only a misbehaviour record).

No RabbitMQ or database server: only the witness process and SQLite.
"""
from __future__ import annotations

import http.client
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.signing.checkpoint import Checkpoint, NoteSigner, open_note
from services.signing.evidence_log import EvidenceLog, MemoryLogStore
from services.witness.cosignature import CosignatureVerifier
from services.witness.protocol import format_add_checkpoint, parse_size_answer
from services.witness.state import WitnessState

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KILLS = 6
LISTENING = re.compile(r"witness (\S+) listening on http://([0-9.]+):(\d+)")


def esign(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


class WitnessProcess:
    def __init__(self, state_dir: Path, log_file: Path):
        self.out = open(log_file, "ab")
        start = self.out.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "witness", "run", "--state-dir", str(state_dir),
             "--listen", "127.0.0.1:0"],
            cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            text = log_file.read_bytes()[start:].decode(errors="replace")
            found = LISTENING.search(text)
            if found:
                self.host, self.port = found.group(2), int(found.group(3))
                return
            assert self.proc.poll() is None, f"witness exited: {text}"
            assert time.monotonic() < deadline, f"witness did not start: {text}"
            time.sleep(0.02)

    def post(self, body: bytes) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("POST", "/add-checkpoint", body=body)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        finally:
            conn.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    def wait(self) -> int:
        code = self.proc.wait(timeout=30)
        self.out.close()
        return code


def read_cosigned(path: Path, origin: str) -> tuple | None:
    """The cosigned row, read as a bystander (read-only, no lock taken)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT size, root_hash, note, cosigned_at FROM cosigned WHERE origin = ?",
                          (origin,)).fetchone()
    finally:
        db.close()


def check_on_disk(path: Path, origin: str, log: EvidenceLog, witness_key: CosignatureVerifier, at_least: int) -> int:
    state = WitnessState(path)
    try:
        state.check_integrity()
        latest = state.latest(origin)
    finally:
        state.close()
    if latest is None:
        assert at_least == 0
        return 0
    assert latest.size >= at_least, f"witness rolled back to {latest.size}, a cosignature for {at_least} was returned"
    text = open_note(latest.note, [log.verifier()]).text
    assert open_note(latest.note, [witness_key]).text == text
    checkpoint = Checkpoint.from_body(text)
    assert (checkpoint.size, checkpoint.root_hash) == (latest.size, latest.root_hash)
    assert checkpoint.root_hash == log.root(latest.size)
    return latest.size


@pytest.mark.timeout(180)
def test_witness_survives_sigkill_without_tearing_or_rolling_back(tmp_path):
    rng = random.Random(int(os.environ.get("WITNESS_KILL_SEED", "0")) or None)
    state_dir = tmp_path / "witness"
    witness_key = CosignatureVerifier.from_key_string(
        esign("witness", "init", "--state-dir", str(state_dir), "--name", "witness.test/w1").strip()
    )
    log = EvidenceLog(MemoryLogStore(), NoteSigner.generate("esign.test/evidence-log"))
    esign("witness", "add-log", "--state-dir", str(state_dir), "--origin", log.origin, "--key", log.public_key())
    db_path = state_dir / "state.db"

    client_size = 0  # what the client believes the witness has cosigned
    max_returned = 0  # the largest size a cosignature was returned for
    stats = {"cosigned": 0, "conflict": 0, "refused": 0, "cut": 0, "cut_after_commit": 0}

    for cycle in range(KILLS + 1):
        witness = WitnessProcess(state_dir, tmp_path / "witness.log")
        cosigned_this_run = 0
        killer = None
        cut_size = None  # the size of a request the kill cut short, if it could have been cosigned
        while True:
            for _ in range(rng.randint(1, 3)):
                log.append({"flow_id": f"flow-{rng.randint(1, 9)}", "event_type": "flow_signed",
                            "timestamp": "2026-01-01T00:00:00+00:00"})
            note, size = log.checkpoint(), log.size()
            proof = list(log.consistency_proof(client_size, size).hashes) if client_size else []
            injected = None
            if client_size and rng.random() < 0.1:
                injected, old = "stale", client_size - 1
            elif proof and rng.random() < 0.1:
                injected, old = "bad_proof", client_size
                proof[0] = bytes([proof[0][0] ^ 0x80]) + proof[0][1:]
            else:
                old = client_size
            before = read_cosigned(db_path, log.origin)
            try:
                status, content_type, body = witness.post(format_add_checkpoint(old, proof, note))
            except (OSError, http.client.HTTPException):
                stats["cut"] += 1
                cut_size = size if injected is None else None
                break  # killed (or being killed) mid-request
            if status == 200:
                assert injected is None
                witness_key.verify_line(note[: note.index("\n\n") + 1], body.decode())
                client_size, max_returned = size, max(max_returned, size)
                stats["cosigned"] += 1
                cosigned_this_run += 1
                if killer is None and cycle < KILLS:
                    # once this run has shown it continues, kill it at a random moment
                    killer = threading.Timer(rng.uniform(0.01, 0.4), witness.kill)
                    killer.start()
            elif status == 409:
                assert content_type == "text/x.tlog.size"
                client_size = parse_size_answer(body)
                assert read_cosigned(db_path, log.origin) == before
                stats["conflict"] += 1
            else:
                assert (status, injected) == (422, "bad_proof"), (status, body)
                assert read_cosigned(db_path, log.origin) == before
                stats["refused"] += 1
            if cycle == KILLS and cosigned_this_run >= 20:
                break
        if cycle == KILLS:
            os.kill(witness.proc.pid, signal.SIGTERM)
            assert witness.wait() == 0, "SIGTERM stops the witness cleanly"
        else:
            assert witness.wait() == -signal.SIGKILL
        assert cosigned_this_run > 0, f"run {cycle} never cosigned after the restart"
        on_disk = check_on_disk(db_path, log.origin, log, witness_key, max_returned)
        # the last answered cosignature, or the cut request's if it was committed before the kill
        assert on_disk in (max_returned, cut_size), (on_disk, max_returned, cut_size)
        stats["cut_after_commit"] += on_disk == cut_size != max_returned

    print(f"witness SIGKILL test: {KILLS} kills, {stats}, final size {max_returned}")
    assert stats["cosigned"] > KILLS and stats["conflict"] > 0
