"""The demo registry ``esign up`` writes on a fresh machine, so a newcomer has
an "authority" to register against.

Its people are synthetic (made-up names, ID numbers valid under GB 11643's
check character, born on 1 January 1990 in Beijing's Dongcheng district)
and their reference photos are the example photos the face_recognition
project publishes in its source distribution on PyPI (``face-recognition
1.3.0``, ``tests/test_images/``), downloaded once with pip, which checks the
archive's hash, and kept in the user's download cache (``~/.cache/esign``) for the next data directory.
Nothing is copied into the repository.

A demo person's face can be proved only by showing that face to the camera,
so to sign yourself, add yourself with your own photo::

    esign registry add --name 张三 --id-number <18 characters> --photo me.jpg
"""
from __future__ import annotations

import hashlib
import os
import shutil
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
#: the archive's SHA-256 as PyPI's index lists it (pip checks the index's hash when it downloads;
#: this checks the machine's cached copy and what pip put down)
SDIST_SHA256 = "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec"

#: (name, first 17 characters of the ID number, example photo)
DEMO_PEOPLE = (("演示甲", "11010119900101001", "obama"), ("演示乙", "11010119900101002", "biden"))


def download_cache() -> Path:
    """Where downloads shared by every data directory of this machine's user are kept (as pip keeps its
    own): ``ESIGN_DOWNLOAD_CACHE``, else ``$XDG_CACHE_HOME/esign``, else ``~/.cache/esign``. Nothing
    there is state: each data directory keeps its own copy of what it uses."""
    configured = os.environ.get("ESIGN_DOWNLOAD_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "esign"


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _sdist_archive(work: Path) -> Path:
    """The face_recognition sdist: the machine's copy when its hash is the one PyPI lists, else
    downloaded with pip into ``work`` (and kept in :func:`download_cache` for the next data directory:
    ``pip download`` alone took 2.3 s of every fresh ``esign up``)."""
    cached = download_cache() / SDIST_ARCHIVE
    if cached.is_file() and _sha256(cached) == SDIST_SHA256:
        return cached
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    SDIST_REQUIREMENT, "-d", str(work)], check=True, capture_output=True)
    archive = work / SDIST_ARCHIVE
    if _sha256(archive) != SDIST_SHA256:
        raise tarfile.TarError(f"{SDIST_ARCHIVE} does not have the SHA-256 PyPI lists for it")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        shutil.copyfile(archive, partial)
        os.replace(partial, cached)  # write then rename: another process never reads half of it
    except OSError:  # a read-only home: the next data directory downloads it again
        pass
    return archive


def fetch_sdist_photos(names, cache_dir: Path) -> dict[str, Path]:
    """The example photos ``names`` (obama, obama2, obama3, biden) from the
    face-recognition sdist, extracted into ``cache_dir`` once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: cache_dir / f"{name}.jpg" for name in names}
    if all(path.is_file() for path in paths.values()):
        return paths
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        with tarfile.open(_sdist_archive(Path(work))) as tar:
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
