"""services/signing/x509_names.py: a name's prepared values kept, and names compared by them, give
what asn1crypto's own comparison (RFC 5280 §7.1, RFC 4518 preparation) gives, pair by pair."""
from __future__ import annotations

import itertools

from asn1crypto import core, x509

from services.signing import (
    pades,  # noqa: F401 - installs the kept comparison, as the PDF workers do
    x509_names,
)


def _rdn(*pairs: tuple[str, str, str]) -> x509.RelativeDistinguishedName:
    """One RDN of (type, string kind, value)."""
    return x509.RelativeDistinguishedName([
        x509.NameTypeAndValue({"type": kind, "value": x509.DirectoryString(name=string, value=value)})
        if kind != "country_name" else x509.NameTypeAndValue({"type": kind, "value": core.PrintableString(value)})
        for kind, string, value in pairs])


def _name(*rdns: x509.RelativeDistinguishedName) -> x509.Name:
    return x509.Name(name="", value=x509.RDNSequence(list(rdns)))


def _names() -> list[x509.Name]:
    cn = ("common_name", "utf8_string", "张三 Zhang")
    return [
        _name(_rdn(("country_name", "", "CN")), _rdn(cn)),
        _name(_rdn(("country_name", "", "CN")), _rdn(("common_name", "utf8_string", "张三  zhang "))),  # case, spaces
        _name(_rdn(("country_name", "", "CN")), _rdn(("common_name", "printable_string", "Zhang"))),
        _name(_rdn(("country_name", "", "CN")), _rdn(("common_name", "utf8_string", "Zhang"))),  # another string type
        _name(_rdn(cn), _rdn(("country_name", "", "CN"))),  # the same RDNs in another order
        _name(_rdn(("country_name", "", "CN"))),
        # one multi-valued RDN, then the same with its values in another order
        _name(_rdn(("country_name", "", "CN")), _rdn(cn, ("organization_name", "utf8_string", "E签宝"))),
        _name(_rdn(("country_name", "", "CN")), _rdn(("organization_name", "utf8_string", "E签宝"), cn)),
        _name(_rdn(("country_name", "", "CN")), _rdn(cn, cn)),  # a type twice in one RDN
        x509.Name.build({"common_name": "Platform Root CA", "organization_name": "esign"}),
        x509.Name.build({"common_name": "platform root ca", "organization_name": "ESIGN"}),
        x509.Name.build({"common_name": "Platform Issuing CA", "organization_name": "esign"}),
        # a Name inside a GeneralName ([4] EXPLICIT), as an ESS certificate id names a certificate's issuer
        x509.GeneralName.load(x509.GeneralName(name="directory_name", value=x509.Name.build(
            {"common_name": "Platform Root CA", "organization_name": "esign"})).dump()).chosen,
    ]


def test_names_compare_as_asn1crypto_compares_them():
    names = _names()
    fresh = [x509.Name.load(name.chosen.dump(force=True)) for name in names]  # parsed again: nothing kept yet
    verdicts = set()
    for (i, a), (j, b) in itertools.product(enumerate(names), enumerate(fresh)):
        expected = x509_names.original_equal(a, b)
        assert (a == b) is expected, (i, j)
        assert (a != b) is (not expected), (i, j)
        verdicts.add(expected)
    assert verdicts == {True, False}
    assert names[0] == fresh[1] and names[0] != fresh[2] and names[6] == fresh[7] and names[8] != fresh[0]
    assert names[-1] == fresh[9] and names[9] == names[-1]


def test_a_name_is_prepared_once_per_process():
    before = x509_names._hashable_of.cache_info()
    a = x509.Name.build({"common_name": "Once Only", "organization_name": "esign"})
    b = x509.Name.load(a.dump())  # a second object with the same DER, as every document brings
    assert a == b and a.hashable == b.hashable
    after = x509_names._hashable_of.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits >= 1
    assert x509.Name.__hash__ is None  # still compared, not hashed, as asn1crypto has it


def test_install_is_idempotent():
    equal = x509.Name.__eq__
    x509_names.install()
    assert x509.Name.__eq__ is equal
