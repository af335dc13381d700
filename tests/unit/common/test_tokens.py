from datetime import datetime, timedelta, timezone

import pytest

from services.common.errors import Forbidden, InvalidInput
from services.common.tokens import read_token, sign_token

KEY = b"k" * 32
NOW = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)


def test_round_trip_and_expiry():
    token = sign_token({"pid": "p1"}, NOW + timedelta(hours=1), KEY, b"session")
    assert read_token(token, KEY, b"session", NOW)["pid"] == "p1"
    with pytest.raises(Forbidden) as expired:
        read_token(token, KEY, b"session", NOW + timedelta(hours=1))
    assert expired.value.reason == "token_expired"


@pytest.mark.parametrize("mutate,reason", [
    (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), "token_bad_signature"),
    (lambda t: "x" + t, "token_bad_signature"),
    (lambda t: t.replace(".", ""), "token_malformed"),
    (lambda t: "", "token_malformed"),
])
def test_tampered_tokens_are_refused(mutate, reason):
    token = sign_token({"pid": "p1"}, NOW + timedelta(hours=1), KEY, b"session")
    with pytest.raises(Forbidden) as error:
        read_token(mutate(token), KEY, b"session", NOW)
    assert error.value.reason == reason


def test_context_and_key_separate_purposes():
    token = sign_token({"pid": "p1"}, NOW + timedelta(hours=1), KEY, b"invite")
    with pytest.raises(Forbidden):
        read_token(token, KEY, b"session", NOW)
    with pytest.raises(Forbidden):
        read_token(token, b"j" * 32, b"invite", NOW)
    with pytest.raises(InvalidInput):
        sign_token({}, NOW, b"short", b"x")
