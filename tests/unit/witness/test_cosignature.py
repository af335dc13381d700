"""cosignature/v1 (c2sp.org/tlog-cosignature): keys, signing, verifying.

Vectors (values only, see tests/unit/witness/vectors.py):

* transparency-dev/witness, ``witness/witness_test.go``, commit
  54dbcdd14f829a301b24b59f7c547c7dceebafa8 (Apache-2.0): the witness private
  key ``wSK`` (``PRIVATE+KEY+witness+f13a86db+...``, a plain Ed25519 signer key
  that ``NewSignerForCosignatureV1`` reads), its vkey ``wPK``, the log key
  ``mPK`` and the checkpoint ``mNext``;
* C2SP/C2SP ``tlog-cosignature.md``, commit
  5ba5ee830903e91240fc6f9f3a7a9293d49e69c9: the example cosignature line of
  ``witness.example.com/w1`` (no public key is published, so only its parse).
"""
from __future__ import annotations

import base64
import hashlib

import pytest

from services.signing.checkpoint import (
    BadSignatureError,
    MalformedNoteError,
    NoteSigner,
    NoteVerifier,
    UnknownKeyError,
    open_note,
    parse_note,
    sign_note,
)
from services.witness.cosignature import (
    Cosignature,
    CosignatureSigner,
    CosignatureVerifier,
    cosignature_key_id,
    signed_message,
)
from tests.unit.witness.vectors import (
    C2SP_COSIGNATURE_LINE,
    C2SP_COSIGNATURE_TIMESTAMP,
    C2SP_COSIGNED_CHECKPOINT,
    M_NEXT,
    M_PK,
    W_NOTE_KEY_ID,
    W_PK,
    W_SK,
)

NEXT_BODY = M_NEXT[: M_NEXT.index("\n\n") + 1]


def _raw_public_key(vkey: str) -> bytes:
    return base64.b64decode(vkey.split("+", 2)[2])


# --- keys --------------------------------------------------------------------------------


def test_witness_key_from_go_vectors_gets_a_type_0x04_key_id_not_its_0x01_one():
    signer = CosignatureSigner.from_key_string(W_SK)
    public = _raw_public_key(W_PK)[1:]
    expected = int.from_bytes(hashlib.sha256(b"witness\n\x04" + public).digest()[:4], "big")
    assert signer.key_id == expected == cosignature_key_id("witness", public)
    assert signer.key_id != W_NOTE_KEY_ID
    # the same key as a plain note signer keeps the 0x01 id the vector names
    assert NoteSigner.from_key_string(W_SK).key_id == W_NOTE_KEY_ID


def test_verifier_key_is_a_vkey_of_type_0x04_and_round_trips():
    vkey = CosignatureSigner.from_key_string(W_SK).verifier.to_key_string()
    name, key_id_hex, encoded = vkey.split("+")
    raw = base64.b64decode(encoded)
    assert name == "witness"
    assert raw[0] == 0x04 and raw[1:] == _raw_public_key(W_PK)[1:]
    assert int(key_id_hex, 16) == cosignature_key_id("witness", raw[1:])
    assert CosignatureVerifier.from_key_string(vkey).to_key_string() == vkey


def test_plain_ed25519_vkey_is_read_as_its_cosignature_key_like_go_does():
    # transparency-dev/formats NewVerifierForCosignatureV1 accepts the 0x01 vkey wPK
    from_plain = CosignatureVerifier.from_key_string(W_PK)
    assert from_plain == CosignatureSigner.from_key_string(W_SK).verifier
    assert from_plain.key_id != W_NOTE_KEY_ID


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda name, kid, raw: (name, kid, b"\x02" + raw[1:]), "signature type 0x04"),
        (lambda name, kid, raw: (name, kid, raw[:-1]), "32-byte Ed25519 key"),
        (lambda name, kid, raw: (name, f"{(int(kid, 16) ^ 1):08x}", raw), "expected key id"),
        (lambda name, kid, raw: ("other", kid, raw), "expected key id"),
        (lambda name, kid, raw: (name, kid.upper(), raw), "lower-case hex"),
    ],
)
def test_malformed_verifier_keys_are_refused_with_a_reason(mutate, match):
    name, kid, encoded = CosignatureSigner.from_key_string(W_SK).verifier.to_key_string().split("+")
    name, kid, raw = mutate(name, kid, base64.b64decode(encoded))
    with pytest.raises(MalformedNoteError, match=match):
        CosignatureVerifier.from_key_string(f"{name}+{kid}+{base64.b64encode(raw).decode()}")


def test_private_key_round_trips_in_the_go_signer_key_form_and_repr_hides_it():
    signer = CosignatureSigner.from_key_string(W_SK)
    assert signer.to_key_string() == W_SK
    assert "PRIVATE" not in repr(signer) and W_SK.split("+")[-1] not in repr(signer)
    fresh = CosignatureSigner.generate("witness.example.org/w1")
    again = CosignatureSigner.from_key_string(fresh.to_key_string())
    assert again.verifier == fresh.verifier


