"""SMS templates as versioned data, and rendering them safely.

The templates live in ``data/sms_templates.yaml``: each has an id, a
version, a category (``code``, ``notice``, ``reminder``), a Chinese text with
named variables, the variables in the order the vendor numbers them, and a
template id per vendor. Vendors such as Tencent Cloud SMS only deliver texts
that match a template approved beforehand, with the variables sent
separately as an ordered list; :func:`vendor_template_text` gives the text to
register (``{1}``, ``{2}`` ...).

Rendering enforces what the product promises about content: every declared
variable is given and nothing else; values are checked by their kind (a code
is 4-8 digits, a link is a URL, a name is shown masked as 张*); no value may
look like a resident ID number (GB 11643-1999, 18 or old 15 characters), carry
an amount of money, or contain 【】 (which would forge a sign name). The sign
name itself is added by the provider. Failures raise
:class:`~services.common.errors.InvalidInput` naming ``params.<variable>`` and
a rule; messages never echo the value.
"""
from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import yaml

from services.common.errors import InvalidInput, NotFound
from services.common.masking import mask_name

DEFAULT_CATALOG_PATH = Path(__file__).parent / "data" / "sms_templates.yaml"
SCHEMA_VERSION = 1

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A vendor id still holding the YAML placeholder (e.g. TENCENT_TEMPLATE_ID_PHONE_CODE)
# means configuration has not supplied the approved id yet.
_UNCONFIGURED_VENDOR_ID = re.compile(r"[A-Z][A-Z0-9_]*\Z")

# An 18-character resident ID (17 digits + digit/X) or a 15-digit first-generation
# one, not part of a longer digit run.
_ID_NUMBER_LIKE = re.compile(r"(?<![0-9])(?:[0-9]{17}[0-9Xx]|[0-9]{15})(?![0-9A-Za-z])")
_MONEY_LIKE = re.compile(
    r"[¥￥$]|[0-9零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟]+(?:\.[0-9]+)?\s*(?:元|圆|块|万)"
)
_CONTROL_OR_SIGN = re.compile(r"[\x00-\x1f\x7f【】]")
_ASCII_DIGITS = re.compile(r"[0-9]+\Z")
_LINK = re.compile(r"https?://[A-Za-z0-9.\-]+(?::[0-9]+)?(?:/[A-Za-z0-9\-._~%/?#=&+]*)?\Z")
# CJK Unified Ideographs with extensions A–H and compatibility ideographs:
# rare name characters such as 䶮 (ext. A) and 𠮷 (ext. B) are names too.
_PERSON = re.compile(r"[A-Za-z\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f·．. ]+\Z")


class TemplateCategory(str, enum.Enum):
    """What kind of message a template sends; decides quiet-hour handling."""

    CODE = "code"          # one-time codes: always sent at once
    NOTICE = "notice"      # answers to an action a person just took
    REMINDER = "reminder"  # scheduled; held back during quiet hours


class VariableKind(str, enum.Enum):
    CODE = "code"
    NUMBER = "number"
    TITLE = "title"
    PERSON = "person"
    LINK = "link"
    DATE = "date"


TITLE_MAX_LENGTH = 20
LINK_MAX_LENGTH = 96


@dataclass(frozen=True)
class TemplateVariable:
    name: str
    kind: VariableKind


@dataclass(frozen=True)
class SmsTemplate:
    """One versioned SMS template."""

    id: str
    version: int
    category: TemplateCategory
    text: str
    variables: tuple[TemplateVariable, ...]
    vendor_template_ids: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    def vendor_template_id(self, vendor: str) -> str | None:
        """The approved template id at ``vendor``, or None while unconfigured."""
        value = self.vendor_template_ids.get(vendor)
        if not value or _UNCONFIGURED_VENDOR_ID.match(value):
            return None
        return value


@dataclass(frozen=True)
class RenderedSms:
    """A message ready for a provider: the text and the checked, display-ready values."""

    template: SmsTemplate
    params: Mapping[str, str] = field(hash=False)
    text: str

    @property
    def ordered_params(self) -> tuple[str, ...]:
        """Values in the vendor's numbering order ({1}, {2}, ...)."""
        return tuple(self.params[name] for name in self.template.variable_names)


