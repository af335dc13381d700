"""The demo registry's photos come from face_recognition's sdist on PyPI, downloaded once per machine
user (services/identity/proofing/demo.py ``download_cache``) rather than once per data directory:
a fresh ``esign up`` spent 2.3 s in ``pip download``. A cached copy is used only with the SHA-256 PyPI
lists. Real pip, real PyPI (the machine's index)."""
from __future__ import annotations

import subprocess

import pytest

from services.identity.proofing import demo


def test_a_download_is_kept_for_the_next_data_directory_and_a_bad_copy_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("ESIGN_DOWNLOAD_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / demo.SDIST_ARCHIVE
    cached.parent.mkdir()
    cached.write_bytes(b"not the archive")  # without PyPI's hash: pip downloads it again
    first = demo.fetch_sdist_photos(["obama", "biden"], tmp_path / "data-1" / "demo-faces")
    assert first["obama"].read_bytes()[:2] == b"\xff\xd8"  # a JPEG, from what pip downloaded
    assert demo._sha256(cached) == demo.SDIST_SHA256  # the bad copy replaced

    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip was run again: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    second = demo.fetch_sdist_photos(["obama", "biden"], tmp_path / "data-2" / "demo-faces")
    assert {name: path.read_bytes() for name, path in second.items()} == \
        {name: path.read_bytes() for name, path in first.items()}
    assert all(path.parent == tmp_path / "data-2" / "demo-faces" for path in second.values())


def test_the_cache_follows_xdg_and_the_esign_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("ESIGN_DOWNLOAD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert demo.download_cache() == tmp_path / "xdg" / "esign"
    monkeypatch.setenv("ESIGN_DOWNLOAD_CACHE", str(tmp_path / "mine"))
    assert demo.download_cache() == tmp_path / "mine"


@pytest.fixture(autouse=True)
def _no_shared_cache_written(tmp_path, monkeypatch):
    """These tests never write the user's real cache (each sets its own)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-default"))
