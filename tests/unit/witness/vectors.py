"""Published test vectors for the witness tests, and a small signed log to make more.

* transparency-dev/witness (Apache-2.0), ``witness/witness_test.go`` at commit
  54dbcdd14f829a301b24b59f7c547c7dceebafa8: the log key ``monkeys`` (mPK, mSK),
  the ``bananas`` key (bPK, bSK), the witness key (wSK, wPK — plain Ed25519
  vkeys of type 0x01, id f13a86db), the signed checkpoints ``mInit`` (size 5)
  and ``mNext`` (size 8), and the consistency proof ``consProof`` from 5 to 8.
  Only the values are taken, not their code.
* C2SP/C2SP ``tlog-cosignature.md`` and ``tlog-witness.md`` at commit
  5ba5ee830903e91240fc6f9f3a7a9293d49e69c9: the example cosigned checkpoint
  (cosignature line by ``witness.example.com/w1``, timestamp 1679315147 =
  "time 1679315147" in the spec's example message) and the example
  add-checkpoint request body.
"""
from __future__ import annotations

from services.signing import merkle
from services.signing.checkpoint import Checkpoint, NoteSigner, sign_checkpoint

# --- transparency-dev/witness witness/witness_test.go ---------------------------------
M_PK = "monkeys+db4d9f7e+AULaJMvTtDLHPUcUrjdDad9vDlh/PTfC2VV60JUtCfWT"
M_SK = "PRIVATE+KEY+monkeys+db4d9f7e+ATWIAF3yVBG+Hv1rZFQoNt/BaURkLPtOFMAM2HrEeIr6"
B_PK = "bananas+cf639f13+AaPjhFnPCQnid/Ql32KWhmh+uk72FVRfK+2DLmO3BI3M"
B_SK = "PRIVATE+KEY+bananas+cf639f13+AdjzytHoXdvn+1vG2UXXqFR3LZ+kvnmQZFretRaKfTIu"
W_PK = "witness+f13a86db+AdYV1Ztajd9BvyjP2HgpwrqYL6TjOwIjGMOq8Bu42xbN"
W_SK = "PRIVATE+KEY+witness+f13a86db+AaLa/dfyBhyo/m0Z7WCi98ENVZWtrP8pxgRNrx7tIWiA"
M_INIT = (
    "monkeys\n5\n41smjBUiAU70EtKlT6lIOIYtRTYxYXsDB+XHfcvu/BE=\n\n"
    "\u2014 monkeys 202fftzGl3LVoqjXfwCFZZXs8I+5G22+Ek2K0AOyBuSJ/8/CZawNF+6fNlTKOCd622pbzJNkkJFWuw9DbicZCkEx9AY=\n"
)
M_NEXT = (
    "monkeys\n8\nV8K9aklZ4EPB+RMOk1/8VsJUdFZR77GDtZUQq84vSbo=\n\n"
    "\u2014 monkeys 202ffoUEboiQYpHzICeaFmoy3RNviHTpAxYrq/eO4QQVQMvu9UebKBMX2MJC76NLthZaKsnKbCA8GxrjePZhvDCH7Ag=\n"
)
CONS_PROOF = [
    bytes.fromhex("b9e1d62618f7fee8034e4c5010f727ab24d8e4705cb296c374bf2025a87a10d2"),
    bytes.fromhex("aac66cd7a79ce4012d80762fe8eec3a77f22d1ca4145c3f4cee022e7efcd599d"),
    bytes.fromhex("89d0f753f66a290c483b39cd5e9eafb12021293395fad3d4a2ad053cfbcfdc9e"),
    bytes.fromhex("29e40bb79c966f4c6fe96aff6f30acfce5f3e8d84c02215175d6e018a5dee833"),
]
#: the plain Ed25519 (type 0x01) key id of the witness key, which a cosignature must NOT carry
W_NOTE_KEY_ID = 0xF13A86DB

# --- C2SP tlog-cosignature.md ----------------------------------------------------------------
C2SP_COSIGNATURE_LINE = (
    "\u2014 witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
C2SP_COSIGNED_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    + C2SP_COSIGNATURE_LINE
)
C2SP_COSIGNATURE_TIMESTAMP = 1679315147

# --- C2SP tlog-witness.md: the example add-checkpoint body --------------------------------------
C2SP_ADD_CHECKPOINT_BODY = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 example.com/behind-the-sofa "
    "opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode("utf-8")


class ToyLog:
    """A Merkle log (services.signing.merkle) that signs checkpoints with its key,
    to make consistent, forked and rolled-back checkpoints at will."""

    def __init__(self, signer: NoteSigner, origin: str | None = None, salt: str = ""):
        self.signer = signer
        self.origin = origin or signer.name
        self.tree = merkle.MemoryTree()
        self._salt = salt

    def grow(self, count: int) -> "ToyLog":
        for _ in range(count):
            self.tree.append_hash(merkle.hash_leaf(f"{self._salt}leaf {self.tree.size}".encode()))
        return self

    def checkpoint(self, size: int | None = None) -> str:
        size = self.tree.size if size is None else size
        return sign_checkpoint(Checkpoint(self.origin, size, self.tree.root(size)), self.signer)

    def proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.tree.size if new_size is None else new_size
        return merkle.consistency_proof(self.tree, old_size, new_size)
