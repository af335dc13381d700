"""SMS one-time codes: hashed storage, expiry, wrong-try lock, send limits."""
import dataclasses
import hashlib
import hmac
from datetime import datetime, timedelta, timezone

import pytest

from services.common.errors import Forbidden, InvalidInput
from services.identity import otp
from services.identity.otp import OtpOutcome, OtpPolicy, OtpSecret

T0 = datetime(2024, 6, 15, 8, 0, tzinfo=timezone.utc)
SECRET = OtpSecret(b"s" * 32)
POLICY = OtpPolicy(lockout=timedelta(minutes=30), max_sends_per_window=3, min_resend_interval=timedelta(seconds=60))


def fresh(now=T0, purpose="phone_confirmation", subject="person-1", policy=POLICY):
    return otp.issue(SECRET, purpose, subject, now, policy=policy)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_code_is_six_ascii_digits_and_varies():
    codes = {fresh().code for _ in range(50)}
    assert all(len(c) == 6 and set(c) <= set("0123456789") for c in codes)
    assert len(codes) > 40  # 50 draws from 10**6 hardly ever repeat


def test_only_a_keyed_salted_hash_is_stored():
    issued = fresh()
    record = issued.record
    stored = repr(dataclasses.asdict(record))
    assert issued.code not in stored
    assert len(record.salt) >= 16
    # Not a plain hash of the code, with or without salt: the server key matters.
    assert record.code_hash != hashlib.sha256(issued.code.encode()).digest()
    assert record.code_hash != hashlib.sha256(record.salt + issued.code.encode()).digest()
    other_secret = OtpSecret(b"t" * 32)
    assert other_secret.code_hash(record.salt, record.purpose, record.subject, issued.code) != record.code_hash
    assert len(record.code_hash) == hmac.new(b"k", b"m", hashlib.sha256).digest_size


def test_same_code_twice_gets_different_hashes_thanks_to_the_salt():
    a, b = fresh(), fresh()
    assert a.record.salt != b.record.salt
    h1 = SECRET.code_hash(a.record.salt, "p", "s", "123456")
    h2 = SECRET.code_hash(b.record.salt, "p", "s", "123456")
    assert h1 != h2


def test_right_code_is_accepted_once():
    issued = fresh()
    result = otp.verify(SECRET, issued.record, issued.code, T0 + timedelta(minutes=1), POLICY)
    assert result.outcome is OtpOutcome.ACCEPTED and result.accepted
    assert result.record.used_at == T0 + timedelta(minutes=1)
    result.require_accepted()
    again = otp.verify(SECRET, result.record, issued.code, T0 + timedelta(minutes=2), POLICY)
    assert again.outcome is OtpOutcome.ALREADY_USED
    with pytest.raises(Forbidden) as info:
        again.require_accepted()
    assert info.value.reason == "otp_already_used"


def test_expires_after_five_minutes_by_default():
    assert otp.DEFAULT_POLICY.ttl == timedelta(minutes=5)
    issued = otp.issue(SECRET, "phone_confirmation", "person-1", T0)
    just_before = otp.verify(SECRET, issued.record, issued.code, T0 + timedelta(minutes=5) - timedelta(seconds=1))
    assert just_before.accepted
    at_expiry = otp.verify(SECRET, issued.record, issued.code, T0 + timedelta(minutes=5))
    assert at_expiry.outcome is OtpOutcome.EXPIRED
    assert at_expiry.record == issued.record  # an expired check changes nothing


def test_code_is_bound_to_purpose_and_subject():
    issued = fresh(purpose="phone_confirmation", subject="person-1")
    moved = dataclasses.replace(issued.record, subject="person-2")
    assert otp.verify(SECRET, moved, issued.code, T0, POLICY).outcome is OtpOutcome.WRONG_CODE
    repurposed = dataclasses.replace(issued.record, purpose="willingness")
    assert otp.verify(SECRET, repurposed, issued.code, T0, POLICY).outcome is OtpOutcome.WRONG_CODE


def test_wrong_tries_count_down_then_lock_even_the_right_code():
    issued = fresh()
    record = issued.record
    wrong = other_code(issued.code)
    for expected_left in (4, 3, 2, 1, 0):
        result = otp.verify(SECRET, record, wrong, T0 + timedelta(seconds=10), POLICY)
        assert result.outcome is OtpOutcome.WRONG_CODE
        assert result.attempts_left == expected_left
        record = result.record
    assert record.wrong_attempts == 5
    assert record.locked_until == T0 + timedelta(seconds=10) + POLICY.lockout
    locked = otp.verify(SECRET, record, issued.code, T0 + timedelta(seconds=20), POLICY)
    assert locked.outcome is OtpOutcome.LOCKED
    assert locked.record == record


def test_four_wrong_tries_still_allow_the_right_code():
    issued = fresh()
    record = issued.record
    for _ in range(4):
        record = otp.verify(SECRET, record, other_code(issued.code), T0, POLICY).record
    assert otp.verify(SECRET, record, issued.code, T0, POLICY).accepted


