"""Group commit: concurrent callers share one write, each gets its own result
or the write's error, and nobody waits for ever."""
from __future__ import annotations

import threading
import time

import pytest

from services.common.group_commit import GroupCommit


def run(commit: GroupCommit, items: list[int]) -> dict[int, object]:
    outcomes: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = commit.submit(item)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcomes[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a caller never returned"
    return outcomes


def test_callers_share_writes_and_get_their_own_results():
    batches = []

    def write(items):
        batches.append(list(items))
        time.sleep(0.003)
        return [item * 10 for item in items]

    outcomes = run(GroupCommit(write, max_batch=8), list(range(40)))
    assert outcomes == {i: i * 10 for i in range(40)}
    assert sorted(i for batch in batches for i in batch) == list(range(40))
    assert max(len(batch) for batch in batches) > 1 and all(len(batch) <= 8 for batch in batches)


def test_a_failed_write_fails_each_of_its_callers_and_the_next_write_goes_on():
    calls = []

    def write(items):
        calls.append(list(items))
        time.sleep(0.003)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return list(items)

    outcomes = run(GroupCommit(write), list(range(20)))
    failed = [item for item, outcome in outcomes.items() if isinstance(outcome, ConnectionError)]
    assert sorted(failed) == sorted(calls[0])
    assert all(outcomes[item] == item for item in outcomes if item not in failed)


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        GroupCommit(lambda items: items, max_batch=0)
