"""Field types of document templates: how each is declared, checked and shown.

A template (YAML) declares fields by ``type``; this module reads each
declaration (``Spec``, refusing unknown keys so a typo in a template is an
error, not a silently ignored rule), checks a submitted value against it, and
formats the checked value in Chinese for the document:

* money ¥12,345.60 (fen precision, never from an inexact float),
* dates 2026年11月28日, times 2026年11月28日 14:30 (Beijing time),
* rates 3.65%, booleans by the template's own words (允许/不允许).

Character limits count Unicode code points after NFC normalisation, so a
rare CJK ideograph outside the BMP (e.g. 𠮷) is one character, as a person
sees it, and a decomposed accent does not count twice.
"""
from __future__ import annotations

import datetime as _dt
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from services.common.errors import InvalidInput
from services.documents.validation import PersonCheckers, Violation

BEIJING = _dt.timezone(_dt.timedelta(hours=8))


class TemplateDefinitionError(ValueError):
    """A template file breaks the template schema; names the file and the key."""

    def __init__(self, source: str, key: str, message: str):
        super().__init__(f"{source}: {key}: {message}")
        self.source = source
        self.key = key


class Spec:
    """One mapping of a template file being read, with its key path for errors.

    Every key must be read (``finish``) so an unknown or misspelt key fails.
    """

    def __init__(self, data: object, source: str, path: str):
        if not isinstance(data, dict):
            raise TemplateDefinitionError(source, path, f"expected a mapping, found {type(data).__name__}")
        self.data = data
        self.source = source
        self.path = path
        self._read: set[str] = set()

    def error(self, key: str, message: str) -> TemplateDefinitionError:
        return TemplateDefinitionError(self.source, self.key(key), message)

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, nonempty: bool = False) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(key, "required key is missing")
            return default
        value = self.data[key]
        # bool is an int subclass; a YAML 'yes' must not pass as a number.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise self.error(key, f"expected {_kind_name(kind)}, found {type(value).__name__}")
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        return value

    def str_list(self, key: str, default: Any = ..., *, nonempty: bool = True) -> list[str]:
        values = self.get(key, list, default, nonempty=nonempty)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise TemplateDefinitionError(self.source, f"{self.key(key)}.{i}", "expected non-empty text")
        if len(set(values)) != len(values):
            raise self.error(key, "has duplicate entries")
        return list(values)

    def decimal(self, key: str, default: Any = ...) -> Decimal | None:
        raw = self.get(key, (str, int), default)
        if raw is None or raw is default:
            return raw
        try:
            return Decimal(str(raw))
        except InvalidOperation:
            raise self.error(key, f"expected a decimal number, found {raw!r}") from None

    def child(self, key: str) -> "Spec":
        self._read.add(key)
        return Spec(self.data.get(key), self.source, self.key(key))

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt?)")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


# ---------------------------------------------------------------- formatting


def format_money(amount: Decimal) -> str:
    return f"¥{amount:,.2f}"


