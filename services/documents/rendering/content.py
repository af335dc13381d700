"""Document content: the plain, JSON-able description of what a rendered PDF shows.

Templates produce this; the renderer draws exactly this and nothing else, so
the same content gives the same PDF bytes. Every string is drawn as given
(ID numbers arrive already masked or in full, amounts already formatted).

JSON form (:meth:`DocumentContent.to_dict` / :meth:`DocumentContent.from_dict`)::

    {
      "title": "借条",
      "document_id": "D20240301-0001",
      "document_date": "2024-03-01",          # PDF metadata date; never the clock
      "parties": [{"role": "出借方", "name": "张三", "id_number": "1101**********002X",
                   "phone": "138****0000", "signature_field": "sig_lender"}],
      "sections": [{"heading": "借款信息", "rows": [["借款金额", "¥10,005.00"]],
                    "paragraphs": ["借款人承诺按期还款。"]}],
      "amount_label": "借款金额",               # shown before the 大写 amount
      "amount_words": "人民币壹万零伍元整",
      "amount_figures": "¥10,005.00",
      "schedule": {"caption": "还款计划", "columns": ["期数", "还款日", "金额"],
                   "rows": [["1", "2024-04-01", "100.00"]], "note": "计息：实际天数/365"},
      "remark": "无",
      "attachments": [{"sha256": "<64 hex>", "label": "房产证照片",
                       "thumbnail_jpeg": "<base64 JPEG>"}]   # thumbnail optional
    }

Field paths used in errors follow this JSON form: ``parties[0].name``,
``sections[1].rows[2].value``, ``schedule.rows[3][1]``.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Iterator

from services.common.errors import InvalidInput

#: PDF field names: a period would make a hierarchical name (ISO 32000-1 §12.7.3.2),
#: so keep to a plain ASCII identifier.
SIGNATURE_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Party:
    """A person who signs: role label (出借方), name, ID and phone as given, and
    the name of the empty PDF signature field that person's signature will fill."""

    role: str
    name: str
    id_number: str
    phone: str
    signature_field: str


@dataclass(frozen=True)
class Section:
    """A headed block: label/value rows, then free paragraphs."""

    heading: str
    rows: tuple[tuple[str, str], ...] = ()
    paragraphs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScheduleTable:
    """A table that may run over several pages; the header repeats on each."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = "还款计划"
    #: e.g. the day-count convention the schedule was computed with
    note: str = ""


@dataclass(frozen=True)
class AttachmentEntry:
    """An attachment listed by hash; ``thumbnail_jpeg`` is drawn when present."""

    sha256: str
    label: str
    thumbnail_jpeg: bytes | None = None


@dataclass(frozen=True)
class DocumentContent:
    title: str
    document_id: str
    document_date: datetime.date
    parties: tuple[Party, ...]
    sections: tuple[Section, ...] = ()
    amount_label: str = "金额"
    amount_words: str = ""
    amount_figures: str = ""
    schedule: ScheduleTable | None = None
    remark: str = ""
    attachments: tuple[AttachmentEntry, ...] = ()

    # -- JSON form ---------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "document_id": self.document_id,
            "document_date": self.document_date.isoformat(),
            "parties": [
                {"role": p.role, "name": p.name, "id_number": p.id_number, "phone": p.phone,
                 "signature_field": p.signature_field}
                for p in self.parties
            ],
            "sections": [
                {"heading": s.heading, "rows": [list(r) for r in s.rows], "paragraphs": list(s.paragraphs)}
                for s in self.sections
            ],
            "amount_label": self.amount_label,
            "amount_words": self.amount_words,
            "amount_figures": self.amount_figures,
            "schedule": None if self.schedule is None else {
                "caption": self.schedule.caption,
                "columns": list(self.schedule.columns),
                "rows": [list(r) for r in self.schedule.rows],
                "note": self.schedule.note,
            },
            "remark": self.remark,
            "attachments": [
                {"sha256": a.sha256, "label": a.label,
                 "thumbnail_jpeg": (None if a.thumbnail_jpeg is None
                                    else base64.b64encode(a.thumbnail_jpeg).decode("ascii"))}
                for a in self.attachments
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DocumentContent":
        """Build from the JSON form; a wrong type or missing key raises
        ``InvalidInput`` naming the field path."""
        reader = _Reader(data, "")
        schedule_data = reader.optional("schedule")
        schedule = None
        if schedule_data is not None:
            s = _Reader(schedule_data, "schedule")
            schedule = ScheduleTable(
                columns=tuple(s.strings("columns")),
                rows=tuple(tuple(r) for r in s.string_rows("rows")),
                caption=s.string("caption", "还款计划"),
                note=s.string("note", ""),
            )
        return cls(
            title=reader.string("title"),
            document_id=reader.string("document_id"),
            document_date=reader.date("document_date"),
            parties=tuple(
                Party(
                    role=p.string("role"), name=p.string("name"), id_number=p.string("id_number", ""),
                    phone=p.string("phone", ""), signature_field=p.string("signature_field"),
                )
                for p in reader.objects("parties")
            ),
            sections=tuple(
                Section(
                    heading=s.string("heading"),
                    rows=tuple((r[0], r[1]) for r in s.string_rows("rows", width=2)),
                    paragraphs=tuple(s.strings("paragraphs")),
                )
                for s in reader.objects("sections")
            ),
            amount_label=reader.string("amount_label", "金额"),
            amount_words=reader.string("amount_words", ""),
            amount_figures=reader.string("amount_figures", ""),
            schedule=schedule,
            remark=reader.string("remark", ""),
            attachments=tuple(
                AttachmentEntry(sha256=a.string("sha256"), label=a.string("label"),
                                thumbnail_jpeg=a.base64_bytes("thumbnail_jpeg"))
                for a in reader.objects("attachments")
            ),
        )

    def canonical_bytes(self) -> bytes:
        """Sorted-key compact UTF-8 JSON: the input the content hash is taken over."""
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")

    def content_hash(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_bytes`; the PDF's /ID derives from it."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    # -- what the renderer draws ------------------------------------------

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every drawn string with its field path, for the glyph check."""
        yield "title", self.title
        yield "document_id", self.document_id
        for i, p in enumerate(self.parties):
            for name in ("role", "name", "id_number", "phone"):
                yield f"parties[{i}].{name}", getattr(p, name)
        for i, s in enumerate(self.sections):
            yield f"sections[{i}].heading", s.heading
            for j, (label, value) in enumerate(s.rows):
                yield f"sections[{i}].rows[{j}].label", label
                yield f"sections[{i}].rows[{j}].value", value
            for j, text in enumerate(s.paragraphs):
                yield f"sections[{i}].paragraphs[{j}]", text
        yield "amount_label", self.amount_label
        yield "amount_words", self.amount_words
        yield "amount_figures", self.amount_figures
        if self.schedule is not None:
            yield "schedule.caption", self.schedule.caption
            yield "schedule.note", self.schedule.note
            for k, column in enumerate(self.schedule.columns):
                yield f"schedule.columns[{k}]", column
            for j, row in enumerate(self.schedule.rows):
                for k, cell in enumerate(row):
                    yield f"schedule.rows[{j}][{k}]", cell
        yield "remark", self.remark
        for i, a in enumerate(self.attachments):
            yield f"attachments[{i}].label", a.label

    def check_structure(self) -> None:
        """Rules the layout depends on (glyph coverage is checked by the renderer)."""
        if not self.parties:
            raise InvalidInput("parties", "required", "at least one party must sign; found none")
        seen: set[str] = set()
        for i, p in enumerate(self.parties):
            field = f"parties[{i}].signature_field"
            if not SIGNATURE_FIELD_NAME.match(p.signature_field):
                raise InvalidInput(field, "field_name",
                                   "expected an ASCII name of a letter then letters, digits, '_' or '-' (at most 64)")
            if p.signature_field in seen:
                raise InvalidInput(field, "unique", f"signature field {p.signature_field!r} is used twice")
            seen.add(p.signature_field)
        if self.schedule is not None:
            if not self.schedule.columns:
                raise InvalidInput("schedule.columns", "required", "a schedule needs at least one column")
            for j, row in enumerate(self.schedule.rows):
                if len(row) != len(self.schedule.columns):
                    raise InvalidInput(f"schedule.rows[{j}]", "columns",
                                       f"expected {len(self.schedule.columns)} cells, found {len(row)}")
        for i, a in enumerate(self.attachments):
            if not SHA256_HEX.match(a.sha256):
                raise InvalidInput(f"attachments[{i}].sha256", "sha256", "expected 64 lowercase hex digits")
            if a.thumbnail_jpeg is not None and not a.thumbnail_jpeg.startswith(b"\xff\xd8\xff"):
                raise InvalidInput(f"attachments[{i}].thumbnail_jpeg", "jpeg", "expected JPEG data (FF D8 FF)")


