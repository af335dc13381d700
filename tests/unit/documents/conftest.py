import pytest

from services.documents.template import load_templates


@pytest.fixture(scope="session")
def catalog():
    return load_templates()
