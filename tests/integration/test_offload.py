"""Worker pools heal: a worker killed mid-job fails that job only (Unavailable), a job
past its deadline has its workers replaced, and a pool whose fresh workers keep dying
says it cannot work. Real processes, real SIGKILL: an integration test with the operating
system, though it needs no server (each test starts worker processes or a whole interpreter)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from services.common.errors import Unavailable
from services.common.offload import UNHEALTHY_AFTER, WorkerPool, pools_health


def slow_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pid() -> int:
    return os.getpid()


def fail_to_start() -> None:
    raise RuntimeError("no fonts here")


def _workers(pool: WorkerPool) -> list[int]:
    return [process.pid for process in pool._executor._processes.values()]


@pytest.fixture
def pool():
    made = WorkerPool(1, timeout=20, name="test.pool")
    yield made
    made.shutdown(wait=False)


def test_a_worker_killed_mid_job_fails_that_job_only(pool):
    first = pool.run(pid)  # workers up
    import eventlet

    job = eventlet.spawn(pool.run, slow_pid, 5)
    eventlet.sleep(0.5)  # the job is running in the worker
    os.kill(first, signal.SIGKILL)
    with pytest.raises(Unavailable) as failed:
        job.wait()
    assert "worker_died" in str(failed.value)
    replaced = pool.run(pid)  # before: BrokenProcessPool for every later job
    assert replaced != first
    assert pool.health() == {"ok": True, "replacements": 1, "consecutive_failures": 0, "last_failure": "worker_died"}


def test_a_worker_killed_while_idle_costs_no_job(pool):
    first = pool.run(pid)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.5)  # the executor notices
    assert pool.run(pid) != first  # the job never ran on the broken pool: run on fresh workers


def test_a_job_past_its_deadline_is_killed_and_the_pool_replaced(pool):
    first = pool.run(pid)
    started = time.monotonic()
    with pytest.raises(Unavailable) as late:
        pool.run(slow_pid, 30, timeout=0.5)
    assert "timeout" in str(late.value) and time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _gone(first):
        time.sleep(0.05)
    assert _gone(first)  # its worker was killed
    assert pool.run(pid) != first


def _gone(process_id: int) -> bool:
    return not os.path.exists(f"/proc/{process_id}") or _zombie(process_id)


def _zombie(process_id: int) -> bool:
    try:
        with open(f"/proc/{process_id}/stat") as stat:
            return stat.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_a_pool_whose_workers_cannot_start_says_so():
    broken = WorkerPool(1, initializer=fail_to_start, timeout=20, name="test.broken")
    try:
        for _ in range(UNHEALTHY_AFTER):
            with pytest.raises(Unavailable):
                broken.run(pid)
        assert broken.health()["ok"] is False and broken.health()["consecutive_failures"] >= UNHEALTHY_AFTER
        assert pools_health()["test.broken"]["ok"] is False
    finally:
        broken.shutdown(wait=False)
    assert "test.broken" not in pools_health()  # a pool shut down is no longer reported


#: a monkey-patched process (as every service is) giving one worker more large jobs than it can
#: hold at once: every argument and every answer is bigger than a pipe's buffer (64 KiB)
CONCURRENT_LARGE_JOBS = """
import eventlet
eventlet.monkey_patch()
from services.common.offload import WorkerPool
pool = WorkerPool(1, timeout=30, name="large")
payload = b"x" * (1 << 20)
pile = eventlet.GreenPile()
for _ in range(5):
    pile.spawn(pool.run, bytes, payload)
print(sum(len(answer) for answer in pile), flush=True)
import os
for worker in pool._executor._processes.values():
    worker.kill()
