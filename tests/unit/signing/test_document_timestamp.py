"""A second, independent time source: the B-LTA document time-stamp from an
external RFC 3161 authority with its own root (tests.support.external_tsa),
the signature time-stamps from the platform TSA. Checked by pyHanko directly,
by verification.py and ``esign verify``, by poppler's pdfsig, and by OpenSSL's
RFC 3161 verifier; and the ways finalising must fail when that authority does."""
import asyncio
import io
import shutil
import subprocess

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import (
    DocumentSecurityStore,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)

from services.common.errors import IntegrityError, Unavailable
from services.common.tsa import TsaSettings
from services.signing import pdf_worker
from services.signing.offline_verify import main as esign_verify
from services.signing.pades import DocumentSigner, SignerSettings
from services.signing.verification import verify_pdf
from tests.support.external_tsa import EXTERNAL_POLICY_OID, ROOT_NAME, TSA_NAME, start_external_tsa
from tests.support.pki import PkiHttpServer, handwritten_png, issue_certificate, new_key, two_party_pdf

PLATFORM_TSA, PLATFORM_ROOT = "Test Platform TSA", "Test Root CA"


@pytest.fixture(scope="module")
def external():
    authority = start_external_tsa()
    yield authority
    authority.stop()


def _pem(issued) -> str:
    return issued.pem.decode("ascii")


@pytest.fixture(scope="module")
def two_tsa(env, documents, external):
    """The two-party document finalised by the call the service makes, with
    the document time-stamp from the external authority."""
    return pdf_worker.finalize(
        env.tsa_url, (_pem(env.pki.root),), documents["second"],
        document_tsa_url=external.url, document_tsa_roots_pem=(_pem(external.root),),
    )


def _cn(name: asn1_x509.Name) -> str:
    return name.native["common_name"]


def _pyhanko(pdf: bytes, roots) -> list:
    """pyHanko alone (not verification.py): offline, DSS only, hard-fail,
    trusting ``roots`` for everything."""
    reader = PdfFileReader(io.BytesIO(pdf))
    dss = DocumentSecurityStore.read_dss(reader)
    anchors = [asn1_x509.Certificate.load(r.der) for r in roots]
    context = lambda: dss.as_validation_context(  # noqa: E731 - fresh context per check
        {"trust_roots": anchors, "allow_fetching": False, "revocation_mode": "hard-fail", "retroactive_revinfo": True}
    )

    async def run():
        out = []
        for sig in reader.embedded_signatures:
            if sig.sig_object_type == "/DocTimeStamp":
                out.append((sig, await async_validate_pdf_timestamp(sig, validation_context=context())))
            else:
                out.append((sig, await async_validate_pdf_signature(sig, context(), context())))
        return out

    return asyncio.run(run())


def _anchor_cn(status) -> str | None:
    path = status.validation_path
    return _cn(path.trust_anchor.authority.name) if path is not None else None


# --- (a) pyHanko, both roots trusted -------------------------------------------------


def test_pyhanko_sees_two_time_sources_chaining_to_two_roots(env, external, two_tsa):
    results = _pyhanko(two_tsa, [env.pki.root, external.root])
    assert [sig.field_name for sig, _ in results] == ["Party1", "Party2", "DocumentTimestamp"]
    for sig, status in results:
        assert status.intact and status.valid and status.trusted, sig.field_name
    for _sig, status in results[:2]:  # the parties' signatures and their signature time-stamps: the platform's
        assert _anchor_cn(status) == PLATFORM_ROOT
        tst = status.timestamp_validity
        assert tst.intact and tst.valid and tst.trusted
        assert _cn(tst.signing_cert.subject) == PLATFORM_TSA and _anchor_cn(tst) == PLATFORM_ROOT
    stamp, status = results[2]
    assert stamp.sig_object["/SubFilter"] == "/ETSI.RFC3161"
    assert _cn(status.signing_cert.subject) == TSA_NAME and _anchor_cn(status) == ROOT_NAME
    tst_info = stamp.signed_data["encap_content_info"]["content"].parsed
    assert tst_info["policy"].dotted == EXTERNAL_POLICY_OID  # the external authority's policy, not the platform's


def test_the_dss_carries_the_external_chain_and_its_crls(env, external, two_tsa):
    dss = DocumentSecurityStore.read_dss(PdfFileReader(io.BytesIO(two_tsa)))
    context = dss.as_validation_context({"trust_roots": []})
    crl_issuers = {_cn(c["tbs_cert_list"]["issuer"]) for c in context.crls}
    assert {ROOT_NAME, "Test Time Authority TSA CA 1"} <= crl_issuers
    assert PLATFORM_ROOT in crl_issuers  # and still the platform chain's
    cert_names = {_cn(c.subject) for c in context.certificate_registry}
    assert {TSA_NAME, "Test Time Authority TSA CA 1", PLATFORM_TSA, "Alice Zhang", "Bob Li"} <= cert_names


