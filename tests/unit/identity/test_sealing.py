"""Envelope encryption (AES-256-GCM data keys wrapped by rotating KEKs) and
blind indexes, from services.common.sealing."""
import base64
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from services.common.errors import IntegrityError
from services.common.sealing import (
    BlindIndex,
    Keyring,
    SealedBlob,
    associated_data,
    decode_key,
    from_text,
    to_text,
)

K1, K2, K3 = os.urandom(32), os.urandom(32), os.urandom(32)
AAD = associated_data("person-42", "id_number")
SECRET = "11010519491231002X".encode()


def ring(active="k1", **keys):
    keys = keys or {"k1": K1}
    return Keyring(keys, active=active)


def test_round_trip_and_plaintext_absent_from_blob():
    keyring = ring()
    blob = keyring.seal(SECRET, AAD)
    assert SECRET not in blob
    assert keyring.open(blob, AAD) == SECRET


def test_blob_is_standard_aes_gcm_under_a_wrapped_data_key():
    # Decrypt with the primitives directly, following the documented layout:
    # shows the format is what the docstring says, not something private.
    blob = ring().seal(SECRET, AAD)
    assert blob[:4] == b"ESL1"
    kid_len = blob[4]
    assert blob[5:5 + kid_len] == b"k1"
    pos = 5 + kid_len
    data_key = aes_key_unwrap(K1, blob[pos:pos + 40])
    assert len(data_key) == 32  # AES-256
    nonce = blob[pos + 40:pos + 52]
    assert AESGCM(data_key).decrypt(nonce, blob[pos + 52:], b"ESL1" + AAD) == SECRET


def test_each_seal_uses_a_fresh_data_key_and_nonce():
    keyring = ring()
    a, b = SealedBlob.from_bytes(keyring.seal(SECRET, AAD)), SealedBlob.from_bytes(keyring.seal(SECRET, AAD))
    assert a.wrapped_key != b.wrapped_key
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext


def test_other_associated_data_does_not_open():
    keyring = ring()
    blob = keyring.seal(SECRET, AAD)
    with pytest.raises(IntegrityError):
        keyring.open(blob, associated_data("person-43", "id_number"))
    with pytest.raises(IntegrityError):
        keyring.open(blob, associated_data("person-42", "phone"))
    with pytest.raises(IntegrityError):
        keyring.open(blob)


def test_associated_data_encoding_is_unambiguous():
    assert associated_data("ab", "c") != associated_data("a", "bc")
    assert associated_data("a", "") != associated_data("a")


def test_wrong_kek_with_the_same_id_is_an_integrity_error():
    blob = ring().seal(SECRET, AAD)
    with pytest.raises(IntegrityError):
        Keyring({"k1": K2}, active="k1").open(blob, AAD)


def test_unknown_key_id_is_an_integrity_error():
    blob = ring().seal(SECRET, AAD)
    with pytest.raises(IntegrityError):
        Keyring({"k2": K2}, active="k2").open(blob, AAD)


@pytest.mark.parametrize("where", ["key_id", "wrapped_key", "nonce", "ciphertext", "tag"])
def test_any_tampered_byte_is_detected(where):
    keyring = Keyring({"k1": K1, "k2": K1}, active="k1")  # same key under two ids
    blob = bytearray(keyring.seal(SECRET, AAD))
    pos = 5 + blob[4]
    index = {"key_id": 6, "wrapped_key": pos + 3, "nonce": pos + 41, "ciphertext": pos + 53,
             "tag": len(blob) - 1}[where]
    if where == "key_id":
        blob[index] = ord("3")  # "k1" -> "k3": unknown
    else:
        blob[index] ^= 0x01
    with pytest.raises(IntegrityError):
        keyring.open(bytes(blob), AAD)


@pytest.mark.parametrize("blob", [b"", b"ESL", b"XXXX" + b"\x00" * 80, b"ESL1\x02k1" + b"\x00" * 10, "text"])
def test_malformed_blobs(blob):
    with pytest.raises(IntegrityError):
        ring().open(blob, AAD)


def test_rotation_old_blobs_open_new_blobs_use_active_key():
    old = ring().seal(SECRET, AAD)
    rotated = Keyring({"k1": K1, "k2": K2}, active="k2")
    assert rotated.open(old, AAD) == SECRET
    new = rotated.seal(SECRET, AAD)
    assert SealedBlob.from_bytes(new).key_id == "k2"
    assert rotated.needs_rewrap(old) and not rotated.needs_rewrap(new)


