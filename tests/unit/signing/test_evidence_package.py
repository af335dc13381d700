"""The evidence package's integrity layer: a signed manifest over every file,
and every change, addition or removal named (services/signing/evidence_package.py).
The agreement inside is checked end to end in tests/e2e/test_evidence_package.py."""
from __future__ import annotations

import json

import pytest

from services.signing.checkpoint import NoteSigner
from services.signing.evidence_package import MANIFEST, SIGNATURE, build_package, open_package
from services.signing.package_verify import is_package, verify_package
from tests.support.evidence import rezip

FILES = {"document.pdf": b"%PDF-1.7 not really", "report.json": b"{}", "log/checkpoint.txt": b"cp\n",
         "说明.txt": "说明".encode()}


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate("esign.test/log")


def _failures(opened) -> list[str]:
    return [check.subject for check in opened.checks if not check.ok]


def test_an_untouched_package_opens_with_every_file_checked(signer):
    data = build_package("flow-1", FILES, signer)
    assert is_package(data)
    opened = open_package(data, signer.verifier.to_key_string())
    assert _failures(opened) == []
    assert opened.files["说明.txt"] == "说明".encode()
    assert [entry["name"] for entry in opened.manifest["files"]] == sorted(FILES)
    assert opened.checks[-1].found == "4 files, none changed, added or removed"


@pytest.mark.parametrize("change, named", [
    (lambda f: f.__setitem__("report.json", b'{"forged": true}'), "file report.json"),
    (lambda f: f.__setitem__("extra/note.txt", b"added later"), "file extra/note.txt"),
    (lambda f: f.pop("log/checkpoint.txt"), "file log/checkpoint.txt"),
    (lambda f: f.__setitem__("说明.txt", b"changed"), "file 说明.txt"),
])
def test_a_changed_added_or_removed_file_is_named(signer, change, named):
    data = rezip(build_package("flow-1", FILES, signer), change)
    assert _failures(open_package(data, signer.verifier.to_key_string())) == [named]


def test_a_rewritten_manifest_fails_its_signature(signer):
    def forge(files):
        manifest = json.loads(files[MANIFEST])
        manifest["files"] = [e for e in manifest["files"] if e["name"] != "report.json"]
        files[MANIFEST] = json.dumps(manifest).encode()
        files.pop("report.json")

    data = rezip(build_package("flow-1", FILES, signer), forge)
    assert _failures(open_package(data, signer.verifier.to_key_string())) == [f"file {MANIFEST}"]


def test_a_manifest_re_signed_with_another_key_fails_under_the_platform_key(signer):
    forger = NoteSigner.generate("esign.test/log")
    forged = build_package("flow-1", dict(FILES, **{"report.json": b'{"forged": true}'}), forger)
    opened = open_package(forged, signer.verifier.to_key_string())
    assert _failures(opened) == [f"file {MANIFEST}"]
    assert "no valid signature" in opened.checks[0].found


@pytest.mark.parametrize("data, found", [
    (b"%PDF-1.7", "not a ZIP"),
    (None, "missing"),
])
def test_not_a_package_or_no_signature_is_a_failure_not_a_crash(signer, data, found):
    if data is None:
        data = rezip(build_package("flow-1", FILES, signer), lambda f: f.pop(SIGNATURE))
    opened = open_package(data, signer.verifier.to_key_string())
    assert not opened.checks[0].ok and found in opened.checks[0].found


def test_a_package_missing_the_document_fails_verification_with_its_name(signer):
    files = {k: v for k, v in FILES.items() if k != "document.pdf"}
    result = verify_package(build_package("flow-1", files, signer), log_public_key=signer.verifier.to_key_string())
    assert not result.ok
    assert result.problems == ["file document.pdf: expected present in the package, found missing"]


def test_anchors_taken_from_the_package_are_warned_about(signer):
    files = dict(FILES, **{"log/public-key.txt": (signer.verifier.to_key_string() + "\n").encode()})
    result = verify_package(build_package("flow-1", files, signer))
    assert any("log/public-key.txt" in w for w in result.warnings)
    assert "file pki/root.pem: expected the platform root certificate, given or in the package, found neither" \
        in result.problems
