"""Face check: compare an ID-card portrait with a selfie.

Implements the face-match step of real-name registration with the models and
maths of face_recognition 1.3.0 (dlib's HOG frontal face detector, its
5-point shape predictor and its ResNet face-recognition model; the
Euclidean distance of two 128-d encodings, "same person" below a threshold,
0.6 by default). The 68-point landmark model is never loaded: it may not be
used commercially.

Untrusted image bytes are decoded defensively before any model sees them:
a byte limit, the real format checked by content (JPEG, PNG or WebP magic
bytes, then Pillow restricted to that one decoder), a pixel limit read from
the header before pixel data is decoded (Pillow's decompression-bomb error
is mapped to the same rule), a minimum size, and the EXIF orientation applied.
Every rejection is an ``InvalidInput`` naming the image (``id_portrait``,
``selfie``, ``frames[3]``) and a stable rule id; messages say expected vs
found and never carry image content.

Concurrency: the service calls these CPU-heavy functions in OS threads
(``eventlet.tpool``). dlib's detector and recognition network may not be used
by two threads at once, so each engine leases whole model sets from a small
pool guarded by the OS's own lock (a green lock cannot block an OS thread).
There is no other mutable state. Measured: dlib releases the GIL while
detecting but holds it for the ~75 ms of each encoding, so even in a tpool
thread an encoding pauses the hub for that long.

Very large images are downscaled for detection only (longest side
``detect_max_side``, 800 px by default) and landmarks and encodings are taken
from the full image. Measured on the four reference photos: detection 90–160 ms
instead of 225–1080 ms, same-person distances moved by at most 0.03 and
different-person by at most 0.02 against full-resolution detection.
"""
from __future__ import annotations

import io
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common.errors import InvalidInput

try:  # OS-level primitives even when eventlet has monkey-patched threading
    from eventlet.patcher import original as _original

    _os_threading = _original("threading")
except ImportError:  # pragma: no cover - eventlet is always installed here
    import threading as _os_threading

ENCODING_SIZE = 128
DEFAULT_THRESHOLD = 0.6

