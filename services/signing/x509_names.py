"""Comparing X.509 names once per name, not once per comparison (RFC 5280 §7.1).

pyHanko's path validation compares and hashes certificate names many times
over: a certificate store keyed by subject, issuer against subject at each
link, a delegated OCSP responder's issuer, a CRL's issuer. asn1crypto
(``asn1crypto.x509``) prepares a name's values for comparison (RFC 4518
string preparation: case folding, Unicode normalisation, spaces) again at
each of them, and keeps nothing: in the B-LTA finalisation under the
full-flow load that was about a tenth of a PDF worker's CPU.

:func:`install` keeps each ``Name``'s ``hashable`` (the prepared values of
every RDN, as asn1crypto computes them) by the DER of its RDN sequence, for the process
(the same few names come back in every document's certificates, OCSP
responses and CRLs, each parsed afresh), and on the object, and compares two
names by it. That is the same comparison: asn1crypto's
``RelativeDistinguishedName.__eq__`` compares the same prepared values by
type, and ``hashable`` is those values sorted by type and joined with
separators that preparation removes from values. That DER determines it,
and the platform does not change a parsed certificate's name, so what is
kept does not go stale.
Idempotent.
"""
from __future__ import annotations

from functools import lru_cache

from asn1crypto import x509

_KEPT = "_esign_hashable"
_SHAPE = "_esign_shape"
#: asn1crypto's own comparison, for the tests that hold this one to it
original_equal = x509.Name.__eq__


@lru_cache(maxsize=4096)
def _hashable_of(der: bytes) -> str:
    return x509.RDNSequence.load(der).hashable


def _hashable(name: x509.Name) -> str:
    kept = name.__dict__.get(_KEPT)
    if kept is None:
        # the RDN sequence's own DER: a Name inside a GeneralName ([4] EXPLICIT, as in an ESS
        # certificate id's issuer) dumps with its tag around it, and would not load as a Name
        kept = _hashable_of(name.chosen.dump())
        name.__dict__[_KEPT] = kept
    return kept


def _shape(name: x509.Name) -> tuple[int, ...]:
    """How many values each RDN holds: asn1crypto's comparison also counts them (a multi-valued RDN
    with a type twice keeps one value of it in ``hashable``)."""
    kept = name.__dict__.get(_SHAPE)
    if kept is None:
        kept = tuple(len(rdn) for rdn in name.chosen)
        name.__dict__[_SHAPE] = kept
    return kept


def _equal(name: x509.Name, other) -> bool:
    if not isinstance(other, x509.Name):
        return False
    return _hashable(name) == _hashable(other) and _shape(name) == _shape(other)


def _not_equal(name: x509.Name, other) -> bool:
    return not _equal(name, other)


def install() -> None:
    if x509.Name.__dict__.get("hashable") is not None and x509.Name.hashable.fget is _hashable:
        return
    x509.Name.hashable = property(_hashable, doc=x509.Name.hashable.__doc__)
    x509.Name.__eq__ = _equal
    x509.Name.__ne__ = _not_equal
    x509.Name.__hash__ = None  # as asn1crypto leaves it: a Name is compared, not hashed (``hashable`` is)
