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


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def kill_when_busy(pids: list[int], timeout: float = 30.0) -> int:
    """SIGKILL the first of ``pids`` to start using the CPU (a job has reached it and
    is running), as an OOM kill mid-job would; returns the pid killed."""
    baseline = {pid: _cpu_ticks(pid) for pid in pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            if _cpu_ticks(pid) > baseline[pid]:
                os.kill(pid, signal.SIGKILL)
                return pid
        eventlet.sleep(0.002)
    raise AssertionError("no worker started a job")
