"""CPU-heavy work off the eventlet hub, in worker processes.

nameko workers are greenthreads on one OS thread: face encoding, PDF
rendering or PAdES signing run inline would stall every other worker and
the AMQP heartbeats. A :class:`WorkerPool` runs such functions in
``spawn``-started processes (clean interpreters, no monkey-patching, so
pyHanko's asyncio and requests work there as usual). The waiting greenthread
yields to the hub: in a monkey-patched process the future's done-callback
wakes it; otherwise it polls (a blocking ``future.result()`` would stall the hub).

Functions must be importable module-level callables; an ``initializer`` can
build per-process state once (a face engine, a signer with its TSA client).

A pool heals: when a worker process dies (OOM, crash, ``kill -9``) the broken
executor is replaced, so only the jobs running at that moment fail (as
``Unavailable``, HTTP 503), and the next job runs on fresh workers. Every job has
a deadline (``timeout``); a job past it has its workers killed and replaced. A
pool whose fresh workers keep dying (a failing initializer, a missing font)
reports itself unhealthy (:meth:`WorkerPool.health`), which the service's
``health`` RPC and the process's ``/healthz`` probe show.

Saturation, per pool: ``esign_worker_pool_workers`` (its processes),
``esign_worker_pool_jobs`` (jobs submitted and not yet answered, waiting ones
included) and ``esign_worker_pool_job_seconds`` (each job from submission to its
answer). ``rate(…_job_seconds_sum)`` over the workers is the average number of
jobs per worker: near 1 the pool is saturated, above 1 jobs queue for it.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
import posix
import signal
import threading
import time
import types
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

import eventlet
from eventlet import patcher
from eventlet.event import Event
from eventlet.hubs import trampoline
from nameko.extensions import DependencyProvider

from services.common.child_process import die_with
from services.common.errors import Unavailable
from services.common.metrics import counter, gauge, histogram

log = logging.getLogger(__name__)

POOL_REPLACEMENTS = counter("esign_worker_pool_replacements_total",
                            "Worker pools replaced after a worker died or a job passed its deadline",
                            ("pool", "reason"))
REPLACEMENT_REASONS = ("worker_died", "timeout")
POOL_WORKERS = gauge("esign_worker_pool_workers", "Worker processes of the pool", ("pool",))
POOL_JOBS = gauge("esign_worker_pool_jobs", "Jobs submitted to the pool and not yet answered (waiting ones included)",
                  ("pool",))
POOL_JOB_SECONDS = histogram("esign_worker_pool_job_seconds", "Time from a job's submission to its answer",
                             ("pool",))
#: a pool whose fresh workers failed this many times in a row cannot work
UNHEALTHY_AFTER = 3
_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()
#: executors are made one at a time in a process: making one writes to multiprocessing's
#: resource tracker pipe, and two greenthreads writing it at once is an error under
#: eventlet ("Second simultaneous write on fileno", seen with several pools in one process)
_MAKING = threading.Lock()
#: None in services; in a test process that starts and stops many containers, the live
#: executors of pools shut down, by what their workers were made with (reuse_workers_between_pools)
_parked: "dict[tuple, ProcessPoolExecutor] | None" = None


def reuse_workers_between_pools() -> None:
    """For a test process, never a service: a pool that shuts down parks its live worker
    processes, and the next pool made with the same name, size, initializer and arguments
    takes them instead of starting its own (each worker costs 1.7-2 s of CPU to import
    pyHanko, reportlab or dlib and warm up). Workers keep no state between jobs beyond what
    their initializer made, which is the same for both pools."""
    global _parked
    if _parked is None:
        _parked = {}


def close_parked_workers() -> None:
    """Stop the workers parked by :func:`reuse_workers_between_pools` (at the end of the tests)."""
    global _parked
    parked, _parked = _parked or {}, None
    for executor in parked.values():
        executor.shutdown(wait=False, cancel_futures=True)


def pools_health() -> dict[str, dict]:
    """Every live pool of this process, by name (for the ``/healthz`` probe)."""
    return {pool.name: pool.health() for pool in list(_pools)}


def _one_writer_to_the_resource_tracker() -> None:
    """Under eventlet, every write to a pipe first waits for it to be writable, and two
    greenthreads waiting on one pipe is an error ("Second simultaneous write on fileno").
    multiprocessing's resource tracker pipe is written whenever a semaphore is made or
    finalized (pools starting, stopping, garbage collected) and when a worker starts,
    partly outside the tracker's own lock: one lock of ours around all of it (seen: a 500
    from prepare_signature in a full run while another pool was being shut down)."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_esign_serialized", False):
        return
    lock = threading.RLock()
    send, ensure_running = tracker._send, tracker.ensure_running

    def serialized(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            with lock:
                return fn(*args, **kwargs)
        return call

    tracker._send, tracker.ensure_running = serialized(send), serialized(ensure_running)
    # Its writes go straight to the pipe, never through eventlet's green os.write, which first
    # waits for the pipe through the hub: from the hub itself (a semaphore finalized by a garbage
    # collection that runs there) that wait is "do not call blocking functions from the mainloop",
    # and the unregistration was lost. A message is under PIPE_BUF (the tracker checks) and the
    # tracker always reads, so a plain write cannot block for long.
    resource_tracker.os = _PlainWrites()
    tracker._esign_serialized = True


class _PlainWrites(types.ModuleType):
    """``os`` for the resource tracker's module: the same, except ``write`` is the unpatched one."""

    write = staticmethod(posix.write)

    def __init__(self) -> None:
        super().__init__("os")

    def __getattr__(self, name: str):
        return getattr(os, name)


def _cooperative_pipes(executor: ProcessPoolExecutor) -> None:
    """Make the pipes this process writes jobs into and reads answers from non-blocking.

    Under eventlet the executor's queue feeder and manager are greenthreads of the
    one hub. Writing a job larger than a pipe's buffer (a PDF) into a *blocking*
    pipe stops the whole hub until the worker reads it; if the worker is meanwhile
    blocked writing a large answer, which only the (stopped) manager would read,
    neither ever moves: the service freezes for good, health RPC included (seen
    with five signatures prepared at once). Non-blocking, a write waits for room in the
    pipe cooperatively (:func:`_pipe_write`) and eventlet's green ``os.read`` for data.

    When a worker dies the executor closes its own end of the job pipe, so that its
    feeder's next write fails with EPIPE and the feeder ends (cpython#94777); the
    feeder is told to take that as the end (``_ignore_epipe``, as multiprocessing's
    own Pool does), not as an error to print.
    """
    call_queue = getattr(executor, "_call_queue", None)
    writer = getattr(call_queue, "_writer", None)
    if writer is not None:
        os.set_blocking(writer.fileno(), False)
        writer._send = functools.partial(type(writer)._send, writer, write=_pipe_write)
        call_queue._ignore_epipe = True  # read when its feeder thread starts, at the first job
    reader = getattr(getattr(executor, "_result_queue", None), "_reader", None)
    if reader is not None:
        os.set_blocking(reader.fileno(), False)


_os_write = patcher.original("os").write


def _pipe_write(fd: int, data: bytes) -> int:
    """``os.write`` to a non-blocking pipe under eventlet: waits for room cooperatively, as
    eventlet's green ``os.write`` does, but lets EPIPE raise. eventlet retries EPIPE for ever
    (waiting to write to a pipe no process reads any more): after a worker died, a service's
    stop spun at 100 % CPU on that write until it was killed (10-20 s on Ctrl-C of esign up)."""
    while True:
        try:
            return _os_write(fd, data)
        except BlockingIOError:
            trampoline(fd, write=True)


def _start_worker(parent: int | None, initializer: Callable | None, initargs: tuple) -> None:
    """First thing in each worker process. A Ctrl-C in a terminal reaches the whole foreground
    process group, workers included, but the service stops its workers itself, once their
    running jobs are done: they ignore SIGINT. And a service killed outright (OOM, SIGKILL) takes
    its workers with it (:func:`~services.common.child_process.die_with`), instead of leaving
    them idle, models loaded, for ever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        die_with(parent)
    if initializer is not None:
        initializer(*initargs)


class ReportsPoolHealth:
    """What a service's ``health`` RPC asks about its worker pools (a plain attribute
    check would ask an RPC proxy, which answers any name)."""

    name: str

    def pool_health(self) -> dict:
        raise NotImplementedError


class WorkerPool(ReportsPoolHealth):
    def __init__(self, workers: int = 1, initializer: Callable | None = None, initargs: tuple = (),
                 poll_interval: float = 0.005, timeout: float = 120.0, name: str = "workers"):
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.name = name
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.replacements = 0
        self.consecutive_failures = 0
        self.last_failure: str | None = None
        _pools.add(self)
        POOL_WORKERS.labels(pool=name).set(workers)
        POOL_JOBS.labels(pool=name)
        POOL_JOB_SECONDS.labels(pool=name)  # at 0: the first job counts in rate()
        for reason in REPLACEMENT_REASONS:  # shown at 0 until the first replacement
            POOL_REPLACEMENTS.labels(pool=name, reason=reason)

    def _parking_key(self) -> tuple:
        initializer = None if self.initializer is None else (self.initializer.__module__,
                                                             self.initializer.__qualname__)
        return self.name, self.workers, initializer, pickle.dumps(self.initargs)

    def _pool(self) -> ProcessPoolExecutor:
        if patcher.is_monkey_patched("thread"):
            _one_writer_to_the_resource_tracker()
        with _MAKING, self._lock:
            if self._executor is None and _parked:
                parked = _parked.pop(self._parking_key(), None)
                if parked is not None and not parked._broken and not parked._shutdown_thread:
                    self._executor = parked
            if self._executor is None:
                # monkey-patched, every thread is a greenthread of the main one, which forks the
                # workers and lives as long as the process: the parent-death signal is safe to use
                parent = os.getpid() if patcher.is_monkey_patched("thread") else None
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker, initargs=(parent, self.initializer, self.initargs),
                )
                if patcher.is_monkey_patched("thread"):
                    _cooperative_pipes(self._executor)
            return self._executor

    def run(self, fn: Callable, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker process; exceptions re-raise here.
        ``Unavailable`` when its worker died or it ran past ``timeout`` seconds
        (the pool's default deadline when None); the pool is whole again after."""
        started = time.perf_counter()
        jobs = POOL_JOBS.labels(pool=self.name)
        jobs.inc()
        try:
            return self._run(fn, args, kwargs, self.timeout if timeout is None else timeout)
        finally:
            jobs.dec()
            POOL_JOB_SECONDS.labels(pool=self.name).observe(time.perf_counter() - started)

    def _run(self, fn: Callable, args: tuple, kwargs: dict, deadline: float) -> Any:
        executor = self._pool()
        try:
            future = self._submit(executor, fn, args, kwargs)
        except BrokenProcessPool:  # a worker died while idle: the job never ran, so run it on fresh ones
            self._replace(executor, "worker_died")
            executor = self._pool()
            future = self._submit(executor, fn, args, kwargs)
        if patcher.is_monkey_patched("thread"):
            # The executor's manager thread is then a greenthread of this hub:
            # its done-callback wakes the waiter at once (polling cost ~9 ms a
            # render over RPC, bench/render.py --rpc).
            done = Event()
            future.add_done_callback(lambda _future: done.send(None) if not done.ready() else None)
            with eventlet.Timeout(deadline, False):
                done.wait()
        else:
            ends = time.monotonic() + deadline
            while not future.done() and time.monotonic() < ends:
                eventlet.sleep(self.poll_interval)
        if not future.done():
            self._replace(executor, "timeout", kill=True)
            raise Unavailable(self.name, f"timeout: the job ran past {deadline:g} s")
        try:
            result = future.result()
        except BrokenProcessPool:
            self._replace(executor, "worker_died")
            raise Unavailable(self.name, "worker_died: a worker process ended during the job") from None
        self.consecutive_failures = 0
        return result

    @staticmethod
    def _submit(executor: ProcessPoolExecutor, fn: Callable, args: tuple, kwargs: dict):
        # one at a time: a submit may start a worker process, which writes to the resource
        # tracker's pipe (the same race as making an executor, see _MAKING)
        with _MAKING:
            return executor.submit(fn, *args, **kwargs)

    def _replace(self, executor: ProcessPoolExecutor, reason: str, kill: bool = False) -> None:
        """Drop ``executor`` (the next job starts fresh workers); ``kill`` ends its processes."""
        with self._lock:
            if self._executor is not executor:
                return  # another job has replaced it already
            self._executor = None
            self.replacements += 1
            self.consecutive_failures += 1
            self.last_failure = reason
        POOL_REPLACEMENTS.labels(pool=self.name, reason=reason).inc()
        log.warning("worker pool %s replaced (%s)", self.name, reason)
        if kill:
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                try:
                    process.kill()
                except (OSError, AttributeError):
                    pass
        try:
            executor.shutdown(wait=False, cancel_futures=True)
        except Exception:  # a broken executor may complain; it is gone either way
            pass

    def pool_health(self) -> dict:
        return self.health()

    def health(self) -> dict:
        """``ok`` unless fresh workers failed :data:`UNHEALTHY_AFTER` times in a row."""
        return {"ok": self.consecutive_failures < UNHEALTHY_AFTER, "replacements": self.replacements,
                "consecutive_failures": self.consecutive_failures, "last_failure": self.last_failure}

    def shutdown(self, wait: bool = True) -> None:
        _pools.discard(self)
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        if _parked is not None and not executor._broken and not executor._shutdown_thread:
            key = self._parking_key()
            if key not in _parked:
                _parked[key] = executor
                return
        executor.shutdown(wait=wait, cancel_futures=True)


class WorkerPoolProvider(DependencyProvider):
    """nameko dependency owning one :class:`WorkerPool` per container; the
    processes start on first use and stop with the container."""

    def __init__(self, workers_key: str, initializer: Callable | None = None, default_workers: int = 1,
                 timeout: float = 120.0):
        self.workers_key = workers_key
        self.initializer = initializer
        self.default_workers = default_workers
        self.timeout = timeout

    def setup(self) -> None:
        settings = self.container.config.get("WORKERS") or {}
        workers = int(settings.get(self.workers_key, self.default_workers))
        timeout = float(settings.get(f"{self.workers_key}_TIMEOUT", self.timeout))
        initargs = (self.container.config,) if self.initializer else ()
        self.pool = WorkerPool(workers, self.initializer, initargs, timeout=timeout,
                               name=f"{self.container.service_name}.{self.workers_key.lower()}")

    def stop(self) -> None:
        self.pool.shutdown()

    def kill(self) -> None:
        self.pool.shutdown(wait=False)

    def get_dependency(self, worker_ctx) -> WorkerPool:
        return self.pool
