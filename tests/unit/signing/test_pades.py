"""PAdES signing with remote keys: the two-party flow to B-LTA, checked by
pyHanko and by poppler's pdfsig, plus the ways signing must refuse."""
import asyncio
import hashlib
import io
import json
import shutil
import subprocess
import zlib

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.fields import MDPPerm
from pyhanko.sign.validation import (
    DocumentSecurityStore,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)

from services.common.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound, Unavailable
from services.common.tsa import TsaSettings
from services.signing import hex_strings
from services.signing.pades import DocumentSigner, PartySignature, PreparedSignature, SignerSettings
from services.signing.verification import verify_pdf
from tests.support.pki import (
    PkiHttpServer,
    handwritten_png,
    start_signing_environment,
    two_party_pdf,
)


@pytest.fixture(scope="module")
def signer(env):
    return DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [env.pki.root.certificate])


@pytest.fixture(scope="module")
def flow(env, signer):
    """Party 1 certifies, party 2 approves, then the file is raised to B-LTA."""
    pki, png = env.pki, handwritten_png()
    blank = two_party_pdf()
    first = signer.sign_party(
        blank, "Party1", pki.alice.certificate, pki.chain, pki.alice.sign_digest, png, certify=True,
        reason="出借方签署", location="Beijing",
    )
    second = signer.sign_party(
        first, "Party2", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, certify=False,
        reason="借款方签署", location="Shanghai",
    )
    final = signer.finalize_lta(second)
    return {"blank": blank, "first": first, "second": second, "final": final}


def test_signatures_read_the_same_with_the_one_slice_hex_reader(flow):
    """services/signing/hex_strings.py, installed by pades.py: every signature's /Contents (8,192
    bytes reserved: 16,384 hex digits) and the document time-stamp's read as pyHanko's own reader reads them."""
    from pyhanko.pdf_utils import generic

    def contents() -> list[bytes]:
        reader = PdfFileReader(io.BytesIO(flow["final"]), strict=False)
        return [bytes(sig.sig_object["/Contents"]) for sig in reader.embedded_signatures]

    assert generic.read_hex_string_from_stream is hex_strings.read_hex_string
    generic.read_hex_string_from_stream = hex_strings._pyhanko_reader
    try:
        expected = contents()
    finally:
        hex_strings.install()
    assert contents() == expected
    assert len(expected) == 3 and [len(value) for value in expected[:2]] == [8_192, 8_192]  # + the time-stamp


def _root(env) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(env.pki.root.der)


