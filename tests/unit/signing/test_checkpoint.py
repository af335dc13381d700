"""C2SP signed notes and checkpoints, checked against the vectors published
with Go's golang.org/x/mod/sumdb/note and sumdb/tlog and the C2SP spec text."""
from __future__ import annotations

import base64
import hashlib

import pytest

from services.common.errors import IntegrityError, InvalidInput
from services.signing.checkpoint import (
    BadSignatureError,
    Checkpoint,
    CheckpointOriginError,
    MalformedNoteError,
    NoteSigner,
    NoteVerifier,
    UnknownKeyError,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)

# golang.org/x/mod/sumdb/note/note_test.go
PETER_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VERIFIER = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = ("\u2014 PeterNeumann "
             "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
ENOCH_SIG = ("\u2014 EnochRoot "
             "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n")
# golang.org/x/mod/sumdb/tlog/note_test.go: FormatTree(Tree{123456789012, RecordHash("hello world")})
GO_TREE = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
# c2sp.org/tlog-checkpoint example
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def test_signing_reproduces_gos_published_note_byte_for_byte():
    signer = NoteSigner.from_key_string(PETER_SIGNER)
    assert signer.verifier.to_key_string() == PETER_VERIFIER
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG


def test_key_id_is_sha256_of_name_newline_type_and_key():
    raw = base64.b64decode(PETER_VERIFIER.split("+", 2)[2])
    assert raw[0] == 0x01
    assert key_id("PeterNeumann", raw[1:]) == 0xC74F20A3
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + raw[1:]).digest()
    assert key_id("PeterNeumann", raw[1:]) == int.from_bytes(digest[:4], "big")


def test_opening_gos_note_verifies_known_keys_and_sets_aside_unknown_ones():
    peter, enoch = NoteVerifier.from_key_string(PETER_VERIFIER), NoteVerifier.from_key_string(ENOCH_VERIFIER)
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [(s.name, s.key_id) for s in opened.unverified] == [("EnochRoot", 0xAF0CFE78)]
    both = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert len(both.verified) == 2 and not both.unverified


def test_a_note_without_a_trusted_signature_is_rejected():
    enoch = NoteVerifier.from_key_string(ENOCH_VERIFIER)
    with pytest.raises(UnknownKeyError) as caught:
        open_note(TEXT + "\n" + PETER_SIG, [enoch])
    assert "EnochRoot+af0cfe78" in str(caught.value) and "PeterNeumann+c74f20a3" in str(caught.value)
    assert isinstance(caught.value, IntegrityError)


def test_a_same_name_with_another_key_id_is_an_unknown_key_not_a_bad_signature():
    other = NoteSigner.generate("PeterNeumann")
    with pytest.raises(UnknownKeyError):
        open_note(TEXT + "\n" + PETER_SIG, [other.verifier])


def test_an_altered_text_or_signature_is_a_bad_signature():
    peter = NoteVerifier.from_key_string(PETER_VERIFIER)
    with pytest.raises(BadSignatureError, match="PeterNeumann\\+c74f20a3"):
        open_note(TEXT.replace("answer", "Answer") + "\n" + PETER_SIG, [peter])
    # Go's own probe: four characters spliced into the base64 signature
    with pytest.raises(BadSignatureError):
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [peter])
    blob = bytearray(base64.b64decode(PETER_SIG.split(" ")[2]))
    blob[10] ^= 1
    tampered = f"\u2014 PeterNeumann {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(BadSignatureError):
        open_note(TEXT + "\n" + tampered, [peter])


@pytest.mark.parametrize(
    "message",
    [
        TEXT,  # no signatures
        TEXT + "\n",  # blank line but no signatures
        TEXT + "\n" + PETER_SIG[:-1],  # no final newline
        "\x01" + TEXT + "\n" + PETER_SIG,  # control character
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),  # a key name with a space
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG.replace("\u2014", "-"),  # a hyphen is not the em dash
        TEXT + "\n" + "\u2014 PeterNeumann AAAA\n",  # too short to hold key id and signature
        TEXT + "\n" + PETER_SIG * 101,  # more signatures than any verifier needs to read
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),  # not UTF-8
    ],
)
def test_malformed_notes_are_refused_with_a_typed_error(message):
    peter = NoteVerifier.from_key_string(PETER_VERIFIER)
    with pytest.raises(MalformedNoteError) as caught:
        open_note(message, [peter])
    assert isinstance(caught.value, InvalidInput) and caught.value.rule == "signed_note_format"


