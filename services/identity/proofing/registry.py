"""The local identity registry: the embedded stand-in for the authority.

A YAML file lists the people the "authority" knows, each with the reference
photo that plays the part of their ID-card photo::

    # one entry per person; photo paths are relative to this file
    people:
      - name: 王䶮
        id_number: 11010519491231002X
        photo: photos/wang.jpg

It answers as FaceID does: the two-element check looks the ID number up
(no entry: ``authority_no_record``; another name: ``authority_mismatch``);
the face check compares the presented face with the entry's photo using
face_recognition's model (Euclidean distance of 128-d encodings, the same
person below ``FACES.THRESHOLD``, 0.6 by default).

The file holds ID numbers in clear, like the authority's own database: it
is configuration of the machine (``PROOFING.REGISTRY_FILE``, default
``<DATA_DIR>/identity-registry/registry.yaml``), never committed. ``./dev up``
writes a demo registry of synthetic people; ``esign registry add`` adds one.
The file is read again when it changes, so additions need no restart.
"""
from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.common.idnumber import parse_id_number
from services.identity.faces import encoding_from_bytes, face_distance
from services.identity.person_name import normalise_name
from services.identity.proofing import DISTANCE, CapturedFace, Claimant, FaceProof, IdentityCheck, level_for_face

PROVIDER = "registry"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    id_number: str
    photo: Path | None

    def __repr__(self) -> str:
        return "RegistryEntry(<personal data>)"


def read_registry(path: Path) -> dict[str, RegistryEntry]:
    """Entries by ID number. A malformed file or entry raises InvalidInput
    naming the entry (``registry.people.3.id_number``), never its values."""
    try:
        document = yaml.safe_load(path.read_text("utf-8")) or {}
    except FileNotFoundError:
        raise InvalidInput("proofing.registry_file", "missing", f"no registry file at {path}") from None
    except yaml.YAMLError:
        raise InvalidInput("proofing.registry_file", "yaml", "expected a YAML document") from None
    people = document.get("people") if isinstance(document, dict) else None
    if not isinstance(people, list):
        raise InvalidInput("registry.people", "list", "expected a list of people")
    entries: dict[str, RegistryEntry] = {}
    for index, item in enumerate(people):
        where = f"registry.people.{index}"
        if not isinstance(item, dict):
            raise InvalidInput(where, "mapping", "expected name, id_number and photo")
        try:
            name = normalise_name(str(item.get("name") or ""))
            number = parse_id_number(str(item.get("id_number") or "")).number
        except InvalidInput as exc:
            raise InvalidInput(f"{where}.{exc.field}", exc.rule, exc.message) from None
        photo = item.get("photo")
        photo_path = None
        if photo:
            photo_path = Path(str(photo))
            photo_path = photo_path if photo_path.is_absolute() else path.parent / photo_path
        if number in entries:
            raise InvalidInput(f"{where}.id_number", "unique", "an ID number may appear once")
        entries[number] = RegistryEntry(name, number, photo_path)
    return entries


def append_entry(path: Path, name: str, id_number: str, photo: str | None) -> RegistryEntry:
    """Add a person to the registry file (made if missing), atomically."""
    entries = read_registry(path) if path.exists() else {}
    entry = RegistryEntry(normalise_name(name), parse_id_number(id_number).number, Path(photo) if photo else None)
    if entry.id_number in entries:
        raise InvalidInput("id_number", "unique", "this ID number is in the registry already")
    document = yaml.safe_load(path.read_text("utf-8")) if path.exists() else None
    document = document if isinstance(document, dict) else {}
    document.setdefault("people", []).append(
        {"name": entry.name, "id_number": entry.id_number, "photo": str(entry.photo) if entry.photo else None})
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_suffix(".tmp")
    partial.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    os.chmod(partial, 0o600)  # ID numbers in clear, like the authority's own records
    os.replace(partial, path)
    return entry


class RegistryProofing:
    """IdentityProofing against a local registry file. ``encode(image, field)``
    turns an image into an encoding (as bytes) in the face worker pool."""

    name = PROVIDER
    max_level = AssuranceLevel.AUTHORITY_FACE_LIVENESS

    def __init__(self, path: Path, encode: Callable[[bytes, str], bytes], threshold: float):
        self.path = path
        self.threshold = threshold
        self._encode = encode
        self._guard = threading.Lock()
        self._loaded: tuple[float, dict[str, RegistryEntry]] | None = None
        self._references: dict[tuple[str, float], bytes] = {}

    def entries(self) -> dict[str, RegistryEntry]:
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            raise InvalidInput("proofing.registry_file", "missing", f"no registry file at {self.path}") from None
        with self._guard:
            if self._loaded is None or self._loaded[0] != stamp:
                self._loaded = (stamp, read_registry(self.path))
            return self._loaded[1]

    def _entry(self, claimant: Claimant) -> RegistryEntry:
        entry = self.entries().get(claimant.id_number)
        if entry is None:
            raise InvalidInput("id_number", "authority_no_record", "the registry holds no person with this ID number")
        if entry.name != claimant.name:
            raise InvalidInput("id_number", "authority_mismatch", "the name and the ID number do not belong together")
        return entry

    def verify_identity(self, claimant: Claimant) -> IdentityCheck:
        self._entry(claimant)
        return IdentityCheck(PROVIDER, _request_id(), AssuranceLevel.AUTHORITY_TWO_ELEMENT)

    def compare_face(self, claimant: Claimant, face: CapturedFace, id_portrait: bytes | None = None) -> FaceProof:
        entry = self._entry(claimant)
        reference = self._reference(entry)
        distance = face_distance(encoding_from_bytes(reference), encoding_from_bytes(face.encoding))
        return FaceProof(PROVIDER, _request_id(), distance, DISTANCE, self.threshold, distance < self.threshold,
                         level_for_face(True, face.live))

    def _reference(self, entry: RegistryEntry) -> bytes:
        if entry.photo is None or not entry.photo.is_file():
            raise InvalidInput("selfie", "authority_no_photo", "the registry holds no photo for this person")
        key = (str(entry.photo), entry.photo.stat().st_mtime)
        cached = self._references.get(key)
        if cached is None:
            try:
                cached = self._encode(entry.photo.read_bytes(), "reference_photo")
            except InvalidInput as exc:  # the authority's photo is unusable: not the person's fault
                raise InvalidInput("selfie", "authority_photo_unusable", exc.rule) from None
            self._references[key] = cached
        return cached


def _request_id() -> str:
    return f"registry-{uuid.uuid4()}"
