"""py-spy flame graphs of the platform's processes while a benchmark runs.

``profilers = start(directory, "sign_step", pids)`` starts one py-spy per service
process (with its worker processes) writing ``<prefix>_<service>.svg`` and the
collapsed stacks ``<prefix>_<service>.txt`` (for grep and for summing by
function); ``stop(profilers)`` makes them write their files (SIGINT).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def start(directory: Path, prefix: str, pids: dict[str, int], rate: int = 100,
          gil: bool = False) -> list[subprocess.Popen]:
    """``gil``: sample only threads holding the GIL, so the stacks are where CPU goes (else a green
    thread waiting on the database or the broker is sampled too)."""
    directory.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    profilers = []
    for name, pid in pids.items():
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            out = directory / f"{prefix}_{name}.{suffix}"
            profilers.append(subprocess.Popen(
                [spy, "record", "--subprocesses", "--rate", str(rate), "--nonblocking", *(["--gil"] if gil else []),
                 "--format", fmt,
                 "-o", str(out), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # attached before the load starts
    return profilers


def stop(profilers: list[subprocess.Popen]) -> None:
    for profiler in profilers:
        profiler.send_signal(2)  # SIGINT: py-spy writes its file
    for profiler in profilers:
        try:
            profiler.wait(60)
        except subprocess.TimeoutExpired:
            profiler.kill()