def _pyhanko_statuses(pdf: bytes, root: asn1_x509.Certificate):
    """Validate with pyHanko directly (independent of verification.py):
    offline, revocation data only from the file's DSS, hard-fail."""
    reader = PdfFileReader(io.BytesIO(pdf))
    dss = DocumentSecurityStore.read_dss(reader)
    context = lambda: dss.as_validation_context(  # noqa: E731 - fresh context per check
        {"trust_roots": [root], "allow_fetching": False, "revocation_mode": "hard-fail", "retroactive_revinfo": True}
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


# --- (a) pyHanko ----------------------------------------------------------------


def test_every_signature_is_intact_valid_trusted_and_unmodified(env, flow):
    results = _pyhanko_statuses(flow["final"], _root(env))
    assert [sig.field_name for sig, _ in results] == ["Party1", "Party2", "DocumentTimestamp"]
    for sig, status in results:
        assert status.intact and status.valid and status.trusted, sig.field_name
        assert status.modification_level in (
            ModificationLevel.NONE, ModificationLevel.LTA_UPDATES, ModificationLevel.FORM_FILLING
        ), sig.field_name
        assert status.docmdp_ok in (True, None), sig.field_name
    for _sig, status in results[:2]:
        assert not status.revoked
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted  # PAdES B-T


def test_signatures_are_pades_and_the_first_certifies_with_form_filling_allowed(flow):
    reader = PdfFileReader(io.BytesIO(flow["final"]))
    first, second, stamp = reader.embedded_signatures
    assert first.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert second.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert stamp.sig_object["/SubFilter"] == "/ETSI.RFC3161"
    assert first.docmdp_level == MDPPerm.FILL_FORMS
    assert second.docmdp_level is None  # an approval signature
    assert first.sig_object["/Reason"] == "出借方签署"


def test_dss_holds_revocation_data_for_both_signers_and_the_tsa(env, flow):
    reader = PdfFileReader(io.BytesIO(flow["final"]))
    dss = DocumentSecurityStore.read_dss(reader)
    context = dss.as_validation_context({"trust_roots": [_root(env)]})
    ocsp_serials = set()
    for response in context.ocsps:
        for single in response["response_bytes"]["response"].parsed["tbs_response_data"]["responses"]:
            ocsp_serials.add(single["cert_id"]["serial_number"].native)
    pki = env.pki
    expected = {c.certificate.serial_number for c in (pki.alice, pki.bob, pki.tsa)}
    assert expected <= ocsp_serials
    crl_issuers = {c["tbs_cert_list"]["issuer"].human_friendly for c in context.crls}
    assert any("Test Root CA" in issuer for issuer in crl_issuers)  # covers the issuing CA certificate


def test_appearance_is_the_handwritten_image(flow):
    reader = PdfFileReader(io.BytesIO(flow["final"]))
    field = reader.embedded_signatures[0].sig_field
    normal = field["/AP"]["/N"]
    images = _image_xobjects(normal)
    assert images, "the signature field's appearance should draw an image"
    # the 300 x 100 handwriting, with the signing time printed under it
    assert images[0]["/Width"] == 300 and images[0]["/Height"] > 100


def test_the_time_printed_under_a_signature_is_its_signing_time(env, signer, flow):
    """签署时间 under the handwriting: the image keeps the handwriting's pixels on top and draws a
    line of text below; the moment printed is the one the signature states as its signing time."""
    import datetime as dt

    from PIL import Image

    from services.signing.pades import with_signing_time

    handwriting = Image.open(io.BytesIO(handwritten_png())).convert("RGBA")
    moment = dt.datetime(2026, 12, 6, 13, 25, 7, tzinfo=dt.timezone.utc)
    captioned = with_signing_time(handwriting, moment)
    assert captioned.width == handwriting.width and captioned.height > handwriting.height
    assert list(captioned.crop((0, 0, *handwriting.size)).getdata()) == list(handwriting.getdata())
    caption = captioned.crop((0, handwriting.height, captioned.width, captioned.height))
    assert any(alpha > 0 for *_rgb, alpha in caption.getdata()), "the caption band holds the drawn text"
    assert with_signing_time(handwriting, moment).tobytes() == captioned.tobytes()  # the same time, the same image
    assert with_signing_time(handwriting, moment + dt.timedelta(minutes=1)).tobytes() != captioned.tobytes()

    pki = env.pki
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True,
                           signing_time=moment)
    signed = signer.complete(prepared := signer.prepare(flow["blank"], party),
                             pki.alice.sign_digest(prepared.digest_to_sign))
    [embedded] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    assert embedded.self_reported_timestamp == moment


def _image_xobjects(stream) -> list:
    found = []
    for xobject in stream.get("/Resources", {}).get("/XObject", {}).values():
        xobject = xobject.get_object()
        if xobject["/Subtype"] == "/Image":
            found.append(xobject)
        else:
            found.extend(_image_xobjects(xobject))
    return found


def test_identity_signs_exactly_the_prepared_digest(env, signer, flow):
    """The grant binds ``digest_to_sign``; the CMS must be a signature over that."""
    pki, seen = env.pki, []

    def recording_sign_digest(digest: bytes) -> bytes:
        seen.append(digest)
        return pki.alice.sign_digest(digest)

    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = signer.prepare(flow["blank"], party)
    prepared = PreparedSignature.from_dict(json.loads(json.dumps(prepared.to_dict())), flow["blank"])  # stored
    prepared.check_binding()
    assert prepared.input_sha256 == hashlib.sha256(flow["blank"]).hexdigest()
    signed = signer.complete(prepared, recording_sign_digest(prepared.digest_to_sign))

    embedded = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    signed_attrs = embedded.signer_info["signed_attrs"].untag().dump()  # the SET OF, as signed
    assert seen == [hashlib.sha256(signed_attrs).digest()] == [prepared.digest_to_sign]
    message_digest = next(a for a in embedded.signer_info["signed_attrs"] if a["type"].native == "message_digest")
    assert message_digest["values"][0].native == embedded.compute_digest() == prepared.document_digest


def test_complete_refuses_a_signature_from_another_key(env, signer, flow):
    pki = env.pki
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = signer.prepare(flow["blank"], party)
    with pytest.raises(IntegrityError):
        signer.complete(prepared, pki.bob.sign_digest(prepared.digest_to_sign))