class _Reader:
    """Typed access to one JSON object, raising ``InvalidInput`` with the field path."""

    _MISSING = object()

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise InvalidInput(path or "content", "type", f"expected an object, found {type(data).__name__}")
        self.data = data
        self.path = path

    def _field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        value = self.data.get(key, self._MISSING)
        if value is self._MISSING or value is None:
            if default is self._MISSING:
                raise InvalidInput(self._field(key), "required", "expected a value, found none")
            return default
        return value

    def optional(self, key: str) -> Any:
        return self.data.get(key)

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise InvalidInput(self._field(key), "type", f"expected a string, found {type(value).__name__}")
        return value

    def date(self, key: str) -> datetime.date:
        value = self.string(key)
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(self._field(key), "date", "expected an ISO date YYYY-MM-DD") from None

    def _list(self, key: str) -> list:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise InvalidInput(self._field(key), "type", f"expected a list, found {type(value).__name__}")
        return value

    def strings(self, key: str) -> list[str]:
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidInput(f"{self._field(key)}[{i}]", "type",
                                   f"expected a string, found {type(item).__name__}")
        return items

    def string_rows(self, key: str, width: int | None = None) -> list[list[str]]:
        rows = self._list(key)
        for j, row in enumerate(rows):
            field = f"{self._field(key)}[{j}]"
            if not isinstance(row, (list, tuple)) or not all(isinstance(c, str) for c in row):
                raise InvalidInput(field, "type", "expected a list of strings")
            if width is not None and len(row) != width:
                raise InvalidInput(field, "columns", f"expected {width} cells, found {len(row)}")
        return [list(r) for r in rows]

    def objects(self, key: str) -> Iterator["_Reader"]:
        for i, item in enumerate(self._list(key)):
            yield _Reader(item, f"{self._field(key)}[{i}]")

    def base64_bytes(self, key: str) -> bytes | None:
        value = self.data.get(key)
        if value is None or isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise InvalidInput(self._field(key), "type", f"expected base64 text, found {type(value).__name__}")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise InvalidInput(self._field(key), "base64", "expected standard base64 text") from None