os._exit(0)
"""


def test_concurrent_large_jobs_do_not_freeze_the_hub():
    """Seen in the fault-injection suite: five signatures prepared at once froze signing for
    good. The executor's queue feeder (a greenthread) wrote a job into a full blocking pipe,
    which stopped the whole hub, so the manager could not read the worker's large answer, and
    the worker, blocked writing it, never read the next job."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    try:
        done = subprocess.run([sys.executable, "-c", CONCURRENT_LARGE_JOBS], cwd=repo, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("five concurrent 1 MiB jobs on one worker did not finish in 60 s: the hub froze")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(5 << 20)


#: twenty greenthreads making and dropping multiprocessing locks, as pools starting and stopping do
RESOURCE_TRACKER_CHURN = """
import eventlet
eventlet.monkey_patch()
import multiprocessing
from services.common import offload
offload._one_writer_to_the_resource_tracker()
context = multiprocessing.get_context("spawn")
errors = []
def churn():
    for _ in range(20):
        try:
            lock = context.Lock()  # registers with the resource tracker; its finalizer unregisters
            del lock
        except RuntimeError as exc:
            errors.append(str(exc))
        eventlet.sleep(0)
pool = eventlet.GreenPool(20)
for _ in range(20):
    pool.spawn(churn)
pool.waitall()
print(len(errors), errors[:1])
"""


def test_greenthreads_never_write_the_resource_tracker_pipe_at_once():
    """Without the lock, this churn gave 269 'Second simultaneous write' errors of 400 (a 500
    from prepare_signature in a full run)."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", RESOURCE_TRACKER_CHURN], cwd=Path(__file__).resolve().parents[3],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("0 "), done.stdout


#: a multiprocessing lock made and dropped by a callback of eventlet's hub itself, as a garbage
#: collection that happens to run in the hub finalizes a pool's semaphores
RESOURCE_TRACKER_FROM_THE_HUB = """
import eventlet
eventlet.monkey_patch()
import multiprocessing
from services.common import offload
offload._one_writer_to_the_resource_tracker()
context = multiprocessing.get_context("spawn")
context.Lock()  # the tracker is running
errors = []
def in_the_hub():
    try:
        lock = context.Lock()
        del lock
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
eventlet.hubs.get_hub().schedule_call_global(0, in_the_hub)
eventlet.sleep(0.1)
print(len(errors), errors[:1])
"""


def test_the_hub_itself_may_register_and_unregister_with_the_resource_tracker():
    """Seen in a unit run: 'do not call blocking functions from the mainloop' from a semaphore's
    finalizer, because eventlet's green os.write waits for the pipe through the hub; the
    unregistration was lost. The tracker's messages are under PIPE_BUF and it always reads."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", RESOURCE_TRACKER_FROM_THE_HUB],
                          cwd=Path(__file__).resolve().parents[3], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("0 "), done.stdout


def test_a_pool_reports_its_processes_jobs_and_job_time():
    from prometheus_client import REGISTRY

    made = WorkerPool(2, timeout=20, name="test.metrics")
    try:
        def value(name: str, **labels: str) -> float | None:
            return REGISTRY.get_sample_value(name, {"pool": "test.metrics", **labels})

        # shown from the start: saturation is job-seconds a second over these processes
        assert value("esign_worker_pool_workers") == 2 and value("esign_worker_pool_jobs") == 0
        assert value("esign_worker_pool_replacements_total", reason="timeout") == 0
        before = value("esign_worker_pool_job_seconds_count")
        assert before is not None  # at 0 before the first job, so that job counts in rate()
        import eventlet

        job = eventlet.spawn(made.run, slow_pid, 0.6)
        eventlet.sleep(0.2)
        assert value("esign_worker_pool_jobs") == 1  # submitted, not answered yet
        job.wait()
        assert value("esign_worker_pool_jobs") == 0
        assert value("esign_worker_pool_job_seconds_count") == before + 1
        assert value("esign_worker_pool_job_seconds_sum") >= 0.6
    finally:
        made.shutdown(wait=False)


#: a service's pool whose worker a signal to the whole process group killed first (esign up sent
#: SIGTERM to each service's group; a terminal's Ctrl-C reaches the foreground group), then stopped
#: by the service, as a container's stop does: how long each stop took, and whether any thread of
#: an executor is left running. Four pools: the stop hung in about three of four before the fix.
STOP_AFTER_WORKERS_DIED = """
import eventlet
eventlet.monkey_patch()
import os, signal, time
from services.common.offload import WorkerPool
took, left = [], []
for n in range(2):
    pool = WorkerPool(1, timeout=30, name=f"stop-{n}")
    pool.run(os.getpid)
    executor = pool._executor
    for worker in list(executor._processes.values()):
        os.kill(worker.pid, signal.SIGTERM)
    eventlet.sleep(0.3)
    threads = (executor._executor_manager_thread, executor._call_queue._thread)
    started = time.monotonic()
    with eventlet.Timeout(5, False):
        pool.shutdown(wait=True)
    took.append(time.monotonic() - started)
    eventlet.sleep(0.2)
    left += [thread.name for thread in threads if thread.is_alive()]
print(f"{max(took):.2f}", ",".join(left) or "-", flush=True)
os._exit(0)
"""


def test_a_pool_whose_workers_died_stops_at_once_and_leaves_no_thread_running():
    """Seen on Ctrl-C of esign up: documents, identity or signing took 10-20 s to stop (then
    esign up killed it), at 100 % CPU. When a worker dies the executor closes its own end of the
    job pipe, so that writing a stop sentinel fails with EPIPE and its feeder thread ends
    (cpython#94777); eventlet's green os.write retried EPIPE for ever instead, spinning, and the
    stop waited on that thread."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", STOP_AFTER_WORKERS_DIED], cwd=Path(__file__).resolve().parents[3],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    took, left = done.stdout.split()
    print(f"longest pool stop after its worker died: {took} s; threads left running: {left}")
    assert float(took) < 2.0 and left == "-", done.stdout + done.stderr[-2000:]


#: a service in a terminal (SIGINT not ignored, as it is for a shell's background jobs) whose
#: worker gets the Ctrl-C meant for the service: the same worker, or a replacement, runs the next job
CTRL_C_TO_A_WORKER = """
import eventlet
eventlet.monkey_patch()
import os, signal, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from services.common.offload import WorkerPool
pool = WorkerPool(1, timeout=30, name="ctrl-c")
first = pool.run(os.getpid)
os.kill(first, signal.SIGINT)
time.sleep(0.5)
try:
    second = pool.run(os.getpid)
except Exception as exc:
    second = type(exc).__name__
print(first == second, pool.health()["replacements"], flush=True)
os._exit(0)
"""


def test_a_worker_ignores_ctrl_c_which_is_for_its_service():
    """A terminal's Ctrl-C reaches the whole foreground process group: the service stops its
    workers itself, after their running jobs, so a worker does not die of SIGINT under them."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", CTRL_C_TO_A_WORKER], cwd=Path(__file__).resolve().parents[3],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "0"], done.stdout + done.stderr[-2000:]


#: a service with a pool (monkey-patched, as every service is) that will be killed outright
A_SERVICE_WITH_WORKERS = """
import eventlet
eventlet.monkey_patch()
import os, time
from services.common.offload import WorkerPool
pool = WorkerPool(2, timeout=30, name="orphans")
pile = eventlet.GreenPile()
for _ in range(2):
    pile.spawn(pool.run, time.sleep, 0.3)
list(pile)
print(" ".join(str(worker.pid) for worker in pool._executor._processes.values()), flush=True)
time.sleep(60)
"""


def test_workers_do_not_outlive_a_service_killed_outright():
    """Without a parent-death signal, the workers of a SIGKILLed (or OOM-killed) service lived on
    for ever, idle, with their models loaded (measured: still there after the parent's death)."""
    import subprocess
    import sys
    from pathlib import Path

    service = subprocess.Popen([sys.executable, "-c", A_SERVICE_WITH_WORKERS], cwd=Path(__file__).resolve().parents[3],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        workers = [int(worker) for worker in service.stdout.readline().split()]
        assert workers and all(not _zombie(worker) for worker in workers)
    finally:
        service.kill()
        service.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_zombie(worker) for worker in workers):
        time.sleep(0.1)
    assert all(_zombie(worker) for worker in workers)