def test_complete_refuses_a_tampered_prepared_document(env, signer, flow):
    pki = env.pki
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = signer.prepare(flow["blank"], party)
    pdf = bytearray(prepared.prepared_pdf)
    pdf[100] ^= 0x01
    tampered = PreparedSignature.from_dict({**prepared.to_dict(), "prepared_pdf": _b64(bytes(pdf))})
    with pytest.raises(IntegrityError):
        signer.complete(tampered, pki.alice.sign_digest(prepared.digest_to_sign))


def test_a_prepared_signature_is_stored_as_its_update_to_the_document(env, signer, flow):
    """What a pending signature keeps is the incremental update (zlib), not the document again:
    it comes back byte for byte behind the document it was prepared from, and only behind that one."""
    pki = env.pki
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = signer.prepare(flow["blank"], party)
    stored = json.dumps(prepared.to_dict())
    whole = json.dumps({**prepared.to_dict(), "prepared_pdf": _b64(prepared.prepared_pdf)})
    assert "prepared_pdf" not in json.loads(stored) and len(stored) * 4 < len(whole)
    back = PreparedSignature.from_dict(json.loads(stored), flow["blank"])
    assert back == prepared
    assert back.prepared_pdf == prepared.prepared_pdf
    other = flow["blank"][:-1] + bytes([flow["blank"][-1] ^ 0x01])
    with pytest.raises(IntegrityError):
        PreparedSignature.from_dict(json.loads(stored), other)
    with pytest.raises(InvalidInput):
        PreparedSignature.from_dict(json.loads(stored))
    cut = {**json.loads(stored), "update": _b64(zlib.compress(prepared.prepared_pdf[len(flow["blank"]):])[:-9])}
    with pytest.raises(IntegrityError):
        PreparedSignature.from_dict(cut, flow["blank"])


def test_a_prepared_signature_stored_whole_still_completes(env, signer, flow):
    """A pending signature stored before the update form (the whole prepared PDF) completes after an upgrade."""
    pki = env.pki
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = signer.prepare(flow["blank"], party)
    older = {key: value for key, value in prepared.to_dict().items() if key not in ("update", "input_length")}
    older["prepared_pdf"] = _b64(prepared.prepared_pdf)
    back = PreparedSignature.from_dict(json.loads(json.dumps(older)))
    signed = signer.complete(back, pki.alice.sign_digest(prepared.digest_to_sign))
    assert PdfFileReader(io.BytesIO(signed)).embedded_signatures[0].field_name == "Party1"


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_signing_needs_the_existing_empty_field_and_certification_first(env, signer, flow):
    pki, png = env.pki, handwritten_png()
    with pytest.raises(NotFound):
        signer.sign_party(flow["blank"], "NoSuchField", pki.alice.certificate, pki.chain,
                          pki.alice.sign_digest, png, True)
    with pytest.raises(Conflict):  # the field already carries Alice's signature
        signer.sign_party(flow["first"], "Party1", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, False)
    with pytest.raises(Conflict):  # a certification signature must come first
        signer.sign_party(flow["first"], "Party2", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, True)


def test_appearance_must_be_a_small_png(env, signer, flow):
    pki = env.pki
    with pytest.raises(InvalidInput) as err:
        signer.sign_party(flow["blank"], "Party1", pki.alice.certificate, pki.chain, pki.alice.sign_digest,
                          b"GIF89a not a png", True)
    assert err.value.field == "appearance_png"


# --- (b) pdfsig with the root in an NSS database ----------------------------------


def _pdfsig(pdf: bytes, env, tmp_path) -> str:
    nss = tmp_path / "nss"
    nss.mkdir()
    (tmp_path / "root.pem").write_bytes(env.pki.root.pem)
    (tmp_path / "doc.pdf").write_bytes(pdf)
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"], check=True, capture_output=True)
    subprocess.run(
        ["certutil", "-A", "-n", "root", "-t", "C,C,C", "-i", str(tmp_path / "root.pem"), "-d", f"sql:{nss}"],
        check=True, capture_output=True,
    )
    # pdfsig exits 0 even on a digest mismatch, so callers read its output
    run = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(tmp_path / "doc.pdf")], capture_output=True, text=True)
    return run.stdout


needs_pdfsig = pytest.mark.skipif(shutil.which("pdfsig") is None, reason="poppler-utils not installed")


def _per_signature(output: str) -> dict[str, str]:
    blocks, current = {}, None
    for line in output.splitlines():
        if line.startswith("Signature #"):
            current = line.strip(":")
            blocks[current] = ""
        elif current:
            blocks[current] += line + "\n"
    return blocks


