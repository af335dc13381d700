"""QR invites: signed, expiring receipt links and their QR codes."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from services.common.errors import Forbidden, InvalidInput
from services.documents.invite import (
    invite_qr_png,
    invite_qr_svg,
    make_invite,
    make_token,
    read_invite,
    token_from_url,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
UTC = datetime.timezone.utc
NOW = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + datetime.timedelta(days=30)
BASE = "https://esign.example.cn/receipts/new"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_link_round_trips_to_person_role_and_expiry():
    url = make_invite("p_0001", "payee", EXPIRES, KEY, BASE)
    assert url.startswith(BASE + "?invite=")
    invite = read_invite(token_from_url(url), KEY, NOW)
    assert (invite.person_id, invite.role, invite.expires_at) == ("p_0001", "payee", EXPIRES)
    assert invite.role_label == "收款人"
    assert read_invite(make_token("p_0002", "payer", EXPIRES, KEY), KEY, NOW).role_label == "付款人"


def test_existing_query_parameters_are_kept():
    url = make_invite("p_0001", "payer", EXPIRES, KEY, BASE + "?template=receipt&v=2")
    assert "template=receipt&v=2&invite=" in url
    assert read_invite(token_from_url(url), KEY, NOW).role == "payer"


def test_token_carries_only_the_id_role_and_expiry():
    payload = json.loads(unb64(make_token("p_0001", "payee", EXPIRES, KEY).split(".")[0]))
    assert payload == {"v": 1, "p": "p_0001", "r": "payee", "exp": int(EXPIRES.timestamp())}


def test_expiry_is_exclusive():
    token = make_token("p_0001", "payee", EXPIRES, KEY)
    assert read_invite(token, KEY, EXPIRES - datetime.timedelta(seconds=1)).person_id == "p_0001"
    for now in (EXPIRES, EXPIRES + datetime.timedelta(days=1)):
        with pytest.raises(Forbidden, match="^invite_expired$"):
            read_invite(token, KEY, now)


def test_wrong_key_is_refused():
    with pytest.raises(Forbidden, match="^invite_invalid$") as caught:
        read_invite(make_token("p_0001", "payee", EXPIRES, KEY), OTHER_KEY, NOW)
    assert caught.value.__cause__.reason == "token_bad_signature"


def test_changed_payload_is_refused():
    payload_text, mac_text = make_token("p_0001", "payee", EXPIRES, KEY).split(".")
    payload = json.loads(unb64(payload_text))
    for change in ({"r": "payer"}, {"p": "p_0002"}, {"exp": payload["exp"] + 86400 * 365}):
        forged = b64(json.dumps({**payload, **change}, separators=(",", ":"), sort_keys=True).encode())
        with pytest.raises(Forbidden, match="^invite_invalid$") as caught:
            read_invite(f"{forged}.{mac_text}", KEY, NOW)
        assert caught.value.__cause__.reason == "token_bad_signature"


def test_mac_without_the_invite_context_is_refused():
    """A MAC the same key made for something else (no context prefix) must not pass."""
    payload = json.dumps({"v": 1, "p": "p_0001", "r": "payee", "exp": int(EXPIRES.timestamp())},
                         separators=(",", ":"), sort_keys=True).encode()
    bare = hmac.new(KEY, payload, hashlib.sha256).digest()
    with pytest.raises(Forbidden, match="^invite_invalid$") as caught:
        read_invite(f"{b64(payload)}.{b64(bare)}", KEY, NOW)
    assert caught.value.__cause__.reason == "token_bad_signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "x" * 600 + ".y", "e30.AAAA"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(Forbidden, match="^invite_invalid$"):
        read_invite(token, KEY, NOW)


def test_refusals_do_not_echo_the_key_or_token():
    token = make_token("p_0001", "payee", EXPIRES, KEY)
    with pytest.raises(Forbidden) as caught:
        read_invite(token, OTHER_KEY, NOW)
    text = str(caught.value)
    assert token not in text and KEY.hex() not in text and OTHER_KEY.hex() not in text


def test_link_without_token_is_refused():
    with pytest.raises(Forbidden):
        token_from_url(BASE + "?template=receipt")


@pytest.mark.parametrize("call, field, rule", [
    (lambda: make_token("p_0001", "payee", EXPIRES, b"short"), "key", "min_length"),
    (lambda: make_token("p_0001", "lender", EXPIRES, KEY), "role", "choice"),
    (lambda: make_token("张三", "payee", EXPIRES, KEY), "person_id", "format"),
    (lambda: make_token("p_0001", "payee", EXPIRES.replace(tzinfo=None), KEY), "expires_at", "timezone"),
    (lambda: make_invite("p_0001", "payee", EXPIRES, KEY, "javascript:alert(1)"), "base_url", "url"),
    (lambda: read_invite("a.b", KEY, NOW.replace(tzinfo=None)), "now", "timezone"),
])
def test_invalid_arguments(call, field, rule):
    with pytest.raises(InvalidInput) as caught:
        call()
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_qr_png_decodes_to_the_link(tmp_path):
    url = make_invite("p_0001", "payee", EXPIRES, KEY, BASE)
    png = invite_qr_png(url)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    path = tmp_path / "qr.png"
    path.write_bytes(png)
    assert shutil.which("zbarimg"), "zbarimg (Debian zbar-tools) is needed to decode the QR code"
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(path)], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert decoded == url


def test_qr_svg_is_an_svg_document():
    svg = invite_qr_svg(make_invite("p_0001", "payer", EXPIRES, KEY, BASE))
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert root.find(".//{http://www.w3.org/2000/svg}path") is not None
