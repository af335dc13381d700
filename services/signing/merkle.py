"""Merkle tree hashing and proofs of RFC 9162 §2.1 (the same tree as RFC 6962,
used by Certificate Transparency, Trillian and Sigstore's Rekor).

* leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``;
  the hash of the empty tree is ``SHA-256("")``.
* the tree over n leaves splits at k, the largest power of two smaller than n
  (not at the midpoint), so every tree is a row of *perfect aligned subtrees*
  of decreasing size, one per set bit of n.

Storage model: a log keeps the hash of every perfect aligned subtree, named by
:data:`NodeId` ``(level, index)`` — the subtree of ``2**level`` leaves starting
at leaf ``index * 2**level``. Each append adds one leaf and, on average, one
interior node, and any root, inclusion proof or consistency proof needs only
O(log n) of those stored hashes: this module says *which* (the ``*_plan``
functions), a :class:`NodeReader` fetches them in one batch, and the hashes are
folded together here. Verification (§2.1.3.2, §2.1.4.2) needs no storage.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping, Protocol, Sequence

from services.common.errors import IntegrityError, InvalidInput

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: a perfect aligned subtree: ``(level, index)`` covers leaves
#: ``[index << level, (index + 1) << level)``
NodeId = tuple[int, int]


class InclusionProofError(IntegrityError):
    """An inclusion proof (RFC 9162 §2.1.3.2) does not lead to the expected root."""

    def __init__(self, reason: str):
        super().__init__("inclusion proof", reason)
        # nameko and pickle rebuild exceptions as ``cls(*args)``
        self.args = (reason,)


class ConsistencyProofError(IntegrityError):
    """A consistency proof (RFC 9162 §2.1.4.2) does not join the two roots."""

    def __init__(self, reason: str):
        super().__init__("consistency proof", reason)
        self.args = (reason,)


class NodeReader(Protocol):
    """Where stored subtree hashes come from (memory, a database)."""

    def nodes(self, ids: Iterable[NodeId]) -> Mapping[NodeId, bytes]:
        """The stored hash of each requested node; every id must exist."""


# --- hashing ------------------------------------------------------------------


def hash_leaf(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """Root of consecutive perfect subtrees of decreasing size, left to right.

    RFC 9162 splits at the largest power of two, so the right-hand side nests:
    ``MTH = H(s0, H(s1, H(s2, ...)))``; fold from the right.
    """
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = hash_children(left, acc)
    return acc


# --- which stored nodes a computation needs -------------------------------------


def _split_point(n: int) -> int:
    """k of RFC 9162: the largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_plan(begin: int, end: int) -> list[NodeId]:
    """Perfect aligned subtrees covering leaves ``[begin, end)``, left to right.

    For the ranges that occur in RFC 9162 trees (``begin`` a multiple of a power
    of two at least ``end - begin``) these have decreasing sizes, so
    :func:`fold_subtrees` over them is MTH(D[begin:end]).
    """
    ids: list[NodeId] = []
    pos = begin
    while pos < end:
        # largest block aligned at pos that still fits before end
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length()
        while pos + (1 << level) > end:
            level -= 1
        ids.append((level, pos >> level))
        pos += 1 << level
    return ids


def root_plan(size: int) -> list[NodeId]:
    """Nodes whose fold is the root of the first ``size`` leaves: one per set bit."""
    return subtree_plan(0, size)


def inclusion_plan(index: int, size: int) -> list[list[NodeId]]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1 as node groups, leaf upward.

    Each group folds to one proof hash. Only the first turn away from the
    right edge of the tree yields a group of more than one node, so the total is
    O(log size).
    """
    _check_index(index, size)
    groups: list[list[NodeId]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split_point(hi - lo)
        if index < mid:
            groups.append(subtree_plan(mid, hi))
            hi = mid
        else:
            groups.append(subtree_plan(lo, mid))
            lo = mid
    groups.reverse()
    return groups


def consistency_plan(old_size: int, new_size: int) -> list[list[NodeId]]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 §2.1.4.1 as node groups.

    Empty when ``old_size`` is 0 or equal to ``new_size`` (nothing to prove).
    """
    _check_sizes(old_size, new_size)
    if old_size == 0 or old_size == new_size:
        return []
    head: list[list[NodeId]] = []
    tail: list[list[NodeId]] = []
    lo, hi, whole_old_tree = 0, new_size, True
    while True:
        if old_size == hi:
            # SUBPROOF(m, D[m], b): the old tree's own root is only sent when
            # the verifier could not already know it (b is false)
            if not whole_old_tree:
                head.append(subtree_plan(lo, hi))
            break
        mid = lo + _split_point(hi - lo)
        if old_size <= mid:
            tail.append(subtree_plan(mid, hi))
            hi = mid
        else:
            tail.append(subtree_plan(lo, mid))
            lo, whole_old_tree = mid, False
    tail.reverse()
    return head + tail