# --- verification.py and esign verify ---------------------------------------------------


def test_verifies_offline_with_the_external_root_as_a_timestamp_root(env, external, two_tsa):
    requests_before = len(external.paths_requested)
    result = verify_pdf(two_tsa, [env.pki.root.certificate], timestamp_roots=[external.root.certificate])
    assert len(external.paths_requested) == requests_before  # nothing fetched: the DSS suffices (LTV)
    assert result.ok, result.problems
    for check in result.signatures:
        assert PLATFORM_ROOT in check.root
        assert PLATFORM_TSA in check.timestamp.tsa and PLATFORM_ROOT in check.timestamp.tsa_root
    (stamp,) = result.document_timestamps
    assert TSA_NAME in stamp.timestamp.tsa and ROOT_NAME in stamp.timestamp.tsa_root and ROOT_NAME in stamp.root


def test_the_worker_reports_which_root_each_time_chains_to(env, external, two_tsa):
    report = pdf_worker.verify((_pem(env.pki.root),), two_tsa, tsa_roots_pem=(_pem(external.root),))
    assert report["ok"] is True
    assert [ROOT_NAME in t["timestamp"]["tsa_root"] for t in report["document_timestamps"]] == [True]
    assert all(PLATFORM_ROOT in s["timestamp"]["tsa_root"] for s in report["signatures"])


# --- (c) without the external root -----------------------------------------------------------


def test_without_the_external_root_the_document_timestamp_is_untrusted(env, two_tsa):
    (_, _, (stamp, status)) = _pyhanko(two_tsa, [env.pki.root])
    assert status.intact and status.valid and not status.trusted

    result = verify_pdf(two_tsa, [env.pki.root.certificate])
    assert not result.ok
    (check,) = result.document_timestamps
    assert not check.trusted and check.root is None and check.timestamp.tsa_root is None
    assert result.problems == (
        "DocumentTimestamp: certificate chain is not trusted up to the root at the time proven "
        "(or revocation data is missing)",
    )
    assert all(s.ok for s in result.signatures)  # the platform's signatures are not at fault


@pytest.fixture(scope="module")
def signed_under_the_external_root(env, external):
    """A party signature by a "person" certificate the external TSA's CA issued."""
    mallory = issue_certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mallory")]), new_key(), external.tsa_ca, ca=False,
        base_url=external.server.base_url, crl_of_issuer="tsa-ca", ocsp=False,
    )
    signer = DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [env.pki.root.certificate])
    return signer.sign_party(two_party_pdf(), "Party1", mallory.certificate, external.chain, mallory.sign_digest,
                             handwritten_png(), True)


def test_an_external_root_vouches_for_time_stamps_never_for_a_signer(env, external, signed_under_the_external_root):
    (check,) = verify_pdf(signed_under_the_external_root, [env.pki.root.certificate],
                          timestamp_roots=[external.root.certificate], allow_fetching=True).signatures
    assert check.intact and check.valid and not check.trusted and check.root is None
    assert check.timestamp.ok  # its signature time-stamp is the platform's, and fine


def test_finalising_trusts_the_document_tsa_root_for_its_time_stamp_only(env, external, signed_under_the_external_root):
    with pytest.raises(IntegrityError) as err:
        pdf_worker.finalize(env.tsa_url, (_pem(env.pki.root),), signed_under_the_external_root,
                            document_tsa_url=external.url, document_tsa_roots_pem=(_pem(external.root),))
    assert err.value.what == "certificate_chain" and "Party1: no path to a trust root" in err.value.reason


def test_esign_verify_trusts_a_tsa_root_given_with_tsa_root(env, external, two_tsa, tmp_path, capsys):
    (tmp_path / "final.pdf").write_bytes(two_tsa)
    (tmp_path / "root.pem").write_bytes(env.pki.root.pem)
    (tmp_path / "tsa-root.pem").write_bytes(external.root.pem)
    pdf, root = str(tmp_path / "final.pdf"), str(tmp_path / "root.pem")
    assert esign_verify([pdf, "--root", root]) == 1
    without = capsys.readouterr().out
    assert "✗ PDF document time-stamp DocumentTimestamp" in without
    assert esign_verify([pdf, "--root", root, "--tsa-root", str(tmp_path / "tsa-root.pem")]) == 0
    out = capsys.readouterr().out
    stamp_line = next(line for line in out.splitlines() if "document time-stamp" in line)
    assert stamp_line.startswith("  ✓") and TSA_NAME in stamp_line and ROOT_NAME in stamp_line
    party_line = next(line for line in out.splitlines() if "PDF signature Party1" in line)
    assert PLATFORM_TSA in party_line and f"(root Common Name: {PLATFORM_ROOT}" in party_line