def test_a_dead_code_stays_dead_after_the_lock_period():
    policy = dataclasses.replace(POLICY, lockout=timedelta(minutes=1), ttl=timedelta(minutes=10))
    issued = fresh(policy=policy)
    record = issued.record
    for _ in range(5):
        record = otp.verify(SECRET, record, "000000" if issued.code != "000000" else "111111", T0, policy).record
    later = T0 + timedelta(minutes=2)
    assert not record.is_locked(later)
    assert otp.verify(SECRET, record, issued.code, later, policy).outcome is OtpOutcome.LOCKED


@pytest.mark.parametrize("presented", ["", "12345", "1234567", "１２３４５６", "abcdef", None, 123456])
def test_malformed_codes_count_as_wrong(presented):
    issued = fresh()
    result = otp.verify(SECRET, issued.record, presented, T0, POLICY)
    assert result.outcome is OtpOutcome.WRONG_CODE
    assert result.record.wrong_attempts == 1


def test_full_width_version_of_the_right_code_is_refused():
    issued = fresh()
    full_width = "".join(chr(ord("０") + int(c)) for c in issued.code)
    assert otp.verify(SECRET, issued.record, full_width, T0, POLICY).outcome is OtpOutcome.WRONG_CODE


def test_no_new_code_while_locked_and_one_after():
    issued = fresh()
    record = issued.record
    for _ in range(5):
        record = otp.verify(SECRET, record, other_code(issued.code), T0, POLICY).record
    with pytest.raises(Forbidden) as info:
        otp.issue(SECRET, "phone_confirmation", "person-1", T0 + timedelta(minutes=29), previous=record, policy=POLICY)
    assert info.value.reason == "otp_locked"
    assert info.value.retry_after == 60 and info.value.http_status == 429  # the lock ends a minute later
    again = otp.issue(SECRET, "phone_confirmation", "person-1", T0 + timedelta(minutes=30), previous=record,
                      policy=POLICY)
    assert again.record.wrong_attempts == 0 and again.record.locked_until is None


def test_a_locked_phone_code_challenge_does_not_hold_back_the_next_code():
    # anyone can ask for a code to any phone: five wrong guesses must not lock its owner out
    issued = fresh()
    record = issued.record
    for _ in range(5):
        record = otp.verify(SECRET, record, other_code(issued.code), T0, POLICY).record
    assert record.is_locked(T0)
    after_resend = T0 + otp.PHONE_CONFIRMATION_POLICY.min_resend_interval
    fresh_code = otp.issue(SECRET, "phone_confirmation", "person-1", after_resend, recent_sends=[T0],
                           previous=record, policy=otp.PHONE_CONFIRMATION_POLICY)
    assert otp.verify(SECRET, fresh_code.record, fresh_code.code, after_resend,
                      otp.PHONE_CONFIRMATION_POLICY).accepted
    # the locked challenge itself stays dead, right code or not
    assert not otp.verify(SECRET, record, issued.code, after_resend, otp.PHONE_CONFIRMATION_POLICY).accepted


def test_send_quota_in_a_sliding_hour():
    sends = []
    now = T0
    for _ in range(3):
        otp.issue(SECRET, "phone_confirmation", "p", now, recent_sends=sends, policy=POLICY)
        sends.append(now)
        now += timedelta(minutes=5)
    with pytest.raises(Forbidden) as info:
        otp.issue(SECRET, "phone_confirmation", "p", now, recent_sends=sends, policy=POLICY)
    assert info.value.reason == "otp_send_limit"
    # One hour after the first send, one slot is free again.
    otp.issue(SECRET, "phone_confirmation", "p", T0 + timedelta(hours=1), recent_sends=sends, policy=POLICY)
    with pytest.raises(Forbidden):
        otp.issue(SECRET, "phone_confirmation", "p", T0 + timedelta(hours=1) - timedelta(seconds=1),
                  recent_sends=sends, policy=POLICY)


def test_default_quota_is_five_an_hour():
    sends = [T0 + timedelta(minutes=2 * i) for i in range(5)]
    with pytest.raises(Forbidden) as info:
        otp.check_send_allowed(sends, T0 + timedelta(minutes=30))
    assert info.value.reason == "otp_send_limit"
    assert info.value.retry_after == 30 * 60  # when the oldest send leaves the hour
    otp.check_send_allowed(sends[:4], T0 + timedelta(minutes=30))


def test_resend_interval():
    sends = [T0]
    with pytest.raises(Forbidden) as info:
        otp.check_send_allowed(sends, T0 + timedelta(seconds=59), POLICY)
    assert info.value.reason == "otp_resend_too_soon"
    assert info.value.retry_after == 1
    otp.check_send_allowed(sends, T0 + timedelta(seconds=60), POLICY)


def test_old_history_is_ignored():
    sends = [T0 - timedelta(hours=3, minutes=i) for i in range(50)]
    otp.check_send_allowed(sends, T0, POLICY)


def test_purpose_and_subject_required():
    with pytest.raises(InvalidInput):
        otp.issue(SECRET, "", "p", T0)
    with pytest.raises(InvalidInput):
        otp.issue(SECRET, "phone_confirmation", "", T0)


def test_secret_must_be_long_and_stays_hidden():
    with pytest.raises(ValueError):
        OtpSecret(b"short")
    assert "sss" not in repr(SECRET)