#: leading bytes of each accepted container, checked before Pillow sees the data
_SIGNATURES = (
    ("JPEG", lambda b: b[:3] == b"\xff\xd8\xff"),
    ("PNG", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n"),
    ("WEBP", lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP"),
)


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded face image may be."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 16_000_000  # as attachments: one RGB copy is 46 MiB
    min_side: int = 128


@dataclass(frozen=True)
class FaceSettings:
    """Face-check settings; ``threshold`` is the largest distance still judged the same person."""

    threshold: float = DEFAULT_THRESHOLD
    image: ImageLimits = field(default_factory=ImageLimits)
    #: smallest face box side in pixels of the full image; smaller faces give unreliable encodings
    min_face_px: int = 80
    #: longest image side used for detection; faces under ~40 px at that scale are not found
    detect_max_side: int = 800
    #: how many model sets may run at once (each holds ~30 MB); about the number of cores
    model_instances: int = 2


@dataclass(frozen=True)
class FaceMatch:
    """Outcome of one comparison, as kept in the audit record."""

    distance: float
    threshold: float
    matched: bool


@dataclass(frozen=True)
class FaceObservation:
    """The single face found in one image. Personal data: keep in memory only."""

    box: tuple[int, int, int, int]  # left, top, right, bottom in full-image pixels
    landmarks: np.ndarray  # (5, 2) float: 0-1 image-right eye corners, 2-3 image-left eye corners, 4 below the nose
    encoding: np.ndarray  # (128,) float64


class FaceEngine(Protocol):
    """What the identity service needs from a face-matching engine (dlib here, a vendor elsewhere)."""

    threshold: float

    def encode(self, image: bytes | np.ndarray, field: str) -> np.ndarray:
        """The encoding of the one face in ``image``; InvalidInput names ``field`` otherwise."""

    def compare_encodings(self, a: np.ndarray, b: np.ndarray) -> FaceMatch:
        """Distance and decision for two encodings from this engine."""

    def compare(self, id_portrait: bytes, selfie: bytes) -> FaceMatch:
        """Compare the ID-card portrait with a selfie."""


def sniff_format(data: bytes) -> str | None:
    """The container format named by the leading bytes, or None if not one we accept."""
    for name, matches in _SIGNATURES:
        if matches(data):
            return name
    return None


def decode_image(data: bytes, field: str, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Decode untrusted bytes into an upright RGB ``uint8`` array of shape (h, w, 3)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput(field, "not_an_image", f"expected image bytes, found {type(data).__name__}")
    size = len(data)
    if size > limits.max_bytes:
        raise InvalidInput(field, "max_bytes", f"expected at most {limits.max_bytes} bytes, found {size}")
    data = bytes(data)
    fmt = sniff_format(data)
    if fmt is None:
        raise InvalidInput(field, "not_an_image", "expected a JPEG, PNG or WebP image, found other content")
    try:
        with Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
            width, height = opened.size  # from the header; no pixel data decoded yet
            if width * height > limits.max_pixels:
                raise InvalidInput(
                    field, "max_pixels",
                    f"expected at most {limits.max_pixels} pixels, found {width}x{height}",
                )
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = upright.convert("RGB")
    except Image.DecompressionBombError:
        # Pillow refuses before we could read the size (over twice its own limit)
        raise InvalidInput(field, "max_pixels", f"expected at most {limits.max_pixels} pixels, found more") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(field, "corrupt_image",
                           f"expected a decodable {fmt} image, found {type(exc).__name__}") from None
    if min(rgb.size) < limits.min_side:
        raise InvalidInput(
            field, "min_size",
            f"expected both sides at least {limits.min_side} px, found {rgb.size[0]}x{rgb.size[1]}",
        )
    return np.asarray(rgb, dtype=np.uint8)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two encodings (face_recognition's ``face_distance``)."""
    return float(np.linalg.norm(_checked_encoding(a, "a") - _checked_encoding(b, "b")))


def encoding_to_bytes(encoding: np.ndarray) -> bytes:
    """Serialise an encoding (1024 bytes, little-endian float64) for encrypted storage."""
    return _checked_encoding(encoding, "encoding").astype("<f8").tobytes()


def encoding_from_bytes(data: bytes) -> np.ndarray:
    """Inverse of ``encoding_to_bytes``."""
    expected = ENCODING_SIZE * 8
    if len(data) != expected:
        raise InvalidInput("encoding", "length", f"expected {expected} bytes, found {len(data)}")
    return _checked_encoding(np.frombuffer(data, dtype="<f8").astype(np.float64), "encoding")


def _checked_encoding(value: np.ndarray, field: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (ENCODING_SIZE,):
        raise InvalidInput(field, "shape", f"expected a {ENCODING_SIZE}-value encoding, found shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InvalidInput(field, "finite", "expected finite values, found NaN or infinity")
    return array


class _DlibModels:
    """One set of dlib models; only one thread may use a set at a time."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as paths

        self.detector = dlib.get_frontal_face_detector()  # HOG, face_recognition's model="hog"
        self.shape = dlib.shape_predictor(paths.pose_predictor_five_point_model_location())
        self.recognition = dlib.face_recognition_model_v1(paths.face_recognition_model_location())
        self.rectangle = dlib.rectangle


class _ModelPool:
    """At most ``size`` model sets, created on first need and lent to one thread at a time."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("model_instances must be at least 1")
        self._size = size
        self._created = 0
        self._free: list[_DlibModels] = []
        self._guard = _os_threading.Condition(_os_threading.Lock())

    @contextmanager
    def lease(self) -> Iterator[_DlibModels]:
        with self._guard:
            while not self._free and self._created >= self._size:
                self._guard.wait()
            models = self._free.pop() if self._free else None
            if models is None:
                self._created += 1
        if models is None:
            try:
                models = _DlibModels()  # loading takes ~0.5 s; not under the lock
            except BaseException:
                with self._guard:
                    self._created -= 1
                    self._guard.notify()
                raise
        try:
            yield models
        finally:
            with self._guard:
                self._free.append(models)
                self._guard.notify()


class DlibFaceEngine:
    """FaceEngine on dlib through face_recognition's models. Safe to share between threads."""

    def __init__(self, settings: FaceSettings = FaceSettings()) -> None:
        if not 0 < settings.threshold < 2:
            raise ValueError("threshold must lie in (0, 2), the range of encoding distances")
        self.settings = settings
        self.threshold = settings.threshold
        self._pool = _ModelPool(settings.model_instances)

    def observe(self, image: bytes | np.ndarray, field: str) -> FaceObservation:
        """Find exactly one large-enough face and describe it (box, 5 landmarks, encoding)."""
        pixels = self.pixels(image, field)
        detect_pixels, scale = _detection_copy(pixels, self.settings.detect_max_side)
        with self._pool.lease() as models:
            # one upsample, as face_recognition's face_locations: finds faces from ~40 px
            found = list(models.detector(detect_pixels, 1))
            if not found:
                raise InvalidInput(field, "no_face", "expected exactly one face, found none")
            if len(found) > 1:
                raise InvalidInput(field, "multiple_faces", f"expected exactly one face, found {len(found)}")
            rect = found[0]
            box = (
                int(round(rect.left() / scale)), int(round(rect.top() / scale)),
                int(round(rect.right() / scale)), int(round(rect.bottom() / scale)),
            )
            side = min(box[2] - box[0], box[3] - box[1])
            if side < self.settings.min_face_px:
                raise InvalidInput(
                    field, "face_too_small",
                    f"expected a face at least {self.settings.min_face_px} px wide, found {side} px",
                )
            shape = models.shape(pixels, models.rectangle(*box))
            # num_jitters=1: face_recognition's default; more jitters cost that many times the time
            encoding = np.array(models.recognition.compute_face_descriptor(pixels, shape, 1), dtype=np.float64)
        landmarks = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=np.float64)
        return FaceObservation(box=box, landmarks=landmarks, encoding=encoding)

    def encode(self, image: bytes | np.ndarray, field: str) -> np.ndarray:
        return self.observe(image, field).encoding

    def compare_encodings(self, a: np.ndarray, b: np.ndarray) -> FaceMatch:
        distance = face_distance(a, b)
        return FaceMatch(distance=distance, threshold=self.threshold, matched=distance < self.threshold)

    def compare(self, id_portrait: bytes, selfie: bytes) -> FaceMatch:
        return self.compare_encodings(self.encode(id_portrait, "id_portrait"), self.encode(selfie, "selfie"))

    def pixels(self, image: bytes | np.ndarray, field: str) -> np.ndarray:
        """Image bytes decoded safely, or an RGB array checked against the same limits."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise InvalidInput(field, "pixel_format",
                                   f"expected an RGB uint8 array, found {image.dtype} {image.shape}")
            limits = self.settings.image
            height, width = image.shape[:2]
            if height * width > limits.max_pixels:
                raise InvalidInput(field, "max_pixels",
                                   f"expected at most {limits.max_pixels} pixels, found {width}x{height}")
            if min(height, width) < limits.min_side:
                raise InvalidInput(field, "min_size",
                                   f"expected both sides at least {limits.min_side} px, found {width}x{height}")
            return np.ascontiguousarray(image)
        return decode_image(image, field, self.settings.image)


def _detection_copy(pixels: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy no longer than ``max_side`` for the detector, and the scale applied."""
    height, width = pixels.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return pixels, 1.0
    scale = max_side / longest
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    smaller = Image.fromarray(pixels).resize(size, Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(smaller), size[0] / width
