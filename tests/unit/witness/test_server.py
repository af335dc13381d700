"""The witness over HTTP, on a free port, against published vectors and forks.

Vectors: transparency-dev/witness (Apache-2.0), ``witness/witness_test.go`` at
commit 54dbcdd14f829a301b24b59f7c547c7dceebafa8 — log key ``mPK``/``mSK``
("monkeys"), ``bPK``/``bSK`` ("bananas"), witness key ``wSK``, checkpoints
``mInit`` (size 5) and ``mNext`` (size 8), ``consProof`` (5 -> 8); and the
C2SP/C2SP spec texts ``tlog-witness.md``/``tlog-cosignature.md`` at commit
5ba5ee830903e91240fc6f9f3a7a9293d49e69c9, whose status codes these tests
check one by one. Values only; see vectors.py.
"""
from __future__ import annotations

import hashlib
import socket

import pytest

from services.signing import merkle
from services.signing.checkpoint import Checkpoint, NoteSigner, NoteVerifier, open_note, parse_note, sign_checkpoint
from services.witness.config import add_log
from services.witness.cosignature import Cosignature, CosignatureSigner
from services.witness.protocol import format_add_checkpoint
from tests.unit.witness.vectors import (
    B_SK,
    CONS_PROOF,
    M_INIT,
    M_NEXT,
    M_PK,
    M_SK,
    W_NOTE_KEY_ID,
    W_SK,
    ToyLog,
)

MONKEYS = "/" + hashlib.sha256(b"monkeys").hexdigest() + "/checkpoint"  # GET <prefix>/<hex sha256(origin)>/checkpoint
WITNESS = CosignatureSigner.from_key_string(W_SK).verifier
LOG = NoteVerifier.from_key_string(M_PK)


def body_of(note: str) -> str:
    return note[: note.index("\n\n") + 1]


def checkpoint_path(origin: str) -> str:
    return "/" + hashlib.sha256(origin.encode()).hexdigest() + "/checkpoint"


def cosigned_size(client, origin: str = "monkeys") -> int | None:
    status, _, body = client.request("GET", checkpoint_path(origin))
    return Checkpoint.from_body(body_of(body.decode())).size if status == 200 else None


# --- the published vectors ------------------------------------------------------------------


def test_go_vectors_mInit_then_mNext_with_their_proof_are_cosigned(client):
    status, content_type, body = client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))
    assert status == 200, body
    assert content_type.startswith("text/plain")
    line = body.decode()
    assert line.startswith("\u2014 witness ") and line.endswith("\n") and line.count("\n") == 1
    cosignature = WITNESS.verify_line(body_of(M_INIT), line)
    assert cosignature.key_id == WITNESS.key_id != W_NOTE_KEY_ID
    assert cosignature.timestamp > 0

    status, _, body = client.add_checkpoint(format_add_checkpoint(5, CONS_PROOF, M_NEXT))
    assert status == 200, body
    WITNESS.verify_line(body_of(M_NEXT), body.decode())

    # the monitoring API serves mNext with the log's signature and ours
    status, _, note = client.request("GET", MONKEYS)
    assert status == 200
    opened = open_note(note.decode(), [LOG, WITNESS])
    assert opened.text == body_of(M_NEXT)
    assert {s.name for s in opened.verified} == {"monkeys", "witness"}
    # and the client can append the answer to its checkpoint and open it the same way
    open_note(M_NEXT + body.decode(), [LOG, WITNESS])


def test_their_proof_with_one_hash_flipped_is_422_and_changes_nothing(client, witness):
    assert client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))[0] == 200
    before = witness.state.latest("monkeys")
    for position in range(len(CONS_PROOF)):
        proof = list(CONS_PROOF)
        proof[position] = bytes([proof[position][0] ^ 0x01]) + proof[position][1:]
        status, _, body = client.add_checkpoint(format_add_checkpoint(5, proof, M_NEXT))
        assert status == 422, (position, body)
    assert witness.state.latest("monkeys") == before
    # a failing proof of a validly signed checkpoint is kept as evidence, once
    assert [(r.kind, r.times_seen) for r in witness.state.misbehaviour()] == [("bad_proof", 4)]


