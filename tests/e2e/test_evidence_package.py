"""The evidence package (证据包) a party hands to a court: downloaded over
HTTP for a completed IOU, it verifies offline with ``esign verify PACKAGE.zip``
(the PDF's signatures and time stamps, the signed report, its proofs
under the witness-cosigned checkpoint, the CA certificates and CRL), and fails
with the file's name when any file is changed, added or removed."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from typing import Any

import pytest

from services.signing import offline_verify
from tests.support.evidence import rezip
from tests.support.stack import REPO, people, signed_iou

pytestmark = pytest.mark.e2e


def download(stack, flow_id: str, token: str | None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(f"{stack.gateway_url}/api/v1/flows/{flow_id}/evidence")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def verify_in_process(argv: list[str]) -> tuple[int, str]:
    """``esign verify`` itself (offline_verify.main), without a new interpreter per tampering."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = offline_verify.main(argv)
    return code, out.getvalue()


def test_the_evidence_package_of_an_iou_verifies_offline_and_names_any_tampered_file(stack, tmp_path):
    lender, borrower = people(stack)
    flow_id = signed_iou(stack, lender, borrower, amount="8000", purpose="家庭装修", annual_rate="3.65",
                         start_date="2026-12-01", repayment_date="2027-06-01")

    # only a party gets it
    assert download(stack, flow_id, None)[0] == 403  # no session
    status, package, headers = download(stack, flow_id, stack.tokens[borrower])
    assert status == 200, package[:300]
    assert headers["Content-Type"] == "application/zip"
    assert f'filename="evidence-{flow_id}.zip"' in headers["Content-Disposition"]
    names = set(zipfile.ZipFile(io.BytesIO(package)).namelist())
    assert {"document.pdf", "report.json", "report.pdf", "pki/root.pem", "pki/issuing.pem", "pki/issuing.crl",
            "log/public-key.txt", "log/checkpoint.txt", "log/witnesses.json", "说明.txt", "manifest.json",
            "manifest.sig"} <= names
    assert any(name.startswith("revocation/") for name in names)  # the CRLs/OCSP answers the PDF's DSS carries
    path = tmp_path / "evidence.zip"
    path.write_bytes(package)

    # green with the anchors the verifier holds itself: the platform's root and log key, the witnesses' keys
    root = tmp_path / "root.pem"
    root.write_text(stack.rpc.identity.pki_certificates()["root_pem"])
    anchors = ["--root", str(root), "--log-key", stack.rpc.signing.log_public_key()["public_key"],
               *[arg for w in stack.witnesses for arg in ("--witness-key", w.key)], "--witness-threshold", "2"]
    run = subprocess.run([sys.executable, "-m", "services.cli", "verify", *anchors, str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    for line in ("✓ package files: ", "✓ witnesses: 2 of 2 configured witnesses cosigned",
                 "✓ file log/checkpoint.txt: the same checkpoint", "✓ file pki/issuing.pem: issued by the root",
                 "✓ file pki/issuing.crl: signed by it", "✓ final PDF hash"):
        assert line in run.stdout, run.stdout
    assert "WARNING" not in run.stdout

    # with no anchors of its own, the package's copies are used and each is named in a warning
    code, out = verify_in_process([str(path)])
    assert code == 0, out
    for copy in ("pki/root.pem", "log/public-key.txt", "log/witnesses.json"):
        assert f"taken from the package ({copy})" in out

    # red on each tampering, naming the file
    report = json.loads(zipfile.ZipFile(io.BytesIO(package)).read("report.json"))
    report["report"]["amount_forged"] = "80000"
    tamperings = {
        "changed": (lambda f: f.__setitem__("report.json", json.dumps(report).encode()), "file report.json"),
        "added": (lambda f: f.__setitem__("revocation/crl-9.der", f["pki/issuing.crl"]), "file revocation/crl-9.der"),
        "removed": (lambda f: f.pop("report.pdf"), "file report.pdf"),
        "pdf changed": (lambda f: f.__setitem__("document.pdf", f["document.pdf"] + b"\n%%EOF\n"), "file document.pdf"),
    }
    for what, (change, named) in tamperings.items():
        forged = tmp_path / f"{what.replace(' ', '-')}.zip"
        forged.write_bytes(rezip(package, change))
        code, out = verify_in_process([*anchors, str(forged)])
        assert code == 1, (what, out)
        assert f"✗ {named}: " in out, (what, out)
        assert out.strip().splitlines()[-1].startswith("FAILED"), (what, out)
