"""Document templates as data: loading, validation, computed fields, content.

A template is one YAML file per *version* (``iou.v1.yaml``) under
``data/templates/``; a new template or version is a new file, no code. The
file declares:

* ``id``, ``version``, ``title``;
* ``fields`` — typed inputs with their rules (see ``fields.py``);
* ``initiator_field`` and ``roles`` — which party may start the document,
  the person field of each party and the name of its signature field;
* ``checks`` — rules across fields: ``after`` (a date/time later than
  another), ``rate_cap`` (annual rate ≤ min(12 %, 4 × one-year LPR on a
  date field)), ``distinct_persons``, ``required_if``;
* ``computed`` — ``amount_words`` (大写), ``repayment_schedule``, ``rate_cap``;
* ``sections`` — labelled rows (``field``, or ``label``+``value`` text with
  ``{placeholders}``), an optional ``table`` (a schedule) and ``paragraphs``
  (clause text with placeholders; write long ones as a ``|-`` block, line
  breaks are dropped), each row/paragraph optionally ``when`` a field is
  present, absent, equals or does not equal a value (a list of conditions
  must all hold). Parties are not repeated in sections: ``content["parties"]``
  comes from the roles and the renderer draws them as a table.

``Template.validate`` returns JSON-able normalised values or raises
``ValidationFailed`` (an ``InvalidInput``) listing every violation;
``Template.content`` returns the plain structure the renderer lays out.
Everything is a pure function of (values, today), so a document rendered
twice is the same document.
"""
from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.common.schedule import DayCount, RepaymentMethod, RepaymentSchedule, build_schedule
from services.documents import amount_words
from services.documents import lpr as lpr_module
from services.documents.fields import (
    CheckContext,
    DateField,
    DateTimeField,
    EnumField,
    Field,
    ImagesField,
    MoneyField,
    PersonField,
    RateField,
    Rejected,
    Spec,
    TemplateDefinitionError,
    format_date,
    format_money,
    format_rate,
    read_field,
)
from services.documents.validation import PersonCheckers, ValidationFailed, Violation

TEMPLATES_DIR = Path(__file__).with_name("data") / "templates"
_FILE_NAME = re.compile(r"(?P<id>[a-z][a-z0-9_]*)\.v(?P<version>[0-9]+)\.ya?ml")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PLACEHOLDER_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?")
_SIGNATURE_FIELD = re.compile(r"sig_[a-z][a-z0-9_]*")

# Keys a computed field offers to placeholders (``{schedule.total_interest}``).
_COMPUTED_KEYS = {
    "amount_words": {""},
    "repayment_schedule": {"total_interest", "total_payment", "convention", "payments", "day_count"},
    "rate_cap": {"lpr", "lpr_date", "limit", "basis"},
}


@dataclass(frozen=True)
class Role:
    id: str  # lender, borrower, landlord, tenant, ...
    label: str  # 出借人
    person_field: str
    signature_field: str  # sig_lender: the empty PDF signature field of this party
    initiator_choice: str  # the initiator enum value that makes this party the initiator (出借方)
    signature_label: str = ""  # caption under the signature field; default "<label>（签名）"


@dataclass(frozen=True)
class CrossCheck:
    rule: str
    field: str
    other: str = ""
    equals: Any = None


@dataclass(frozen=True)
class Computed:
    name: str
    kind: str
    sources: dict[str, str]  # role in the computation → field name
    methods: dict[str, str] = field(default_factory=dict)  # enum label → RepaymentMethod
    day_count: str = DayCount.ACT_365.value


@dataclass(frozen=True)
class Condition:
    field: str
    present: bool = False
    absent: bool = False
    equals: Any = None
    not_equals: Any = None


@dataclass(frozen=True)
class Row:
    label: str
    field: str = ""  # a field shown with its own display format
    value: str = ""  # or text with placeholders
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Paragraph:
    text: str
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Section:
    label: str
    rows: tuple[Row, ...] = ()
    table: str = ""  # name of a repayment_schedule computed field
    paragraphs: tuple[Paragraph, ...] = ()


