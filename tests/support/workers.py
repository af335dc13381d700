"""Reach into a running container's worker pool, to kill its processes as the
kernel's OOM killer or a crash would."""
from __future__ import annotations

import os
import signal
import time

import eventlet

from services.common.offload import WorkerPool


def pool_of(container, attr: str) -> WorkerPool:
    """The :class:`WorkerPool` behind the container's dependency ``attr``."""
    provider = next(d for d in container.dependencies if getattr(d, "attr_name", None) == attr)
    return provider.pool if isinstance(provider.pool, WorkerPool) else provider.pool.pool


def worker_pids(pool: WorkerPool) -> list[int]:
    executor = pool._executor
    return [process.pid for process in (executor._processes or {}).values()] if executor else []


def _cpu_ticks(pid: int) -> tuple[int, str]:
    """CPU ticks used so far (utime + stime), and the scheduler state (R: running)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), fields[0]


def kill_when_busy(pids: list[int], timeout: float = 30.0) -> int:
    """SIGKILL the first of ``pids`` to start a job (running, or its CPU time grown: ticks are
    10 ms, longer than some jobs now take), as an OOM kill mid-job would; returns the pid killed."""
    baseline = {pid: _cpu_ticks(pid)[0] for pid in pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            ticks, state = _cpu_ticks(pid)
            if state == "R" or ticks > baseline[pid]:
                os.kill(pid, signal.SIGKILL)
                return pid
        eventlet.sleep(0.001)
    raise AssertionError("no worker started a job")
