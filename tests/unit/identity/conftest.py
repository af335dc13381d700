"""Fixtures shared by the identity tests."""
import pytest

from tests.support.faces import face_path


@pytest.fixture(scope="module")
def photo():
    """``photo(name) -> bytes`` of a real face fixture, read once per module."""
    cache: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        if name not in cache:
            cache[name] = face_path(name).read_bytes()
        return cache[name]

    return read