@needs_pdfsig
def test_pdfsig_says_valid_and_trusted_for_every_signature(env, flow, tmp_path):
    blocks = _per_signature(_pdfsig(flow["final"], env, tmp_path))
    party_blocks = [b for b in blocks.values() if "ETSI.CAdES.detached" in b]
    assert len(party_blocks) == 2
    for block in party_blocks:
        assert "Signature Validation: Signature is Valid." in block
        assert "Certificate Validation: Certificate is Trusted." in block


# --- (c) one flipped byte -----------------------------------------------------------


def _flip_inside_first_signed_range(pdf: bytes) -> bytes:
    marker = b"owes Alice"  # in the page content, covered by every signature
    at = pdf.index(marker)
    flipped = bytearray(pdf)
    flipped[at] ^= 0x01
    return bytes(flipped)


def test_flipped_byte_fails_in_pyhanko(env, flow):
    results = _pyhanko_statuses(_flip_inside_first_signed_range(flow["final"]), _root(env))
    assert results and all(not status.intact for _, status in results)


@needs_pdfsig
def test_flipped_byte_fails_in_pdfsig(env, flow, tmp_path):
    blocks = _per_signature(_pdfsig(_flip_inside_first_signed_range(flow["final"]), env, tmp_path))
    party_blocks = [b for b in blocks.values() if "ETSI.CAdES.detached" in b]
    assert len(party_blocks) == 2
    for block in party_blocks:
        assert "Signature is Valid." not in block
        assert "Digest Mismatch." in block


# --- (d) the TSA fails -----------------------------------------------------------------


def test_signing_fails_with_unavailable_when_the_tsa_is_down(env, flow):
    probe = PkiHttpServer()
    dead_url = f"{probe.base_url}/tsa"
    probe.stop()  # the port is closed now
    broken = DocumentSigner(SignerSettings(tsa=TsaSettings(dead_url, timeout_seconds=2)), [env.pki.root.certificate])
    pki = env.pki
    with pytest.raises(Unavailable) as err:
        broken.sign_party(flow["blank"], "Party1", pki.alice.certificate, pki.chain, pki.alice.sign_digest,
                          handwritten_png(), True)
    assert err.value.system == "tsa"


def test_b_lta_with_the_revocation_data_given_fetches_none_and_is_valid(env, signer, flow):
    """What identity's revocation_data answers (here: the OCSP responses and CRL of a first
    finalisation's DSS) serves the B-LTA without an OCSP or CRL fetch; only the document time-stamp
    goes out. Given too little, it fetches everything as before."""
    from services.signing.pades import RevocationData
    from services.signing.pdf_worker import validation_data

    held = validation_data(flow["final"])
    assert held["ocsps"] and held["crls"]
    paths: list[str] = []
    app = env.server.app

    def recording(environ, start_response):
        paths.append(environ["PATH_INFO"])
        return app(environ, start_response)

    env.server.app = recording
    try:
        final = signer.finalize_lta(flow["second"], RevocationData(tuple(held["ocsps"]), tuple(held["crls"])))
        given = list(paths)
        paths.clear()
        fallback = signer.finalize_lta(flow["second"], RevocationData(tuple(held["ocsps"][1:]), tuple(held["crls"])))
    finally:
        env.server.app = app
    assert given and set(given) == {"/tsa"}, given  # time-stamps only: no OCSP, no CRL fetched
    assert set(paths) - {"/tsa"}, paths  # one OCSP response missing: fetched online, the whole set
    for pdf in (final, fallback):
        results = _pyhanko_statuses(pdf, _root(env))
        assert [sig.field_name for sig, _ in results] == ["Party1", "Party2", "DocumentTimestamp"]
        assert all(status.intact and status.valid and status.trusted for _, status in results)