# --- (b) poppler's pdfsig and OpenSSL, both roots trusted --------------------------------------

needs_pdfsig = pytest.mark.skipif(shutil.which("pdfsig") is None or shutil.which("certutil") is None,
                                  reason="poppler-utils / libnss3-tools not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")


def _pdfsig(pdf: bytes, roots, tmp_path) -> str:
    nss = tmp_path / "nss"
    nss.mkdir()
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"], check=True, capture_output=True)
    for i, root in enumerate(roots):
        (tmp_path / f"root{i}.pem").write_bytes(root.pem)
        subprocess.run(["certutil", "-A", "-n", f"root{i}", "-t", "C,C,C", "-i", str(tmp_path / f"root{i}.pem"),
                        "-d", f"sql:{nss}"], check=True, capture_output=True)
    (tmp_path / "doc.pdf").write_bytes(pdf)
    # pdfsig exits 0 even on a digest mismatch: read its output
    run = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(tmp_path / "doc.pdf")], capture_output=True, text=True)
    return run.stdout


def _blocks(output: str) -> dict[str, str]:
    blocks, current = {}, None
    for line in output.splitlines():
        if line.startswith("Signature #"):
            current = line.strip(":")
            blocks[current] = ""
        elif current:
            blocks[current] += line + "\n"
    return blocks


@needs_pdfsig
def test_pdfsig_with_both_roots(env, external, two_tsa, tmp_path):
    blocks = _blocks(_pdfsig(two_tsa, [env.pki.root, external.root], tmp_path))
    assert len(blocks) == 3
    party1, party2, stamp = blocks.values()
    for block in (party1, party2):
        assert "Signature Type: ETSI.CAdES.detached" in block
        assert "Signature Validation: Signature is Valid." in block
        assert "Certificate Validation: Certificate is Trusted." in block
    # poppler 22.12 names the document time-stamp's signer but does not check
    # an ETSI.RFC3161 time-stamp ("not yet verified"); OpenSSL does, below
    assert "Signature Field Name: DocumentTimestamp" in stamp
    assert f"Signer Certificate Common Name: {TSA_NAME}" in stamp
    assert "Total document signed" in stamp
    assert "Signature is Valid." in stamp or "Signature has not yet been verified." in stamp


@needs_pdfsig
def test_pdfsig_with_the_platform_root_only_still_trusts_the_parties(env, two_tsa, tmp_path):
    blocks = _blocks(_pdfsig(two_tsa, [env.pki.root], tmp_path))
    parties = [b for b in blocks.values() if "ETSI.CAdES.detached" in b]
    assert len(parties) == 2
    assert all("Signature is Valid." in b and "Certificate is Trusted." in b for b in parties)


def _document_timestamp_token(pdf: bytes, tmp_path):
    stamp = PdfFileReader(io.BytesIO(pdf)).embedded_signatures[-1]
    start1, length1, start2, length2 = (int(x) for x in stamp.sig_object["/ByteRange"])
    (tmp_path / "covered.bin").write_bytes(pdf[start1:start1 + length1] + pdf[start2:start2 + length2])
    # the token (a CMS ContentInfo) without the zero padding of /Contents
    (tmp_path / "token.der").write_bytes(cms.ContentInfo.load(stamp.pkcs7_content).dump())
    return tmp_path / "covered.bin", tmp_path / "token.der"


def _openssl_ts_verify(pdf: bytes, root, tmp_path) -> subprocess.CompletedProcess:
    covered, token = _document_timestamp_token(pdf, tmp_path)
    (tmp_path / "ca.pem").write_bytes(root.pem)
    return subprocess.run(["openssl", "ts", "-verify", "-data", str(covered), "-in", str(token), "-token_in",
                           "-CAfile", str(tmp_path / "ca.pem")], capture_output=True, text=True)


@needs_openssl
def test_openssl_verifies_the_document_timestamp_against_the_external_root_only(env, external, two_tsa, tmp_path):
    trusted = _openssl_ts_verify(two_tsa, external.root, tmp_path)
    assert trusted.returncode == 0 and "Verification: OK" in trusted.stdout
    untrusted = _openssl_ts_verify(two_tsa, env.pki.root, tmp_path)
    assert untrusted.returncode != 0 and "Verification: FAILED" in untrusted.stdout
    assert "unable to get local issuer certificate" in untrusted.stderr


# --- the external authority fails -------------------------------------------------------------


def _dead_url() -> str:
    probe = PkiHttpServer()
    url = f"{probe.base_url}/tsa"
    probe.stop()  # the port is closed now
    return url


