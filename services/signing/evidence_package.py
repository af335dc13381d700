"""The evidence package (证据包): what a party hands to a court or an
arbitrator, one ZIP that verifies offline with ``esign verify PACKAGE.zip``.

Contents::

    document.pdf            the signed PDF (PAdES B-LTA: signatures, time stamps, revocation data)
    report.json             the signing report (签约报告), signed by the platform
    report.pdf              the same report, in Chinese, for reading
    pki/root.pem            the platform root certificate (the trust anchor of the signatures)
    pki/issuing.pem         the issuing CA certificate
    pki/issuing.crl         the issuing CA's CRL when the package was made (DER)
    revocation/crl-N.der    the CRLs and OCSP answers the signatures were validated with
    revocation/ocsp-N.der   (taken from the PDF's document security store)
    log/public-key.txt      the evidence log's verifier key (C2SP signed note key)
    log/checkpoint.txt      the checkpoint the report's proofs use, with the witnesses' cosignatures
    log/witnesses.json      the witnesses' verifier keys and how many must cosign
    说明.txt                 how to verify all this, in Chinese
    manifest.json           the SHA-256 and size of every file above
    manifest.sig            the platform's signed note over manifest.json's SHA-256

A changed, added or removed file fails verification with its name: every
file must be listed in the manifest with its hash, nothing else may be in the
ZIP, and the manifest is signed with the log key. The trust anchors (root,
log key, witness keys) are best given by the verifier from the platform's
and the witnesses' published copies; taken from the package itself, the
verifier says so.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from services.signing.checkpoint import NoteSigner, NoteVerifier, open_note, sign_note

KIND = "esign-evidence-package"
VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
NOTE_HEADER = "esign evidence package v1"
#: a ZIP larger than this, or with more files, is not one the platform made
MAX_TOTAL_BYTES = 200 * 1024 * 1024
MAX_FILES = 200

README_ZH = """证据包说明

本证据包包含一份经电子签名的文件及其全部验证材料，可在不联网、不依赖本平台的情况下核验：

1. document.pdf：签署完成的 PDF（PAdES 长期验证格式，内含各方签名、可信时间戳与吊销信息）。
   可用 Adobe Reader、pdfsig（poppler）或 pyHanko 验证，以 pki/root.pem 作为信任根。
2. report.json / report.pdf：签约报告。记录签署各方、实名认证方式与等级、意愿认证、证书、
   时间戳，以及每个签署事件在证据日志中的位置与包含证明。report.json 由平台密钥签名。
3. log/checkpoint.txt：证据日志的检查点，由平台签名，并由独立见证人联署（c2sp.org/tlog-witness）。
   见证人只会联署与其此前所见日志一致的检查点，因此平台事后改写日志会被发现。
4. log/public-key.txt、log/witnesses.json：日志公钥与见证人公钥。请与平台及见证人公开发布的公钥核对。
5. manifest.json / manifest.sig：本包每个文件的 SHA-256 摘要及平台对其的签名；任何文件被修改、
   增加或删除，核验都会失败并指出该文件。

核验命令（需安装本平台的开源工具）：

    esign verify 证据包.zip --root 平台根证书.pem --log-key '<日志公钥>' --witness-key '<见证人公钥>' ...

