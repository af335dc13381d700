"""Retrying SMS delivery: exponential backoff with "full jitter".

After failed attempt ``n`` (1-based) the next try waits a delay drawn
uniformly from ``[0, min(cap, base * 2**(n-1))]`` - the "full jitter"
scheme of Brooker, "Exponential Backoff And Jitter" (AWS Architecture Blog,
2015) - so that many messages failing together during a vendor outage do
not come back together. A vendor's own hint (``retry_after``, e.g. "one
message per 30 s to this number") raises the delay to at least that.

Classification: :class:`TransientSmsError` is retried until ``max_attempts``
attempts have been made, then the message is *given up*;
:class:`PermanentSmsError` is never retried (*failed*). Any other exception
counts as permanent too: it is a bug, retrying would not fix it, and the
send may already have happened.

Pure: the random source is injected (anything with ``uniform(a, b)``), and
:func:`deliver_with_retries` takes the sleep function, so tests and the
scheduler decide what "waiting" means. The service is expected to store
``RetryDecision.delay`` as the message's next attempt time rather than sleep.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Callable, Protocol, TypeVar

from services.common.errors import InvalidInput
from services.notify.providers import PermanentSmsError, TransientSmsError

T = TypeVar("T")


class RandomSource(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


class ErrorClass(str, enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Outcome(str, enum.Enum):
    RETRY = "retry"        # try again after ``delay`` seconds
    GIVEN_UP = "given_up"  # transient failures used up every attempt
    FAILED = "failed"      # permanent failure; not retried


@dataclass(frozen=True)
class RetryPolicy:
    base_delay: float = 2.0
    max_delay: float = 300.0
    max_attempts: int = 6

    def __post_init__(self) -> None:
        if self.base_delay <= 0:
            raise InvalidInput("retry.base_delay", "positive", f"expected > 0, found {self.base_delay}")
        if self.max_delay < self.base_delay:
            raise InvalidInput("retry.max_delay", "at_least_base", "expected max_delay >= base_delay")
        if self.max_attempts < 1:
            raise InvalidInput("retry.max_attempts", "positive", f"expected >= 1, found {self.max_attempts}")


@dataclass(frozen=True)
class RetryDecision:
    outcome: Outcome
    delay: float | None = None  # seconds until the next attempt, for RETRY


def classify(error: BaseException) -> ErrorClass:
    if isinstance(error, TransientSmsError):
        return ErrorClass.TRANSIENT
    if isinstance(error, PermanentSmsError):
        return ErrorClass.PERMANENT
    return ErrorClass.PERMANENT


def backoff_ceiling(policy: RetryPolicy, failed_attempts: int) -> float:
    """Upper bound of the delay after ``failed_attempts`` failures (1-based)."""
    # Cap the exponent first so a large attempt count cannot overflow a float.
    exponent = min(failed_attempts - 1, 62)
    return min(policy.max_delay, policy.base_delay * (2 ** exponent))


def backoff_delay(policy: RetryPolicy, failed_attempts: int, rng: RandomSource) -> float:
    """A full-jitter delay after ``failed_attempts`` failures."""
    if failed_attempts < 1:
        raise InvalidInput("retry.failed_attempts", "positive", f"expected >= 1, found {failed_attempts}")
    return rng.uniform(0.0, backoff_ceiling(policy, failed_attempts))


def decide(policy: RetryPolicy, failed_attempts: int, error: BaseException, rng: RandomSource) -> RetryDecision:
    """What to do after attempt number ``failed_attempts`` failed with ``error``."""
    if classify(error) is ErrorClass.PERMANENT:
        return RetryDecision(Outcome.FAILED)
    if failed_attempts >= policy.max_attempts:
        return RetryDecision(Outcome.GIVEN_UP)
    delay = backoff_delay(policy, failed_attempts, rng)
    hint = getattr(error, "retry_after", None)
    if hint is not None:
        delay = max(delay, float(hint))
    return RetryDecision(Outcome.RETRY, delay)


@dataclass(frozen=True)
class DeliveryReport:
    """How a run of attempts ended: ``result`` on success, else ``outcome`` and the last error."""

    attempts: int
    result: object | None
    outcome: Outcome | None
    last_error: BaseException | None
    delays: tuple[float, ...]

    @property
    def sent(self) -> bool:
        return self.outcome is None


def deliver_with_retries(
    send: Callable[[], T],
    policy: RetryPolicy,
    *,
    rng: RandomSource | None = None,
    sleep: Callable[[float], None],
) -> DeliveryReport:
    """Call ``send`` until it succeeds, fails permanently, or attempts run out.

    For direct, in-process use (and tests); a scheduler that persists the next
    attempt time uses :func:`decide` instead."""
    rng = rng or random.SystemRandom()
    delays: list[float] = []
    attempt = 0
    while True:
        attempt += 1
        try:
            result = send()
        except Exception as error:  # noqa: BLE001 - classify() decides; non-SMS errors are permanent
            decision = decide(policy, attempt, error, rng)
            if decision.outcome is not Outcome.RETRY:
                return DeliveryReport(attempt, None, decision.outcome, error, tuple(delays))
            delays.append(decision.delay)  # type: ignore[arg-type]
            sleep(decision.delay)  # type: ignore[arg-type]
            continue
        return DeliveryReport(attempt, result, None, None, tuple(delays))
