"""``./dev test``: pytest in several processes at once, one per core.

Each process runs every Nth collected test (``--shard K/N``, tests/conftest.py)
with its own temporary folder; every process makes its own RabbitMQ vhost,
PostgreSQL schemas and SeaweedFS (tests/conftest.py names them by run), so they
share nothing but the machine. Their output is printed as it comes, each line
prefixed with its shard, then a summary; the command fails if any shard failed.

``ESIGN_TEST_JOBS`` sets the number of processes (default: the machine's cores,
at most 4); 1 runs plain pytest. pytest-xdist is not used: its execnet channels
do not survive eventlet's monkey patching, which every test process needs.

Usage: ``python -m tests.support.parallel [pytest arguments]``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

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


def run(args: list[str], count: int) -> int:
    pytest = [sys.executable, "-m", "pytest"]
    if count == 1 or any(arg == "--shard" or arg.startswith("--shard=") for arg in args):
        return subprocess.call([*pytest, *args])
    base = tempfile.mkdtemp(prefix="esign-test-")
    lock = threading.Lock()
    started = time.monotonic()
    processes, copiers = [], []
    for k in range(count):
        process = subprocess.Popen([*pytest, *args, f"--shard={k}/{count}", f"--basetemp={base}/shard-{k}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, ESIGN_TEST_SHARD=f"{k}/{count}"))
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
    print(f"\n{count} shards in {minutes:.1f} min, exit codes {codes} (temporary files under {base})", flush=True)
    ran = [code for code in codes if code != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return next((code for code in ran if code != 0), 0)


def main(argv: list[str]) -> int:
    return run(argv, jobs())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
