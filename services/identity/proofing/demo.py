"""The demo registry ``esign up`` writes on a fresh machine, so a newcomer has
an "authority" to register against.

Its people are synthetic (made-up names, ID numbers valid under GB 11643's
check character, born on 1 January 1990 in Beijing's Dongcheng district)
and their reference photos are the example photos the face_recognition
project publishes in its source distribution on PyPI (``face-recognition
1.3.0``, ``tests/test_images/``), downloaded once with pip, which checks the
archive's hash. Nothing is copied into the repository.

A demo person's face can be proved only by showing that face to the camera,
so to sign yourself, add yourself with your own photo::

    esign registry add --name 张三 --id-number <18 characters> --photo me.jpg
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from services.common.idnumber import check_character
from services.common.masking import mask_id_number, mask_name
from services.identity.proofing.registry import append_entry, read_registry

SDIST_REQUIREMENT = "face-recognition==1.3.0"
SDIST_ARCHIVE = "face_recognition-1.3.0.tar.gz"
SDIST_IMAGE_DIR = "face_recognition-1.3.0/tests/test_images/"

#: (name, first 17 characters of the ID number, example photo)
DEMO_PEOPLE = (("演示甲", "11010119900101001", "obama"), ("演示乙", "11010119900101002", "biden"))


def fetch_sdist_photos(names, cache_dir: Path) -> dict[str, Path]:
    """The example photos ``names`` (obama, obama2, obama3, biden) from the
    face-recognition sdist, downloaded into ``cache_dir`` once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: cache_dir / f"{name}.jpg" for name in names}
    if all(path.is_file() for path in paths.values()):
        return paths
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        SDIST_REQUIREMENT, "-d", work], check=True, capture_output=True)
        with tarfile.open(Path(work) / SDIST_ARCHIVE) as tar:
            for name, path in paths.items():
                data = tar.extractfile(tar.getmember(f"{SDIST_IMAGE_DIR}{name}.jpg")).read()
                partial = Path(work) / f"{name}.jpg"
                partial.write_bytes(data)
                os.replace(partial, path)  # write then rename: a concurrent reader never sees half a file
    return paths


def demo_people() -> list[tuple[str, str, str]]:
    return [(name, body + check_character(body), photo) for name, body, photo in DEMO_PEOPLE]


def ensure_demo_registry(path: Path, cache_dir: Path) -> list[str]:
    """Write the demo registry at ``path`` unless a registry is there; answers
    lines telling the newcomer who is in it and how to add themselves."""
    lines = []
    if not path.exists():
        try:
            photos = fetch_sdist_photos([photo for _, _, photo in DEMO_PEOPLE], cache_dir)
        except (OSError, subprocess.CalledProcessError, tarfile.TarError, KeyError) as exc:
            photos = {}
            lines.append(f"(the demo photos could not be fetched from PyPI: {type(exc).__name__}; "
                         "the demo people have no photo)")
        for name, id_number, photo in demo_people():
            append_entry(path, name, id_number, str(photos[photo]) if photo in photos else None)
    entries = read_registry(path)
    synthetic = {id_number for _, id_number, _ in demo_people()}
    lines.insert(0, f"identity registry (the local authority): {path}")
    for entry in entries.values():
        photo = entry.photo.name if entry.photo else "no photo"
        # the demo's numbers are made up; anyone else's is personal data and stays masked
        shown = entry.id_number if entry.id_number in synthetic else mask_id_number(entry.id_number)
        name = entry.name if entry.id_number in synthetic else mask_name(entry.name)
        lines.append(f"    {name}  {shown}  ({photo})")
    lines.append("  to register and sign yourself, add yourself with your own photo:")
    lines.append("    .venv/bin/esign registry add --name 张三 --id-number <your 18 characters> --photo me.jpg")
    return lines
