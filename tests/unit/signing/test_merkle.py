"""RFC 9162 / RFC 6962 Merkle tree: published vectors, then every proof of
every small tree against a literal transcription of the RFC's definitions."""
from __future__ import annotations

import base64
import hashlib
import math

import pytest

from services.common.errors import IntegrityError, InvalidInput
from services.signing import merkle
from services.signing.merkle import (
    ConsistencyProofError,
    InclusionProofError,
    MemoryTree,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    root_plan,
    verify_consistency,
    verify_inclusion,
)

# --- published reference data ------------------------------------------------------
# The RFC 6962 test tree used by Certificate Transparency, Trillian and
# transparency-dev/merkle (proof/verify_test.go): eight leaves, the root after
# each append, and some audit paths and consistency proofs.

CT_LEAVES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
CT_ROOTS = [  # index = tree size
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (0, 1, []),
]
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
# Go's golang.org/x/mod/sumdb/tlog (note_test.go): RecordHash("hello world") in base64
GO_TLOG_HELLO_WORLD = "TszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0="


# --- the RFC's definitions, transcribed literally as an oracle ----------------------


def rfc_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = rfc_k(len(d))
    return rfc_node(rfc_mth(d[:k]), rfc_mth(d[k:]))


def rfc_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = rfc_k(len(d))
    if m < k:
        return rfc_path(m, d[:k]) + [rfc_mth(d[k:])]
    return rfc_path(m - k, d[k:]) + [rfc_mth(d[:k])]


def rfc_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = rfc_k(len(d))
    if m <= k:
        return rfc_subproof(m, d[:k], b) + [rfc_mth(d[k:])]
    return rfc_subproof(m - k, d[k:], False) + [rfc_mth(d[:k])]


def synthetic_leaves(n: int) -> list[bytes]:
    return [rfc_leaf(i.to_bytes(4, "big") + b"leaf") for i in range(n)]


def tree_of(leaf_hashes: list[bytes]) -> MemoryTree:
    tree = MemoryTree()
    for h in leaf_hashes:
        tree.append_hash(h)
    return tree


MAX_SIZE = 64
LEAVES_64 = synthetic_leaves(MAX_SIZE)


@pytest.fixture(scope="module")
def tree64() -> MemoryTree:
    return tree_of(LEAVES_64)


def flipped(proof: list[bytes], position: int, byte: int) -> list[bytes]:
    changed = list(proof)
    node = bytearray(changed[position])
    node[byte] ^= 0x01
    changed[position] = bytes(node)
    return changed


# --- vectors -----------------------------------------------------------------------


def test_roots_match_the_published_rfc6962_tree_heads():
    tree = tree_of([merkle.hash_leaf(leaf) for leaf in CT_LEAVES])
    for size, expected in enumerate(CT_ROOTS):
        assert tree.root(size).hex() == expected, f"size {size}"


def test_empty_tree_hash_is_sha256_of_nothing_and_leaf_prefix_matches_go_tlog():
    assert merkle.EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert base64.b64encode(merkle.hash_leaf(b"hello world")).decode() == GO_TLOG_HELLO_WORLD


@pytest.mark.parametrize("index,size,expected", CT_INCLUSION)
def test_inclusion_proofs_match_published_paths_and_verify(index, size, expected):
    tree = tree_of([merkle.hash_leaf(leaf) for leaf in CT_LEAVES])
    proof = inclusion_proof(tree, index, size)
    assert [p.hex() for p in proof] == expected
    verify_inclusion(merkle.hash_leaf(CT_LEAVES[index]), index, size, [bytes.fromhex(p) for p in expected],
                     bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize("old,new,expected", CT_CONSISTENCY)
def test_consistency_proofs_match_published_proofs_and_verify(old, new, expected):
    tree = tree_of([merkle.hash_leaf(leaf) for leaf in CT_LEAVES])
    assert [p.hex() for p in consistency_proof(tree, old, new)] == expected
    verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]),
                       [bytes.fromhex(p) for p in expected])


# --- every proof of every tree up to 64 leaves ---------------------------------------