# --- signing and verifying ------------------------------------------------------------------


def test_cosignature_layout_and_message_are_the_specs():
    signer = CosignatureSigner.from_key_string(W_SK)
    cosignature = signer.cosign(NEXT_BODY, 1679315147)
    line = cosignature.line()
    assert line.startswith("\u2014 witness ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 64
    assert int.from_bytes(blob[:4], "big") == signer.key_id
    assert int.from_bytes(blob[4:12], "big") == 1679315147
    message = b"cosignature/v1\ntime 1679315147\n" + NEXT_BODY.encode()
    assert signed_message(NEXT_BODY, 1679315147) == message
    # checked with the bare public key, not our verifier
    signer.verifier.public_key.verify(blob[12:], message)


def test_cosignature_verifies_and_parses_back():
    signer = CosignatureSigner.from_key_string(W_SK)
    line = signer.cosign(NEXT_BODY, 1700000000).line()
    verifier = CosignatureVerifier.from_key_string(signer.verifier.to_key_string())
    parsed = verifier.verify_line(NEXT_BODY, line)
    assert parsed.timestamp == 1700000000 and parsed.name == "witness"


def test_cosigned_note_opens_with_the_log_key_and_the_witness_key_together():
    signer = CosignatureSigner.from_key_string(W_SK)
    note = M_NEXT + signer.cosign(NEXT_BODY, 1700000000).line()
    opened = open_note(note, [NoteVerifier.from_key_string(M_PK), signer.verifier])
    assert {s.name for s in opened.verified} == {"monkeys", "witness"}


@pytest.mark.parametrize("change", ["body", "timestamp", "signature"])
def test_an_altered_cosignature_does_not_verify(change):
    signer = CosignatureSigner.from_key_string(W_SK)
    good = signer.cosign(NEXT_BODY, 1700000000)
    body, cosignature = NEXT_BODY, good
    if change == "body":
        body = NEXT_BODY.replace("\n8\n", "\n9\n")
    elif change == "timestamp":
        cosignature = Cosignature(good.name, good.key_id, good.timestamp + 1, good.signature)
    else:
        cosignature = Cosignature(good.name, good.key_id, good.timestamp,
                                  bytes([good.signature[0] ^ 1]) + good.signature[1:])
    with pytest.raises(BadSignatureError):
        signer.verifier.verify(body, cosignature)


def test_a_plain_note_signature_of_the_witness_key_is_not_a_cosignature():
    # the same key signing the checkpoint as a plain note: 0x01 id, no timestamp
    plain = sign_note(NEXT_BODY, [NoteSigner.from_key_string(W_SK)])
    plain_line = plain[len(NEXT_BODY) + 1:]
    with pytest.raises(MalformedNoteError, match="72 bytes"):
        Cosignature.parse_line(plain_line)
    with pytest.raises(UnknownKeyError):
        open_note(plain, [CosignatureSigner.from_key_string(W_SK).verifier])


def test_cosignature_by_another_witness_is_an_unknown_key():
    other = CosignatureSigner.generate("witness")
    line = other.cosign(NEXT_BODY, 1700000000).line()
    with pytest.raises(UnknownKeyError):
        CosignatureSigner.from_key_string(W_SK).verifier.verify_line(NEXT_BODY, line)


def test_signer_refuses_timestamp_zero_and_bodies_that_are_not_checkpoints():
    signer = CosignatureSigner.from_key_string(W_SK)
    with pytest.raises(MalformedNoteError, match="never sends 0"):
        signer.cosign(NEXT_BODY, 0)
    with pytest.raises(MalformedNoteError):
        signer.cosign(NEXT_BODY, 2**63)
    with pytest.raises(MalformedNoteError):
        signer.cosign("just one line\n", 1700000000)


# --- the C2SP example ------------------------------------------------------------------------


def test_c2sp_example_cosignature_line_parses_to_its_key_id_and_timestamp():
    cosignature = Cosignature.parse_line(C2SP_COSIGNATURE_LINE)
    assert cosignature.name == "witness.example.com/w1"
    assert cosignature.key_id == 0x8D66CF3F  # "jWbPPw" decodes to 8d 66 cf 3f
    assert cosignature.timestamp == C2SP_COSIGNATURE_TIMESTAMP == 1679315147
    assert len(cosignature.signature) == 64
    assert cosignature.line() == C2SP_COSIGNATURE_LINE


def test_c2sp_example_cosigned_checkpoint_parses_as_a_note_with_both_signatures():
    note = parse_note(C2SP_COSIGNED_CHECKPOINT)
    assert [s.name for s in note.signatures] == ["example.com/behind-the-sofa", "witness.example.com/w1"]
    assert Cosignature.from_note_signature(note.signatures[1]).timestamp == 1679315147
