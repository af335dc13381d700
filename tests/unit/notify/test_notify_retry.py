"""Retry policy: full-jitter backoff, attempt limit, transient vs permanent."""
import random

import pytest

from services.common.errors import InvalidInput
from services.notify.providers import PermanentSmsError, TransientSmsError
from services.notify.retry import (
    ErrorClass,
    Outcome,
    RetryPolicy,
    backoff_delay,
    classify,
    decide,
    deliver_with_retries,
)


class Extreme:
    """A random source that always returns the top (or bottom) of the range."""

    def __init__(self, top=True):
        self.top = top
        self.calls = []

    def uniform(self, a, b):
        self.calls.append((a, b))
        return b if self.top else a


def test_ceiling_doubles_from_base_and_stops_at_the_cap():
    policy = RetryPolicy(base_delay=1.0, max_delay=20.0, max_attempts=10)
    rng = Extreme()
    assert [backoff_delay(policy, n, rng) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    assert all(a == 0.0 for a, _ in rng.calls)  # full jitter: the range always starts at zero


def test_huge_attempt_numbers_stay_at_the_cap():
    assert backoff_delay(RetryPolicy(base_delay=1, max_delay=60), 10_000, Extreme()) == 60


def test_seeded_delays_fall_inside_the_jitter_range_and_vary():
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    rng = random.Random(20250301)
    for attempt in range(1, 10):
        bound = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(policy, attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert len(set(delays)) > 150  # jittered, not a fixed schedule


def test_transient_error_is_retried_until_the_attempt_limit_then_given_up():
    policy = RetryPolicy(base_delay=1, max_delay=8, max_attempts=3)
    error = TransientSmsError("http_500")
    assert decide(policy, 1, error, Extreme()).outcome is Outcome.RETRY
    assert decide(policy, 2, error, Extreme()).outcome is Outcome.RETRY
    assert decide(policy, 3, error, Extreme()).outcome is Outcome.GIVEN_UP


def test_permanent_error_is_never_retried():
    decision = decide(RetryPolicy(), 1, PermanentSmsError("InvalidParameterValue.IncorrectPhoneNumber"), Extreme())
    assert decision.outcome is Outcome.FAILED
    assert decision.delay is None


def test_unexpected_exceptions_count_as_permanent():
    assert classify(KeyError("x")) is ErrorClass.PERMANENT
    assert classify(TransientSmsError("timeout")) is ErrorClass.TRANSIENT


def test_vendor_retry_after_hint_raises_the_delay():
    decision = decide(RetryPolicy(base_delay=1, max_delay=8), 1,
                      TransientSmsError("LimitExceeded.PhoneNumberThirtySecondLimit", retry_after=30.0), Extreme())
    assert decision.outcome is Outcome.RETRY
    assert decision.delay == 30.0


def test_deliver_with_retries_sleeps_between_failures_and_returns_the_result():
    answers = [TransientSmsError("http_500"), TransientSmsError("timeout"), "serial-1"]

    def send():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    slept = []
    report = deliver_with_retries(send, RetryPolicy(base_delay=2, max_delay=100, max_attempts=5),
                                  rng=Extreme(), sleep=slept.append)
    assert report.sent and report.result == "serial-1"
    assert report.attempts == 3
    assert slept == [2, 4]


def test_deliver_with_retries_gives_up_after_max_attempts():
    calls = []

    def send():
        calls.append(1)
        raise TransientSmsError("http_503")

    report = deliver_with_retries(send, RetryPolicy(max_attempts=4), rng=Extreme(False), sleep=lambda s: None)
    assert report.outcome is Outcome.GIVEN_UP
    assert len(calls) == 4
    assert report.last_error.code == "http_503"


@pytest.mark.parametrize("kwargs, field", [
    ({"base_delay": 0}, "retry.base_delay"),
    ({"base_delay": 5, "max_delay": 1}, "retry.max_delay"),
    ({"max_attempts": 0}, "retry.max_attempts"),
])
def test_bad_policies_are_rejected(kwargs, field):
    with pytest.raises(InvalidInput) as err:
        RetryPolicy(**kwargs)
    assert err.value.field == field
