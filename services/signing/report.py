"""The signing report (签约报告) of a completed or voided flow: JSON, signed by
the platform as a C2SP signed note (https://c2sp.org/signed-note, Ed25519),
and the same content as a Chinese A4 PDF (ISO 32000-1) with a QR code to the
verification page.

The JSON is canonical (RFC 8785 subset, :func:`evidence_log.canonical_json`),
so its SHA-256 names it; the signed note's text is::

    esign report v1
    <sha256 hex of the report's canonical JSON>

What the report holds: the document title and the SHA-256 of the original and
the final PDF; every party (name, masked ID number and phone, certificate
serial, issuer and validity); how identity was checked (the assurance level
of :mod:`services.common.assurance`, the proofing provider and its request
id, the score with its kind and threshold, liveness, when); each willingness
check; each signature with its RFC 3161 time-stamp; the flow's evidence-log
leaves (RFC 9162) with their inclusion proofs against one signed checkpoint;
and, when a party's identity was disputed after the flow, the dispute.

Version 2 (this one) replaced version 1's ``id_verified`` / ``face_*``
identity checks, which vouched for no authority, by the assurance level and
the authority's answer, and added ``dispute``.

Personal data: the report carries masked values only (1101**********002X).
Every string is screened for a clear resident ID number (GB 11643-1999
shape) or mobile number, and building refuses one rather than print it.
Numbers are integers or decimal strings: canonical JSON refuses floats.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape

import segno
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfdoc import PDFText
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from services.common.assurance import AssuranceLevel, parse_level
from services.common.errors import IntegrityError, InvalidInput

# TODO(lead): the font stack is shared with documents; move it to services/common
from services.common.fonts import FontStack, default_font_stack, describe_characters
from services.signing import merkle
from services.signing.checkpoint import (
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    open_note,
    sign_note,
)
from services.signing.log_records import InclusionProof, canonical_json, verify_checkpointed_inclusion

REPORT_VERSION = 2
REPORT_KIND = "esign.signing_report"
NOTE_HEADER = "esign report v1"

#: a clear resident ID number (18 characters, GB 11643-1999) or mainland
#: mobile number inside any string; the shapes services.common.logs redacts,
#: bounded by letters as well as digits so that the digits of an identifier
#: (a UUID's hex group such as ``a13912345678``) are not taken for one
_CLEAR_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_CLEAR_PHONE = re.compile(r"(?<![0-9A-Za-z])(?:\+?86[- ]?)?1[3-9]\d{9}(?![0-9A-Za-z])")
#: keys whose values are cryptographic material or certificate serials, which
#: may be long digit runs by chance; everything else is screened
_NOT_PERSONAL_KEYS = frozenset({
    "serial", "certificate_serial", "hashes", "checkpoint", "log_public_key", "leaf_hash", "root_hash",
    "original_pdf_sha256", "final_pdf_sha256", "document_hash",
})
_MASK_CHARACTER = "*"
#: decimals kept of an identity check's score or threshold (a face distance lies in [0, 2),
#: a similarity in [0, 100])
SCORE_DECIMALS = 4
#: what an identity check's score measures: a match is above a similarity threshold, below a distance one
SCORE_KINDS = ("similarity", "distance")


class ReportSignatureError(IntegrityError):
    """A signed report whose note does not verify or does not name its content."""

    def __init__(self, reason: str):
        super().__init__("signing report", reason)
        self.args = (reason,)


# --- normalising inputs -------------------------------------------------------------


def _timestamp(value: datetime | str | None, field: str, required: bool = True) -> str | None:
    """An aware datetime or ISO 8601 text as RFC 3339 UTC (``...Z``)."""
    if value is None:
        if required:
            raise InvalidInput(field, "required", "expected a date-time, found none")
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(field, "rfc3339", "expected an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise InvalidInput(field, "type", f"expected a date-time, found {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidInput(field, "rfc3339", "expected a date-time with a UTC offset, found none")
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: Any, field: str, required: bool = True, max_length: int = 200) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(field, "required", "expected a non-empty string, found none")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "type", f"expected a string, found {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidInput(field, "max_length", f"expected at most {max_length} characters, found {len(value)}")
    return value


def _sha256_hex(value: Any, field: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise InvalidInput(field, "sha256_hex", "expected 64 lower-case hex digits")
    return value


def _decimal(value: Any, field: str) -> str | None:
    """A score or threshold as a fixed-point string (floats are not canonical JSON)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(field, "type", f"expected a number, found {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(field, "decimal", "expected a decimal number") from None
    if not 0 <= number <= 100:
        raise InvalidInput(field, "range", f"expected 0 <= value <= 100, found {number}")
    return f"{number:.{SCORE_DECIMALS}f}"


def _one_of(value: Any, field: str, allowed: Sequence[str], required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if value not in allowed:
        raise InvalidInput(field, "allowed_values", f"expected one of {', '.join(allowed)}")
    return value


def _masked(value: Any, field: str, length: int | None) -> str:
    """A masked ID number or phone: must contain the mask and no clear value."""
    text = _text(value, field, max_length=32)
    if _CLEAR_ID_NUMBER.search(text) or _CLEAR_PHONE.search(text):
        raise InvalidInput(field, "clear_personal_data", "expected a masked value, found a clear one")
    if _MASK_CHARACTER not in text:
        raise InvalidInput(field, "masked", f"expected a value masked with '{_MASK_CHARACTER}', found none")
    if length is not None and len(text) != length:
        raise InvalidInput(field, "length", f"expected {length} characters, found {len(text)}")
    return text


def refuse_clear_personal_data(value: Any, path: str = "") -> None:
    """Raise ``InvalidInput`` (rule ``clear_personal_data``) if any string in
    ``value`` holds a clear ID number or phone number. The message names where,
    never what."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key in _NOT_PERSONAL_KEYS:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key == "leaf" and isinstance(item, str):
                # the leaf is JSON; screen its fields by name like the rest
                refuse_clear_personal_data(json.loads(item), where)
                continue
            refuse_clear_personal_data(item, where)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            refuse_clear_personal_data(item, f"{path}.{i}" if path else str(i))
    elif isinstance(value, str):
        if _CLEAR_ID_NUMBER.search(value):
            raise InvalidInput(path or "report", "clear_personal_data",
                               "expected no clear ID number, found an 18-character one")
        if _CLEAR_PHONE.search(value):
            raise InvalidInput(path or "report", "clear_personal_data", "expected no clear phone number, found one")


# --- the report as data -------------------------------------------------------------


def _party(data: Mapping[str, Any], i: int, roles: Mapping[str, str]) -> dict:
    where = f"parties.{i}"
    person_id = _text(data.get("person_id"), f"{where}.person_id", max_length=64)
    certificate = data.get("certificate") or {}
    return {
        "person_id": person_id,
        "role": _text(data.get("role") or roles.get(person_id), f"{where}.role", max_length=32),
        "name": _text(data.get("name"), f"{where}.name", max_length=64),
        "id_number_masked": _masked(data.get("id_number_masked"), f"{where}.id_number_masked", 18),
        "phone_masked": _masked(data.get("phone_masked"), f"{where}.phone_masked", None),
        "certificate": {
            # serials are big integers: carried as decimal text (canonical JSON stops at 2**53)
            "serial": _text(None if certificate.get("serial") is None else str(certificate["serial"]),
                            f"{where}.certificate.serial", max_length=64),
            "issuer": _text(certificate.get("issuer"), f"{where}.certificate.issuer"),
            "subject": _text(certificate.get("subject"), f"{where}.certificate.subject", required=False),
            "not_before": _timestamp(certificate.get("not_before"), f"{where}.certificate.not_before"),
            "not_after": _timestamp(certificate.get("not_after"), f"{where}.certificate.not_after"),
        },
    }


def _identity_check(data: Mapping[str, Any], i: int) -> dict:
    """Identity's ``report_profile`` ``identity_check`` of one party, as the report keeps it."""
    where = f"identity_checks.{i}"
    score = _decimal(data.get("score"), f"{where}.score")
    return {
        "person_id": _text(data.get("person_id"), f"{where}.person_id", max_length=64),
        "assurance_level": parse_level(data.get("assurance_level"), f"{where}.assurance_level").value,
        "provider": _text(data.get("provider"), f"{where}.provider", max_length=32),
        "request_id": _text(data.get("request_id"), f"{where}.request_id", required=False, max_length=100),
        "score": score,
        # a similarity (Tencent FaceID Sim) matches above its threshold, a face distance below it
        "score_kind": _one_of(data.get("score_kind"), f"{where}.score_kind", SCORE_KINDS, required=score is not None),
        "threshold": _decimal(data.get("threshold"), f"{where}.threshold"),
        "liveness": _text(data.get("liveness"), f"{where}.liveness", max_length=32),
        # a self-declared identity may never have been checked
        "checked_at": _timestamp(data.get("checked_at"), f"{where}.checked_at", required=False),
        "account_status": _text(data.get("account_status"), f"{where}.account_status", max_length=16),
    }


def _dispute(flow: Mapping[str, Any]) -> dict | None:
    """The flow's ``disputed_identity`` (get_flow) as the report's ``dispute``."""
    disputed = flow.get("disputed_identity")
    if disputed is None:
        return None
    if not isinstance(disputed, Mapping):
        raise InvalidInput("flow.disputed_identity", "type", "expected {person_id, at, reason} or null")
    return {
        "person_id": _text(disputed.get("person_id"), "flow.disputed_identity.person_id", max_length=64),
        "at": _timestamp(disputed.get("at"), "flow.disputed_identity.at"),
        "reason": _text(disputed.get("reason"), "flow.disputed_identity.reason", max_length=64),
    }


def _willingness(data: Mapping[str, Any], i: int) -> dict:
    where = f"willingness.{i}"
    return {
        "person_id": _text(data.get("person_id"), f"{where}.person_id", max_length=64),
        "action": _text(data.get("action") or "sign", f"{where}.action", max_length=32),
        "method": _text(data.get("method"), f"{where}.method", max_length=16),
        "at": _timestamp(data.get("at"), f"{where}.at"),
        "outcome": _text(data.get("outcome"), f"{where}.outcome", max_length=16),
    }


def _signature(data: Mapping[str, Any], i: int) -> dict:
    where = f"signatures.{i}"
    return {
        "person_id": _text(data.get("person_id"), f"{where}.person_id", required=False, max_length=64),
        "field_name": _text(data.get("field_name"), f"{where}.field_name", max_length=64),
        "signed_at": _timestamp(data.get("signed_at"), f"{where}.signed_at", required=False),
        "timestamp_time": _timestamp(data.get("timestamp_time"), f"{where}.timestamp_time"),
        "tsa": _text(data.get("tsa"), f"{where}.tsa"),
    }


def signature_entries(verification: Any, field_to_person: Mapping[str, str]) -> list[dict]:
    """The ``signatures`` argument of :func:`build_report` from a
    :class:`~services.signing.verification.VerificationResult` of the final PDF."""
    entries = []
    for check in verification.signatures:
        entries.append({
            "person_id": field_to_person.get(check.field_name), "field_name": check.field_name,
            "signed_at": check.signing_time,
            "timestamp_time": check.timestamp.time if check.timestamp else None,
            "tsa": check.timestamp.tsa if check.timestamp else None,
        })
    return entries


def _evidence(evidence: Mapping[str, Any], flow_id: str) -> dict:
    """The flow's leaves and proofs, checked before they go into a report: a
    report must never carry a proof that does not hold."""
    try:
        key = evidence["log_public_key"]
        note = evidence["checkpoint"]
        tree_size = int(evidence["tree_size"])
        raw_leaves = list(evidence["leaves"])
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("evidence", "shape", "expected {checkpoint, tree_size, leaves, log_public_key}") from None
    verifier = NoteVerifier.from_key_string(key)
    checkpoint = open_checkpoint(note, verifier)
    if checkpoint.size != tree_size:
        raise IntegrityError("evidence", f"expected tree size {checkpoint.size} (the checkpoint's), found {tree_size}")
    events = []
    for raw in sorted(raw_leaves, key=lambda leaf: int(leaf["index"])):
        leaf_text = raw["leaf"]
        proof = InclusionProof.from_dict(raw["proof"])
        if proof.leaf_index != int(raw["index"]):
            raise IntegrityError("evidence",
                                 f"expected a proof for leaf {raw['index']}, found one for {proof.leaf_index}")
        verify_checkpointed_inclusion(leaf_text.encode("utf-8"), proof, note, verifier)
        record = json.loads(leaf_text)
        if record.get("flow_id") != flow_id:
            raise IntegrityError("evidence",
                                 f"expected leaves of flow {flow_id}, leaf {proof.leaf_index} is another flow's")
        events.append({
            "index": proof.leaf_index,
            "event_type": record.get("event_type"),
            "timestamp": record.get("timestamp"),
            "party_id": record.get("party_id"),
            "prev_index": record.get("prev_index"),
            "leaf": leaf_text,
            "leaf_hash": merkle.hash_leaf(leaf_text.encode("utf-8")).hex(),
            "proof": proof.to_dict(),
        })
    if not events:
        raise InvalidInput("evidence.leaves", "required", "expected the flow's log leaves, found none")
    return {
        "log_origin": checkpoint.origin,
        "log_public_key": key,
        "tree_size": checkpoint.size,
        "root_hash": checkpoint.root_hash.hex(),
        "checkpoint": note,
        "events": events,
    }


def build_report(
    flow: Mapping[str, Any],
    original_pdf_sha256: str,
    final_pdf_sha256: str,
    parties: Sequence[Mapping[str, Any]],
    identity_checks: Sequence[Mapping[str, Any]],
    willingness: Sequence[Mapping[str, Any]],
    signatures: Sequence[Mapping[str, Any]],
    evidence: Mapping[str, Any],
    generated_at: datetime | str,
    verification_url: str,
) -> dict:
    """The report of one flow as a JSON-able dict.

    * ``flow``: the signing service's flow dict (``flow_id``, ``title``,
      ``state``, ``document_id``, ``reason``, ``parties`` with roles, and
      ``disputed_identity`` ``{person_id, at, reason}`` or null, which becomes
      the report's ``dispute``);
    * ``parties``: ``{person_id, role?, name, id_number_masked, phone_masked,
      certificate: {serial, issuer, subject?, not_before, not_after}}``, already
      masked by identity (a clear ID number or phone is refused);
    * ``identity_checks``: ``{person_id, assurance_level, provider,
      request_id, score, score_kind, threshold, liveness, checked_at,
      account_status}`` (identity's ``report_profile``; scores become
      decimal strings), one per party;
    * ``willingness``: ``{person_id, action, method, at, outcome}``;
    * ``signatures``: ``{person_id, field_name, signed_at, timestamp_time,
      tsa}`` (see :func:`signature_entries`);
    * ``evidence``: what the ``flow_evidence`` RPC returns; every proof is
      checked against the checkpoint before it goes in.
    """
    flow_id = _text(flow.get("flow_id"), "flow.flow_id", max_length=64)
    roles = {p.get("person_id"): p.get("role") for p in flow.get("parties") or []}
    report = {
        "kind": REPORT_KIND,
        "version": REPORT_VERSION,
        "generated_at": _timestamp(generated_at, "generated_at"),
        "verification_url": _text(verification_url, "verification_url", max_length=500),
        "flow": {
            "flow_id": flow_id,
            "document_id": _text(flow.get("document_id"), "flow.document_id", required=False, max_length=64),
            "state": _text(flow.get("state"), "flow.state", max_length=32),
            "reason": _text(flow.get("reason"), "flow.reason", required=False, max_length=200),
        },
        "document": {
            "title": _text(flow.get("title"), "flow.title", max_length=100),
            "original_pdf_sha256": _sha256_hex(original_pdf_sha256, "original_pdf_sha256"),
            "final_pdf_sha256": _sha256_hex(final_pdf_sha256, "final_pdf_sha256"),
        },
        "parties": [_party(p, i, roles) for i, p in enumerate(parties)],
        "identity_checks": [_identity_check(c, i) for i, c in enumerate(identity_checks)],
        "willingness": [_willingness(w, i) for i, w in enumerate(willingness)],
        "signatures": [_signature(s, i) for i, s in enumerate(signatures)],
        "evidence": _evidence(evidence, flow_id),
        "dispute": _dispute(flow),
    }
    if not report["parties"]:
        raise InvalidInput("parties", "required", "expected at least one party, found none")
    refuse_clear_personal_data(report)
    canonical_json(report)  # fail here, not when signing, on a value JSON cannot carry exactly
    return report


# --- the platform's signature on the report ---------------------------------------------


def report_digest(report: Mapping[str, Any]) -> str:
    """SHA-256 hex of the report's canonical JSON."""
    return hashlib.sha256(canonical_json(report)).hexdigest()


def _note_text(report: Mapping[str, Any]) -> str:
    return f"{NOTE_HEADER}\n{report_digest(report)}\n"


def sign_report(report: Mapping[str, Any], signer: NoteSigner) -> dict:
    """``{"report": report, "signature": signed note}`` signed with the platform key."""
    return {"report": dict(report), "signature": sign_note(_note_text(report), [signer])}


def verify_report_signature(signed: Mapping[str, Any], verifier_key_string: str) -> dict:
    """Return the report if its note verifies with the key and names its
    canonical JSON; raise :class:`ReportSignatureError` (or the note errors of
    :mod:`~services.signing.checkpoint`) otherwise."""
    if not isinstance(signed, Mapping) or not isinstance(signed.get("report"), Mapping):
        raise ReportSignatureError("expected {report, signature}, found no report object")
    note = signed.get("signature")
    if not isinstance(note, str) or not note:
        raise ReportSignatureError("expected a signed note in 'signature', found none")
    verifier = NoteVerifier.from_key_string(verifier_key_string)
    opened = open_note(note, [verifier])
    expected = _note_text(signed["report"])
    if opened.text != expected:
        lines = opened.text.split("\n")
        found = lines[1] if len(lines) > 2 and lines[0] == NOTE_HEADER else "another statement"
        raise ReportSignatureError(
            f"expected the note to sign report digest {report_digest(signed['report'])}, found {found}"
        )
    return dict(signed["report"])


# --- the report as a PDF --------------------------------------------------------------

#: China Standard Time: the report shows times as people in China read them
_CST = timezone(timedelta(hours=8))
_WARNING_RED = colors.HexColor("#B00020")

LABELS = {
    "title": "签约报告",
    "subtitle": "电子签约存证报告（由平台签发）",
    "document": "文件信息",
    "document_title": "文件标题",
    "flow_id": "签约流程编号",
    "state": "流程状态",
    "reason": "原因",
    "original_sha": "原始文件 SHA-256",
    "final_sha": "最终文件 SHA-256",
    "generated_at": "报告生成时间",
    "parties": "签约方",
    "party_columns": ("角色", "姓名", "证件号码", "手机号码"),
    "certificate_columns": ("签约方", "证书序列号", "颁发者", "有效期"),
    "certificates": "数字证书",
    "identity": "实名认证",
    "identity_rows": ("签约方", "认证等级", "核验机构", "比对分数", "活体检测", "核验时间", "账户状态"),
    "request_id": "请求编号",
    "threshold": "阈值",
    "self_declared_warning": "警告：{who}的身份为自行声明，未经权威机构核验，不能证明其真实身份。",
    "dispute": "身份争议",
    "dispute_warning": ("警告：签约方{who}的身份已于{at}被认定存在争议（{reason}）。平台已冻结该账户并吊销其证书；"
                        "该方在本流程中的签署可能并非本人所为，请谨慎采信。"),
    "willingness": "意愿认证",
    "willingness_columns": ("签约方", "事项", "方式", "时间", "结果"),
    "signatures": "电子签名与时间戳",
    "signature_columns": ("签约方", "签名域", "签署时间（签名方声明）", "时间戳时间", "时间戳服务机构"),
    "evidence": "存证日志",
    "evidence_intro": "每个流程事件是存证日志（RFC 9162 默克尔树）的一个叶子；以下包含证明均针对同一个已签名检查点。",
    "log_origin": "日志名称",
    "tree_size": "树大小",
    "root_hash": "根哈希",
    "event_columns": ("索引", "事件", "时间", "上一事件索引"),
    "leaf": "叶子内容",
    "proof": "包含证明",
    "checkpoint": "已签名检查点",
    "log_key": "日志公钥",
    "verify": "验证",
    "verify_text": "扫描二维码或访问以下地址核验本报告与文件；离线可用 esign verify 文件.pdf --report 报告.json。",
    "yes": "通过",
    "no": "未通过",
    "none": "—",
    "page": "第 {n} 页",
}

#: display words for stable values
WORDS = {
    "completed": "已生效", "voided": "已作废", "declined": "已拒签", "expired": "已过期", "waiting": "待签署",
    "void_requested": "作废申请中", "sms": "短信验证码", "face": "刷脸", "passed": "通过", "failed": "未通过",
    "sign": "签署", "request_void": "申请作废", "confirm_void": "确认作废",
    "cancelled": "已取消", "not_performed": "未进行", "active": "正常", "frozen": "已冻结",
    "registry": "本地权威库（参考照片）", "tencent_faceid": "腾讯云人脸核身", "self_declared": "自行声明",
    "similarity": "相似度", "distance": "人脸距离",
    "identity_taken_over": "该身份证号已由经权威核验的本人重新认证", "identity_disputed": "身份存在争议",
}

#: display words of the log's event types (some share a name with a state)
EVENT_WORDS = {
    "flow_sent": "发起签约", "party_joined": "签署方加入", "party_signed": "一方签署",
    "flow_completed": "签约完成", "flow_declined": "拒签",
    "flow_expired": "过期", "void_requested": "申请作废", "void_rejected": "拒绝作废", "flow_voided": "作废",
    "flow_cancelled": "平台取消", "flow_identity_disputed": "身份争议标记",
    "loan_repayment_recorded": "确认还款", "loan_repaid": "确认还清", "loan_extended": "展期",
}


def _display_time(value: str | None) -> str:
    if not value:
        return LABELS["none"]
    moment = datetime.fromisoformat(value).astimezone(_CST)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " (UTC+8)"


def _word(value: Any) -> str:
    if value is None:
        return LABELS["none"]
    if value is True:
        return LABELS["yes"]
    if value is False:
        return LABELS["no"]
    return WORDS.get(str(value), str(value))


class _QrCode(Flowable):
    """The QR code (ISO/IEC 18004) of a URL drawn as vector squares: exact at
    any zoom, and the same bytes every time."""

    def __init__(self, url: str, size: float):
        super().__init__()
        self.matrix = segno.make(url, error="m", micro=False).matrix
        self.size = size
        self.width = self.height = size

    def draw(self) -> None:
        quiet = 4  # modules of light border the standard asks for
        count = len(self.matrix) + 2 * quiet
        module = self.size / count
        canvas = self.canv
        canvas.setFillColor(colors.black)
        canvas.setStrokeColor(colors.black)
        for y, row in enumerate(self.matrix):
            for x, dark in enumerate(row):
                if dark:
                    canvas.rect((x + quiet) * module, self.size - (y + quiet + 1) * module, module, module,
                                stroke=0, fill=1)


class _ReportCanvas(Canvas):
    """Info dates and /ID from the report, never from the clock (reproducible bytes)."""

    def __init__(self, *args, pdf_date: str, pdf_id: bytes, **kwargs):
        super().__init__(*args, **kwargs)
        self.setDateFormatter(lambda *_: pdf_date)
        id_text = PDFText(pdf_id, enc="raw").format(self._doc)
        # reportlab derives /ID from a digest it keeps; the cached value is the only hook
        self._doc._ID = b"\n[" + id_text + id_text + b"]\n"


class _ReportRenderer:
    def __init__(self, report: Mapping[str, Any], fonts: FontStack):
        self.report = report
        self.fonts = fonts
        face = fonts.primary
        self.body = ParagraphStyle("body", fontName=face, fontSize=9, leading=12.5, wordWrap="CJK")
        self.small = ParagraphStyle("small", parent=self.body, fontSize=7, leading=9)
        self.heading = ParagraphStyle("heading", parent=self.body, fontSize=12, leading=16, spaceBefore=8,
                                      keepWithNext=1, spaceAfter=4)
        self.title = ParagraphStyle("title", parent=self.body, fontSize=20, leading=26, alignment=1)
        self.subtitle = ParagraphStyle("subtitle", parent=self.body, alignment=1, textColor=colors.grey)
        self.warning = ParagraphStyle("warning", parent=self.body, fontSize=10, leading=14, textColor=_WARNING_RED,
                                      spaceBefore=2)
        self.width = A4[0] - 36 * mm

    def markup(self, text: str) -> str:
        """Escaped text split into runs by the face that draws each character."""
        missing = self.fonts.coverage_check(text)
        if missing:
            raise InvalidInput("report", "glyph_missing",
                               f"the report fonts cannot draw {describe_characters(missing)}; "
                               "expected characters the installed CJK fonts cover")
        parts = []
        for face, run in self.fonts.runs(text):
            run = escape(run).replace("\n", "<br/>")
            parts.append(run if face == self.fonts.primary else f'<font face="{face}">{run}</font>')
        return "".join(parts)

    def para(self, text: Any, style: ParagraphStyle | None = None) -> Paragraph:
        return Paragraph(self.markup(str(text)), style or self.body)

    def table(self, rows: list[list[Any]], widths: Sequence[float], header: bool = True, small=False) -> Table:
        style = self.small if small else self.body
        data = [[self.para(cell, style) for cell in row] for row in rows]
        table = Table(data, colWidths=[w * self.width for w in widths], repeatRows=1 if header else 0)
        commands = [
            ("FONT", (0, 0), (-1, -1), self.fonts.primary, 9),
            ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
        if header:
            commands.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#EEEEEE")))
        table.setStyle(TableStyle(commands))
        return table

    def alert(self, text: str) -> Table:
        """A warning nobody reading the page can miss: red text in a red box."""
        box = Table([[self.para(text, self.warning)]], colWidths=[self.width])
        box.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, -1), self.fonts.primary, 10),
            ("BOX", (0, 0), (-1, -1), 1.2, _WARNING_RED),
            ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#FDECEA")),
        ]))
        return box

    def identity_check(self, check: Mapping[str, Any], who) -> list:
        """One party's identity check as rows, with a warning when no authority vouched for it."""
        level = AssuranceLevel(check["assurance_level"])
        provider = _word(check["provider"])
        if check["request_id"]:
            provider += f"\n{LABELS['request_id']} {check['request_id']}"
        score = LABELS["none"]
        if check["score"] is not None:
            threshold = check["threshold"] or LABELS["none"]
            score = f"{check['score']}（{_word(check['score_kind'])}，{LABELS['threshold']} {threshold}）"
        values = (who(check["person_id"]), level.label, provider, score, _word(check["liveness"]),
                  _display_time(check["checked_at"]), _word(check["account_status"]))
        parts: list = [self.table([[label, value]
                                   for label, value in zip(LABELS["identity_rows"], values, strict=True)],
                                  (0.25, 0.75), header=False)]
        if not level.authority_checked:
            parts.append(self.para(LABELS["self_declared_warning"].format(who=who(check["person_id"])), self.warning))
        return [KeepTogether(parts), Spacer(1, 2 * mm)]

    def dispute(self, who) -> list:
        dispute = self.report.get("dispute")
        if not dispute:
            return []
        text = LABELS["dispute_warning"].format(who=who(dispute["person_id"]), at=_display_time(dispute["at"]),
                                                reason=_word(dispute["reason"]))
        return [Spacer(1, 4 * mm), self.alert(text)]

    def names(self) -> dict[str, str]:
        return {p["person_id"]: f"{p['name']}（{_word(p['role'])}）" for p in self.report["parties"]}

    def story(self) -> list:
        r, names = self.report, self.names()

        def who(person_id: str | None) -> str:
            return names.get(person_id, person_id or LABELS["none"])

        doc, flow, ev = r["document"], r["flow"], r["evidence"]
        story: list = [
            self.para(LABELS["title"], self.title),
            self.para(LABELS["subtitle"], self.subtitle),
            *self.dispute(who),
            Spacer(1, 6 * mm),
            self.para(LABELS["document"], self.heading),
            self.table([
                [LABELS["document_title"], doc["title"]],
                [LABELS["flow_id"], flow["flow_id"]],
                [LABELS["state"], _word(flow["state"])],
                [LABELS["reason"], flow.get("reason") or LABELS["none"]],
                *([[LABELS["dispute"], f"{who(r['dispute']['person_id'])}，{_display_time(r['dispute']['at'])}"]]
                  if r.get("dispute") else []),
                [LABELS["original_sha"], doc["original_pdf_sha256"]],
                [LABELS["final_sha"], doc["final_pdf_sha256"]],
                [LABELS["generated_at"], _display_time(r["generated_at"])],
            ], (0.25, 0.75), header=False),
            self.para(LABELS["parties"], self.heading),
            self.table([list(LABELS["party_columns"])] + [
                [_word(p["role"]), p["name"], p["id_number_masked"], p["phone_masked"]] for p in r["parties"]
            ], (0.2, 0.25, 0.3, 0.25)),
            self.para(LABELS["certificates"], self.heading),
            self.table([list(LABELS["certificate_columns"])] + [
                [names[p["person_id"]], p["certificate"]["serial"], p["certificate"]["issuer"],
                 f"{_display_time(p['certificate']['not_before'])}\n至 {_display_time(p['certificate']['not_after'])}"]
                for p in r["parties"]
            ], (0.18, 0.3, 0.26, 0.26)),
            self.para(LABELS["identity"], self.heading),
            *[part for check in r["identity_checks"] for part in self.identity_check(check, who)],
            self.para(LABELS["willingness"], self.heading),
            self.table([list(LABELS["willingness_columns"])] + [
                [who(w["person_id"]), _word(w["action"]), _word(w["method"]), _display_time(w["at"]),
                 _word(w["outcome"])]
                for w in r["willingness"]
            ], (0.22, 0.14, 0.16, 0.3, 0.18)),
            self.para(LABELS["signatures"], self.heading),
            self.table([list(LABELS["signature_columns"])] + [
                [who(s["person_id"]), s["field_name"], _display_time(s["signed_at"]),
                 _display_time(s["timestamp_time"]), s["tsa"]]
                for s in r["signatures"]
            ], (0.18, 0.12, 0.23, 0.23, 0.24)),
            self.para(LABELS["evidence"], self.heading),
            self.para(LABELS["evidence_intro"]),
            Spacer(1, 2 * mm),
            self.table([
                [LABELS["log_origin"], ev["log_origin"]],
                [LABELS["tree_size"], str(ev["tree_size"])],
                [LABELS["root_hash"], ev["root_hash"]],
                [LABELS["log_key"], ev["log_public_key"]],
            ], (0.25, 0.75), header=False),
            Spacer(1, 2 * mm),
            self.table([list(LABELS["event_columns"])] + [
                [str(e["index"]), EVENT_WORDS.get(e["event_type"], str(e["event_type"])), _display_time(e["timestamp"]),
                 LABELS["none"] if e["prev_index"] is None else str(e["prev_index"])]
                for e in ev["events"]
            ], (0.12, 0.3, 0.38, 0.2)),
        ]
        for event in ev["events"]:
            story += [
                Spacer(1, 2 * mm),
                self.table([
                    [f"#{event['index']} {LABELS['leaf']}", event["leaf"]],
                    [LABELS["proof"], "\n".join(event["proof"]["hashes"]) or LABELS["none"]],
                ], (0.2, 0.8), header=False, small=True),
            ]
        story += [
            self.para(LABELS["checkpoint"], self.heading),
            self.table([[ev["checkpoint"].rstrip("\n")]], (1.0,), header=False, small=True),
            KeepTogether([self.para(LABELS["verify"], self.heading), Table([[_QrCode(r["verification_url"], 32 * mm),
                    self.para(f"{LABELS['verify_text']}\n{r['verification_url']}")]],
                  colWidths=[36 * mm, self.width - 36 * mm],
                  # FONT: without it the Table puts Helvetica, unembedded, in the page resources
                  style=TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                                    ("FONT", (0, 0), (-1, -1), self.fonts.primary, 9)]))]),
        ]
        return story

    def footer(self, canv: Canvas, _doc) -> None:
        canv.setFont(self.fonts.primary, 8)
        canv.drawRightString(A4[0] - 18 * mm, 10 * mm, LABELS["page"].format(n=canv.getPageNumber()))
        canv.drawString(18 * mm, 10 * mm, f"{LABELS['flow_id']}: {self.report['flow']['flow_id']}")

    def build(self) -> bytes:
        story = self.story()
        digest = hashlib.sha256(canonical_json(self.report)).digest()
        generated = datetime.fromisoformat(self.report["generated_at"]).astimezone(_CST)
        out = io.BytesIO()
        template = SimpleDocTemplate(
            out, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=18 * mm, bottomMargin=18 * mm,
            title=f"{LABELS['title']} {self.report['document']['title']}", subject=self.report["flow"]["flow_id"],
            author="", creator="esign signing", keywords=digest.hex(),
            invariant=1, pageCompression=1, initialFontName=self.fonts.primary,
        )
        canvasmaker = functools.partial(
            _ReportCanvas, pdf_date=f"D:{generated:%Y%m%d%H%M%S}+08'00'", pdf_id=digest[:16],
        )
        template.build(story, onFirstPage=self.footer, onLaterPages=self.footer, canvasmaker=canvasmaker)
        return out.getvalue()


def render_report_pdf(report: Mapping[str, Any], fonts: FontStack | None = None) -> bytes:
    """The report as an A4 PDF in Chinese; the same report gives the same bytes."""
    return _ReportRenderer(report, fonts or default_font_stack()).build()
