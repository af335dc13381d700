"""Properties (hypothesis) of the RFC 9162 Merkle log, for any append sequence.

test_merkle.py checks every proof of one fixed 64-leaf tree against the
published vectors; here hypothesis chooses the leaves (any bytes, repeats
allowed) and the sizes (1..300), and every proof is checked against the RFC's
recursive definitions written out below: every inclusion and consistency
proof verifies, and changing any byte of a proof, a root, the index or a
size makes verification fail unless the changed question has the very same
answer (RFC 9162 hashes do not bind the tree size, so a proof of leaf 0 of 3
is also one of leaf 0 of 4 against the same root).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.common.errors import IntegrityError, InvalidInput
from services.signing.checkpoint import NoteSigner, open_checkpoint
from services.signing.evidence_log import EvidenceLog, MemoryLogStore
from services.signing.log_records import ConsistencyProof, InclusionProof, canonical_json
from services.signing.log_records import verify_inclusion as verify_leaf_inclusion
from services.signing.merkle import (
    ConsistencyProofError,
    InclusionProofError,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from tests.support.properties import property_settings
from tests.unit.signing.test_merkle import rfc_k, rfc_leaf, rfc_node

# Deterministic in CI, no example database written into the work tree.
PROPERTY = property_settings(25)
MAX_LEAVES = 300


# --- RFC 9162 §2.1, literally ----------------------------------------------------


# rfc_leaf, rfc_node, rfc_k: imported, the literal transcription test_merkle.py checks against
class Rfc:
    """MTH, PATH and PROOF of RFC 9162 over a list of leaf hashes, memoised on
    (begin, end) so that every proof of a 300-leaf tree stays cheap."""

    def __init__(self, leaf_hashes: list[bytes]):
        self.d = leaf_hashes
        self.mth = lru_cache(maxsize=None)(self._mth)

    def _mth(self, begin: int, end: int) -> bytes:
        if end - begin == 0:
            return hashlib.sha256(b"").digest()
        if end - begin == 1:
            return self.d[begin]
        k = rfc_k(end - begin)
        return rfc_node(self.mth(begin, begin + k), self.mth(begin + k, end))

    def root(self, size: int) -> bytes:
        return self.mth(0, size)

    def path(self, m: int, begin: int, end: int) -> list[bytes]:
        if end - begin == 1:
            return []
        k = rfc_k(end - begin)
        if m < k:
            return self.path(m, begin, begin + k) + [self.mth(begin + k, end)]
        return self.path(m - k, begin + k, end) + [self.mth(begin, begin + k)]

    def subproof(self, m: int, begin: int, end: int, b: bool) -> list[bytes]:
        n = end - begin
        if m == n:
            return [] if b else [self.mth(begin, end)]
        k = rfc_k(n)
        if m <= k:
            return self.subproof(m, begin, begin + k, b) + [self.mth(begin + k, end)]
        return self.subproof(m - k, begin + k, end, False) + [self.mth(begin, begin + k)]


@lru_cache(maxsize=None)
def path_shape(m: int, n: int) -> tuple[str, ...]:
    """Which side each hash of PATH(m, D[n]) joins on, leaf upward: the whole
    of what verification learns from (index, size)."""
    if n == 1:
        return ()
    k = rfc_k(n)
    return path_shape(m, k) + ("R",) if m < k else path_shape(m - k, n - k) + ("L",)


@lru_cache(maxsize=None)
def subproof_shape(m: int, n: int, b: bool = True) -> tuple[str, ...]:
    """The same for SUBPROOF(m, D[n], b): 'S' a sent subtree root that starts
    both folds, 'R' joins only the new root, 'L' joins both."""
    if m == n:
        return () if b else ("S",)
    k = rfc_k(n)
    return subproof_shape(m, k, b) + ("R",) if m <= k else subproof_shape(m - k, n - k, False) + ("L",)


# --- strategies -------------------------------------------------------------------


@st.composite
def leaf_sequences(draw, unique=False):
    """An append sequence of 1..300 leaves. The first few are arbitrary bytes
    hypothesis picks (repeats allowed unless ``unique``); the rest are filler
    derived from a drawn seed, so big trees cost little to generate."""
    size = draw(st.integers(1, MAX_LEAVES))
    chosen = draw(st.lists(st.binary(max_size=40), max_size=min(size, 12)))
    seed = draw(st.binary(min_size=1, max_size=8))
    leaves = chosen + [seed + i.to_bytes(2, "big") for i in range(len(chosen), size)]
    if unique:
        leaves = [data + i.to_bytes(2, "big") for i, data in enumerate(leaves)]
    return leaves


def tree_of(leaves: list[bytes]) -> tuple[MemoryTree, Rfc]:
    tree = MemoryTree()
    hashes = [rfc_leaf(data) for data in leaves]
    for h in hashes:
        tree.append_hash(h)
    return tree, Rfc(hashes)


def flipped(node: bytes, byte: int, mask: int) -> bytes:
    changed = bytearray(node)
    changed[byte % len(changed)] ^= mask
    return bytes(changed)


# --- roots and inclusion -------------------------------------------------------------


@PROPERTY
@given(leaves=leaf_sequences())
def test_every_prefix_root_is_the_rfc_root_and_every_inclusion_proof_verifies(leaves):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    assert tree.size == n
    for size in range(n + 1):
        assert tree.root(size) == rfc.root(size)
    root = rfc.root(n)
    for index in range(n):
        proof = inclusion_proof(tree, index, n)
        assert proof == rfc.path(index, 0, n)
        verify_inclusion(rfc.d[index], index, n, proof, root)


@PROPERTY
@given(leaves=leaf_sequences(), data=st.data())
def test_an_inclusion_proof_verifies_at_every_earlier_size(leaves, data):
    tree, rfc = tree_of(leaves)
    size = data.draw(st.integers(1, len(leaves)), label="size")
    root = rfc.root(size)
    for index in range(size):
        verify_inclusion(rfc.d[index], index, size, inclusion_proof(tree, index, size), root)


@PROPERTY
@given(leaves=leaf_sequences(), byte=st.integers(0, 31), mask=st.integers(1, 255))
def test_flipping_any_bits_of_any_inclusion_proof_hash_or_root_fails(leaves, byte, mask):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    root = rfc.root(n)
    for index in range(n):
        proof = inclusion_proof(tree, index, n)
        for position in range(len(proof)):
            changed = list(proof)
            changed[position] = flipped(proof[position], byte + position, mask)
            with pytest.raises(InclusionProofError):
                verify_inclusion(rfc.d[index], index, n, changed, root)
        with pytest.raises(InclusionProofError):
            verify_inclusion(rfc.d[index], index, n, proof, flipped(root, byte + index, mask))
        with pytest.raises(InclusionProofError):
            verify_inclusion(flipped(rfc.d[index], byte, mask), index, n, proof, root)


@PROPERTY
@given(leaves=leaf_sequences(unique=True), shifts=st.lists(st.integers(1, 2 * MAX_LEAVES), min_size=1, max_size=4),
       sizes=st.lists(st.integers(1, 2 * MAX_LEAVES), min_size=1, max_size=4))
def test_an_inclusion_proof_checked_for_another_index_or_size_fails_unless_it_asks_the_same(leaves, shifts, sizes):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    root = rfc.root(n)
    for index in range(n):
        proof = inclusion_proof(tree, index, n)
        # the neighbours, the mirror image, any index hypothesis shifts to; the
        # sizes next to n, half and double, and sizes hypothesis picks
        indices = {index - 1, index + 1, index ^ 1, n - 1 - index, n} | {(index + k) % (n + 2) for k in shifts}
        others = [(i, n) for i in indices if i != index]
        others += [(index, size) for size in {n - 1, n + 1, n // 2, 2 * n, *sizes} if size != n]
        for other_index, other_size in others:
            accepted = True
            try:
                verify_inclusion(rfc.d[index], other_index, other_size, proof, root)
            except InclusionProofError:
                accepted = False
            same_question = (0 <= other_index < other_size
                             and path_shape(other_index, other_size) == path_shape(index, n))
            assert accepted == same_question, (index, n, other_index, other_size)


@PROPERTY
@given(leaves=leaf_sequences(), cut=st.integers(0, 20), extra=st.binary(min_size=32, max_size=32))
def test_an_inclusion_proof_one_hash_short_or_long_fails(leaves, cut, extra):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    root = rfc.root(n)
    for index in range(n):
        proof = inclusion_proof(tree, index, n)
        if proof:
            with pytest.raises(InclusionProofError):
                verify_inclusion(rfc.d[index], index, n, proof[: cut % len(proof)], root)
        with pytest.raises(InclusionProofError):
            verify_inclusion(rfc.d[index], index, n, proof + [extra], root)


# --- consistency -----------------------------------------------------------------------


@PROPERTY
@given(leaves=leaf_sequences(), data=st.data())
def test_every_consistency_proof_is_the_rfc_proof_and_verifies(leaves, data):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    # every old size into the whole tree, and pairs of earlier sizes hypothesis picks
    pairs = [(old, n) for old in range(n + 1)]
    pairs += [tuple(sorted(pair)) for pair in data.draw(
        st.lists(st.tuples(st.integers(0, n), st.integers(0, n)), min_size=1, max_size=40), label="pairs")]
    for old, new in pairs:
        proof = consistency_proof(tree, old, new)
        assert proof == (rfc.subproof(old, 0, new, True) if 0 < old < new else [])
        verify_consistency(old, new, rfc.root(old), rfc.root(new), proof)


@PROPERTY
@given(leaves=leaf_sequences(), byte=st.integers(0, 31), mask=st.integers(1, 255))
def test_flipping_any_bits_of_any_consistency_proof_hash_or_root_fails(leaves, byte, mask):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    assume(n >= 2)
    new_root = rfc.root(n)
    for old in range(1, n):
        old_root = rfc.root(old)
        proof = consistency_proof(tree, old, n)
        for position in range(len(proof)):
            changed = list(proof)
            changed[position] = flipped(proof[position], byte + position, mask)
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, n, old_root, new_root, changed)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, n, flipped(old_root, byte + old, mask), new_root, proof)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, n, old_root, flipped(new_root, byte, mask), proof)
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, n, old_root, new_root, proof[:-1])
        with pytest.raises(ConsistencyProofError):
            verify_consistency(old, n, old_root, new_root, proof + [new_root])


@PROPERTY
@given(leaves=leaf_sequences(unique=True), shifts=st.lists(st.integers(1, 2 * MAX_LEAVES), min_size=1, max_size=4))
def test_a_consistency_proof_checked_for_other_sizes_fails_unless_it_asks_the_same(leaves, shifts):
    tree, rfc = tree_of(leaves)
    n = len(leaves)
    assume(n >= 2)
    new_root = rfc.root(n)
    for old in range(1, n):
        old_root = rfc.root(old)
        proof = consistency_proof(tree, old, n)
        olds = {old - 1, old + 1, old // 2, 2 * old, n - old} | {(old + k) % n for k in shifts}
        news = {n - 1, n + 1, 2 * n, old + 1} | {n + k for k in shifts}
        others = [(o, n) for o in olds if o != old] + [(old, m) for m in news if m != n]
        for other_old, other_new in others:
            accepted = True
            try:
                verify_consistency(other_old, other_new, old_root, new_root, proof)
            except ConsistencyProofError:
                accepted = False
            same_question = 0 < other_old < other_new and subproof_shape(other_old, other_new) == subproof_shape(old, n)
            assert accepted == same_question, (old, n, other_old, other_new)


# --- the evidence log ---------------------------------------------------------------------

ORIGIN = "esign.test/evidence-log"
SIGNER = NoteSigner.generate(ORIGIN)
START = datetime(2024, 5, 1, 2, 0, tzinfo=timezone.utc)

records = st.fixed_dictionaries(
    {
        "flow_id": st.sampled_from(["flow-a", "flow-b", "流程-c", "flow-𠮷"]),
        "event_type": st.sampled_from(["flow_created", "party_signed", "flow_completed"]),
        "timestamp": st.integers(0, 10**8).map(lambda s: (START + timedelta(seconds=s)).isoformat()),
    },
    optional={
        "document_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        "party_id": st.text(max_size=20),
        "willingness_outcome": st.sampled_from(["passed", "failed", None]),
        "note": st.one_of(st.integers(-(2**53) + 1, 2**53 - 1), st.booleans(), st.none(),
                          st.lists(st.text(max_size=5), max_size=3)),
    },
)


@property_settings(15)
@given(batches=st.lists(st.lists(records, min_size=1, max_size=20), min_size=1, max_size=5))
def test_any_sequence_of_flow_events_is_provable_chained_and_consistent_across_checkpoints(batches):
    log = EvidenceLog(MemoryLogStore(), SIGNER, clock=lambda: START)
    appended: list[tuple[dict, int]] = []
    checkpoints: list[str] = []
    last_of_flow: dict[str, int] = {}
    for batch in batches:
        for record in batch:
            receipt = log.append(record)
            assert receipt.index == len(appended)
            stored = log.leaf(receipt.index).record()
            # the log chains each flow's events and keeps the caller's fields as given
            assert stored["prev_index"] == last_of_flow.get(record["flow_id"])
            assert {k: stored[k] for k in record} == record
            assert log.leaf(receipt.index).data == canonical_json(stored)
            last_of_flow[record["flow_id"]] = receipt.index
            appended.append((record, receipt.index))
        checkpoints.append(log.checkpoint())

    verifier = log.verifier()
    size = log.size()
    heads = [open_checkpoint(note, verifier, ORIGIN) for note in checkpoints]
    assert [h.size for h in heads] == sorted(h.size for h in heads) and heads[-1].size == size
    # every leaf against every checkpoint that contains it, through the JSON form of its proof
    for head in heads:
        for index in range(head.size):
            proof = InclusionProof.from_dict(log.inclusion_proof(index, head.size).to_dict())
            verify_leaf_inclusion(log.leaf(index).data, index, head.size, proof.hashes, head.root_hash)
    # every checkpoint is a prefix of every later one
    for i, old in enumerate(heads):
        for new in heads[i:]:
            proof = ConsistencyProof.from_dict(log.consistency_proof(old.size, new.size).to_dict())
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes)
    # and a leaf's bytes changed anywhere no longer verify
    if size:
        index = size // 2
        data = log.leaf(index).data
        proof = log.inclusion_proof(index, size)
        with pytest.raises(IntegrityError):
            verify_leaf_inclusion(data + b" ", index, size, proof.hashes, heads[-1].root_hash)


@property_settings(100)
@given(size=st.integers(0, 40), index=st.integers(-3, 45), tree_size=st.integers(-3, 45),
       old=st.integers(-3, 45), new=st.integers(-3, 45))
def test_proofs_asked_outside_the_log_are_typed_refusals_and_the_rest_verify(size, index, tree_size, old, new):
    log = EvidenceLog(MemoryLogStore(), SIGNER, clock=lambda: START)
    for i in range(size):
        log.append({"flow_id": f"flow-{i % 3}", "event_type": "party_signed", "timestamp": START.isoformat()})

    def refusal(call, *args):
        with pytest.raises(InvalidInput) as caught:
            call(*args)
        return caught.value.field, caught.value.rule

    if not 0 <= tree_size <= size:
        assert refusal(log.inclusion_proof, index, tree_size) == ("tree_size", "range")
        assert refusal(log.root, tree_size) == ("tree_size", "range")
    elif not 0 <= index < tree_size:
        assert refusal(log.inclusion_proof, index, tree_size) == ("leaf_index", "range")
    else:
        proof = log.inclusion_proof(index, tree_size)
        verify_leaf_inclusion(log.leaf(index).data, index, tree_size, proof.hashes, log.root(tree_size))
    if not 0 <= new <= size:
        assert refusal(log.consistency_proof, old, new) == ("new_size", "range")
    elif not 0 <= old <= new:
        assert refusal(log.consistency_proof, old, new) == ("old_size", "range")
    else:
        proof = log.consistency_proof(old, new)
        verify_consistency(old, new, log.root(old), log.root(new), proof.hashes)


_flat_values = st.one_of(st.none(), st.booleans(), st.text(),
                         st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1))


@property_settings(300)
@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=12), _flat_values, max_size=12))
def test_the_fast_path_for_flat_records_writes_the_same_bytes_as_the_general_one(record):
    """canonical_json takes json.dumps for a flat record with ASCII keys; it must give exactly the
    RFC 8785 bytes the general path gives, for any such record (control characters, quotes,
    non-ASCII and lone-surrogate strings included: both refuse the last)."""
    from services.signing.log_records import _canonical

    try:
        general = _canonical(record, "record").encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(InvalidInput):
            canonical_json(record)
        return
    assert canonical_json(record) == general