def test_verifier_keys_refuse_every_single_character_change():
    NoteVerifier.from_key_string(PETER_VERIFIER)
    for i in range(len(PETER_VERIFIER)):
        mangled = PETER_VERIFIER[:i] + chr(ord(PETER_VERIFIER[i]) + 1) + PETER_VERIFIER[i + 1:]
        with pytest.raises(MalformedNoteError):
            NoteVerifier.from_key_string(mangled)
    for cut in (10, 20, len(PETER_VERIFIER) - 1):
        with pytest.raises(MalformedNoteError):
            NoteVerifier.from_key_string(PETER_VERIFIER[:cut])


def test_signer_key_round_trips_and_never_shows_the_secret():
    signer = NoteSigner.from_key_string(PETER_SIGNER)
    assert signer.to_key_string() == PETER_SIGNER
    assert "AYEKFALV" not in repr(signer)
    with pytest.raises(MalformedNoteError) as caught:
        NoteSigner.from_key_string(PETER_SIGNER.replace("c74f20a3", "c74f20a4"))
    assert "AYEKFALV" not in str(caught.value)


def test_checkpoint_body_matches_gos_tree_format():
    root = hashlib.sha256(b"\x00hello world").digest()
    checkpoint = Checkpoint("go.sum database tree", 123456789012, root)
    assert checkpoint.body() == GO_TREE
    assert Checkpoint.from_body(GO_TREE) == checkpoint


def test_the_c2sp_example_checkpoint_parses():
    note = parse_note(C2SP_CHECKPOINT)
    checkpoint = Checkpoint.from_body(note.text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert base64.b64encode(checkpoint.root_hash).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert note.signatures[0].name == "example.com/behind-the-sofa"
    assert len(note.signatures[0].signature) == 64  # an Ed25519 signature after the 4-byte key id
    with pytest.raises(UnknownKeyError):
        open_checkpoint(C2SP_CHECKPOINT, NoteSigner.generate("example.com/behind-the-sofa").verifier)


def test_signed_checkpoint_round_trip_with_extension_lines():
    signer = NoteSigner.generate("esign.example/log")
    checkpoint = Checkpoint("esign.example/log", 42, bytes(range(32)), ("extension one",))
    note = sign_checkpoint(checkpoint, signer)
    lines = note.split("\n")
    assert lines[:4] == ["esign.example/log", "42", base64.b64encode(bytes(range(32))).decode(), "extension one"]
    assert lines[4] == "" and lines[5].startswith("\u2014 esign.example/log ")
    assert open_checkpoint(note, NoteVerifier.from_key_string(signer.verifier.to_key_string())) == checkpoint


def test_a_checkpoint_of_another_origin_is_refused():
    signer = NoteSigner.generate("esign.example/log")
    note = sign_checkpoint(Checkpoint("other.example/log", 1, bytes(32)), signer)
    with pytest.raises(CheckpointOriginError, match="expected origin 'esign.example/log', found 'other.example/log'"):
        open_checkpoint(note, signer.verifier)
    assert open_checkpoint(note, signer.verifier, origin="other.example/log").size == 1


@pytest.mark.parametrize(
    "body",
    [
        "origin\n012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",  # leading zero
        "origin\n0xabcdef\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",  # Go's probe
        "origin\n-1\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",
        "origin\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBTOOBIG=\n",  # Go's probe: 33 bytes
        "origin\n12\nAAAA\n",  # too short a root
        "origin\n12\n",  # no root line
        "\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n",  # empty origin
        "origin\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n\nafter a blank\n",  # empty extension line
        "origin\n12\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=",  # no final newline
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body):
    with pytest.raises(MalformedNoteError):
        Checkpoint.from_body(body)
