"""The S3 store's identities as deployments write them (esign s3 identities): the
administrator, and documents and signing each allowed only their own bucket. That
SeaweedFS enforces them is shown against the real server in tests/integration/test_storage.py."""
from __future__ import annotations

import json

import pytest

from services.common.errors import InvalidInput
from services.common.s3server import main

ENV = {"ESIGN_S3_ACCESS_KEY": "admin", "ESIGN_S3_SECRET_KEY": "admin-secret",
       "DOCUMENTS_S3_ACCESS_KEY": "docs", "DOCUMENTS_S3_SECRET_KEY": "docs-secret",
       "SIGNING_S3_ACCESS_KEY": "sign", "SIGNING_S3_SECRET_KEY": "sign-secret", "SIGNING_S3_BUCKET": "evidence"}


def test_each_service_is_limited_to_its_bucket(tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DOCUMENTS_S3_BUCKET", raising=False)
    out = tmp_path / "s3.json"
    assert main(["identities", "--out", str(out)]) == 0
    identities = {entry["name"]: entry for entry in json.loads(out.read_text())["identities"]}
    assert identities["admin"]["actions"] == ["Admin", "Read", "Write", "List", "Tagging"]
    assert identities["documents"]["credentials"] == [{"accessKey": "docs", "secretKey": "docs-secret"}]
    assert all(action.endswith(":esign-documents") for action in identities["documents"]["actions"])
    assert all(action.endswith(":evidence") for action in identities["signing"]["actions"])
    assert oct(out.stat().st_mode & 0o777) == "0o640"


def test_a_missing_key_is_named(tmp_path, monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SIGNING_S3_SECRET_KEY")
    with pytest.raises(InvalidInput) as missing:
        main(["identities", "--out", str(tmp_path / "s3.json")])
    assert missing.value.field == "SIGNING_S3_SECRET_KEY"