def test_finalize_fails_with_unavailable_when_the_tsa_answers_garbage(env, flow):
    def garbage(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/timestamp-reply")])
        return [b"not DER"]

    server = PkiHttpServer()
    server.app = garbage
    server.start()
    try:
        broken = DocumentSigner(SignerSettings(tsa=TsaSettings(f"{server.base_url}/tsa")), [env.pki.root.certificate])
        with pytest.raises(Unavailable):
            broken.finalize_lta(flow["second"])
    finally:
        server.stop()


# --- (e) a revoked signer ------------------------------------------------------------------


def test_revoked_signer_is_refused_at_finalisation_and_reported_by_verification():
    revoking = start_signing_environment()  # its own PKI: revocation must not leak into other tests
    try:
        pki = revoking.pki
        signer = DocumentSigner(SignerSettings(tsa=TsaSettings(revoking.tsa_url)), [pki.root.certificate])
        png = handwritten_png()
        first = signer.sign_party(two_party_pdf(), "Party1", pki.alice.certificate, pki.chain, pki.alice.sign_digest,
                                  png, True)
        pki.revoke(pki.bob)  # revoked five minutes before Bob signs
        second = signer.sign_party(first, "Party2", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, False)

        with pytest.raises(Forbidden) as err:
            signer.finalize_lta(second)
        assert "Party2" in str(err.value)

        result = verify_pdf(second, [pki.root.certificate], allow_fetching=True)
        by_field = {c.field_name: c for c in result.signatures}
        assert by_field["Party2"].revoked and not by_field["Party2"].ok
        assert by_field["Party1"].ok and not by_field["Party1"].revoked
        assert not result.ok
    finally:
        revoking.stop()


def test_signed_attributes_carry_the_signing_certificate(env, flow):
    embedded = PdfFileReader(io.BytesIO(flow["first"])).embedded_signatures[0]
    attrs = {a["type"].native: a["values"][0] for a in embedded.signer_info["signed_attrs"]}
    assert attrs["signing_certificate_v2"]["certs"][0]["cert_hash"].native == hashlib.sha256(env.pki.alice.der).digest()
    assert "signing_time" not in attrs  # PAdES puts the claimed time in /M, not in the CMS
    assert isinstance(embedded.signed_data, cms.SignedData)


def test_a_token_issued_with_the_signature_is_the_signature_time_stamp(env, flow):
    """identity's sign_digest stamps the signature as it makes it; complete embeds that token and asks
    no TSA (this signer's TSA URL answers nothing), and pyHanko trusts the result as B-T."""
    from services.common.tsa import TimeStampAuthority

    pki = env.pki
    authority = TimeStampAuthority(pki.tsa.certificate, pki.tsa.key, [pki.issuing.certificate])
    offline = DocumentSigner(SignerSettings(tsa=TsaSettings("http://127.0.0.1:9/tsa", timeout_seconds=1)),
                             [pki.root.certificate])
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), handwritten_png(), certify=True)
    prepared = offline.prepare(flow["blank"], party)
    signature = pki.alice.sign_digest(prepared.digest_to_sign)
    signed = offline.complete(prepared, signature, authority.token(hashlib.sha256(signature).digest()))
    from pyhanko_certvalidator import ValidationContext

    [sig] = PdfFileReader(io.BytesIO(signed)).embedded_signatures
    context = lambda: ValidationContext(trust_roots=[_root(env)], allow_fetching=True)  # noqa: E731
    status = asyncio.run(async_validate_pdf_signature(sig, context(), context()))
    assert status.intact and status.valid and status.trusted
    assert status.timestamp_validity is not None and status.timestamp_validity.trusted
    assert status.timestamp_validity.timestamp >= status.signer_reported_dt  # the stamp came after signing

    # a token over anything but this signature value is refused: nothing is signed with a borrowed time
    other = authority.token(hashlib.sha256(b"another signature").digest())
    with pytest.raises(Unavailable) as err:
        offline.complete(prepared, signature, other)
    assert "different digest" in err.value.reason


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_signed_attributes_are_the_bytes_pyhanko_makes(env, who):
    """pades_signed_attributes builds the signed attributes from parts made once per certificate;
    they must be exactly what pyHanko's own PAdES signer formats (content type, message digest,
    signing-certificate-v2), DER-sorted."""
    import datetime as dt

    from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

    from services.signing.pades import RemoteDigestSigner, _asn1, pades_signed_attributes

    person = getattr(env.pki, who)
    certificate = _asn1(person.certificate)
    signer = RemoteDigestSigner(certificate, [_asn1(c) for c in env.pki.chain], sign_digest=None)
    for digest in (hashlib.sha256(b"a document").digest(), bytes(32), b"\xff" * 32):
        theirs = asyncio.run(signer.signed_attrs(digest, "sha256", use_pades=True, attr_settings=PdfCMSSignedAttributes(
            signing_time=dt.datetime.now(dt.timezone.utc))))
        ours = pades_signed_attributes(digest, certificate.dump())
        assert ours == theirs.dump()
        assert cms.CMSAttributes.load(ours).dump(force=True) == ours  # canonical DER
