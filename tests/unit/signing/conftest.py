"""Fixtures shared by the signing tests."""
import pytest

from tests.support.pki import start_signing_environment


@pytest.fixture(scope="module")
def env():
    """A throwaway PKI with its TSA, OCSP and CRL servers, one per test module."""
    environment = start_signing_environment()
    yield environment
    environment.stop()
