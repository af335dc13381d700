"""The service's templates: loaded from their YAML files at start and recorded
in the ``templates`` table (definition as JSON and its SHA-256), so every
document names exactly the definition it was made from.

A template version is immutable: if a file's content changed while its
``version`` stayed the same, the service refuses to start (a new definition
is a new file, ``<id>.v<n+1>.yaml``). Versions recorded earlier but no longer
shipped stay in the table, so old documents keep their definition.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nameko.extensions import DependencyProvider
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.clock import utcnow
from services.common.database import DatabaseProvider
from services.documents.models import TemplateRecord
from services.documents.template import (
    TEMPLATES_DIR,
    Template,
    TemplateCatalog,
    _plain,
    load_templates,
)


class TemplateChanged(RuntimeError):
    """A template file changed under a version already recorded."""


#: keys of a template file that say how lists show its documents, not what a document says: outside the
#: recorded definition, so they can be added to a version already in use
PRESENTATION_KEYS = frozenset({"summary"})


def definition_json(template: Template) -> str:
    """Canonical JSON of a template's definition (sorted keys, dates as ISO text), without its
    :data:`PRESENTATION_KEYS`."""
    definition = {key: value for key, value in template.definition.items() if key not in PRESENTATION_KEYS}
    return json.dumps(_plain(definition), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def definition_sha256(template: Template) -> str:
    return hashlib.sha256(definition_json(template).encode("utf-8")).hexdigest()


def record_templates(session: Session, catalog: TemplateCatalog) -> dict[tuple[str, int], str]:
    """Insert versions not yet recorded; refuse a recorded version whose
    definition differs. Returns the SHA-256 of each (id, version)."""
    hashes = {}
    for template in catalog:
        digest = definition_sha256(template)
        row = session.get(TemplateRecord, (template.id, template.version))
        if row is None:
            session.add(TemplateRecord(id=template.id, version=template.version, definition=definition_json(template),
                                       sha256=digest, recorded_at=utcnow()))
        elif row.sha256 != digest:
            raise TemplateChanged(
                f"template {template.id} v{template.version} ({template.source}) differs from the definition "
                f"recorded for that version (sha256 {row.sha256[:12]}…, file now {digest[:12]}…): a changed "
                f"template needs a new version, e.g. {template.id}.v{template.version + 1}.yaml")
        hashes[(template.id, template.version)] = digest
    session.commit()
    return hashes


class Templates:
    """What a worker gets: the catalog and each version's recorded hash."""

    def __init__(self, catalog: TemplateCatalog):
        self.catalog = catalog
        self.hashes: dict[tuple[str, int], str] = {}

    def get(self, template_id: str, version: int | None = None) -> Template:
        return self.catalog.get(template_id, version)

    def sha256(self, template: Template) -> str:
        return self.hashes.get((template.id, template.version)) or definition_sha256(template)


class TemplatesProvider(DependencyProvider):
    """Loads the templates (config ``TEMPLATES_DIR``, default the shipped ones)
    in ``setup`` and records them in the database in ``start``, after the
    database provider has migrated it."""

    def setup(self) -> None:
        directory = self.container.config.get("TEMPLATES_DIR")
        self.templates = Templates(load_templates(Path(directory) if directory else TEMPLATES_DIR))

    def start(self) -> None:
        database = next(d for d in self.container.dependencies if isinstance(d, DatabaseProvider)).db
        for attempt in (1, 2):
            with database.session() as session:
                try:
                    self.templates.hashes = record_templates(session, self.templates.catalog)
                    return
                except IntegrityError:  # another replica recorded the same version first: compare again
                    session.rollback()
                    if attempt == 2:
                        raise

    def get_dependency(self, worker_ctx) -> Templates:
        return self.templates