def test_roots_of_every_size_agree_with_the_rfc_definition(tree64):
    for size in range(MAX_SIZE + 1):
        assert tree64.root(size) == rfc_mth(LEAVES_64[:size]), f"size {size}"


def test_every_inclusion_proof_is_the_rfc_path_and_verifies(tree64):
    for size in range(1, MAX_SIZE + 1):
        root = rfc_mth(LEAVES_64[:size])
        for index in range(size):
            proof = inclusion_proof(tree64, index, size)
            assert proof == rfc_path(index, LEAVES_64[:size]), f"leaf {index} of {size}"
            verify_inclusion(LEAVES_64[index], index, size, proof, root)


def test_every_inclusion_proof_fails_when_any_byte_changes(tree64):
    for size in range(2, MAX_SIZE + 1):
        root = rfc_mth(LEAVES_64[:size])
        for index in range(size):
            proof = inclusion_proof(tree64, index, size)
            for position in range(len(proof)):
                # every byte for the small trees, one byte per hash (rotating) for the rest
                positions = range(32) if size <= 12 else [(index + position) % 32]
                for byte in positions:
                    with pytest.raises(InclusionProofError):
                        verify_inclusion(LEAVES_64[index], index, size, flipped(proof, position, byte), root)
            for byte in range(32):
                with pytest.raises(InclusionProofError):
                    verify_inclusion(LEAVES_64[index], index, size, proof, flipped([root], 0, byte)[0])


def test_every_inclusion_proof_fails_for_any_other_index_or_path_length(tree64):
    for size in range(2, MAX_SIZE + 1):
        root = rfc_mth(LEAVES_64[:size])
        for index in range(size):
            proof = inclusion_proof(tree64, index, size)
            for other in range(size + 2):
                if other != index:
                    with pytest.raises(InclusionProofError):
                        verify_inclusion(LEAVES_64[index], other, size, proof, root)
            # RFC 9162 hashes do not bind the tree size (leaf 0 of 3 and of 4
            # share a path shape), which is why a checkpoint signs size and
            # root together; halving or doubling always changes the path length.
            for other_size in (size // 2, size * 2):
                if other_size > 0:
                    with pytest.raises(InclusionProofError):
                        verify_inclusion(LEAVES_64[index], index, other_size, proof, root)
            # a proof one hash short or one hash long
            if proof:
                with pytest.raises(InclusionProofError):
                    verify_inclusion(LEAVES_64[index], index, size, proof[:-1], root)
            with pytest.raises(InclusionProofError):
                verify_inclusion(LEAVES_64[index], index, size, proof + [root], root)


def test_every_consistency_proof_is_the_rfc_proof_and_verifies(tree64):
    for new in range(0, MAX_SIZE + 1):
        new_root = rfc_mth(LEAVES_64[:new])
        for old in range(0, new + 1):
            old_root = rfc_mth(LEAVES_64[:old])
            proof = consistency_proof(tree64, old, new)
            if 0 < old < new:
                assert proof == rfc_subproof(old, LEAVES_64[:new], True), f"{old} -> {new}"
            else:
                assert proof == []
            verify_consistency(old, new, old_root, new_root, proof)


def test_every_consistency_proof_fails_when_a_byte_a_root_or_a_size_changes(tree64):
    for new in range(2, MAX_SIZE + 1):
        new_root = rfc_mth(LEAVES_64[:new])
        for old in range(1, new):
            old_root = rfc_mth(LEAVES_64[:old])
            proof = consistency_proof(tree64, old, new)
            for position in range(len(proof)):
                with pytest.raises(ConsistencyProofError):
                    verify_consistency(old, new, old_root, new_root, flipped(proof, position, (old + position) % 32))
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, new, flipped([old_root], 0, 5)[0], new_root, proof)
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, new, old_root, flipped([new_root], 0, 7)[0], proof)
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, new, old_root, new_root, proof[:-1])
            with pytest.raises(ConsistencyProofError):
                verify_consistency(old, new, old_root, new_root, [])
            for other_old in (old - 1, old + 1):
                if 0 < other_old < new and rfc_mth(LEAVES_64[:other_old]) != old_root:
                    with pytest.raises(ConsistencyProofError):
                        verify_consistency(other_old, new, old_root, new_root, proof)


