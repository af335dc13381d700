"""services/gateway/session_cache.py: what the gateway remembers of identity's session
answers, for how long, and what makes it forget."""
from __future__ import annotations

import re

import pytest

from services.common import broker_access
from services.common.errors import InvalidInput
from services.gateway.app import session_cache_seconds
from services.gateway.session_cache import SessionCache, queue_name


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock) -> SessionCache:
    made = SessionCache(10, clock=clock)
    made.hearing(True)
    return made


def test_an_answer_is_remembered_for_its_seconds_then_asked_again(cache, clock):
    cache.put("token-a", "p-1", "s-1", cache.mark())
    found = cache.get("token-a")
    assert (found.person_id, found.session_id) == ("p-1", "s-1")
    clock.now += 9.9
    assert cache.get("token-a") is not None
    clock.now += 0.1
    assert cache.get("token-a") is None and len(cache) == 0
    assert cache.get("token-b") is None


def test_a_person_whose_sessions_ended_is_forgotten_and_no_one_else(cache):
    cache.put("a1", "p-1", "s-1", cache.mark())
    cache.put("a2", "p-1", "s-2", cache.mark())
    cache.put("b1", "p-2", "s-3", cache.mark())
    assert cache.forget_person("p-1") == 2
    assert cache.get("a1") is None and cache.get("a2") is None
    assert cache.get("b1").person_id == "p-2"
    assert cache.forget_person("p-1") == 0


def test_nothing_is_remembered_while_the_events_are_not_heard(cache):
    cache.put("a1", "p-1", "s-1", cache.mark())
    cache.hearing(False)  # the subscription went away: forget all, remember nothing
    assert cache.get("a1") is None
    cache.put("a1", "p-1", "s-1", cache.mark())
    assert len(cache) == 0
    cache.hearing(True)
    cache.put("a1", "p-1", "s-1", cache.mark())
    assert cache.get("a1") is not None


def test_an_answer_given_while_a_session_ended_is_not_remembered(cache):
    """identity answered 'valid' for a session whose sessions_ended was heard before the answer
    got back: remembering it would keep an ended session alive for the cache's seconds."""
    mark = cache.mark()  # taken before asking identity
    cache.forget_person("p-1")  # sessions_ended heard meanwhile
    cache.put("a1", "p-1", "s-1", mark)
    assert cache.get("a1") is None
    cache.put("a1", "p-1", "s-1", cache.mark())  # the next request's answer is remembered
    assert cache.get("a1") is not None


def test_the_oldest_is_forgotten_first_beyond_the_limit(clock):
    cache = SessionCache(10, max_entries=3, clock=clock)
    cache.hearing(True)
    for n in range(5):
        cache.put(f"t{n}", f"p-{n}", f"s-{n}", cache.mark())
    assert len(cache) == 3
    assert [cache.get(f"t{n}") is not None for n in range(5)] == [False, False, True, True, True]
    assert cache.forget_person("p-0") == 0  # its index entry went with it


def test_tokens_are_kept_only_as_their_hash(cache):
    cache.put("a-secret-token", "p-1", "s-1", cache.mark())
    assert "a-secret-token" not in repr(cache._entries) and "a-secret-token" not in repr(cache._by_person)


def test_zero_seconds_remembers_nothing(clock):
    cache = SessionCache(0, clock=clock)
    cache.hearing(True)
    assert cache.on is False
    cache.put("a1", "p-1", "s-1", cache.mark())
    assert cache.get("a1") is None


@pytest.mark.parametrize("value, rule", [("ten", "number"), (-1, "range"), (61, "range"), (None, "number")])
def test_a_bad_setting_stops_the_gateway_naming_it(value, rule):
    with pytest.raises(InvalidInput) as refused:
        session_cache_seconds({"SESSIONS": {"CACHE_SECONDS": value}})
    assert (refused.value.field, refused.value.rule) == ("sessions.cache_seconds", rule)
    assert session_cache_seconds({}) == 0 and session_cache_seconds({"SESSIONS": {"CACHE_SECONDS": "10"}}) == 10


def test_its_queue_is_one_the_gateways_broker_user_may_declare_bind_and_read():
    granted = broker_access.grants("gateway")
    name = queue_name()
    assert name != queue_name()  # one per process
    for pattern in (granted.configure, granted.write, granted.read):
        assert re.search(pattern, name), pattern
