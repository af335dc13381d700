"""Test registries for the ``registry`` identity-proofing provider: the local
authority's people and their reference photos (real photos from the shared
faces folder, or a frame of the stage clip), written into a test's folder."""
from __future__ import annotations

from pathlib import Path

import yaml

from tests.support import liveness_clip
from tests.support.faces import face_path

#: the performer of the stage clip (tests/support/liveness_clip.py): the one face tests can show live
PERFORMER = "performer"


def photo_bytes(face: str) -> bytes:
    """A reference photo: ``performer`` (the clip's frame 176) or a photo name (obama, biden ...)."""
    return liveness_clip.reference_photo() if face == PERFORMER else face_path(face).read_bytes()


def write_registry(folder: Path, people) -> Path:
    """``people``: (name, id_number, face or None). Answers the registry file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, (name, id_number, face) in enumerate(people):
        photo = None
        if face is not None:
            photo = f"photo-{index}.jpg"
            (folder / photo).write_bytes(photo_bytes(face))
        entries.append({"name": name, "id_number": id_number, "photo": photo})
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump({"people": entries}, allow_unicode=True), "utf-8")
    return path