def test_consistency_edge_cases_follow_trillian_semantics():
    a, b = rfc_leaf(b"a"), rfc_leaf(b"b")
    verify_consistency(0, 0, a, a, [])
    verify_consistency(0, 5, a, b, [])  # anything extends the empty tree
    with pytest.raises(ConsistencyProofError, match="expected equal roots"):
        verify_consistency(3, 3, a, b, [])
    with pytest.raises(ConsistencyProofError, match="expected an empty proof"):
        verify_consistency(3, 3, a, a, [a])
    with pytest.raises(ConsistencyProofError, match="old size <= new size"):
        verify_consistency(4, 3, a, b, [a])


# --- failure messages and bad input ------------------------------------------------


def test_errors_say_what_was_expected_and_what_was_found(tree64):
    proof = inclusion_proof(tree64, 3, 10)
    wrong_root = rfc_mth(LEAVES_64[:11])
    with pytest.raises(InclusionProofError) as caught:
        verify_inclusion(LEAVES_64[3], 3, 10, proof, wrong_root)
    message = str(caught.value)
    assert wrong_root.hex() in message and "expected root" in message and "leads to" in message
    assert isinstance(caught.value, IntegrityError)
    with pytest.raises(InclusionProofError, match="must be 32 bytes, found 3"):
        verify_inclusion(LEAVES_64[3], 3, 10, [b"abc"] + proof[1:], rfc_mth(LEAVES_64[:10]))
    with pytest.raises(InclusionProofError, match="leaf index < tree size 10, found 10"):
        verify_inclusion(LEAVES_64[3], 10, 10, proof, rfc_mth(LEAVES_64[:10]))


def test_generation_refuses_indices_and_sizes_outside_the_tree(tree64):
    with pytest.raises(InvalidInput) as caught:
        inclusion_proof(tree64, 5, 5)
    assert caught.value.field == "leaf_index" and caught.value.rule == "range"
    with pytest.raises(InvalidInput):
        inclusion_proof(tree64, -1, 5)
    with pytest.raises(InvalidInput) as caught:
        consistency_proof(tree64, 6, 5)
    assert caught.value.field == "old_size"


# --- cost: O(log n) stored nodes per proof, O(1) amortised per append ---------------


def test_proofs_and_roots_need_only_logarithmically_many_stored_nodes():
    for size in (1000, 65_537, 10**6, 2**40 + 12345):
        bound = 2 * math.ceil(math.log2(size)) + 2
        assert len(root_plan(size)) == bin(size).count("1")
        for index in (0, 1, size // 3, size // 2, size - 2, size - 1):
            nodes = sum(len(group) for group in inclusion_plan(index, size))
            assert nodes <= bound, f"leaf {index} of {size}: {nodes} nodes"
        for old in (1, 2, size // 3, size // 2 + 1, size - 1):
            nodes = sum(len(group) for group in consistency_plan(old, size))
            assert nodes <= bound, f"{old} -> {size}: {nodes} nodes"


def test_appending_n_leaves_stores_fewer_than_2n_nodes():
    tree = tree_of(synthetic_leaves(1000))
    stored = sum(len(level) for level in tree.levels)
    assert stored == 2 * 1000 - bin(1000).count("1")


class CountingReader:
    def __init__(self, tree: MemoryTree):
        self.tree, self.reads, self.calls = tree, 0, 0

    def nodes(self, ids):
        ids = list(ids)
        self.reads += len(ids)
        self.calls += 1
        return self.tree.nodes(ids)


def test_a_proof_is_one_batched_read_of_few_nodes():
    tree = tree_of(synthetic_leaves(5000))
    reader = CountingReader(tree)
    proof = inclusion_proof(reader, 1234, 4999)
    assert reader.calls == 1 and reader.reads <= 2 * 13
    verify_inclusion(tree.levels[0][1234], 1234, 4999, proof, tree.root(4999))
