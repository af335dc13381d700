"""Group commit: many concurrent callers of one process each need their item
durably written before they go on, and one transaction per item costs a
commit (a WAL flush) each. Here the first caller to arrive becomes the
*leader*: it writes every item queued so far in one transaction while the
others wait; whoever arrived during that write is led by the next leader, the
first of them. Each caller returns only once the transaction holding its item
has committed, with that item's result, or the transaction's error.

No background thread: the callers do the writing, so it works the same with
OS threads and with eventlet's green threads (``threading`` monkey-patched),
and a process that stops appending holds nothing open. The same scheme as
PostgreSQL's own WAL group flush and Tessera's batched sequencing.
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiter(Generic[Item, Result]):
    __slots__ = ("item", "done", "lead", "result", "error")

    def __init__(self, item: Item):
        self.item = item
        self.done = threading.Event()
        self.lead = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item, Result]):
    """Calls ``write(items) -> results`` (one result per item, in order) for
    batches of at most ``max_batch`` concurrently submitted items."""

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 500):
        if max_batch < 1:
            raise ValueError(f"expected max_batch >= 1, found {max_batch}")
        self._write = write
        self._max_batch = max_batch
        self._guard = threading.Lock()
        self._queue: list[_Waiter[Item, Result]] = []
        self._leading = False

    def submit(self, item: Item) -> Result:
        """``item``'s result once the transaction holding it has committed."""
        waiter: _Waiter[Item, Result] = _Waiter(item)
        with self._guard:
            self._queue.append(waiter)
            leader = not self._leading
            self._leading = True
        if not leader:
            waiter.done.wait()
        if leader or waiter.lead:  # a leader handed the lead on finds its item at the queue's head
            self._lead()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    def _lead(self) -> None:
        with self._guard:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch:]
        try:
            results = self._write([w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"expected {len(batch)} results from a batch write, found {len(results)}")
            for w, result in zip(batch, results, strict=True):
                w.result = result
        except BaseException as exc:  # every caller of the batch learns it failed
            for w in batch:
                w.error = exc
        with self._guard:
            successor = self._queue[0] if self._queue else None
            if successor is None:
                self._leading = False
            else:
                successor.lead = True
        for w in batch:
            w.done.set()
        if successor is not None:
            successor.done.set()
