"""Fixtures shared by the signing tests."""
import pytest

from services.common.tsa import TsaSettings
from services.signing.pades import DocumentSigner, SignerSettings
from tests.support.pki import handwritten_png, start_signing_environment, two_party_pdf


@pytest.fixture(scope="module")
def env():
    """A throwaway PKI with its TSA, OCSP and CRL servers, one per test module."""
    environment = start_signing_environment()
    yield environment
    environment.stop()


@pytest.fixture(scope="module")
def documents(env):
    """A two-party PDF blank, after the first and the second signature, and
    finalised (B-LTA), signed with the module's PKI and TSA."""
    pki, png = env.pki, handwritten_png()
    signer = DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [pki.root.certificate])
    blank = two_party_pdf()
    first = signer.sign_party(blank, "Party1", pki.alice.certificate, pki.chain, pki.alice.sign_digest, png, True)
    second = signer.sign_party(first, "Party2", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, False)
    return {"blank": blank, "first": first, "second": second, "final": signer.finalize_lta(second)}