def test_rewrap_moves_a_blob_to_the_active_kek_without_aad_or_plaintext():
    old = ring().seal(SECRET, AAD)
    rotated = Keyring({"k1": K1, "k2": K2}, active="k2")
    moved = rotated.rewrap(old)
    parsed_old, parsed_new = SealedBlob.from_bytes(old), SealedBlob.from_bytes(moved)
    assert parsed_new.key_id == "k2"
    assert parsed_new.ciphertext == parsed_old.ciphertext  # data untouched
    assert parsed_new.nonce == parsed_old.nonce
    # After rewrap k1 can be retired: a keyring with only k2 opens the blob…
    assert Keyring({"k2": K2}, active="k2").open(moved, AAD) == SECRET
    # …and one with only k1 no longer does.
    with pytest.raises(IntegrityError):
        ring().open(moved, AAD)
    # Rewrapping an up-to-date blob changes nothing.
    assert rotated.rewrap(moved) == moved


def test_rewrap_of_a_foreign_blob_fails():
    blob = Keyring({"k3": K3}, active="k3").seal(SECRET, AAD)
    with pytest.raises(IntegrityError):
        Keyring({"k1": K1, "k2": K2}, active="k2").rewrap(blob)


def test_text_form_is_json_safe_and_round_trips():
    keyring = ring()
    text = to_text(keyring.seal(SECRET, AAD))
    assert json.loads(json.dumps({"v": text}))["v"] == text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert keyring.open(from_text(text), AAD) == SECRET
    with pytest.raises(IntegrityError):
        from_text("not base64 !!")


def test_keyring_validation_and_repr():
    with pytest.raises(ValueError):
        Keyring({"k1": K1}, active="k2")
    with pytest.raises(ValueError):
        Keyring({"k1": b"short"}, active="k1")
    with pytest.raises(ValueError):
        Keyring({"bad id with spaces": K1}, active="bad id with spaces")
    text = repr(Keyring({"k1": K1, "k2": K2}, active="k2"))
    assert "k1" in text and K1.hex() not in text and repr(K1) not in text


def test_decode_key_forms():
    key = os.urandom(32)
    assert decode_key(key.hex()) == key
    assert decode_key(base64.b64encode(key).decode()) == key
    assert decode_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    assert decode_key(f"  {key.hex()}\n") == key
    assert decode_key(key) == key
    for bad in ["", "abcd", base64.b64encode(os.urandom(16)).decode(), "zz" * 32]:
        with pytest.raises(ValueError):
            decode_key(bad)


def test_blind_index_is_deterministic_keyed_and_domain_separated():
    index = BlindIndex(K1)
    a = index.digest("id_number", "11010519491231002X")
    assert a == index.digest("id_number", "11010519491231002X")
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != index.digest("id_number", "440524188001010014")
    assert a != index.digest("phone", "11010519491231002X")
    assert a != BlindIndex(K2).digest("id_number", "11010519491231002X")
    assert "11010519491231002X" not in a
    assert K1.hex() not in repr(index)
    with pytest.raises(ValueError):
        BlindIndex(b"short")


def test_a_keyring_from_config_keeps_retired_keks_able_to_open(tmp_path, monkeypatch):
    from services.common.sealing import keyring_from_secrets

    monkeypatch.setenv("TEST_KEK_OLD", "base64:" + base64.b64encode(K1).decode())
    monkeypatch.setenv("TEST_KEK_NEW", "base64:" + base64.b64encode(K2).decode())
    before = keyring_from_secrets({"KEK": {"id": "k1", "env": "TEST_KEK_OLD"}}, "kek", "kek-1")
    sealed = before.seal(SECRET, AAD)
    after = keyring_from_secrets({"KEK": {"id": "k2", "env": "TEST_KEK_NEW"},
                                  "RETIRED_KEKS": [{"id": "k1", "env": "TEST_KEK_OLD"}]}, "kek", "kek-1")
    assert after.active_key_id == "k2" and after.key_ids == frozenset({"k1", "k2"})
    assert after.open(sealed, AAD) == SECRET
    generated = keyring_from_secrets({}, "kek", "kek-1", generate_in=tmp_path)  # embedded default
    assert generated.active_key_id == "kek-1" and (tmp_path / "secrets" / "kek").exists()
