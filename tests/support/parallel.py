"""``./dev test``: pytest in several processes at once, one per core by default.

Each process runs every Nth collected test (``--shard K/N``, tests/conftest.py)
with its own temporary folder; every process makes its own RabbitMQ vhost,
PostgreSQL schemas and SeaweedFS (tests/conftest.py names them by run), so they
share nothing but the machine. Their output is printed as it comes, each line
prefixed with its shard, then a summary; the command fails if any shard failed.

``ESIGN_TEST_JOBS`` sets the number of processes (default: the machine's cores,
at most 4); 1 runs plain pytest. The shards are balanced by each module's
seconds as last measured (tests/shard_weights.json); ``ESIGN_TEST_RECORD_WEIGHTS=1``
writes that file anew from a run in which every shard passed. A run of a selection (``./dev test
tests/unit``, the inner loop) has the property tests try a third of their examples
(tests/support/properties.py); the whole suite, as CI runs it, tries them all.
pytest-xdist is not used: its execnet channels do not survive eventlet's monkey
patching, which every test process needs.

Usage: ``python -m tests.support.parallel [pytest arguments]``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.support.properties import FEWER
from tests.support.properties import VARIABLE as PROPERTY_EXAMPLES

WEIGHTS = Path(__file__).resolve().parents[1] / "shard_weights.json"
#: modules that run in one shard together (tests/conftest.py ``shard_items``): they share what their
#: process keeps, paid once in one shard instead of once in each. The face tests' engines share one set
#: of dlib models and every picture dlib has seen (tests/support/faces.py): the four modules took
#: 29.5 s of CPU in one process, 37 s split between two.
SHARD_TOGETHER = (
    ("tests/unit/identity/test_faces.py", "tests/unit/identity/test_liveness.py",
     "tests/unit/identity/test_proofing_registry.py", "tests/unit/identity/test_proofing_tencent.py"),
)
#: pytest's answer when a shard got no test at all (a selection smaller than the shards)
NO_TESTS_COLLECTED = 5


def jobs() -> int:
    wanted = os.environ.get("ESIGN_TEST_JOBS")
    if wanted is not None:
        try:
            count = int(wanted)
        except ValueError:
            sys.exit(f"ESIGN_TEST_JOBS={wanted!r}: expected a whole number of processes")
        if count < 1:
            sys.exit(f"ESIGN_TEST_JOBS={wanted!r}: expected at least 1")
        return count
    return max(1, min(4, len(os.sched_getaffinity(0))))


def _copy(stream, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.buffer.write(prefix.encode() + line)
            sys.stdout.buffer.flush()


def a_selection(args: list[str]) -> bool:
    """Whether ``args`` name tests (a path, a node id, ``-k``, ``-m``): not the whole suite."""
    return any(not arg.startswith("-") or arg in ("-k", "-m") or arg.startswith(("-k=", "-m=")) for arg in args)


def run(args: list[str], count: int) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if a_selection(args):  # the inner loop: property tests try fewer examples (tests/support/properties.py)
        os.environ.setdefault(PROPERTY_EXAMPLES, FEWER)
    if count == 1 or any(arg == "--shard" or arg.startswith("--shard=") for arg in args):
        return subprocess.call([*pytest, *args])
    base = tempfile.mkdtemp(prefix="esign-test-")
    lock = threading.Lock()
    started = time.monotonic()
    processes, copiers = [], []
    for k in range(count):
        process = subprocess.Popen([*pytest, *args, f"--shard={k}/{count}", f"--basetemp={base}/shard-{k}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, ESIGN_TEST_SHARD=f"{k}/{count}",
                                            ESIGN_TEST_DURATIONS=f"{base}/durations-{k}.json"))
        processes.append(process)
        copier = threading.Thread(target=_copy, args=(process.stdout, f"[{k + 1}/{count}] ", lock), daemon=True)
        copier.start()
        copiers.append(copier)
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        codes = [process.wait() for process in processes]
    for copier in copiers:
        copier.join(10)
    minutes = (time.monotonic() - started) / 60
    if any(codes):  # kept to be read: each shard's tmp_path folders
        print(f"\n{count} shards in {minutes:.1f} min, exit codes {codes} (their files under {base})", flush=True)
    else:
        print(f"\n{count} shards in {minutes:.1f} min, all passed", flush=True)
        if os.environ.get("ESIGN_TEST_RECORD_WEIGHTS"):
            record_weights([Path(base) / f"durations-{k}.json" for k in range(count)])
        shutil.rmtree(base, ignore_errors=True)
    ran = [code for code in codes if code != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return next((code for code in ran if code != 0), 0)


def shard_group(module: str) -> str | None:
    """The name of the modules ``module`` runs in one shard with (SHARD_TOGETHER), or None."""
    for together in SHARD_TOGETHER:
        if module in together:
            return together[0]
    return None


def record_weights(files: list[Path]) -> None:
    """Each module's seconds and tests, summed over the shards, into tests/shard_weights.json
    (modules this run did not reach keep their last figures)."""
    weights = json.loads(WEIGHTS.read_text("utf-8")) if WEIGHTS.exists() else {}
    run: dict[str, list] = {}  # a module split between shards: its parts summed
    for file in files:
        if file.exists():
            for module, (seconds, tests) in json.loads(file.read_text("utf-8")).items():
                total = run.setdefault(module, [0.0, 0])
                total[0], total[1] = round(total[0] + seconds, 2), total[1] + tests
    weights.update(run)
    lines = [f"{json.dumps(module)}: {json.dumps(figures)}" for module, figures in sorted(weights.items())]
    WEIGHTS.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"module weights recorded in {WEIGHTS}", flush=True)


def main(argv: list[str]) -> int:
    return run(argv, jobs())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