def test_mNext_with_old_size_0_after_mInit_is_409_with_the_size(client, witness):
    assert client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))[0] == 200
    before = witness.state.latest("monkeys")
    status, content_type, body = client.add_checkpoint(format_add_checkpoint(0, [], M_NEXT))
    assert (status, content_type, body) == (409, "text/x.tlog.size", b"5\n")
    assert witness.state.latest("monkeys") == before
    assert witness.state.misbehaviour() == []  # a stale client is not misbehaviour
    # with the size the 409 gave, the client goes on
    assert client.add_checkpoint(format_add_checkpoint(5, CONS_PROOF, M_NEXT))[0] == 200


def test_a_checkpoint_signed_only_by_an_unknown_key_is_403(client, witness):
    bananas_signing_monkeys = NoteSigner.from_key_string(B_SK)
    note = sign_checkpoint(Checkpoint.from_body(body_of(M_INIT)), bananas_signing_monkeys)
    status, _, body = client.add_checkpoint(format_add_checkpoint(0, [], note))
    assert status == 403, body
    assert cosigned_size(client) is None


def test_a_trusted_signature_that_fails_is_403_even_next_to_an_unknown_one(client):
    note = parse_note(M_INIT)
    sig = note.signatures[0]
    broken = sig.__class__(sig.name, sig.key_id, bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    extra = sign_checkpoint(Checkpoint.from_body(note.text), NoteSigner.from_key_string(B_SK))
    message = note.text + "\n" + broken.line() + extra[extra.index("\n\n") + 2:]
    status, _, _ = client.add_checkpoint(format_add_checkpoint(0, [], message))
    assert status == 403


def test_signatures_by_unknown_keys_are_ignored_next_to_a_trusted_one(client):
    extra = sign_checkpoint(Checkpoint.from_body(body_of(M_INIT)), NoteSigner.from_key_string(B_SK))
    message = M_INIT + extra[extra.index("\n\n") + 2:]
    assert client.add_checkpoint(format_add_checkpoint(0, [], message))[0] == 200
    # only the verified log signature is stored and served, next to the cosignature
    _, _, note = client.request("GET", MONKEYS)
    assert [s.name for s in parse_note(note.decode()).signatures] == ["monkeys", "witness"]


def test_an_unknown_origin_is_404(client):
    bananas = sign_checkpoint(Checkpoint("bananas", 5, bytes(32)), NoteSigner.from_key_string(B_SK))
    status, _, _ = client.add_checkpoint(format_add_checkpoint(0, [], bananas))
    assert status == 404


def test_old_size_above_the_checkpoint_size_is_400(client):
    assert client.add_checkpoint(format_add_checkpoint(9, CONS_PROOF, M_NEXT))[0] == 400


def test_a_malformed_body_or_note_is_400(client):
    assert client.add_checkpoint(b"old 0\n\nnot a note")[0] == 400
    assert client.add_checkpoint(b"hello")[0] == 400
    assert client.add_checkpoint(M_INIT.encode())[0] == 400
    truncated = M_INIT.replace("41smjBUiAU70EtKlT6lIOIYtRTYxYXsDB+XHfcvu/BE=", "41smjBUi")
    assert client.add_checkpoint(format_add_checkpoint(0, [], truncated))[0] == 400


def test_a_non_empty_proof_with_old_size_0_is_422(client):
    status, _, _ = client.add_checkpoint(format_add_checkpoint(0, CONS_PROOF, M_INIT))
    assert status == 422
    assert cosigned_size(client) is None


def test_a_size_0_checkpoint_must_have_the_empty_tree_root(client, witness):
    log = NoteSigner.from_key_string(M_SK)
    wrong = sign_checkpoint(Checkpoint("monkeys", 0, bytes(32)), log)
    assert client.add_checkpoint(format_add_checkpoint(0, [], wrong))[0] == 422
    assert [r.kind for r in witness.state.misbehaviour()] == ["empty_tree_root"]
    empty = sign_checkpoint(Checkpoint("monkeys", 0, merkle.EMPTY_ROOT), log)
    assert client.add_checkpoint(format_add_checkpoint(0, [], empty))[0] == 200
    assert cosigned_size(client) == 0
    # from a cosigned size 0 any tree follows, with no proof
    assert client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))[0] == 200


