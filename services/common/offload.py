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
"""
from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import eventlet
from eventlet import patcher
from eventlet.event import Event
from nameko.extensions import DependencyProvider


class WorkerPool:
    def __init__(self, workers: int = 1, initializer: Callable | None = None, initargs: tuple = (),
                 poll_interval: float = 0.005):
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.poll_interval = poll_interval
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=self.initializer, initargs=self.initargs,
                )
            return self._executor

    def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker process; exceptions re-raise here."""
        future = self._pool().submit(fn, *args, **kwargs)
        if patcher.is_monkey_patched("thread"):
            # The executor's manager thread is then a greenthread of this hub:
            # its done-callback wakes the waiter at once (polling cost ~9 ms a
            # render over RPC, bench/render.py --rpc).
            done = Event()
            future.add_done_callback(lambda _future: done.send(None) if not done.ready() else None)
            done.wait()
        else:
            while not future.done():
                eventlet.sleep(self.poll_interval)
        return future.result()

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)


class WorkerPoolProvider(DependencyProvider):
    """nameko dependency owning one :class:`WorkerPool` per container; the
    processes start on first use and stop with the container."""

    def __init__(self, workers_key: str, initializer: Callable | None = None, default_workers: int = 1):
        self.workers_key = workers_key
        self.initializer = initializer
        self.default_workers = default_workers

    def setup(self) -> None:
        workers = int((self.container.config.get("WORKERS") or {}).get(self.workers_key, self.default_workers))
        initargs = (self.container.config,) if self.initializer else ()
        self.pool = WorkerPool(workers, self.initializer, initargs)

    def stop(self) -> None:
        self.pool.shutdown()

    def kill(self) -> None:
        self.pool.shutdown(wait=False)

    def get_dependency(self, worker_ctx) -> WorkerPool:
        return self.pool