def append_plan(index: int) -> list[NodeId]:
    """Left siblings that complete new perfect subtrees when leaf ``index`` is
    appended, lowest first: one per trailing 1-bit of ``index``."""
    ids: list[NodeId] = []
    level, pos = 0, index
    while pos & 1:
        ids.append((level, pos - 1))
        level, pos = level + 1, pos >> 1
    return ids


def completed_nodes(index: int, leaf_hash: bytes, left_siblings: Mapping[NodeId, bytes]) -> list[tuple[NodeId, bytes]]:
    """Every node made perfect by appending leaf ``index``: the leaf itself and
    its newly completed ancestors, given the hashes of :func:`append_plan`."""
    made = [((0, index), leaf_hash)]
    acc = leaf_hash
    for level, left_index in append_plan(index):
        acc = hash_children(left_siblings[(level, left_index)], acc)
        made.append(((level + 1, left_index >> 1), acc))
    return made


def append_leaves(size: int, right_edge: Mapping[NodeId, bytes],
                  leaf_hashes: Sequence[bytes]) -> list[tuple[NodeId, bytes]]:
    """Every node made perfect by appending ``leaf_hashes`` at leaf ``size``
    onwards, in order: what :func:`completed_nodes` gives for each leaf in turn.

    ``right_edge`` holds the hashes of :func:`root_plan` ``(size)``, the perfect
    subtrees of the tree so far; they are the only stored nodes a run of
    appends can need (a batch of appends reads them once, then works in memory).
    """
    known = dict(right_edge)
    made: list[tuple[NodeId, bytes]] = []
    for offset, leaf_hash in enumerate(leaf_hashes):
        index = size + offset
        for node, value in completed_nodes(index, leaf_hash, {n: known[n] for n in append_plan(index)}):
            known[node] = value
            made.append((node, value))
    return made


# --- computing from a store ------------------------------------------------------


def _fetch_groups(reader: NodeReader, groups: list[list[NodeId]]) -> list[bytes]:
    wanted = {node for group in groups for node in group}
    got = reader.nodes(wanted) if wanted else {}
    return [fold_subtrees([got[node] for node in group]) for group in groups]


def root_hash(reader: NodeReader, size: int) -> bytes:
    """MTH of the first ``size`` leaves from O(log size) stored nodes."""
    if size < 0:
        raise InvalidInput("tree_size", "min", f"expected a tree size >= 0, found {size}")
    return _fetch_groups(reader, [root_plan(size)])[0] if size else EMPTY_ROOT


def inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    return _fetch_groups(reader, inclusion_plan(index, size))


