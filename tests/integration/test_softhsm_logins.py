"""SoftHSM2 rewrites a token's token.object on every C_Login, and softhsm2-util reading the slots at
that instant may show the slot without its label. ``ensure_token`` must not take that for a token
that is gone: it once made a second token labelled ``esign`` beside the first while identity logged
in, and signing then refused to start (``more than one token is labelled 'esign'``; tests/e2e/test_up.py,
session 13). Real SoftHSM2, a real process logging in and out."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from services.common.keystore import softhsm
from services.common.keystore.softhsm import ensure_token

LOGINS = textwrap.dedent("""
    import sys, time, pkcs11
    lib = pkcs11.lib(sys.argv[1])
    token = lib.get_token(token_label=sys.argv[2])
    pin = open(sys.argv[3]).read().strip()
    end = time.monotonic() + float(sys.argv[4])
    logins = 0
    while time.monotonic() < end:
        try:
            with token.open(user_pin=pin, rw=True):
                logins += 1
        except pkcs11.PKCS11Error:
            pass  # it reads the token object another write is replacing: that is what is under test
    print(logins)
""")


def _labels_shown(conf) -> list[str]:
    out = subprocess.run(["softhsm2-util", "--show-slots"], env=dict(os.environ, SOFTHSM2_CONF=str(conf)),
                         capture_output=True, text=True, check=True).stdout
    return [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("Label:")]


def test_a_token_being_logged_in_to_elsewhere_is_found_not_made_again(tmp_path):
    first = ensure_token(tmp_path, "esign")
    ensure_token(tmp_path, "esign-dev-root")
    seconds = 4.0
    logging_in = subprocess.Popen([sys.executable, "-c", LOGINS, first.module, "esign", str(first.pin_file),
                                   str(seconds)], env=dict(os.environ, SOFTHSM2_CONF=str(first.conf)),
                                  stdout=subprocess.PIPE, text=True)
    calls, misses, original = 0, 0, softhsm._token_labels

    def counting(conf):
        nonlocal misses
        labels = original(conf)
        misses += "esign" not in labels
        return labels

    softhsm._token_labels = counting
    try:
        end = time.monotonic() + seconds - 0.5
        while time.monotonic() < end:
            assert ensure_token(tmp_path, "esign") == first
            calls += 1
    finally:
        softhsm._token_labels = original
    out, _ = logging_in.communicate(timeout=30)
    assert int(out) > 100, "the other process logged in all the while"
    shown = _labels_shown(first.conf)
    assert shown.count("esign") == 1 and shown.count("esign-dev-root") == 1, shown
    print(f"{calls} ensure_token calls, {misses} slot readings without the label, {int(out)} logins beside them")


def test_a_store_finds_its_token_while_another_process_logs_in(softhsm_home):
    """The store looks for its token again when the slot is read without its label or the read fails
    (CKR_GENERAL_ERROR), as both happen for an instant while another process logs in."""
    import pkcs11

    from services.common.keystore.pkcs11_token import TokenSettings, _Token
    from tests.support.softhsm import token

    other = token(softhsm_home, "esign-other")
    other.activate()
    seconds = 3.0
    logging_in = subprocess.Popen([sys.executable, "-c", LOGINS, other.module, other.label, str(other.pin_file),
                                   str(seconds)], env=dict(os.environ, SOFTHSM2_CONF=str(other.conf)),
                                  stdout=subprocess.PIPE, text=True)
    finder = _Token(TokenSettings(module=other.module, token_label=other.label), other.pin())
    finder._lib = pkcs11.lib(other.module)
    found, end = 0, time.monotonic() + seconds - 0.5
    while time.monotonic() < end:
        assert finder._find_token().label == other.label
        found += 1
    out, _ = logging_in.communicate(timeout=30)
    assert int(out) > 100 and found > 100, (out, found)