def format_date(day: _dt.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def format_datetime(moment: _dt.datetime) -> str:
    return f"{format_date(moment.date())} {moment:%H:%M}"


def format_decimal(value: Decimal) -> str:
    """Shortest plain form: 12 → "12", 3.650 → "3.65" (never 1.2E+1)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_rate(percent: Decimal) -> str:
    return f"{format_decimal(percent)}%"


def count_chars(text: str) -> int:
    """Characters as a person sees them: NFC code points (𠮷 is one)."""
    return len(unicodedata.normalize("NFC", text))


# ------------------------------------------------------------------- checking


@dataclass(frozen=True)
class CheckContext:
    today: _dt.date
    checkers: PersonCheckers


class Rejected(Exception):
    """A value breaks one rule of its field (internal: becomes a Violation)."""

    def __init__(self, rule: str, message: str):
        super().__init__(rule, message)
        self.rule = rule
        self.message = message


class Field:
    """Base of field types. ``check`` returns the typed value or raises ``Rejected``;
    compound types append nested violations themselves and return ``None``."""

    type_name: ClassVar[str] = ""

    def __init__(self, spec: Spec):
        self.name: str = spec.get("name", str, nonempty=True)
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise spec.error("name", "expected lower_snake_case")
        self.label: str = spec.get("label", str, nonempty=True)
        self.required: bool = spec.get("required", bool, True)
        self.help: str = spec.get("help", str, "")
        spec.get("type", str)

    def is_empty(self, raw: object) -> bool:
        return raw is None or (isinstance(raw, str) and not raw.strip()) or raw == [] or raw == {}

    def check(self, raw: object, path: str, ctx: CheckContext, out: list[Violation]) -> Any:
        raise NotImplementedError

    def to_json(self, value: Any) -> Any:
        return value

    def display(self, value: Any) -> str:
        return str(value)


def _bound_check(value: Any, low: Any, high: Any, shown: Any) -> None:
    if low is not None and value < low:
        raise Rejected("min", f"expected at least {shown(low)}, found {shown(value)}")
    if high is not None and value > high:
        raise Rejected("max", f"expected at most {shown(high)}, found {shown(value)}")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


class TextField(Field):
    type_name = "text"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.max_chars: int | None = spec.get("max_chars", int, None)
        self.min_chars: int | None = spec.get("min_chars", int, None)
        self.multiline: bool = spec.get("multiline", bool, False)
        pattern = spec.get("pattern", str, None)
        self.pattern_text: str = spec.get("pattern_text", str, "the required format")
        try:
            self.pattern = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise spec.error("pattern", f"not a regular expression: {exc}") from None

    def check(self, raw, path, ctx, out):
        text = check_text(raw, self.min_chars, self.max_chars, self.multiline, path)
        if self.pattern and not self.pattern.fullmatch(text):
            raise Rejected("format", f"expected {self.pattern_text}")
        return text


def check_text(raw: object, min_chars: int | None, max_chars: int | None, multiline: bool, path: str) -> str:
    if not isinstance(raw, str):
        raise Rejected("type", f"expected text, found {type(raw).__name__}")
    text = unicodedata.normalize("NFC", raw.strip().replace("\r\n", "\n"))
    if _CONTROL.search(text) or (not multiline and "\n" in text):
        raise Rejected("charset", "expected text without control characters" + ("" if multiline else " or line breaks"))
    n = len(text)
    if max_chars is not None and n > max_chars:
        raise Rejected("max_chars", f"{path} too long: {n} > {max_chars}")
    if min_chars is not None and n < min_chars:
        raise Rejected("min_chars", f"{path} too short: {n} < {min_chars}")
    return text


def parse_decimal(raw: object, what: str) -> Decimal:
    """Decimal from str/int/Decimal, or a float via its shortest repr (JSON numbers)."""
    if isinstance(raw, bool):
        raise Rejected("type", f"expected {what}, found bool")
    if isinstance(raw, float):
        # its shortest repr, read as a decimal: 1e-05 is 0.00001 (a precision
        # error, not a type error), 1e+16 is a number (a max error)
        raw = Decimal(repr(raw))
    if not isinstance(raw, (str, int, Decimal)):
        raise Rejected("type", f"expected {what}, found {type(raw).__name__}")
    text = raw.strip() if isinstance(raw, str) else raw
    if isinstance(text, str) and not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", text, re.ASCII):
        raise Rejected("type", f"expected {what} written as digits with an optional decimal point")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Rejected("type", f"expected {what}") from None
    if not value.is_finite():
        raise Rejected("type", f"expected a finite {what}")
    if value.is_zero():
        value = abs(value)  # "-0" is 0: a document must not say ¥-0.00 or -0%
    return value


def _check_places(value: Decimal, places: int, what: str) -> None:
    # From the digits, not by quantize: quantizing a number of more than 28
    # digits (1e30, 31 typed digits) raises InvalidOperation.
    _, digits, exponent = value.as_tuple()
    beyond = -exponent - places  # digits written past the allowed places
    if beyond > 0 and any(digits[-beyond:]):
        raise Rejected("precision", f"expected {what} with at most {places} decimal places")


class MoneyField(Field):
    """CNY, fen precision. Defaults: positive, at most ¥100,000,000."""

    type_name = "money"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.min = spec.decimal("min", Decimal("0.01"))
        self.max = spec.decimal("max", Decimal("100000000"))

    def check(self, raw, path, ctx, out):
        value = parse_decimal(raw, "an amount in yuan")
        _check_places(value, 2, "an amount")
        _bound_check(value, self.min, self.max, format_money)  # before quantize, which fails past 28 digits
        return value.quantize(Decimal("0.01"))

    def to_json(self, value):
        return f"{value:.2f}"

    def display(self, value):
        return format_money(value)


class DecimalField(Field):
    """A plain measure such as a building area, with a unit (平方米)."""

    type_name = "decimal"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.places: int = spec.get("places", int, 2)
        self.min = spec.decimal("min", None)
        self.max = spec.decimal("max", None)
        self.unit: str = spec.get("unit", str, "")

    def check(self, raw, path, ctx, out):
        value = parse_decimal(raw, "a number")
        _check_places(value, self.places, "a number")
        _bound_check(value, self.min, self.max, format_decimal)
        return value

    def to_json(self, value):
        return format_decimal(value)

    def display(self, value):
        return format_decimal(value) + self.unit


class RateField(Field):
    """Annual interest rate in percent (12 means 12 % a year), at most 4 decimals."""

    type_name = "rate"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.min = spec.decimal("min", Decimal("0"))
        self.max = spec.decimal("max", None)

    def check(self, raw, path, ctx, out):
        value = parse_decimal(raw, "a rate in percent")
        _check_places(value, 4, "a rate")
        _bound_check(value, self.min, self.max, format_rate)
        return value

    def to_json(self, value):
        return format_decimal(value)

    def display(self, value):
        return format_rate(value)


class IntField(Field):
    type_name = "int"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.min: int | None = spec.get("min", int, None)
        self.max: int | None = spec.get("max", int, None)
        self.unit: str = spec.get("unit", str, "")
        self.prefix: str = spec.get("prefix", str, "")

    def check(self, raw, path, ctx, out):
        if isinstance(raw, str) and re.fullmatch(r"[0-9]+", raw.strip(), re.ASCII):
            try:
                raw = int(raw.strip())
            except ValueError:  # more digits than Python converts (4300)
                raise Rejected("max", f"expected a smaller number, found one of {len(raw.strip())} digits") from None
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise Rejected("type", f"expected a whole number, found {type(raw).__name__}")
        _bound_check(raw, self.min, self.max, str)
        return raw

    def display(self, value):
        return f"{self.prefix}{value}{self.unit}"


class BoolField(Field):
    type_name = "bool"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.true_label: str = spec.get("true_label", str, "是")
        self.false_label: str = spec.get("false_label", str, "否")

    def is_empty(self, raw):
        return raw is None

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, bool):
            raise Rejected("type", f"expected true or false, found {type(raw).__name__}")
        return raw

    def display(self, value):
        return self.true_label if value else self.false_label


class EnumField(Field):
    type_name = "enum"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.choices: list[str] = spec.str_list("choices")

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, str):
            raise Rejected("type", f"expected text, found {type(raw).__name__}")
        if raw.strip() not in self.choices:
            raise Rejected("enum", f"expected one of {'/'.join(self.choices)}")
        return raw.strip()


class EnumSetField(Field):
    """Several of the listed choices, plus free 'other' entries when allowed (其他费用)."""

    type_name = "enum_set"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.choices: list[str] = spec.str_list("choices")
        self.max_other: int = spec.get("max_other", int, 0)
        self.other_max_chars: int = spec.get("other_max_chars", int, 10)

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, list):
            raise Rejected("type", f"expected a list, found {type(raw).__name__}")
        chosen: list[str] = []
        other: list[str] = []
        ok = True
        for i, item in enumerate(raw):
            try:
                text = check_text(item, 1, self.other_max_chars if item not in self.choices else None,
                                  False, f"{path}.{i}")
                if text in chosen or text in other:
                    raise Rejected("duplicate", "listed twice")
                (chosen if text in self.choices else other).append(text)
            except Rejected as r:
                out.append(Violation(f"{path}.{i}", r.rule, r.message))
                ok = False
        if len(other) > self.max_other:
            rule, message = ("enum", f"expected only {'/'.join(self.choices)}") if not self.max_other else (
                "max_items", f"too many other entries: {len(other)} > {self.max_other}")
            out.append(Violation(path, rule, message))
            ok = False
        if not ok:
            return None
        return [c for c in self.choices if c in chosen] + other

    def display(self, value):
        return "、".join(value)


class DateField(Field):
    """ISO date (YYYY-MM-DD); ``min``/``max`` may be a date, ``today`` or ``today±Nd``."""

    type_name = "date"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.min = _date_bound(spec, "min")
        self.max = _date_bound(spec, "max")

    def check(self, raw, path, ctx, out):
        value = parse_date(raw)
        _bound_check(value, _resolve(self.min, ctx.today), _resolve(self.max, ctx.today), format_date)
        return value

    def to_json(self, value):
        return value.isoformat()

    def display(self, value):
        return format_date(value)


def parse_date(raw: object) -> _dt.date:
    if isinstance(raw, _dt.datetime):
        raise Rejected("type", "expected a date, found a date and time")
    if isinstance(raw, _dt.date):
        return raw
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw.strip(), re.ASCII):
        raise Rejected("type", "expected a date as YYYY-MM-DD")
    try:
        return _dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise Rejected("type", "expected a real calendar date") from None


_RELATIVE = re.compile(r"today(?:([+-])([0-9]+)d)?")


def _date_bound(spec: Spec, key: str) -> Any:
    raw = spec.get(key, (str, _dt.date), None)
    if raw is None or isinstance(raw, _dt.date):
        return raw
    m = _RELATIVE.fullmatch(raw)
    if m:
        days = int(m.group(2) or 0) * (-1 if m.group(1) == "-" else 1)
        return _dt.timedelta(days=days)
    try:
        return _dt.date.fromisoformat(raw)
    except ValueError:
        raise spec.error(key, "expected YYYY-MM-DD, today or today±Nd") from None


def _resolve(bound: Any, today: _dt.date) -> _dt.date | None:
    return today + bound if isinstance(bound, _dt.timedelta) else bound


class DateTimeField(Field):
    """ISO date and time; an offset is converted to Beijing time, none means Beijing time.
    ``min``/``max`` bound the calendar day (``max: today`` refuses a future day)."""

    type_name = "datetime"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.min = _date_bound(spec, "min")
        self.max = _date_bound(spec, "max")

    def check(self, raw, path, ctx, out):
        if isinstance(raw, _dt.datetime):
            moment = raw
        elif isinstance(raw, str) and re.fullmatch(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?(Z|[+-][0-9]{2}:[0-9]{2})?",
            raw.strip(), re.ASCII,
        ):
            try:
                moment = _dt.datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
            except ValueError:
                raise Rejected("type", "expected a real date and time") from None
        else:
            raise Rejected("type", "expected a date and time as YYYY-MM-DDTHH:MM[:SS]")
        if moment.tzinfo is not None:
            moment = moment.astimezone(BEIJING).replace(tzinfo=None)
        moment = moment.replace(microsecond=0)
        low, high = _resolve(self.min, ctx.today), _resolve(self.max, ctx.today)
        _bound_check(moment.date(), low, high, format_date)
        return moment

    def to_json(self, value):
        return value.isoformat(timespec="seconds")

    def display(self, value):
        return format_datetime(value)


class PersonField(Field):
    """A natural person: name, resident ID number, mobile phone (all required)."""

    type_name = "person"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.name_max_chars: int = spec.get("name_max_chars", int, 50)

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, dict):
            raise Rejected("type", f"expected name, id_number and phone, found {type(raw).__name__}")
        person: dict[str, str] = {}
        unknown = sorted(set(raw) - {"name", "id_number", "phone"})
        for key in unknown:
            out.append(Violation(f"{path}.{key}", "unknown", "not a field of a person"))
        for key in ("name", "id_number", "phone"):
            sub = f"{path}.{key}"
            value = raw.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                out.append(Violation(sub, "required", f"{sub} is required"))
                continue
            try:
                if key == "name":
                    person[key] = check_text(value, 1, self.name_max_chars, False, sub)
                else:
                    checker = ctx.checkers.id_number if key == "id_number" else ctx.checkers.phone
                    person[key] = checker(value, ctx.today)
            except Rejected as r:
                out.append(Violation(sub, r.rule, r.message))
            except InvalidInput as e:
                # Identity's checkers name their own field; ours is the dotted path.
                out.append(Violation(sub, e.rule, e.message))
        return person if len(person) == 3 and not unknown else None

    def display(self, value):
        return f"{value['name']}（身份证号码：{value['id_number']}；手机号码：{value['phone']}）"


class CountsField(Field):
    """Items with counts (床 2, 空调 3), the listed ones plus up to ``max_free`` free items.

    Value: a list of {"name", "count"}; normalised to the template's order,
    then free items as given, without zero counts.
    """

    type_name = "counts"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.items: list[str] = spec.str_list("items")
        self.max_free: int = spec.get("max_free", int, 0)
        self.max_count: int = spec.get("max_count", int, 99)
        self.free_item_max_chars: int = spec.get("free_item_max_chars", int, 10)
        self.unit: str = spec.get("unit", str, "")

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, list):
            raise Rejected("type", f"expected a list of name and count, found {type(raw).__name__}")
        counts: dict[str, int] = {}
        free: list[str] = []
        ok = True
        for i, entry in enumerate(raw):
            where = f"{path}.{i}"
            if not isinstance(entry, dict) or set(entry) != {"name", "count"}:
                out.append(Violation(where, "type", "expected exactly name and count"))
                ok = False
                continue
            try:
                name = check_text(entry["name"], 1, None if entry["name"] in self.items else self.free_item_max_chars,
                                  False, f"{where}.name")
            except Rejected as r:
                out.append(Violation(f"{where}.name", r.rule, r.message))
                ok = False
                continue
            if name in counts:
                out.append(Violation(f"{where}.name", "duplicate", "listed twice"))
                ok = False
                continue
            count = entry["count"]
            if isinstance(count, bool) or not isinstance(count, int):
                out.append(Violation(f"{where}.count", "type",
                                     f"expected a whole number, found {type(count).__name__}"))
                ok = False
                continue
            try:
                _bound_check(count, 0, self.max_count, str)
            except Rejected as r:
                out.append(Violation(f"{where}.count", r.rule, r.message))
                ok = False
                continue
            counts[name] = count
            if name not in self.items:
                free.append(name)
        if len(free) > self.max_free:
            out.append(Violation(path, "max_items" if self.max_free else "enum",
                                 f"too many free items: {len(free)} > {self.max_free}" if self.max_free
                                 else f"expected only {'/'.join(self.items)}"))
            ok = False
        if not ok:
            return None
        order = [n for n in self.items if n in counts] + free
        return [{"name": n, "count": counts[n]} for n in order if counts[n] > 0]

    def display(self, value):
        return "、".join(f"{item['name']}×{item['count']}{self.unit}" for item in value) or "无"


_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)


class ImagesField(Field):
    """Attached images by content hash (SHA-256, lower-case hex) with optional captions.

    The documents service checks that each hash names an attachment it stored
    (images only, checked by content); here only the shape and count.
    """

    type_name = "images"

    def __init__(self, spec: Spec):
        super().__init__(spec)
        self.required = spec.get("required", bool, False)
        self.max_items: int = spec.get("max_items", int, 9)
        self.caption_max_chars: int = spec.get("caption_max_chars", int, 20)

    def check(self, raw, path, ctx, out):
        if not isinstance(raw, list):
            raise Rejected("type", f"expected a list of images, found {type(raw).__name__}")
        if len(raw) > self.max_items:
            raise Rejected("max_items", f"too many images: {len(raw)} > {self.max_items}")
        images = []
        seen: set[str] = set()
        ok = True
        for i, entry in enumerate(raw):
            where = f"{path}.{i}"
            if isinstance(entry, str):
                entry = {"sha256": entry}
            if not isinstance(entry, dict) or not set(entry) <= {"sha256", "caption"}:
                out.append(Violation(where, "type", "expected sha256 and an optional caption"))
                ok = False
                continue
            digest = entry.get("sha256")
            if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
                out.append(Violation(f"{where}.sha256", "format", "expected 64 lower-case hex digits"))
                ok = False
                continue
            if digest in seen:
                out.append(Violation(f"{where}.sha256", "duplicate", "image attached twice"))
                ok = False
                continue
            seen.add(digest)
            caption = ""
            if entry.get("caption") not in (None, ""):
                try:
                    caption = check_text(entry["caption"], None, self.caption_max_chars, False, f"{where}.caption")
                except Rejected as r:
                    out.append(Violation(f"{where}.caption", r.rule, r.message))
                    ok = False
                    continue
            images.append({"sha256": digest, "caption": caption})
        return images if ok else None

    def display(self, value):
        return f"{len(value)}张"


FIELD_TYPES: dict[str, type[Field]] = {
    cls.type_name: cls
    for cls in (TextField, MoneyField, DecimalField, RateField, IntField, BoolField, EnumField, EnumSetField,
                DateField, DateTimeField, PersonField, CountsField, ImagesField)
}


def read_field(spec: Spec) -> Field:
    kind = spec.get("type", str)
    cls = FIELD_TYPES.get(kind)
    if cls is None:
        raise spec.error("type", f"unknown field type {kind!r}; expected one of {', '.join(sorted(FIELD_TYPES))}")
    field = cls(spec)
    spec.finish()
    return field
