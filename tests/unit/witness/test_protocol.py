"""The add-checkpoint body and the answers of c2sp.org/tlog-witness.

The example request body is the one in C2SP/C2SP ``tlog-witness.md`` at commit
5ba5ee830903e91240fc6f9f3a7a9293d49e69c9 (see vectors.py).
"""
from __future__ import annotations

import base64

import pytest

from services.witness.protocol import (
    MAX_PROOF_LINES,
    SIZE_CONTENT_TYPE,
    InconsistentCheckpoint,
    MalformedRequest,
    OldSizeBeyondCheckpoint,
    SizeConflict,
    UnknownLog,
    UntrustedCheckpoint,
    cosigned_answer,
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_size_answer,
)
from tests.unit.witness.vectors import C2SP_ADD_CHECKPOINT_BODY, CONS_PROOF, M_NEXT

HASH = base64.b64encode(bytes(range(32)))


def test_parses_the_specs_example_body():
    request = parse_add_checkpoint(C2SP_ADD_CHECKPOINT_BODY)
    assert request.old_size == 20852014
    assert [base64.b64encode(h).decode() for h in request.proof] == [
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=",
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=",
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=",
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=",
    ]
    assert request.note.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert request.note.count("\u2014".encode()) == 2


def test_format_and_parse_round_trip():
    body = format_add_checkpoint(5, CONS_PROOF, M_NEXT)
    assert body.startswith(b"old 5\n") and body.endswith(M_NEXT.encode())
    request = parse_add_checkpoint(body)
    assert (request.old_size, list(request.proof), request.note) == (5, CONS_PROOF, M_NEXT.encode())


def test_old_zero_with_no_proof():
    request = parse_add_checkpoint(b"old 0\n\n" + M_NEXT.encode())
    assert request.old_size == 0 and request.proof == ()


def test_sixty_three_proof_lines_are_allowed():
    body = b"old 1\n" + (HASH + b"\n") * MAX_PROOF_LINES + b"\n" + M_NEXT.encode()
    assert len(parse_add_checkpoint(body).proof) == 63


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 5",  # no newline at all
        b"old 05\n\n" + M_NEXT.encode(),  # leading zero
        b"old -1\n\n" + M_NEXT.encode(),
        b"old  5\n\n" + M_NEXT.encode(),
        b"Old 5\n\n" + M_NEXT.encode(),
        b"old 5 \n\n" + M_NEXT.encode(),
        b"old 5\r\n\r\n" + M_NEXT.encode(),
        b"old 5\n" + HASH + b"\n" + M_NEXT.encode(),  # no empty line before the checkpoint
        b"old 5\n" + HASH + b"\n",  # no empty line, nothing after
        b"old 5\n\n",  # nothing after the empty line
        b"old 5\nnot base64!\n\n" + M_NEXT.encode(),
        b"old 5\n" + base64.b64encode(bytes(31)) + b"\n\n" + M_NEXT.encode(),  # not a 32-byte hash
        b"old 5\n" + HASH.rstrip(b"=") + b"\n\n" + M_NEXT.encode(),  # unpadded
        b"old 5\n" + (HASH + b"\n") * (MAX_PROOF_LINES + 1) + b"\n" + M_NEXT.encode(),
        b"old 123456789012345678901\n\n" + M_NEXT.encode(),  # beyond u64
    ],
)
def test_malformed_bodies_are_400(body):
    with pytest.raises(MalformedRequest) as raised:
        parse_add_checkpoint(body)
    assert raised.value.status == 400 and raised.value.answer().status == 400


def test_refusals_carry_the_specs_status_codes():
    assert MalformedRequest("x").status == 400
    assert OldSizeBeyondCheckpoint("x").status == 400
    assert UntrustedCheckpoint("x").status == 403
    assert UnknownLog("x").status == 404
    assert SizeConflict(5).status == 409
    assert InconsistentCheckpoint("bad_proof", "x").status == 422


def test_conflict_answer_is_the_size_as_text_x_tlog_size():
    answer = SizeConflict(20852014).answer()
    assert (answer.status, answer.body, answer.content_type) == (409, b"20852014\n", SIZE_CONTENT_TYPE)
    assert SIZE_CONTENT_TYPE == "text/x.tlog.size"
    assert parse_size_answer(answer.body) == 20852014


def test_cosigned_answer_is_the_signature_lines():
    lines = ["\u2014 w1 AAAA\n", "\u2014 w2 BBBB\n"]
    answer = cosigned_answer(lines)
    assert answer.status == 200
    assert answer.body.decode("utf-8") == "".join(lines)
