"""verify_pdf: offline with only the root, for every signature and time-stamp."""
import datetime as dt
import io
import json

import pytest
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from services.common import assurance
from services.common.errors import InvalidInput
from services.common.tsa import TsaSettings
from services.signing.pades import DocumentSigner, SignerSettings
from services.signing.verification import verify_pdf
from tests.support.pki import build_pki, handwritten_png, two_party_pdf


def test_finalised_flow_verifies_offline_with_only_the_root(env, documents):
    served_before = env.pki.requests_served
    result = verify_pdf(documents["final"], [env.pki.root.certificate])
    assert env.pki.requests_served == served_before  # nothing fetched: DSS only
    assert result.ok, result.problems
    assert [c.field_name for c in result.signatures] == ["Party1", "Party2"]
    assert [c.field_name for c in result.document_timestamps] == ["DocumentTimestamp"]
    assert result.has_validation_data and not result.modified_after_last_signature
    first, second = result.signatures
    assert "Alice Zhang" in first.signer and "Bob Li" in second.signer
    assert first.certification == "FILL_FORMS" and second.certification is None
    for check in result.signatures:
        assert check.intact and check.valid and check.trusted and not check.revoked
        assert check.timestamp is not None and check.timestamp.trusted
        assert "Test Platform TSA" in check.timestamp.tsa
        assert not check.covers_entire_file  # later revisions follow each party signature
    assert result.document_timestamps[0].covers_entire_file
    assert dt.datetime.fromisoformat(first.timestamp.time) <= dt.datetime.fromisoformat(second.timestamp.time)


def test_result_is_json(env, documents):
    data = json.loads(json.dumps(verify_pdf(documents["final"], [env.pki.root.certificate]).to_dict()))
    assert data["ok"] is True
    assert data["signatures"][0]["ok"] is True and data["signatures"][0]["problems"] == []
    assert data["signatures"][1]["timestamp"]["trusted"] is True


def test_still_verifies_after_the_signer_certificates_expired(env, documents):
    # person certificates live two years; the time-stamps prove signing happened before
    later = env.pki.alice.certificate.not_valid_after_utc + dt.timedelta(days=30)
    result = verify_pdf(documents["final"], [env.pki.root.certificate], now=later)
    assert result.ok, result.problems


def test_fails_once_the_newest_timestamp_certificate_expired(env, documents):
    later = env.pki.tsa.certificate.not_valid_after_utc + dt.timedelta(days=1)
    result = verify_pdf(documents["final"], [env.pki.root.certificate], now=later)
    assert not result.ok
    assert any("expired" in p for p in result.problems)


def test_another_root_is_not_trusted(env, documents):
    stranger = build_pki(env.pki.base_url).root.certificate
    result = verify_pdf(documents["final"], [stranger])
    assert not result.ok
    assert all(c.intact and not c.trusted for c in result.signatures)


def test_flipped_byte_is_reported_as_not_intact(env, documents):
    pdf = bytearray(documents["final"])
    pdf[pdf.index(b"owes Alice")] ^= 0x01
    result = verify_pdf(bytes(pdf), [env.pki.root.certificate])
    assert not result.ok
    assert all(not c.intact for c in (*result.signatures, *result.document_timestamps))


def test_update_appended_after_the_last_timestamp_is_flagged(env, documents):
    writer = IncrementalPdfFileWriter(io.BytesIO(documents["final"]))
    writer.root["/Lang"] = generic.TextStringObject("en")  # any unsigned change
    writer.update_root()
    out = io.BytesIO()
    writer.write(out)
    result = verify_pdf(out.getvalue(), [env.pki.root.certificate])
    assert result.modified_after_last_signature
    assert not result.ok
    # the signed revisions themselves are still intact
    assert all(c.intact for c in result.signatures)


def test_document_without_validation_data_needs_fetching(env, documents):
    offline = verify_pdf(documents["second"], [env.pki.root.certificate])
    assert not offline.ok and not offline.has_validation_data
    online = verify_pdf(documents["second"], [env.pki.root.certificate], allow_fetching=True)
    assert online.ok, online.problems
    assert online.document_timestamps == ()


def test_unsigned_document_is_not_ok(env, documents):
    result = verify_pdf(documents["blank"], [env.pki.root.certificate])
    assert not result.ok and result.signatures == ()
    assert "document carries no signature" in result.problems


def test_not_a_pdf_is_invalid_input(env):
    with pytest.raises(InvalidInput) as err:
        verify_pdf(b"hello", [env.pki.root.certificate])
    assert err.value.field == "pdf"


def test_each_signature_says_the_assurance_level_its_certificate_states(env, documents):
    # alice and bob hold certificates from before levels: they state none
    legacy = verify_pdf(documents["final"], [env.pki.root.certificate])
    assert [c.assurance_level for c in legacy.signatures] == [None, None]
    assert legacy.to_dict()["signatures"][0]["assurance_level"] is None
    level = assurance.AssuranceLevel.AUTHORITY_FACE_LIVENESS
    carol = env.pki.issue_person("Carol Wang", (assurance.policy_extension(level),))
    signer = DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [env.pki.root.certificate])
    signed = signer.sign_party(two_party_pdf(), "Party1", carol.certificate, env.pki.chain, carol.sign_digest,
                               handwritten_png(), True)
    (check,) = verify_pdf(signed, [env.pki.root.certificate], allow_fetching=True).signatures
    assert check.ok, check.problems
    assert check.assurance_level == "authority_face_liveness"