若不给出 --root / --log-key / --witness-key，工具将使用包内副本，并提示您自行与公开发布的副本核对。
"""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_note_text(manifest_bytes: bytes) -> str:
    return f"{NOTE_HEADER}\n{_digest(manifest_bytes)}\n"


def build_package(flow_id: str, files: Mapping[str, bytes], signer: NoteSigner, now: datetime | None = None) -> bytes:
    """The ZIP of ``files`` (name -> bytes) with the signed manifest."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    entries = [{"name": name, "sha256": _digest(data), "size": len(data)} for name, data in sorted(files.items())]
    manifest = json.dumps({"kind": KIND, "version": VERSION, "flow_id": flow_id,
                           "created_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "files": entries},
                          ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
    out = io.BytesIO()
    stamp = moment.timetuple()[:6]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            archive.writestr(zipfile.ZipInfo(name, stamp), data)
        archive.writestr(zipfile.ZipInfo(MANIFEST, stamp), manifest)
        archive.writestr(zipfile.ZipInfo(SIGNATURE, stamp), sign_note(manifest_note_text(manifest), [signer]))
    return out.getvalue()


@dataclass(frozen=True)
class PackageCheck:
    subject: str
    ok: bool
    expected: str
    found: str


@dataclass
class OpenedPackage:
    """What a package holds, read and checked for integrity (not yet for meaning)."""

    files: dict[str, bytes] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    checks: list[PackageCheck] = field(default_factory=list)

    def text(self, name: str) -> str | None:
        data = self.files.get(name)
        return data.decode("utf-8") if data is not None else None


def open_package(data: bytes, log_key: str | None) -> OpenedPackage:
    """Read the ZIP safely and check the manifest signature (with ``log_key``,
    else the package's own ``log/public-key.txt``) and every file against it."""
    opened = OpenedPackage()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        opened.checks.append(PackageCheck("package", False, "a ZIP evidence package", f"not a ZIP ({exc})"))
        return opened
    if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_TOTAL_BYTES:
        opened.checks.append(PackageCheck("package", False, f"at most {MAX_FILES} files and {MAX_TOTAL_BYTES} bytes",
                                          f"{len(infos)} files, {sum(i.file_size for i in infos)} bytes"))
        return opened
    names = [info.filename for info in infos]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        opened.checks.append(PackageCheck("package", False, "each file once", f"twice: {', '.join(duplicated)}"))
        return opened
    for info in infos:
        if info.is_dir():
            continue
        opened.files[info.filename] = archive.read(info)
    manifest_bytes = opened.files.get(MANIFEST)
    signature = opened.text(SIGNATURE)
    if manifest_bytes is None or signature is None:
        missing = [n for n in (MANIFEST, SIGNATURE) if n not in opened.files]
        opened.checks.append(PackageCheck(f"file {missing[0]}", False, "the signed manifest", "missing"))
        return opened
    key = log_key or (opened.text("log/public-key.txt") or "").strip()
    try:
        note = open_note(signature, [NoteVerifier.from_key_string(key)])
        signed_ok = note.text == manifest_note_text(manifest_bytes)
        found = "signed by the log key" if signed_ok else "a signature over another manifest"
    except Exception as exc:  # noqa: BLE001 - every failure is a finding
        signed_ok, found = False, f"no valid signature ({getattr(exc, 'reason', exc)})"
    opened.checks.append(PackageCheck(f"file {MANIFEST}", signed_ok,
                                      "the manifest signed by the platform's log key", found))
    try:
        opened.manifest = json.loads(manifest_bytes)
        listed = {entry["name"]: entry for entry in opened.manifest["files"]}
    except (ValueError, KeyError, TypeError):
        opened.checks.append(PackageCheck(f"file {MANIFEST}", False, "a manifest of files", "malformed"))
        return opened
    for name, entry in sorted(listed.items()):
        content = opened.files.get(name)
        if content is None:
            opened.checks.append(PackageCheck(f"file {name}", False, "present, as the manifest lists it", "missing"))
        elif _digest(content) != entry.get("sha256"):
            opened.checks.append(PackageCheck(f"file {name}", False, f"SHA-256 {entry.get('sha256')}",
                                              f"SHA-256 {_digest(content)} (changed)"))
    for name in sorted(set(opened.files) - set(listed) - {MANIFEST, SIGNATURE}):
        opened.checks.append(PackageCheck(f"file {name}", False, "only the files the manifest lists",
                                          "a file the manifest does not list (added)"))
    if all(check.ok for check in opened.checks):
        opened.checks.append(PackageCheck("package files", True, "every file as the signed manifest lists it",
                                          f"{len(listed)} files, none changed, added or removed"))
    return opened


def witness_policy_file(policy_witnesses: Sequence[Mapping[str, str]], threshold: int) -> bytes:
    return json.dumps({"threshold": threshold, "witnesses": list(policy_witnesses)}, ensure_ascii=False,
                      indent=2, sort_keys=True).encode("utf-8")