class Template:
    """One version of one template, parsed and schema-checked."""

    def __init__(
        self,
        definition: dict,
        source: str = "<template>",
        *,
        lpr_table: lpr_module.LprTable | None = None,
        checkers: PersonCheckers | None = None,
    ):
        self.definition = definition  # the raw mapping, for storing in the database
        self.source = source
        self.lpr_table = lpr_table
        self.checkers = checkers or PersonCheckers()
        spec = Spec(definition, source, "")
        self.id: str = spec.get("id", str, nonempty=True)
        self.version: int = spec.get("version", int)
        self.title: str = spec.get("title", str, nonempty=True)
        self.description: str = spec.get("description", str, "")
        self.fields: dict[str, Field] = {}
        for i, item in enumerate(spec.get("fields", list, nonempty=True)):
            f = read_field(Spec(item, source, f"fields.{i}"))
            if f.name in self.fields:
                raise TemplateDefinitionError(source, f"fields.{i}.name", f"duplicate field {f.name!r}")
            self.fields[f.name] = f
        self.initiator_field: str = spec.get("initiator_field", str)
        self.roles: tuple[Role, ...] = self._read_roles(spec)
        self.remark_field: str = spec.get("remark_field", str, "")
        if self.remark_field:
            self._need_field(spec, "remark_field", self.remark_field)
        self.summary_fields: dict[str, str] = self._read_summary(spec)
        #: made by the platform about another signed document (a 还款确认书, a 借款展期协议), never
        #: offered in the editor nor made with create_draft: documents' create_statement makes it
        self.statement: bool = spec.get("statement", bool, False)
        self.checks: tuple[CrossCheck, ...] = tuple(
            self._read_check(Spec(item, source, f"checks.{i}")) for i, item in enumerate(spec.get("checks", list, []))
        )
        self.computed: dict[str, Computed] = {}
        for i, item in enumerate(spec.get("computed", list, [])):
            c = self._read_computed(Spec(item, source, f"computed.{i}"))
            if c.name in self.computed or c.name in self.fields:
                raise TemplateDefinitionError(source, f"computed.{i}.name", f"name {c.name!r} already used")
            self.computed[c.name] = c
        self.sections: tuple[Section, ...] = tuple(
            self._read_section(Spec(item, source, f"sections.{i}"))
            for i, item in enumerate(spec.get("sections", list, nonempty=True))
        )
        spec.finish()
        if any(c.kind == "rate_cap" for c in self.computed.values()) or any(c.rule == "rate_cap" for c in self.checks):
            self.lpr_table = self.lpr_table or lpr_module.load_lpr_table()

    def describe(self) -> dict[str, Any]:
        """What a form needs to ask for this template (for list_templates): JSON-able."""
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "initiator_field": self.initiator_field,
            "roles": [{"id": r.id, "label": r.label, "person_field": r.person_field,
                       "signature_field": r.signature_field, "initiator_choice": r.initiator_choice}
                      for r in self.roles],
            "fields": [_plain(f) for f in self.definition["fields"]],
        }

    # ------------------------------------------------------------ reading

    def _need_field(self, spec: Spec, key: str, name: str, *types: type[Field], required: bool = False) -> Field:
        f = self.fields.get(name)
        if f is None:
            raise spec.error(key, f"no field named {name!r}")
        if types and not isinstance(f, types):
            raise spec.error(key, f"field {name!r} must be of type {'/'.join(t.type_name for t in types)}")
        if required and not f.required:
            raise spec.error(key, f"field {name!r} must be required")
        return f

    def _read_summary(self, spec: Spec) -> dict[str, str]:
        """``summary``: which field is the document's amount and which its due
        date, for lists of documents (我的文件); either may be absent."""
        s = Spec(spec.get("summary", dict, {}), spec.source, "summary")
        fields = {}
        for key, kind in (("amount", MoneyField), ("due_date", DateField)):
            name = s.get(key, str, "")
            if name:
                self._need_field(s, key, name, kind)
                fields[key] = name
        s.finish()
        return fields

    def summary(self, values: dict) -> dict[str, Any]:
        """What a list of documents shows of one (``values`` as stored): the
        amount and due date the template names (None when it names none or
        the draft has none yet) and each party's real name as entered; and,
        for a loan (a template with a repayment schedule, complete), its
        terms (``loan``: what signing computes repayments and extensions from)."""
        return {
            "amount": values.get(self.summary_fields["amount"]) if "amount" in self.summary_fields else None,
            "due_date": values.get(self.summary_fields["due_date"]) if "due_date" in self.summary_fields else None,
            "parties": [{"role": role.id, "label": role.label,
                         "name": (values.get(role.person_field) or {}).get("name") or None}
                        for role in self.roles],
            "loan": self._loan_terms(values),
        }

    def _loan_terms(self, values: dict) -> dict[str, str] | None:
        schedule = next((c for c in self.computed.values() if c.kind == "repayment_schedule"), None)
        if schedule is None or any(values.get(name) in (None, "") for name in schedule.sources.values()):
            return None
        source = schedule.sources
        return {"principal": values[source["principal"]], "annual_rate": values[source["rate"]],
                "start_date": values[source["start"]], "due_date": values[source["end"]],
                "method": schedule.methods[values[source["method"]]], "day_count": schedule.day_count}

    def _read_roles(self, spec: Spec) -> tuple[Role, ...]:
        initiator = self._need_field(spec, "initiator_field", self.initiator_field, EnumField, required=True)
        roles = []
        for i, item in enumerate(spec.get("roles", list, nonempty=True)):
            r = Spec(item, spec.source, f"roles.{i}")
            role = Role(
                id=r.get("id", str, nonempty=True),
                label=r.get("label", str, nonempty=True),
                person_field=r.get("person", str),
                signature_field=r.get("signature_field", str),
                initiator_choice=r.get("initiator_choice", str),
                signature_label=r.get("signature_label", str, ""),
            )
            r.finish()
            self._need_field(r, "person", role.person_field, PersonField, required=True)
            if not _SIGNATURE_FIELD.fullmatch(role.signature_field):
                raise r.error("signature_field", "expected sig_<name>, e.g. sig_lender")
            roles.append(role)
        for key in ("id", "signature_field", "initiator_choice", "person_field"):
            values = [getattr(role, key) for role in roles]
            if len(set(values)) != len(values):
                raise spec.error("roles", f"two roles share one {key}")
        if sorted(r.initiator_choice for r in roles) != sorted(initiator.choices):
            raise spec.error("roles", f"initiator_choice values must be exactly the choices of {self.initiator_field}")
        return tuple(roles)

    def _read_check(self, s: Spec) -> CrossCheck:
        rule = s.get("rule", str)
        name = s.get("field", str)
        if rule == "after":
            other = s.get("other", str)
            first = self._need_field(s, "field", name, DateField, DateTimeField)
            second = self._need_field(s, "other", other, DateField, DateTimeField)
            if type(first) is not type(second):
                raise s.error("other", "both fields must be dates or both date-times")
            check = CrossCheck(rule, name, other)
        elif rule == "rate_cap":
            self._need_field(s, "field", name, RateField)
            other = s.get("date", str)
            self._need_field(s, "date", other, DateField)
            check = CrossCheck(rule, name, other)
        elif rule == "distinct_persons":
            other = s.get("other", str)
            self._need_field(s, "field", name, PersonField)
            self._need_field(s, "other", other, PersonField)
            check = CrossCheck(rule, name, other)
        elif rule == "required_if":
            f = self._need_field(s, "field", name)
            if f.required:
                raise s.error("field", "a required_if field must itself be optional")
            other = s.get("other", str)
            enum = self._need_field(s, "other", other, EnumField)
            equals = s.get("equals", str)
            if equals not in enum.choices:
                raise s.error("equals", f"not a choice of {other}")
            check = CrossCheck(rule, name, other, equals)
        else:
            raise s.error("rule", f"unknown rule {rule!r}; expected after, rate_cap, distinct_persons or required_if")
        s.finish()
        return check

    def _read_computed(self, s: Spec) -> Computed:
        name = s.get("name", str, nonempty=True)
        kind = s.get("kind", str)
        if kind == "amount_words":
            sources = {"amount": s.get("amount", str)}
            self._need_field(s, "amount", sources["amount"], MoneyField, required=True)
            computed = Computed(name, kind, sources)
        elif kind == "repayment_schedule":
            sources = {k: s.get(k, str) for k in ("principal", "rate", "start", "end", "method")}
            self._need_field(s, "principal", sources["principal"], MoneyField, required=True)
            self._need_field(s, "rate", sources["rate"], RateField, required=True)
            self._need_field(s, "start", sources["start"], DateField, required=True)
            self._need_field(s, "end", sources["end"], DateField, required=True)
            method_field = self._need_field(s, "method", sources["method"], EnumField, required=True)
            methods = s.get("methods", dict)
            if sorted(methods) != sorted(method_field.choices):
                raise s.error("methods", f"must map exactly the choices of {sources['method']}")
            for label, method in methods.items():
                if method not in {m.value for m in RepaymentMethod}:
                    raise s.error("methods", f"{label}: expected lump_sum or monthly_interest")
            day_count = s.get("day_count", str, DayCount.ACT_365.value)
            if day_count not in {d.value for d in DayCount}:
                raise s.error("day_count", "expected actual/365 or actual/360")
            computed = Computed(name, kind, sources, dict(methods), day_count)
        elif kind == "rate_cap":
            sources = {"rate": s.get("rate", str), "date": s.get("date", str)}
            self._need_field(s, "rate", sources["rate"], RateField, required=True)
            self._need_field(s, "date", sources["date"], DateField, required=True)
            computed = Computed(name, kind, sources)
        else:
            raise s.error("kind", f"unknown kind {kind!r}; expected amount_words, repayment_schedule or rate_cap")
        s.finish()
        return computed

    def _read_conditions(self, s: Spec) -> tuple[Condition, ...]:
        """``when``: one condition or a list of them, all of which must hold."""
        if not s.has("when"):
            return ()
        raw = s.data["when"]
        s.get("when", (dict, list), nonempty=True)
        items = raw if isinstance(raw, list) else [raw]
        key = s.key("when")
        return tuple(
            self._read_condition(Spec(item, s.source, f"{key}.{i}" if isinstance(raw, list) else key))
            for i, item in enumerate(items)
        )

    def _read_condition(self, w: Spec) -> Condition:
        if w.has("present"):
            cond = Condition(field=w.get("present", str), present=True)
        elif w.has("absent"):
            cond = Condition(field=w.get("absent", str), absent=True)
        else:
            cond = Condition(field=w.get("field", str), equals=w.get("equals", (str, int, bool), None),
                             not_equals=w.get("not_equals", (str, int, bool), None))
            if (cond.equals is None) == (cond.not_equals is None):
                raise w.error("equals", "a condition needs present, or one of equals / not_equals")
        self._need_field(w, "present" if cond.present else "absent" if cond.absent else "field", cond.field)
        w.finish()
        return cond

    def _check_text(self, s: Spec, key: str, text: str, when: tuple[Condition, ...]) -> None:
        """Every placeholder names a field or computed value; optional ones only under a matching ``when``."""
        for raw in _PLACEHOLDER.findall(text):
            if not _PLACEHOLDER_NAME.fullmatch(raw):
                raise s.error(key, f"bad placeholder {{{raw}}}")
            root, _, sub = raw.partition(".")
            if root in self.fields:
                f = self.fields[root]
                if sub and not (isinstance(f, PersonField) and sub in ("name", "id_number", "phone")):
                    raise s.error(key, f"placeholder {{{raw}}}: field {root!r} has no part {sub!r}")
                if not f.required and root not in {c.field for c in when}:
                    raise s.error(key,
                                  f"placeholder {{{raw}}} names optional field {root!r}; add when: {{present: {root}}}")
            elif root in self.computed:
                allowed = _COMPUTED_KEYS[self.computed[root].kind]
                if sub not in allowed and not (sub == "" and "" in allowed):
                    raise s.error(key, f"placeholder {{{raw}}}: expected one of {sorted(k for k in allowed if k)}")
            else:
                raise s.error(key, f"placeholder {{{raw}}} names no field or computed value")

    def _read_section(self, s: Spec) -> Section:
        label = s.get("label", str, nonempty=True)
        rows = []
        for i, item in enumerate(s.get("rows", list, [])):
            r = Spec(item, s.source, s.key(f"rows.{i}"))
            when = self._read_conditions(r)
            if r.has("field"):
                name = r.get("field", str)
                f = self._need_field(r, "field", name)
                if isinstance(f, ImagesField):
                    raise r.error("field", "images are listed as attachments, not rows")
                row = Row(label=r.get("label", str, f.label), field=name, when=when)
            else:
                row = Row(label=r.get("label", str, nonempty=True), value=r.get("value", str, nonempty=True), when=when)
                self._check_text(r, "value", row.value, when)
            r.finish()
            rows.append(row)
        table = s.get("table", str, "")
        if table and (table not in self.computed or self.computed[table].kind != "repayment_schedule"):
            raise s.error("table", f"{table!r} is not a repayment_schedule computed field")
        paragraphs = []
        for i, item in enumerate(s.get("paragraphs", list, [])):
            p = Spec(item, s.source, s.key(f"paragraphs.{i}"))
            when = self._read_conditions(p)
            paragraph = Paragraph(text=_join_lines(p.get("text", str, nonempty=True)), when=when)
            self._check_text(p, "text", paragraph.text, when)
            p.finish()
            paragraphs.append(paragraph)
        if not (rows or table or paragraphs):
            raise s.error("rows", "a section needs rows, a table or paragraphs")
        s.finish()
        return Section(label, tuple(rows), table, tuple(paragraphs))

    # ------------------------------------------------------------ checking

    def check(
        self, values: dict, today: _dt.date, *, complete: bool = True, checkers: PersonCheckers | None = None
    ) -> tuple[dict[str, Any], list[Violation]]:
        """Typed values and every violation. ``complete=False`` (a draft being
        filled in) skips ``required`` for missing fields but checks the rest."""
        violations: list[Violation] = []
        typed: dict[str, Any] = {}
        if not isinstance(values, dict):
            return typed, [Violation("", "type", f"expected a mapping of fields, found {type(values).__name__}")]
        ctx = CheckContext(today=today, checkers=checkers or self.checkers)
        for name in sorted(set(values) - set(self.fields)):
            violations.append(Violation(name, "unknown", f"{self.id} v{self.version} has no field {name!r}"))
        for name, f in self.fields.items():
            raw = values.get(name)
            if f.is_empty(raw):
                if f.required and complete:
                    violations.append(Violation(name, "required", f"{name} ({f.label}) is required"))
                continue
            nested: list[Violation] = []
            try:
                value = f.check(raw, name, ctx, nested)
            except Rejected as r:
                violations.append(Violation(name, r.rule, r.message))
                continue
            violations.extend(nested)
            if value is not None and not nested:
                typed[name] = value
        for check in self.checks:
            if check.rule == "required_if" and not complete:
                continue
            violation = self._cross_check(check, typed, values)
            if violation:
                violations.append(violation)
        return typed, violations

    def _cross_check(self, check: CrossCheck, typed: dict, raw: dict) -> Violation | None:
        if check.rule == "required_if":
            missing = self.fields[check.field].is_empty(raw.get(check.field))
            if typed.get(check.other) == check.equals and missing:
                label = self.fields[check.field].label
                return Violation(check.field, "required",
                                 f"{check.field} ({label}) is required when {check.other} is {check.equals}")
            return None
        if check.field not in typed or check.other not in typed:
            return None  # already reported, or an optional field left empty
        a, b = typed[check.field], typed[check.other]
        if check.rule == "after" and not a > b:
            return Violation(check.field, "after",
                             f"{check.field} must be after {check.other}: {a.isoformat()} is not after {b.isoformat()}")
        if check.rule == "rate_cap":
            try:
                cap = self.lpr_table.rate_cap(b)
            except LookupError as exc:
                return Violation(check.other, "rate_cap", str(exc))
            if not cap.allows(a):
                return Violation(check.field, "rate_cap",
                                 f"annual rate {format_rate(a)} above the cap {format_rate(cap.limit)} "
                                 f"(min of 12% and 4 × one-year LPR {format_rate(cap.lpr.rate)} "
                                 f"published {cap.lpr.date.isoformat()})")
        if check.rule == "distinct_persons" and a["id_number"] == b["id_number"]:
            return Violation(f"{check.field}.id_number", "distinct_persons",
                             f"{check.field} and {check.other} must be different persons")
        return None

    def validate(
        self, values: dict, today: _dt.date, *, complete: bool = True, checkers: PersonCheckers | None = None
    ) -> dict[str, Any]:
        """Normalised JSON-able values, or ``ValidationFailed`` with every violation."""
        typed, violations = self.check(values, today, complete=complete, checkers=checkers)
        if violations:
            raise ValidationFailed.from_violations(violations)
        return {name: self.fields[name].to_json(value) for name, value in typed.items()}

    # ------------------------------------------------------------ computing

    def compute(self, typed: dict[str, Any]) -> dict[str, Any]:
        """Computed values from checked, complete typed values."""
        results: dict[str, Any] = {}
        for c in self.computed.values():
            src = {role: typed[name] for role, name in c.sources.items()}
            if c.kind == "amount_words":
                results[c.name] = amount_words.amount_in_words(src["amount"])
            elif c.kind == "repayment_schedule":
                results[c.name] = build_schedule(
                    principal=src["principal"],
                    annual_rate=src["rate"] / 100,
                    start=src["start"],
                    maturity=src["end"],
                    method=RepaymentMethod(c.methods[src["method"]]),
                    day_count=DayCount(c.day_count),
                )
            elif c.kind == "rate_cap":
                results[c.name] = self.lpr_table.rate_cap(src["date"])
        return results

    def content(self, values: dict, today: _dt.date, *, checkers: PersonCheckers | None = None) -> dict[str, Any]:
        """The document as plain JSON-able data for the renderer (validates first)."""
        typed, violations = self.check(values, today, checkers=checkers)
        if violations:
            raise ValidationFailed.from_violations(violations)
        computed = self.compute(typed)
        text = _TextFiller(self, typed, computed)

        initiator_choice = typed[self.initiator_field]
        parties = []
        for role in self.roles:
            person = typed[role.person_field]
            parties.append({
                "role": role.id,
                "label": role.label,
                "name": person["name"],
                "id_number": person["id_number"],
                "phone": person["phone"],
                "signature_field": role.signature_field,
                "initiator": role.initiator_choice == initiator_choice,
                "signature_label": role.signature_label or f"{role.label}（签名）",
            })
        initiator = next(r for r in self.roles if r.initiator_choice == initiator_choice)

        sections = []
        for section in self.sections:
            rows = [
                {"label": row.label,
                 "value": self.fields[row.field].display(typed[row.field]) if row.field else text.fill(row.value)}
                for row in section.rows
                if _holds(row.when, typed, self.fields) and (not row.field or row.field in typed)
            ]
            paragraphs = [text.fill(p.text) for p in section.paragraphs if _holds(p.when, typed, self.fields)]
            if not (rows or section.table or paragraphs):
                continue  # e.g. 其他约定 left empty
            sections.append({
                "label": section.label,
                "rows": rows,
                "table": _schedule_table(computed[section.table]) if section.table else None,
                "paragraphs": paragraphs,
            })

        amount = None
        words = [c for c in self.computed.values() if c.kind == "amount_words"]
        if words:
            money = typed[words[0].sources["amount"]]
            amount = {"field": words[0].sources["amount"], "label": self.fields[words[0].sources["amount"]].label,
                      "figures": format_money(money),
                      "value": f"{money:.2f}", "words": "人民币" + computed[words[0].name]}
        schedules = [c for c in self.computed.values() if c.kind == "repayment_schedule"]
        caps = [c for c in self.computed.values() if c.kind == "rate_cap"]
        attachments = [
            {"field": name, "label": f.label, "sha256": image["sha256"], "caption": image["caption"]}
            for name, f in self.fields.items() if isinstance(f, ImagesField)
            for image in typed.get(name, [])
        ]
        return {
            "template": {"id": self.id, "version": self.version},
            "title": self.title,
            "initiator": {"role": initiator.id, "label": initiator.label},
            "parties": parties,
            "sections": sections,
            "amount": amount,
            "schedule": _schedule_table(computed[schedules[0].name]) if schedules else None,
            "rate_cap": _rate_cap_view(computed[caps[0].name]) if caps else None,
            "remark": typed.get(self.remark_field) if self.remark_field else None,
            "attachments": attachments,
            "signatures": [
                {"field": p["signature_field"], "role": p["role"], "label": p["signature_label"], "name": p["name"]}
                for p in parties
            ],
            "values": {name: self.fields[name].to_json(value) for name, value in typed.items()},
        }


