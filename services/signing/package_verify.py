"""``esign verify PACKAGE.zip``: check an evidence package (证据包) offline.

Three layers, each a list of :class:`~services.signing.offline_verify.Check`:

1. the package: every file as the manifest signed with the log key lists it
   (a changed, added or removed file is named, :func:`.evidence_package.open_package`);
2. the agreement: ``document.pdf`` and ``report.json`` as ``esign verify
   --report`` checks them (signatures, time stamps, revocation data, the
   report's signature, its proofs under the checkpoint, the witnesses'
   cosignatures), and ``log/checkpoint.txt`` the checkpoint the report uses;
3. the certificates: the issuing CA certificate issued by the root, its CRL
   signed by it, and every revocation file a CRL or an OCSP answer; a signer
   certificate the package's CRL lists as revoked is a warning (revoked after
   signing, an identity dispute, say), not a failure: the signature was made
   before.

The trust anchors (root certificate, log key, witness keys) should come from
the verifier: the platform's and the witnesses' published copies. Any taken
from the package is named in a warning, because a package cannot vouch for
itself.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import ocsp

from services.common.errors import InvalidInput
from services.signing.evidence_package import OpenedPackage, open_package
from services.signing.offline_verify import Check, OfflineResult, load_roots, verify_offline

#: files the agreement checks read; missing ones fail with their name
REQUIRED = ("document.pdf", "report.json", "log/checkpoint.txt")


def is_package(data: bytes) -> bool:
    """Whether ``data`` looks like a ZIP (a local file header), not a PDF."""
    return data[:4] == b"PK\x03\x04"


def verify_package(data: bytes, *, root_pems: Sequence[bytes] = (), log_public_key: str | None = None,
                   witness_keys: Sequence[str] | None = None, witness_threshold: int | None = None,
                   tsa_root_pems: Sequence[bytes] | None = None, now=None) -> OfflineResult:
    """Check an evidence package. Anchors not given are taken from the
    package, with a warning each. Raises ``InvalidInput`` only for the
    verifier's own unusable inputs; whatever is wrong in the package is a
    failed check."""
    if root_pems:
        load_roots(root_pems)  # the verifier's own root must be usable: a usage error otherwise
    warnings: list[str] = []
    package_sha256 = hashlib.sha256(data).hexdigest()
    opened = open_package(data, log_public_key)
    checks = [Check(c.subject, c.ok, c.expected, c.found) for c in opened.checks]
    if not opened.manifest:
        return OfflineResult(package_sha256, tuple(checks), None, tuple(warnings))
    missing = [name for name in REQUIRED if name not in opened.files]
    checks += [Check(f"file {name}", False, "present in the package", "missing") for name in missing]
    if missing:
        return OfflineResult(package_sha256, tuple(checks), None, tuple(warnings))

    key = log_public_key or _from_package(opened, "log/public-key.txt", "the evidence log's public key",
                                          warnings, checks)
    roots = list(root_pems) or [_from_package(opened, "pki/root.pem", "the platform root certificate",
                                              warnings, checks, text=False)]
    if witness_keys is None:
        witness_keys, threshold = _package_witnesses(opened, warnings, checks)
        threshold = witness_threshold if witness_threshold is not None else threshold
    else:
        threshold = witness_threshold
    if tsa_root_pems is None:
        tsa_root_pems = [opened.files["pki/tsa-roots.pem"]] if "pki/tsa-roots.pem" in opened.files else []
    try:
        report = json.loads(opened.files["report.json"])
    except ValueError:
        checks.append(Check("file report.json", False, "the signed report as JSON", "not JSON"))
        return OfflineResult(package_sha256, tuple(checks), None, tuple(warnings))
    if not key or not all(roots):
        return OfflineResult(package_sha256, tuple(checks), None, tuple(warnings))
    try:
        result = verify_offline(opened.files["document.pdf"], roots, report, key, now=now,
                                tsa_root_pems=tsa_root_pems, witness_keys=witness_keys,
                                witness_threshold=threshold)
    except InvalidInput as exc:  # an anchor from the package that cannot be used
        checks.append(Check(exc.field, False, "a usable trust anchor in the package", exc.message))
        return OfflineResult(package_sha256, tuple(checks), None, tuple(warnings))
    checks += result.checks
    warnings += result.warnings
    checks.append(_checkpoint_file_check(opened, report))
    checks += _certificate_checks(opened, roots, report, warnings)
    return replace(result, checks=tuple(checks), warnings=tuple(warnings))


def _from_package(opened: OpenedPackage, name: str, what: str, warnings: list[str], checks: list[Check],
                  *, text: bool = True) -> Any:
    data = opened.files.get(name)
    if data is None:
        checks.append(Check(f"file {name}", False, f"{what}, given or in the package", "neither"))
        return None
    warnings.append(f"{what}: taken from the package ({name}), not given; compare it with the copy its "
                    f"owner publishes (the platform, the witnesses), or pass it yourself")
    return data.decode("utf-8", "replace").strip() if text else data


def _package_witnesses(opened: OpenedPackage, warnings: list[str], checks: list[Check]) -> tuple[list[str], int]:
    data = _from_package(opened, "log/witnesses.json", "the witnesses' keys and threshold", warnings, checks)
    if data is None:
        return [], 0
    try:
        policy = json.loads(data)
        keys = [str(w["key"]) for w in policy["witnesses"]]
        threshold = int(policy["threshold"])
    except (ValueError, KeyError, TypeError):
        checks.append(Check("file log/witnesses.json", False, "{threshold, witnesses: [{name, key}]}", "malformed"))
        return [], 0
    if not 0 <= threshold <= len(keys):
        checks.append(Check("file log/witnesses.json", False, f"a threshold of 0 to {len(keys)}", str(threshold)))
        return keys, len(keys)
    return keys, threshold


def _checkpoint_file_check(opened: OpenedPackage, report: Any) -> Check:
    stated = opened.text("log/checkpoint.txt")
    used = report.get("report", {}).get("evidence", {}).get("checkpoint") if isinstance(report, dict) else None
    return Check("file log/checkpoint.txt", stated == used and stated is not None,
                 "the cosigned checkpoint the report's proofs use",
                 "the same checkpoint" if stated == used else "another checkpoint")


def _certificate_checks(opened: OpenedPackage, roots: Sequence[bytes], report: Any,
                        warnings: list[str]) -> list[Check]:
    checks: list[Check] = []
    anchors = load_roots(roots)
    issuing_pem = opened.files.get("pki/issuing.pem")
    if issuing_pem is None:
        return [Check("file pki/issuing.pem", False, "the issuing CA certificate", "missing")]
    try:
        issuing = x509.load_pem_x509_certificate(issuing_pem)
    except ValueError:
        return [Check("file pki/issuing.pem", False, "a PEM certificate", "unreadable")]
    by_root = any(_issued_by(issuing, root) for root in anchors)
    checks.append(Check("file pki/issuing.pem", by_root, "the issuing CA certificate, issued by the root",
                        "issued by the root" if by_root else "not issued by the root given"))
    crl_der = opened.files.get("pki/issuing.crl")
    if crl_der is not None:
        try:
            crl = x509.load_der_x509_crl(crl_der)
            signed = crl.is_signature_valid(issuing.public_key())
        except ValueError:
            crl, signed = None, False
        checks.append(Check("file pki/issuing.crl", signed, "the issuing CA's CRL, signed by it",
                            f"signed by it, issued {crl.last_update_utc:%Y-%m-%dT%H:%M:%SZ}" if signed
                            else "not a CRL the issuing CA signed"))
        if signed:
            _revoked_signers(crl, report, warnings)
    unreadable = [name for name, data in sorted(opened.files.items())
                  if name.startswith("revocation/") and not _revocation_readable(name, data)]
    count = sum(name.startswith("revocation/") for name in opened.files)
    checks.append(Check("revocation data", not unreadable, "each file a DER CRL or OCSP answer",
                        f"{count} files readable" if not unreadable else f"unreadable: {', '.join(unreadable)}"))
    return checks


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _revocation_readable(name: str, data: bytes) -> bool:
    try:
        if name.endswith(".der") and "/crl-" in name:
            x509.load_der_x509_crl(data)
        elif name.endswith(".der") and "/ocsp-" in name:
            ocsp.load_der_ocsp_response(data)
        else:
            return False
    except ValueError:
        return False
    return True


def _revoked_signers(crl: x509.CertificateRevocationList, report: Any, warnings: list[str]) -> None:
    parties = report.get("report", {}).get("parties", []) if isinstance(report, dict) else []
    for party in parties if isinstance(parties, list) else []:
        cert = party.get("certificate") if isinstance(party, dict) else None
        try:
            serial = int(cert["serial"], 16)
        except (TypeError, KeyError, ValueError):
            continue
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        if entry is not None:
            warnings.append(f"the certificate of party {party.get('person_id')} (serial {cert['serial']}) is "
                            f"revoked since {entry.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ} by the package's CRL; "
                            f"its signature was made before (see its time stamp)")
