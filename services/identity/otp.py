"""One-time codes for phone confirmation and willingness checks (SMS OTP).

A code is six random decimal digits (``secrets``). Only a keyed hash is
stored: HMAC-SHA256 under a server secret over a per-code random salt, the
code's purpose and subject, and the code. The server secret means a leaked
table cannot be brute-forced offline (10**6 codes would take a moment
otherwise); binding purpose and subject means a code sent for one phone or
one document digest is no good for another.

Limits, all in :class:`OtpPolicy`: a code expires after 5 minutes, five wrong
tries lock that challenge for good, and at most N codes are sent per subject in
a sliding hour. Whether a lock also holds back *new* codes for the subject
depends on who can ask: for willingness (only the signed-in person can) it
does, for a length of time; for phone codes (anyone can ask for any phone) it
must not, or anyone could lock anyone out of logging in with five wrong guesses
(:data:`PHONE_CONFIRMATION_POLICY`; wrong guesses are held back per client at
the gateway instead).

This module is pure: time is always passed in as ``now`` (an aware UTC
``datetime``), state is a frozen :class:`OtpRecord` the caller persists, and
each step returns the new record rather than changing anything.
"""
from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Sequence

from services.common.errors import Forbidden, InvalidInput, RateLimited
from services.common.reasons import Reason

MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class OtpPolicy:
    digits: int = 6
    ttl: timedelta = timedelta(minutes=5)
    max_wrong_attempts: int = 5
    lockout: timedelta = timedelta(minutes=30)
    max_sends_per_window: int = 5
    send_window: timedelta = timedelta(hours=1)
    # Stops a double-tap or a script from burning the hourly quota at once.
    min_resend_interval: timedelta = timedelta(seconds=60)
    # A locked challenge also refuses new codes for its subject until ``lockout`` ends.
    lockout_blocks_new_codes: bool = True


DEFAULT_POLICY = OtpPolicy()
#: anyone may ask for a code to any phone: a lock stays on the challenge it was earned on
PHONE_CONFIRMATION_POLICY = OtpPolicy(lockout_blocks_new_codes=False)


@dataclass(frozen=True)
class OtpRecord:
    """The stored state of one issued code (no code, only its keyed hash)."""

    purpose: str  # e.g. "phone_confirmation", "willingness"
    subject: str  # what the code is for: a person id, a blind index, a digest
    salt: bytes
    code_hash: bytes
    issued_at: datetime
    expires_at: datetime
    wrong_attempts: int = 0
    locked_until: datetime | None = None
    used_at: datetime | None = None

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until


@dataclass(frozen=True)
class IssuedOtp:
    code: str  # hand to the SMS sender, never store or log it
    record: OtpRecord


class OtpOutcome(enum.Enum):
    ACCEPTED = "accepted"
    WRONG_CODE = "wrong_code"
    EXPIRED = "expired"
    LOCKED = "locked"
    ALREADY_USED = "already_used"


@dataclass(frozen=True)
class OtpVerification:
    outcome: OtpOutcome
    record: OtpRecord  # persist this whatever the outcome
    attempts_left: int

    @property
    def accepted(self) -> bool:
        return self.outcome is OtpOutcome.ACCEPTED

    @property
    def refusal(self) -> Reason:
        """The reason a code that was not accepted is refused with."""
        return REFUSALS[self.outcome]

    def require_accepted(self) -> None:
        """Raise :class:`Forbidden` (:attr:`refusal`) unless accepted."""
        if not self.accepted:
            raise Forbidden(self.refusal)


#: the reason of each outcome but acceptance
REFUSALS = {
    OtpOutcome.WRONG_CODE: Reason.OTP_WRONG_CODE,
    OtpOutcome.EXPIRED: Reason.OTP_EXPIRED,
    OtpOutcome.LOCKED: Reason.OTP_LOCKED,
    OtpOutcome.ALREADY_USED: Reason.OTP_ALREADY_USED,
}