def consistency_proof(reader: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    return _fetch_groups(reader, consistency_plan(old_size, new_size))


def _check_index(index: int, size: int) -> None:
    if index < 0 or index >= size:
        raise InvalidInput("leaf_index", "range", f"expected 0 <= leaf index < tree size {size}, found {index}")


def _check_sizes(old_size: int, new_size: int) -> None:
    if old_size < 0 or old_size > new_size:
        raise InvalidInput(
            "old_size", "range", f"expected 0 <= old size <= new size {new_size}, found {old_size}"
        )


# --- verification (no storage) --------------------------------------------------


def _check_hash(what: str, value: bytes, error: type[IntegrityError]) -> None:
    if len(value) != HASH_SIZE:
        raise error(f"{what} must be {HASH_SIZE} bytes, found {len(value)}")


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1-5)."""
    if index < 0 or index >= size:
        raise InclusionProofError(f"expected leaf index < tree size {size}, found {index}")
    _check_hash("leaf hash", leaf_hash, InclusionProofError)
    fn, sn = index, size - 1
    acc = leaf_hash
    for position, sibling in enumerate(proof):
        _check_hash(f"proof[{position}]", sibling, InclusionProofError)
        if sn == 0:
            raise InclusionProofError(
                f"expected a proof of {position} hashes for leaf {index} of {size}, found {len(proof)}"
            )
        if fn & 1 or fn == sn:
            acc = hash_children(sibling, acc)
            # a right-edge node with no right sibling is promoted unchanged
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            acc = hash_children(acc, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise InclusionProofError(
            f"expected more than {len(proof)} proof hashes for leaf {index} of {size}"
        )
    return acc


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`InclusionProofError` unless ``proof`` shows the leaf with
    hash ``leaf_hash`` at ``index`` in the tree of ``size`` leaves with ``root``."""
    _check_hash("root", root, InclusionProofError)
    found = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if found != root:
        raise InclusionProofError(
            f"expected root {root.hex()} for leaf {index} of {size}, the proof leads to {found.hex()}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ConsistencyProofError` unless ``proof`` shows the tree of
    ``old_size`` leaves with ``old_root`` is a prefix of the tree of
    ``new_size`` leaves with ``new_root`` (RFC 9162 §2.1.4.2)."""
    if old_size < 0 or old_size > new_size:
        raise ConsistencyProofError(f"expected 0 <= old size <= new size {new_size}, found {old_size}")
    if old_size == new_size:
        if proof:
            raise ConsistencyProofError(f"expected an empty proof between equal sizes, found {len(proof)} hashes")
        if old_root != new_root:
            raise ConsistencyProofError(
                f"expected equal roots for equal sizes, found {old_root.hex()} and {new_root.hex()}"
            )
        return
    if old_size == 0:
        # every tree extends the empty tree
        if proof:
            raise ConsistencyProofError(f"expected an empty proof from size 0, found {len(proof)} hashes")
        return
    if not proof:
        raise ConsistencyProofError(f"expected a non-empty proof from {old_size} to {new_size}, found none")
    _check_hash("old root", old_root, ConsistencyProofError)
    _check_hash("new root", new_root, ConsistencyProofError)
    for position, node in enumerate(proof):
        _check_hash(f"proof[{position}]", node, ConsistencyProofError)

    path = list(proof)
    if (old_size & (old_size - 1)) == 0:
        # the old tree is one perfect subtree of the new one: its root starts the path
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_acc = new_acc = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ConsistencyProofError(
                f"expected fewer than {len(proof)} proof hashes from {old_size} to {new_size}"
            )
        if fn & 1 or fn == sn:
            old_acc = hash_children(node, old_acc)
            new_acc = hash_children(node, new_acc)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new_acc = hash_children(new_acc, node)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ConsistencyProofError(
            f"expected more than {len(proof)} proof hashes from {old_size} to {new_size}"
        )
    if old_acc != old_root:
        raise ConsistencyProofError(
            f"expected old root {old_root.hex()} at size {old_size}, the proof leads to {old_acc.hex()}"
        )
    if new_acc != new_root:
        raise ConsistencyProofError(
            f"expected new root {new_root.hex()} at size {new_size}, the proof leads to {new_acc.hex()}"
        )


# --- an in-memory node store ----------------------------------------------------


class MemoryTree:
    """Append-only tree keeping every perfect subtree hash in per-level lists
    (node ``(level, i)`` is ``levels[level][i]``): ~2n hashes, compact enough for
    10^6 leaves in a test or benchmark."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_hash(self, leaf_hash: bytes) -> int:
        index = self.size
        siblings = {node: self.levels[node[0]][node[1]] for node in append_plan(index)}
        for (level, node_index), value in completed_nodes(index, leaf_hash, siblings):
            if level == len(self.levels):
                self.levels.append([])
            # completed nodes are always the next one of their level
            assert len(self.levels[level]) == node_index
            self.levels[level].append(value)
        return index

    def nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        return {node: self.levels[node[0]][node[1]] for node in ids}

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self, self.size if size is None else size)