def _plain(value: Any) -> Any:
    """YAML may hold dates (an unquoted min: 2026-01-01); JSON wants text."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def _join_lines(text: str) -> str:
    """A paragraph written over several YAML lines is one line: Chinese has no
    spaces between words, so the line breaks are dropped, not turned into spaces."""
    return "".join(line.strip() for line in text.splitlines())


def _holds(conditions: tuple[Condition, ...], typed: dict, fields: dict[str, Field]) -> bool:
    return all(_holds_one(c, typed, fields) for c in conditions)


def _holds_one(cond: Condition, typed: dict, fields: dict[str, Field]) -> bool:
    if cond.absent:
        return cond.field not in typed
    if cond.field not in typed:
        return False
    if cond.present:
        return True
    value = fields[cond.field].to_json(typed[cond.field])
    if cond.equals is not None:
        return value == cond.equals
    return value != cond.not_equals


_SCHEDULE_COLUMNS = ["期数", "计息期间", "天数", "应还本金", "应付利息", "应还合计", "还款日"]


def _schedule_table(s: RepaymentSchedule) -> dict[str, Any]:
    return {
        "method": s.method.label,
        "day_count": s.day_count.value,
        "convention": s.convention,
        "columns": list(_SCHEDULE_COLUMNS),
        "rows": [
            [f"第{p.number}期", f"{format_date(p.period_start)}至{format_date(p.period_end)}", str(p.days),
             format_money(p.principal), format_money(p.interest), format_money(p.amount), format_date(p.due_date)]
            for p in s.payments
        ],
        "principal": format_money(s.principal),
        "total_interest": format_money(s.total_interest),
        "total_payment": format_money(s.total_payment),
    }


def _rate_cap_view(cap: lpr_module.RateCap) -> dict[str, str]:
    return {
        "lpr": format_rate(cap.lpr.rate),
        "lpr_date": format_date(cap.lpr.date),
        "limit": format_rate(cap.limit),
        "basis": _cap_basis(cap),
        "table_known_through": cap.table_known_through.isoformat(),
    }


def _cap_basis(cap: lpr_module.RateCap) -> str:
    return (f"合同成立时适用的一年期贷款市场报价利率（LPR）为{format_rate(cap.lpr.rate)}"
            f"（{format_date(cap.lpr.date)}公布），其四倍为{format_rate(cap.lpr_multiple_limit)}；"
            f"本平台年利率上限为12%与LPR四倍中的较低者，即{format_rate(cap.limit)}")


class _TextFiller:
    """Fills ``{placeholders}`` with display text (checked at load, so every name resolves)."""

    def __init__(self, template: Template, typed: dict, computed: dict):
        self.template = template
        self.typed = typed
        self.computed = computed

    def value(self, name: str) -> str:
        root, _, sub = name.partition(".")
        if root in self.template.fields:
            value = self.typed[root]
            return value[sub] if sub else self.template.fields[root].display(value)
        result = self.computed[root]
        if isinstance(result, str):
            return result
        if isinstance(result, RepaymentSchedule):
            return {
                "total_interest": lambda: format_money(result.total_interest),
                "total_payment": lambda: format_money(result.total_payment),
                "convention": lambda: result.convention,
                "payments": lambda: str(len(result.payments)),
                "day_count": lambda: result.day_count.value,
            }[sub]()
        return _rate_cap_view(result)[sub]

    def fill(self, text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: self.value(m.group(1)), text)


def render_input(content: dict[str, Any], document_id: str, document_date: _dt.date) -> dict[str, Any]:
    """``content`` in the JSON form of ``rendering.content.DocumentContent.from_dict``.

    The document's id and date come from the stored document, never the clock,
    so the PDF is reproducible. Party role labels are the template's (出借人).
    """
    amount = content["amount"]
    # The renderer draws one schedule block after the sections: the section
    # holding the table becomes that block, its paragraphs the note under it.
    table_section = next((s for s in content["sections"] if s["table"]), None)
    schedule = None
    if table_section:
        table = table_section["table"]
        schedule = {"caption": table_section["label"], "columns": table["columns"], "rows": table["rows"],
                    "note": "\n".join(table_section["paragraphs"]) or table["convention"]}
    return {
        "title": content["title"],
        "document_id": document_id,
        "document_date": document_date.isoformat(),
        "parties": [
            {"role": p["label"], "name": p["name"], "id_number": p["id_number"], "phone": p["phone"],
             "signature_field": p["signature_field"]}
            for p in content["parties"]
        ],
        "sections": [
            {"heading": s["label"], "rows": [[r["label"], r["value"]] for r in s["rows"]],
             "paragraphs": s["paragraphs"]}
            for s in content["sections"]
            if s is not table_section
        ],
        "amount_label": amount["label"] if amount else "金额",
        "amount_words": amount["words"] if amount else "",
        "amount_figures": amount["figures"] if amount else "",
        "schedule": schedule,
        "remark": content["remark"] or "",
        "attachments": [
            {"sha256": a["sha256"], "label": f"{a['label']}：{a['caption']}" if a["caption"] else a["label"]}
            for a in content["attachments"]
        ],
    }


# ------------------------------------------------------------------ catalog


class TemplateCatalog:
    """All template versions, by id; ``get(id)`` is the latest version."""

    def __init__(self, templates: list[Template]):
        self._by_key: dict[tuple[str, int], Template] = {}
        for t in templates:
            if (t.id, t.version) in self._by_key:
                raise TemplateDefinitionError(t.source, "version", f"{t.id} v{t.version} defined twice")
            self._by_key[(t.id, t.version)] = t

    def get(self, template_id: str, version: int | None = None) -> Template:
        if version is not None:
            try:
                return self._by_key[(template_id, version)]
            except KeyError:
                raise LookupError(f"no template {template_id} v{version}") from None
        versions = [v for (i, v) in self._by_key if i == template_id]
        if not versions:
            raise LookupError(f"no template {template_id}")
        return self._by_key[(template_id, max(versions))]

    def __iter__(self):
        return iter(sorted(self._by_key.values(), key=lambda t: (t.id, t.version)))

    def __len__(self) -> int:
        return len(self._by_key)


def load_template_file(
    path: Path, *, lpr_table: lpr_module.LprTable | None = None, checkers: PersonCheckers | None = None
) -> Template:
    """Parse one ``<id>.v<version>.yaml``; the name must agree with its ``id`` and ``version``."""
    source = str(path)
    m = _FILE_NAME.fullmatch(path.name)
    if not m:
        raise TemplateDefinitionError(source, "<file name>", "expected <id>.v<version>.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise TemplateDefinitionError(source, "<yaml>", f"not valid YAML: {exc}") from None
    template = Template(data, source, lpr_table=lpr_table, checkers=checkers)
    if (template.id, template.version) != (m["id"], int(m["version"])):
        raise TemplateDefinitionError(source, "id", f"file name says {m['id']} v{m['version']}, "
                                                    f"content says {template.id} v{template.version}")
    return template


def load_templates(
    directory: Path = TEMPLATES_DIR,
    *,
    lpr_table: lpr_module.LprTable | None = None,
    checkers: PersonCheckers | None = None,
) -> TemplateCatalog:
    """Every template version in ``directory``, sharing one LPR table and one set of person checkers."""
    table = lpr_table or lpr_module.load_lpr_table()
    paths = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    return TemplateCatalog([load_template_file(p, lpr_table=table, checkers=checkers) for p in paths])
