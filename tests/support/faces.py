"""Where the real face photos and the video for tests live.

The face_recognition project's test photos (obama, obama2, obama3 = one
person; biden = another) and its short stage clip are read from the shared
data folder, ``$ESIGN_FACES_DIR`` or ``<repo>/../shared/data/faces``. Where
that folder is absent, the four photos are taken from the face-recognition
1.3.0 source distribution on PyPI (its ``tests/test_images``), downloaded once
with pip into ``<repo>/.cache/faces`` (git-ignored). Images are never copied
into the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SHARED_DIR = REPO_ROOT.parent / "shared" / "data" / "faces"
CACHE_DIR = REPO_ROOT / ".cache" / "faces"

PHOTO_NAMES = ("obama", "obama2", "obama3", "biden")
VIDEO_NAME = "short_clip.mp4"


def shared_dir() -> Path:
    """The shared fixtures folder (it may not exist)."""
    configured = os.environ.get("ESIGN_FACES_DIR")
    return Path(configured) if configured else DEFAULT_SHARED_DIR


def face_path(name: str) -> Path:
    """Path of the real photo ``name`` (one of PHOTO_NAMES), without extension."""
    if name not in PHOTO_NAMES:
        raise ValueError(f"unknown face fixture {name!r}; expected one of {PHOTO_NAMES}")
    shared = shared_dir() / f"{name}.jpg"
    if shared.is_file():
        return shared
    cached = CACHE_DIR / f"{name}.jpg"
    if not cached.is_file():
        _fill_cache_from_sdist()
    return cached


def video_path() -> Path | None:
    """Path of the real stage clip, or None: it exists only in the shared folder."""
    path = shared_dir() / VIDEO_NAME
    return path if path.is_file() else None


def _fill_cache_from_sdist() -> None:
    """Download the sdist with pip (PyPI verifies its hash) and extract the photos."""
    from services.identity.proofing.demo import fetch_sdist_photos

    fetch_sdist_photos(PHOTO_NAMES, CACHE_DIR)


# --- one detection per picture in a test process ---

#: (the settings that change what is seen, shape, sha-256 of the pixels) -> what observe() answered:
#: the observation or the InvalidInput (whose field is the asking call's: what dlib sees does not
#: depend on the name of the image, and observe's refusals name it only in their field)
_OBSERVED: dict[tuple, object] = {}
#: the one set of dlib models the remembering engines of this process share (each engine loading its
#: own costs about 0.6 s of CPU; the models are read-only, the settings only change how they are used)
_SHARED_MODELS: list = []


def remembering_face_engine(settings=None):
    """A DlibFaceEngine that runs dlib once per distinct picture (and settings) in this
    process and answers later calls on the same pixels from memory: tests that judge matches or
    liveness on the same photos need not detect the same faces again. Results are dlib's own,
    refusals included; only tests about detection itself (its threads, its settings) want a plain
    engine. These engines share one set of models, loaded once in the process."""
    import hashlib

    import numpy as np

    from services.common.errors import InvalidInput
    from services.identity.faces import DlibFaceEngine, FaceSettings, _ModelPool

    class RememberingFaceEngine(DlibFaceEngine):
        def __init__(self, settings):
            super().__init__(settings)
            if not _SHARED_MODELS:
                _SHARED_MODELS.append(_ModelPool(FaceSettings().model_instances))
            self._pool = _SHARED_MODELS[0]

        def observe(self, image, field):
            pixels = self.pixels(image, field)
            seeing = (self.settings.image, self.settings.min_face_px, self.settings.detect_max_side)  # not threshold
            key = (seeing, pixels.shape, hashlib.sha256(np.ascontiguousarray(pixels)).digest())
            if key not in _OBSERVED:
                try:
                    _OBSERVED[key] = super().observe(pixels, field)
                except InvalidInput as refused:
                    _OBSERVED[key] = refused
            answer = _OBSERVED[key]
            if isinstance(answer, InvalidInput):
                raise InvalidInput(field, answer.rule, answer.message)
            return answer

    return RememberingFaceEngine(settings if settings is not None else FaceSettings())