def vendor_template_text(template: SmsTemplate) -> str:
    """The text to register with a vendor that numbers variables ({1}, {2} ...)."""
    position = {name: index for index, name in enumerate(template.variable_names, start=1)}
    return _PLACEHOLDER.sub(lambda m: "{%d}" % position[m.group(1)], template.text)


class SmsTemplateCatalog:
    """All templates, looked up by id."""

    def __init__(self, templates: Mapping[str, SmsTemplate]):
        self._templates = MappingProxyType(dict(templates))

    @classmethod
    def load(cls, path: Path | str = DEFAULT_CATALOG_PATH) -> "SmsTemplateCatalog":
        with open(path, encoding="utf-8") as f:
            return cls.from_data(yaml.safe_load(f))

    @classmethod
    def from_data(cls, data: object) -> "SmsTemplateCatalog":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise InvalidInput("sms_templates.schema", "schema_version", f"expected schema {SCHEMA_VERSION}")
        entries = data.get("templates")
        if not isinstance(entries, list) or not entries:
            raise InvalidInput("sms_templates.templates", "required", "expected a non-empty list of templates")
        templates: dict[str, SmsTemplate] = {}
        for index, entry in enumerate(entries):
            template = _parse_template(index, entry)
            if template.id in templates:
                raise InvalidInput(f"templates[{index}].id", "unique", f"template id {template.id!r} appears twice")
            templates[template.id] = template
        return cls(templates)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._templates

    def __iter__(self):
        return iter(self._templates.values())

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._templates)

    def get(self, template_id: str) -> SmsTemplate:
        try:
            return self._templates[template_id]
        except KeyError:
            raise NotFound("sms_template", template_id) from None

    def render(self, template_id: str, params: Mapping[str, object]) -> RenderedSms:
        return render(self.get(template_id), params)

    def with_vendor_template_ids(self, vendor: str, ids: Mapping[str, str]) -> "SmsTemplateCatalog":
        """A copy whose ``vendor`` template ids come from configuration."""
        unknown = sorted(set(ids) - set(self._templates))
        if unknown:
            raise InvalidInput(f"sms.{vendor}.template_ids", "unknown_template", f"no template named {unknown[0]!r}")
        updated = {}
        for template_id, template in self._templates.items():
            vendor_ids = dict(template.vendor_template_ids)
            if template_id in ids:
                vendor_ids[vendor] = str(ids[template_id])
            updated[template_id] = replace(template, vendor_template_ids=MappingProxyType(vendor_ids))
        return SmsTemplateCatalog(updated)

    def unconfigured_for(self, vendor: str) -> tuple[str, ...]:
        """Template ids with no approved id at ``vendor`` (check this at start-up)."""
        return tuple(t.id for t in self._templates.values() if t.vendor_template_id(vendor) is None)


def render(template: SmsTemplate, params: Mapping[str, object]) -> RenderedSms:
    """Check ``params`` against the template and fill in its text."""
    expected = set(template.variable_names)
    missing = [name for name in template.variable_names if name not in params]
    if missing:
        raise InvalidInput(f"params.{missing[0]}", "missing_variable",
                           f"template {template.id} needs {sorted(expected)}; {missing[0]!r} is missing")
    extra = sorted(set(params) - expected)
    if extra:
        raise InvalidInput(f"params.{extra[0]}", "unexpected_variable",
                           f"template {template.id} takes only {sorted(expected)}")
    shown = {v.name: _display_value(v, params[v.name]) for v in template.variables}
    text = _PLACEHOLDER.sub(lambda m: shown[m.group(1)], template.text)
    return RenderedSms(template=template, params=MappingProxyType(shown), text=text)