def test_resubmitting_the_cosigned_checkpoint_is_cosigned_again_never_earlier(client):
    first = client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))
    again = client.add_checkpoint(format_add_checkpoint(5, [], M_INIT))
    assert first[0] == again[0] == 200
    t1, t2 = (Cosignature.parse_line(r[2].decode()).timestamp for r in (first, again))
    assert t2 >= t1
    # no proof between equal sizes
    assert client.add_checkpoint(format_add_checkpoint(5, CONS_PROOF[:1], M_INIT))[0] == 422


# --- forks and rollbacks, with a log of our own ------------------------------------------------


@pytest.fixture
def log_pair(state_dir):
    """Two histories signed by one log key: the honest one, and a fork."""
    signer = NoteSigner.generate("esign.test/evidence-log")
    add_log(state_dir, signer.name, signer.verifier.to_key_string())
    return ToyLog(signer).grow(4), ToyLog(signer, salt="forged ").grow(4)


def test_a_fork_same_size_other_root_is_422_and_recorded(client, witness, log_pair):
    honest, forked = log_pair
    assert client.add_checkpoint(format_add_checkpoint(0, [], honest.checkpoint()))[0] == 200
    before = witness.state.latest(honest.origin)
    status, _, body = client.add_checkpoint(format_add_checkpoint(4, [], forked.checkpoint()))
    assert status == 422, body
    # the same fork with a stale old size is 409 for the client, and still the same evidence
    assert client.add_checkpoint(format_add_checkpoint(0, [], forked.checkpoint()))[:3:2] == (409, b"4\n")
    assert witness.state.latest(honest.origin) == before
    [record] = witness.state.misbehaviour(honest.origin)
    assert (record.kind, record.times_seen, record.size) == ("fork", 2, 4)
    assert record.root_hash == forked.tree.root() and record.known.root_hash == honest.tree.root()
    # the evidence holds two log signatures on two trees of one size: verifiable by anyone
    forked_text = open_note(record.note, [honest.signer.verifier]).text
    cosigned_text = open_note(record.known.note, [honest.signer.verifier]).text
    assert Checkpoint.from_body(forked_text).size == Checkpoint.from_body(cosigned_text).size
    assert forked_text != cosigned_text


def test_a_smaller_tree_than_cosigned_is_409_and_recorded(client, witness, log_pair):
    honest, _ = log_pair
    small = honest.checkpoint(2)
    honest.grow(4)
    assert client.add_checkpoint(format_add_checkpoint(0, [], honest.checkpoint()))[0] == 200
    # tlog-witness: the old size must be <= the checkpoint's (else 400) and equal
    # to the cosigned size (8 here), which a size-2 checkpoint cannot offer: 409
    assert client.add_checkpoint(format_add_checkpoint(2, [], small))[:3:2] == (409, b"8\n")
    assert client.add_checkpoint(format_add_checkpoint(0, [], small))[:3:2] == (409, b"8\n")
    assert client.add_checkpoint(format_add_checkpoint(8, [], small))[0] == 400
    assert cosigned_size(client, honest.origin) == 8
    assert [(r.kind, r.times_seen) for r in witness.state.misbehaviour()] == [("rollback", 2)]


def test_a_growing_log_is_followed_with_proofs(client, log_pair):
    honest, _ = log_pair
    assert client.add_checkpoint(format_add_checkpoint(0, [], honest.checkpoint()))[0] == 200
    size = honest.tree.size
    for step in (1, 2, 3, 7, 16, 1):
        honest.grow(step)
        body = format_add_checkpoint(size, honest.proof(size), honest.checkpoint())
        status, _, answer = client.add_checkpoint(body)
        assert status == 200, answer
        CosignatureSigner.from_key_string(W_SK).verifier.verify_line(body_of(honest.checkpoint()), answer.decode())
        size = honest.tree.size
    status, _, note = client.request("GET", checkpoint_path(honest.origin))
    assert status == 200 and Checkpoint.from_body(body_of(note.decode())).size == size == 34


