"""Drafts: what the service keeps of a document between edits, independent of
nameko and the database.

* Values are stored sealed (AES-256-GCM envelope, :mod:`services.common.sealing`)
  with the document id bound as associated data, so a blob copied to another
  document does not open.
* An update merges into the stored values: a key set to ``None`` removes it.
* Image fields are filled from the document's attachments (added one by one
  with ``add_attachment``, sanitised and stored by hash); values may not name
  images directly.
* What leaves the service for a list or an overview shows persons masked:
  first character of the name, ``1101**********002X``, ``138****8000``.
* A document's calendar date is China Standard Time's.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Iterable

from services.common.errors import InvalidInput
from services.common.masking import mask_id_number, mask_name, mask_phone
from services.common.sealing import Keyring, open_json, seal_json
from services.documents.fields import ImagesField
from services.documents.template import Template
from services.documents.validation import ValidationFailed, Violation

_PARTY_PATH = re.compile(r"parties\[(\d+)\]\.(name|id_number|phone)")


def seal_values(keyring: Keyring, document_id: str, values: dict) -> str:
    return seal_json(keyring, values, "documents", "values", document_id)


def open_values(keyring: Keyring, document_id: str, sealed: str | None) -> dict:
    return open_json(keyring, sealed, "documents", "values", document_id)


def image_fields(template: Template) -> list[str]:
    return [name for name, f in template.fields.items() if isinstance(f, ImagesField)]


def refuse_image_values(template: Template, values: dict) -> None:
    """Images enter a document only through ``add_attachment`` (checked by content)."""
    violations = [Violation(name, "attachments_only", f"{name}: images are added with add_attachment")
                  for name in image_fields(template) if values.get(name) not in (None, [])]
    if violations:
        raise ValidationFailed.from_violations(violations)


def merge_values(stored: dict, changes: dict) -> dict:
    """Top-level merge; a key whose new value is ``None`` is removed."""
    merged = dict(stored)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def with_attachments(template: Template, values: dict, attachments: Iterable[Any]) -> dict:
    """``values`` with each image field listing its attachments (``sha256``,
    ``caption`` = the label given), in the order they were added."""
    result = {k: v for k, v in values.items() if k not in image_fields(template)}
    for attachment in attachments:
        result.setdefault(attachment.field, []).append({"sha256": attachment.sha256, "caption": attachment.label})
    return result


def without_images(template: Template, values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in image_fields(template)}


def images_field_for(template: Template, field: str | None) -> ImagesField:
    names = image_fields(template)
    if field is None:
        if not names:
            raise InvalidInput("document_id", "no_attachments", f"template {template.id} takes no images")
        field = names[0]
    if field not in names:
        raise InvalidInput("field", "enum", f"expected one of {', '.join(names) or '(none)'}")
    return template.fields[field]


def masked_parties(template: Template, values: dict) -> list[dict]:
    """Each role with its person masked (missing parts of a draft are None)."""
    initiator = values.get(template.initiator_field)
    parties = []
    for role in template.roles:
        person = values.get(role.person_field) or {}
        parties.append({
            "role": role.id, "label": role.label, "signature_field": role.signature_field,
            "initiator": initiator == role.initiator_choice,
            "name": mask_name(person["name"]) if person.get("name") else None,
            "id_number": mask_id_number(person["id_number"]) if person.get("id_number") else None,
            "phone": mask_phone(person["phone"]) if person.get("phone") else None,
        })
    return parties


def mask_persons(content: Any, values: dict, person_fields: Iterable[str]) -> Any:
    """``content`` with the ID number and phone of each person in ``person_fields``
    masked wherever they appear (the parties table, and any sentence that names them)."""
    replacements = {}
    for field in person_fields:
        person = values.get(field) or {}
        if person.get("id_number"):
            replacements[person["id_number"]] = mask_id_number(person["id_number"])
        if person.get("phone"):
            replacements[person["phone"]] = mask_phone(person["phone"])
    if not replacements:
        return content
    pattern = re.compile("|".join(re.escape(clear) for clear in sorted(replacements, key=len, reverse=True)))

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(lambda m: replacements[m.group(0)], item)
        if isinstance(item, dict):
            return {key: walk(value) for key, value in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(walk(value) for value in item)
        return item

    return walk(content)


def parse_document_date(value: str | None) -> _dt.date | None:
    if value is None:
        return None
    try:
        return _dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInput("document_date", "date", "expected an ISO date YYYY-MM-DD") from None


def template_field_path(template: Template, path: str) -> str:
    """The renderer names drawn strings by their place in the PDF content
    (``parties[1].name``); a caller knows the template's fields (``borrower.name``)."""
    m = _PARTY_PATH.fullmatch(path)
    if m and int(m[1]) < len(template.roles):
        return f"{template.roles[int(m[1])].person_field}.{m[2]}"
    if path == "remark" and template.remark_field:
        return template.remark_field
    return path