def _display_value(variable: TemplateVariable, value: object) -> str:
    field_name = f"params.{variable.name}"
    kind = variable.kind
    if kind is VariableKind.DATE and isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return f"{value.year}年{value.month}月{value.day}日"
    if kind is VariableKind.NUMBER and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput(field_name, "type", f"expected text, found {type(value).__name__}")

    # Content guards first, so no kind-specific path can let these through.
    if _ID_NUMBER_LIKE.search(value):
        raise InvalidInput(field_name, "looks_like_id_number", "an SMS may not carry a resident ID number")
    if _CONTROL_OR_SIGN.search(value):
        raise InvalidInput(field_name, "charset", "control characters and 【】 are not allowed")

    if kind is VariableKind.CODE:
        if not (_ASCII_DIGITS.match(value) and 4 <= len(value) <= 8):
            raise InvalidInput(field_name, "code_format", f"expected 4-8 ASCII digits, found {len(value)} characters")
        return value
    if kind is VariableKind.NUMBER:
        if not (_ASCII_DIGITS.match(value) and len(value) <= 3):
            raise InvalidInput(field_name, "number_format", "expected 1-3 ASCII digits")
        return str(int(value))
    if kind is VariableKind.DATE:
        try:
            day = dt.date.fromisoformat(value) if len(value) == 10 else None
        except ValueError:
            day = None
        if day is None:
            raise InvalidInput(field_name, "date_format", "expected a date as YYYY-MM-DD")
        return f"{day.year}年{day.month}月{day.day}日"
    if kind is VariableKind.LINK:
        if len(value) > LINK_MAX_LENGTH:
            raise InvalidInput(field_name, "max_length",
                               f"expected at most {LINK_MAX_LENGTH} characters, found {len(value)}")
        if not _LINK.match(value):
            raise InvalidInput(field_name, "link_format", "expected an http(s) URL")
        return value

    # Free text (titles, names): the amount guard applies here, because only
    # these kinds could smuggle a sum of money into a template that has none.
    stripped = value.strip()
    if not stripped:
        raise InvalidInput(field_name, "required", "expected non-empty text")
    if _MONEY_LIKE.search(stripped):
        raise InvalidInput(field_name, "looks_like_amount", "this template does not carry amounts of money")
    if kind is VariableKind.PERSON:
        if not _PERSON.match(stripped):
            raise InvalidInput(field_name, "person_name_format", "expected a name of letters or Chinese characters")
        return mask_name(stripped)
    if len(stripped) > TITLE_MAX_LENGTH:
        raise InvalidInput(field_name, "max_length",
                           f"expected at most {TITLE_MAX_LENGTH} characters, found {len(stripped)}")
    return stripped


def _parse_template(index: int, entry: object) -> SmsTemplate:
    where = f"templates[{index}]"
    if not isinstance(entry, dict):
        raise InvalidInput(where, "type", "expected a mapping")
    template_id = entry.get("id")
    if not isinstance(template_id, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", template_id):
        raise InvalidInput(f"{where}.id", "id_format", "expected a lower-case identifier")
    version = entry.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput(f"{where}.version", "positive_integer", "expected a version number of 1 or more")
    try:
        category = TemplateCategory(entry.get("category"))
    except ValueError:
        raise InvalidInput(f"{where}.category", "one_of",
                           f"expected one of {[c.value for c in TemplateCategory]}") from None
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{where}.text", "required", "expected the message text")
    if "【" in text or "】" in text:
        raise InvalidInput(f"{where}.text", "sign_name",
                           "the sign name 【...】 is added by the provider, not the template")

    raw_variables = entry.get("variables") or []
    variables = []
    for var_index, raw in enumerate(raw_variables):
        var_where = f"{where}.variables[{var_index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput(var_where, "type", "expected {name, kind}")
        try:
            kind = VariableKind(raw.get("kind"))
        except ValueError:
            raise InvalidInput(f"{var_where}.kind", "one_of",
                               f"expected one of {[k.value for k in VariableKind]}") from None
        variables.append(TemplateVariable(raw["name"], kind))
    names = [v.name for v in variables]
    if len(set(names)) != len(names):
        raise InvalidInput(f"{where}.variables", "unique", "a variable is declared twice")

    used = _PLACEHOLDER.findall(text)
    if len(set(used)) != len(used):
        raise InvalidInput(f"{where}.text", "variable_used_once", "each variable may appear once in the text")
    if set(used) != set(names):
        undeclared = sorted(set(used) - set(names))
        unused = sorted(set(names) - set(used))
        raise InvalidInput(f"{where}.text", "variables_match",
                           f"text and declared variables differ: undeclared {undeclared}, unused {unused}")
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise InvalidInput(f"{where}.text", "placeholder_format", "stray brace outside a {variable}")

    vendors = entry.get("vendors") or {}
    if not isinstance(vendors, dict):
        raise InvalidInput(f"{where}.vendors", "type", "expected a mapping of vendor to template id")
    return SmsTemplate(
        id=template_id,
        version=version,
        category=category,
        text=text,
        variables=tuple(variables),
        vendor_template_ids=MappingProxyType({str(k): str(v) for k, v in vendors.items()}),
    )