# --- the HTTP surface ----------------------------------------------------------------------------


def test_get_checkpoint_is_404_before_anything_is_cosigned_and_for_bad_paths(client):
    assert client.request("GET", MONKEYS)[0] == 404
    assert client.request("GET", MONKEYS.upper().replace("CHECKPOINT", "checkpoint"))[0] == 404
    assert client.request("GET", "/nothing")[0] == 404
    assert client.request("POST", "/other", b"x")[0] == 404


def test_add_checkpoint_only_takes_post(client):
    assert client.request("GET", "/add-checkpoint")[0] == 405


def test_healthz_and_metrics(client, log_pair):
    honest, forked = log_pair
    assert client.request("GET", "/healthz")[:3:2] == (200, b"ok\n")
    client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))
    client.add_checkpoint(format_add_checkpoint(0, [], M_NEXT))
    client.add_checkpoint(format_add_checkpoint(0, [], honest.checkpoint()))
    client.add_checkpoint(format_add_checkpoint(4, [], forked.checkpoint()))
    status, content_type, body = client.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and content_type.startswith("text/plain")
    assert 'esign_witness_cosigned_size{origin="monkeys"} 5.0' in text
    assert f'esign_witness_cosigned_size{{origin="{honest.origin}"}} 4.0' in text
    assert 'esign_witness_requests_total{outcome="cosigned"} 2.0' in text
    assert 'esign_witness_requests_total{outcome="conflict"} 1.0' in text
    assert 'esign_witness_requests_total{outcome="inconsistent"} 1.0' in text
    assert f'esign_witness_misbehaviour_total{{kind="fork",origin="{honest.origin}"}} 1.0' in text


def test_bodies_over_64_kib_are_413_and_bodies_without_length_411(server, client):
    assert client.add_checkpoint(b"old 0\n\n" + b"x" * (64 * 1024))[0] == 413
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411")
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411")


def test_one_keep_alive_connection_carries_several_requests(client):
    for _ in range(3):
        assert client.request("GET", "/healthz")[0] == 200
    assert client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))[0] == 200
    assert client.request("GET", MONKEYS)[0] == 200


def test_a_log_added_while_running_is_followed_without_restart(client, state_dir):
    signer = NoteSigner.generate("late.example/log")
    note = ToyLog(signer).grow(3).checkpoint()
    assert client.add_checkpoint(format_add_checkpoint(0, [], note))[0] == 404
    add_log(state_dir, signer.name, signer.verifier.to_key_string())
    assert client.add_checkpoint(format_add_checkpoint(0, [], note))[0] == 200


def test_a_state_that_is_gone_answers_503_not_a_cosignature(client, witness):
    witness.state.close()
    assert client.request("GET", "/healthz")[0] == 503
    status, _, _ = client.add_checkpoint(format_add_checkpoint(0, [], M_INIT))
    assert status == 503
    assert client.request("GET", "/metrics")[0] == 503


def test_every_misbehaviour_kind_of_every_trusted_log_shows_at_zero(witness, state_dir):
    """The alert on forks has a series to watch before the first fork, for each log the witness trusts."""
    from services.witness.config import LOGS_FILE, LogsFile
    from services.witness.metrics import WitnessMetrics
    from services.witness.state import MISBEHAVIOUR_KINDS

    logs = LogsFile(state_dir / LOGS_FILE)
    text = WitnessMetrics(witness.state, lambda: logs.current().keys).exposition()[0].decode()
    for kind in MISBEHAVIOUR_KINDS:
        assert f'esign_witness_misbehaviour_total{{kind="{kind}",origin="monkeys"}} 0.0' in text
    # without the trusted logs: only what the state counted (nothing here)
    plain = WitnessMetrics(witness.state).exposition()[0].decode()
    assert not [line for line in plain.splitlines() if line.startswith("esign_witness_misbehaviour_total{")]