def test_an_external_tsa_that_is_down_is_unavailable_document_tsa(env, external, documents):
    with pytest.raises(Unavailable) as err:
        pdf_worker.finalize(env.tsa_url, (_pem(env.pki.root),), documents["second"],
                            document_tsa_url=_dead_url(), document_tsa_roots_pem=(_pem(external.root),))
    assert err.value.system == "document_tsa"
    assert err.value.reason == "time stamp request failed: TimestampRequestError"


def test_a_document_tsa_outside_its_configured_roots_is_refused(env, external, documents):
    with pytest.raises(IntegrityError) as err:  # its roots wrongly configured as the platform's
        pdf_worker.finalize(env.tsa_url, (_pem(env.pki.root),), documents["second"],
                            document_tsa_url=external.url, document_tsa_roots_pem=(_pem(env.pki.root),))
    assert err.value.what == "certificate_chain" and "document time-stamp authority" in err.value.reason


def test_the_external_authoritys_crl_server_down_is_unavailable_revocation_info(env, documents):
    authority = start_external_tsa()
    authority.crls_available = False
    try:
        signer = DocumentSigner(
            SignerSettings(tsa=TsaSettings(env.tsa_url), document_tsa=TsaSettings(authority.url, timeout_seconds=2)),
            [env.pki.root.certificate], document_tsa_roots=[authority.root.certificate],
        )
        with pytest.raises(Unavailable) as err:
            signer.finalize_lta(documents["second"])
        assert err.value.system == "revocation_info" and "document time-stamp authority" in err.value.reason
    finally:
        authority.stop()


def test_basic_auth_is_sent_to_an_authority_that_asks_for_it(env, documents):
    authority = start_external_tsa(basic_auth=("esign", "s3cret"))
    try:
        def signer(auth):
            return DocumentSigner(
                SignerSettings(tsa=TsaSettings(env.tsa_url), document_tsa=TsaSettings(authority.url, basic_auth=auth)),
                [env.pki.root.certificate], document_tsa_roots=[authority.root.certificate],
            )

        with pytest.raises(Unavailable) as err:
            signer(("esign", "wrong")).finalize_lta(documents["second"])
        assert err.value.system == "document_tsa"
        final = signer(("esign", "s3cret")).finalize_lta(documents["second"])
        result = verify_pdf(final, [env.pki.root.certificate], timestamp_roots=[authority.root.certificate])
        assert result.ok, result.problems
    finally:
        authority.stop()


def test_a_renewed_external_tsa_certificate_still_gets_its_validation_data(env, documents):
    """The worker keeps its signer across flows; the authority may renew its
    certificate meanwhile. Each finalisation must embed the validation data of
    the certificate that actually stamps, or the PDF fails offline (LTV)."""
    authority = start_external_tsa()
    try:
        finalize = lambda: pdf_worker.finalize(  # noqa: E731 - the same call, twice
            env.tsa_url, (_pem(env.pki.root),), documents["second"],
            document_tsa_url=authority.url, document_tsa_roots_pem=(_pem(authority.root),),
        )
        before = finalize()
        stamps = authority.paths_requested.count("POST /tsa")
        authority.renew()  # a new TSA CA, whose CRL the first finalisation never fetched
        after = finalize()
        # the kept client's token came from the new certificate and was refused; a fresh client
        # learnt the new one (a first token) and stamped again
        assert authority.paths_requested.count("POST /tsa") - stamps == 3
        for pdf in (before, after):
            result = verify_pdf(pdf, [env.pki.root.certificate], timestamp_roots=[authority.root.certificate])
            assert result.ok, result.problems
        stamp = PdfFileReader(io.BytesIO(after)).embedded_signatures[-1]
        assert stamp.signer_cert.dump() == asn1_x509.Certificate.load(authority.tsa.der).dump()
    finally:
        authority.stop()


def test_the_worker_learns_the_authoritys_certificate_once_not_per_document(env, documents):
    """pyHanko learns the certificate of the document time-stamp from a first token, one request
    more. A worker keeps that client across documents: the first document costs two requests,
    each later one one."""
    authority = start_external_tsa()
    try:
        finalize = lambda: pdf_worker.finalize(  # noqa: E731 - the same call, three times
            env.tsa_url, (_pem(env.pki.root),), documents["second"],
            document_tsa_url=authority.url, document_tsa_roots_pem=(_pem(authority.root),),
        )
        counts = []
        for _ in range(3):
            pdf = finalize()
            counts.append(authority.paths_requested.count("POST /tsa"))
            result = verify_pdf(pdf, [env.pki.root.certificate], timestamp_roots=[authority.root.certificate])
            assert result.ok, result.problems
        assert counts == [2, 3, 4]
    finally:
        authority.stop()