class OtpSecret:
    """The server-side HMAC key. Held in memory only; never in repr."""

    def __init__(self, key: bytes):
        if not isinstance(key, bytes) or len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"OTP secret must be at least {MIN_SECRET_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "OtpSecret(<hidden>)"

    def code_hash(self, salt: bytes, purpose: str, subject: str, code: str) -> bytes:
        # Length-prefixed fields so ("ab", "c") and ("a", "bc") never collide.
        message = b"".join(_field(part) for part in (salt, purpose.encode(), subject.encode(), code.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()


def _field(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def check_send_allowed(
    recent_sends: Sequence[datetime],
    now: datetime,
    policy: OtpPolicy = DEFAULT_POLICY,
    previous: OtpRecord | None = None,
) -> None:
    """Refuse a new code while locked, too soon after the last one, or over
    the hourly quota. ``recent_sends`` are the send times for this subject
    (older ones are ignored, so the caller may pass a longer history)."""
    if previous is not None and policy.lockout_blocks_new_codes and previous.is_locked(now):
        raise RateLimited(Reason.OTP_LOCKED, _seconds(previous.locked_until - now))
    window_start = now - policy.send_window
    in_window = sorted(t for t in recent_sends if window_start < t <= now)
    if in_window and now - in_window[-1] < policy.min_resend_interval:
        raise RateLimited(Reason.OTP_RESEND_TOO_SOON, _seconds(in_window[-1] + policy.min_resend_interval - now))
    if len(in_window) >= policy.max_sends_per_window:
        # the oldest send in the window leaves it first
        oldest = in_window[len(in_window) - policy.max_sends_per_window]
        raise RateLimited(Reason.OTP_SEND_LIMIT, _seconds(oldest + policy.send_window - now))


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def issue(
    secret: OtpSecret,
    purpose: str,
    subject: str,
    now: datetime,
    recent_sends: Sequence[datetime] = (),
    previous: OtpRecord | None = None,
    policy: OtpPolicy = DEFAULT_POLICY,
) -> IssuedOtp:
    """Create a fresh code after :func:`check_send_allowed`. The new record
    replaces ``previous``; the caller appends ``now`` to the send history."""
    if not purpose or not subject:
        raise InvalidInput("otp", "required", "expected a purpose and a subject")
    check_send_allowed(recent_sends, now, policy, previous)
    code = "".join(secrets.choice("0123456789") for _ in range(policy.digits))
    salt = secrets.token_bytes(16)
    record = OtpRecord(
        purpose=purpose,
        subject=subject,
        salt=salt,
        code_hash=secret.code_hash(salt, purpose, subject, code),
        issued_at=now,
        expires_at=now + policy.ttl,
    )
    return IssuedOtp(code=code, record=record)


def verify(
    secret: OtpSecret,
    record: OtpRecord,
    presented: str,
    now: datetime,
    policy: OtpPolicy = DEFAULT_POLICY,
) -> OtpVerification:
    """Check ``presented`` against ``record``; a wrong code (including a
    malformed one) counts as a try, the last allowed wrong try locks."""
    left = max(policy.max_wrong_attempts - record.wrong_attempts, 0)
    if record.used_at is not None:
        return OtpVerification(OtpOutcome.ALREADY_USED, record, left)
    if record.is_locked(now) or record.wrong_attempts >= policy.max_wrong_attempts:
        # A code that reached the limit stays dead after the lock ends; the
        # person asks for a new one once check_send_allowed lets them.
        return OtpVerification(OtpOutcome.LOCKED, record, 0)
    if now >= record.expires_at:
        return OtpVerification(OtpOutcome.EXPIRED, record, left)

    candidate = presented if isinstance(presented, str) else ""
    expected = record.code_hash
    actual = secret.code_hash(record.salt, record.purpose, record.subject, candidate)
    # The hash is always computed and compared, so a malformed code costs the
    # same time as a wrong one.
    well_formed = len(candidate) == policy.digits and all(c in "0123456789" for c in candidate)
    if hmac.compare_digest(expected, actual) and well_formed:
        return OtpVerification(OtpOutcome.ACCEPTED, replace(record, used_at=now), left)

    wrong = record.wrong_attempts + 1
    locked_until = now + policy.lockout if wrong >= policy.max_wrong_attempts else None
    updated = replace(record, wrong_attempts=wrong, locked_until=locked_until)
    return OtpVerification(OtpOutcome.WRONG_CODE, updated, max(policy.max_wrong_attempts - wrong, 0))
