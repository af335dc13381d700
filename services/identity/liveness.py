"""Liveness: an active head-turn challenge checked with the 5-point landmark model.

The service issues a random ``Challenge`` (an alternating sequence of head
turns, e.g. turn_left then turn_right); the client films the person doing it
and sends a few frames or a short video; ``check`` decides whether the
challenge was performed by one face throughout.

How it decides, frame by frame, with dlib's 5-point shape predictor only (the
68-point model may not be used commercially):

* every frame must hold exactly one face, large enough to encode;
* the same identity throughout: the 128-d encoding of every frame within
  ``identity_threshold`` (0.6) of the first frame's;
* a yaw estimate per frame: the horizontal offset of the point below the nose
  from the midpoint of the two eyes, measured along the eye axis (so head
  roll does not count) and divided by the inter-eye distance (so distance to
  the camera does not count). 0 is frontal; positive means the nose points to
  the image's right, which is the person's left in an unmirrored camera image;
* the yaw trace is cut into swings of at least ``min_turn`` (0.25 inter-eye
  distances; a real person turning about 20–30 degrees swings 0.3–0.45 in the
  stage clip the tests use) and the swings, read as turns, must equal the
  challenge exactly, in order;
* a still picture sent again and again (every frame the same picture) fails,
  and so does a frame that is the mirror image of another (a flipped photo
  fakes the opposite turn).

What this stops: replaying one still photo or a few copies of it (no swing),
naive mirrored copies of a photo, and sequences where the face changes to
someone else's. What it does NOT stop: a replayed or live-relayed video of the
person turning (the challenge space is small: two directions to start and two
or three turns, so a recording of the right pattern has a fair chance), a
photo moved or bent in front of the camera (it can give a yaw swing), a 3D
mask, a deepfake or face re-enactment rendering any head turn from one
photo, or frames injected through a virtual camera. Nodding is not offered:
with 5 points pitch shows only as the nose point's distance below the eye
line, whose frontal value differs by person and camera height, so a nod
cannot be told from the person's resting pose. Blinks and mouth movement need
the 68-point model. That is why the engine sits behind ``LivenessEngine``: a
certified vendor service (presentation attack detection to ISO/IEC 30107-3)
can replace it by configuration. The challenge's expiry and single use are
the service's job: it stores the challenge it issued.
"""
from __future__ import annotations

import io
import secrets
from dataclasses import dataclass, field
from random import Random
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from services.common.errors import InvalidInput
from services.identity.faces import DlibFaceEngine, FaceSettings, face_distance

TURN_LEFT = "turn_left"
TURN_RIGHT = "turn_right"
ACTIONS = (TURN_LEFT, TURN_RIGHT)

#: per-frame failures that mean "no usable face here", reported as reasons rather than raised
_FACE_RULES = ("no_face", "multiple_faces", "face_too_small")

#: containers (leading bytes) and codecs accepted for a selfie video; ffmpeg decodes much more,
#: and every extra demuxer/decoder is attack surface for untrusted uploads
_VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1"})


@dataclass(frozen=True)
class VideoLimits:
    """What an uploaded selfie video may be."""

    max_bytes: int = 20 * 1024 * 1024
    max_seconds: float = 15.0
    max_pixels: int = 1920 * 1080
    #: frames decoded before giving up, whatever the declared duration says
    max_decoded_frames: int = 1000


@dataclass(frozen=True)
class LivenessSettings:
    face: FaceSettings = field(default_factory=FaceSettings)
    identity_threshold: float = 0.6
    #: smallest yaw swing (in inter-eye distances) counted as a turn
    min_turn: float = 0.25
    min_frames: int = 3
    max_frames: int = 20
    min_actions: int = 2
    max_actions: int = 3
    #: the client sends selfie-preview (mirrored) frames: image right is then the person's right
    mirrored_input: bool = False
    #: mean absolute grey difference (0–255, on 64x64 thumbnails) below which two frames are one picture
    same_picture_mad: float = 2.0
    video: VideoLimits = field(default_factory=VideoLimits)


@dataclass(frozen=True)
class Challenge:
    """The ordered head turns the person is asked to perform."""

    actions: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.actions or any(a not in ACTIONS for a in self.actions):
            raise InvalidInput("challenge", "actions", f"expected a non-empty sequence of {ACTIONS}")
        if any(a == b for a, b in zip(self.actions, self.actions[1:], strict=False)):
            raise InvalidInput("challenge", "alternating", "expected turns alternating in direction")

    def to_dict(self) -> dict:
        return {"actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data: dict) -> "Challenge":
        return cls(actions=tuple(data["actions"]))


@dataclass(frozen=True)
class LivenessResult:
    """Outcome of one liveness check. ``encoding`` is the live face: the mean of every frame's
    encoding (a mean over a dozen frames is steadier than any one of them: measured on the stage
    clip, 0.31 to a reference photo where single frames gave 0.43-0.56). It is personal data, left
    out of ``to_audit`` and ``repr``. ``best_frame`` is the index of the most frontal frame with a
    face, the one sent to a remote authority as the selfie."""

    passed: bool
    reasons: tuple[str, ...]
    challenge: tuple[str, ...]
    observed: tuple[str, ...]
    yaws: tuple[float | None, ...]
    identity_distance_max: float | None
    encoding: np.ndarray | None = field(default=None, repr=False, compare=False)
    best_frame: int | None = None

    def to_audit(self) -> dict:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "challenge": list(self.challenge),
            "observed": list(self.observed),
            "yaws": [None if y is None else round(y, 3) for y in self.yaws],
            "identity_distance_max": self.identity_distance_max,
        }


class LivenessEngine(Protocol):
    """What the identity service needs from a liveness check (this module, or a vendor)."""

    def new_challenge(self, rng: Random | None = None) -> Challenge:
        """A fresh random challenge to show the person."""

    def check(self, challenge: Challenge, frames: Sequence[bytes | np.ndarray]) -> LivenessResult:
        """Judge frames (image bytes or RGB arrays, in time order) against the challenge."""

    def check_video(self, challenge: Challenge, video: bytes) -> LivenessResult:
        """Judge a short video against the challenge."""


def yaw_estimate(landmarks: np.ndarray) -> float:
    """Nose offset from the eye midpoint along the eye axis, in inter-eye distances.

    ``landmarks`` are dlib's 5 points: 0-1 the image-right eye's corners, 2-3 the
    image-left eye's, 4 the point below the nose. Positive: nose toward image right.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    left_eye = points[2:4].mean(axis=0)
    right_eye = points[0:2].mean(axis=0)
    axis = right_eye - left_eye
    spacing = float(np.hypot(*axis))
    if spacing == 0.0:
        raise ValueError("degenerate landmarks: both eyes at one point")
    offset = points[4] - (left_eye + right_eye) / 2
    return float(np.dot(offset, axis / spacing) / spacing)


def yaw_swings(yaws: Sequence[float], min_turn: float) -> list[int]:
    """Directions (+1 up, -1 down) of the successive swings of at least ``min_turn``.

    A zigzag filter: a swing ends where the trace turns back by ``min_turn`` or
    more, so jitter smaller than that never counts and a turn that passes through
    frontal into the other side counts once.
    """
    swings: list[int] = []
    if not yaws:
        return swings
    low = high = yaws[0]
    direction = 0
    for value in yaws[1:]:
        if direction == 0:
            if value - low >= min_turn:
                direction, high = 1, value
                swings.append(1)
            elif high - value >= min_turn:
                direction, low = -1, value
                swings.append(-1)
            else:
                low, high = min(low, value), max(high, value)
        elif direction == 1:
            if value > high:
                high = value
            elif high - value >= min_turn:
                direction, low = -1, value
                swings.append(-1)
        else:
            if value < low:
                low = value
            elif value - low >= min_turn:
                direction, high = 1, value
                swings.append(1)
    return swings


def read_video_frames(video: bytes, count: int, limits: VideoLimits = VideoLimits()) -> list[np.ndarray]:
    """Decode a short MP4/MOV or WebM video and return ``count`` frames spread evenly over it.

    Uses PyAV (the ``av`` wheel ships its own ffmpeg libraries).
    """
    import av  # imported here: only video checks need ffmpeg

    if count < 1:
        raise ValueError("count must be at least 1")
    if not isinstance(video, (bytes, bytearray, memoryview)):
        raise InvalidInput("video", "not_a_video", f"expected video bytes, found {type(video).__name__}")
    if len(video) > limits.max_bytes:
        raise InvalidInput("video", "max_bytes", f"expected at most {limits.max_bytes} bytes, found {len(video)}")
    video = bytes(video)
    container_format = _sniff_video(video)
    if container_format is None:
        raise InvalidInput("video", "not_a_video", "expected an MP4/MOV or WebM video, found other content")
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(video), mode="r", format=container_format) as container:
            if not container.streams.video:
                raise InvalidInput("video", "no_video_stream", "expected a video stream, found none")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            if codec not in _VIDEO_CODECS:
                raise InvalidInput("video", "codec", f"expected one of {sorted(_VIDEO_CODECS)}, found {codec}")
            seconds = _duration_seconds(container, stream)
            if seconds is None:
                raise InvalidInput("video", "duration", "expected a video with a declared duration, found none")
            if seconds > limits.max_seconds:
                raise InvalidInput("video", "max_seconds",
                                   f"expected at most {limits.max_seconds} s, found {seconds:.1f} s")
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            targets = [seconds * (k + 0.5) / count for k in range(count)]
            decoded = 0
            for frame in container.decode(stream):
                decoded += 1
                if decoded > limits.max_decoded_frames:
                    raise InvalidInput("video", "max_frames",
                                       f"expected at most {limits.max_decoded_frames} frames, found more")
                if frame.width * frame.height > limits.max_pixels:
                    raise InvalidInput("video", "max_pixels",
                                       f"expected at most {limits.max_pixels} pixels a frame, "
                                       f"found {frame.width}x{frame.height}")
                at = (float(frame.time) - start) if frame.time is not None else None
                if at is None or at < targets[0]:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                while targets and targets[0] <= at:
                    targets.pop(0)
                if not targets:
                    break
    except av.FFmpegError as exc:
        raise InvalidInput("video", "corrupt_video",
                           f"expected a decodable video, found {type(exc).__name__}") from None
    if not frames:
        raise InvalidInput("video", "no_frames", "expected decodable frames, found none")
    return frames


def _sniff_video(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "mp4"  # ffmpeg's mov/mp4 demuxer
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    return None


def _duration_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


class LandmarkLivenessEngine:
    """LivenessEngine on dlib's 5-point landmarks and face encodings. Safe to share between threads."""

    def __init__(self, settings: LivenessSettings = LivenessSettings(), faces: DlibFaceEngine | None = None) -> None:
        if settings.min_actions < 1 or settings.max_actions < settings.min_actions:
            raise ValueError("need 1 <= min_actions <= max_actions")
        self.settings = settings
        self.faces = faces if faces is not None else DlibFaceEngine(settings.face)

    def new_challenge(self, rng: Random | None = None) -> Challenge:
        rng = rng if rng is not None else secrets.SystemRandom()
        length = rng.randint(self.settings.min_actions, self.settings.max_actions)
        first = rng.randrange(2)
        return Challenge(actions=tuple(ACTIONS[(first + k) % 2] for k in range(length)))

    def check_video(self, challenge: Challenge, video: bytes) -> LivenessResult:
        frames = read_video_frames(video, self.settings.max_frames, self.settings.video)
        return self.check(challenge, frames)

    def check(self, challenge: Challenge, frames: Sequence[bytes | np.ndarray]) -> LivenessResult:
        settings = self.settings
        if isinstance(frames, (bytes, bytearray, str)):
            raise InvalidInput("frames", "sequence", "expected a sequence of frames, found one value")
        if not settings.min_frames <= len(frames) <= settings.max_frames:
            raise InvalidInput(
                "frames", "count",
                f"expected {settings.min_frames} to {settings.max_frames} frames, found {len(frames)}",
            )
        reasons: list[str] = []
        yaws: list[float | None] = []
        encodings: list[np.ndarray] = []
        thumbnails: list[np.ndarray] = []
        for index, frame in enumerate(frames):
            name = f"frames[{index}]"
            pixels = self.faces.pixels(frame, name)  # decode once; InvalidInput for bad images
            thumbnails.append(_thumbnail(pixels))
            try:
                seen = self.faces.observe(pixels, name)
            except InvalidInput as exc:
                if exc.rule not in _FACE_RULES:
                    raise
                _add(reasons, exc.rule)
                yaws.append(None)
                continue
            yaws.append(yaw_estimate(seen.landmarks))
            encodings.append(seen.encoding)

        distance_max = None
        if encodings:
            distance_max = max((face_distance(encodings[0], e) for e in encodings[1:]), default=0.0)
            if distance_max >= settings.identity_threshold:
                _add(reasons, "identity_changed")

        if all(_mad(thumbnails[0], t) < settings.same_picture_mad for t in thumbnails[1:]):
            _add(reasons, "static_frames")
        if _has_mirrored_pair(thumbnails, settings.same_picture_mad):
            _add(reasons, "mirrored_frames")

        traced = [y for y in yaws if y is not None]
        observed = tuple(self._action(d) for d in yaw_swings(traced, settings.min_turn))
        if not observed:
            _add(reasons, "no_motion")
        elif observed != challenge.actions:
            _add(reasons, "challenge_not_performed")

        return LivenessResult(
            passed=not reasons,
            reasons=tuple(reasons),
            challenge=challenge.actions,
            observed=observed,
            yaws=tuple(yaws),
            identity_distance_max=distance_max,
            encoding=np.mean(encodings, axis=0) if encodings else None,
            best_frame=min((i for i, y in enumerate(yaws) if y is not None), key=lambda i: abs(yaws[i]), default=None),
        )

    def _action(self, direction: int) -> str:
        # nose toward image right is the person's left, unless the client mirrored the frames
        toward_person_left = direction > 0 if not self.settings.mirrored_input else direction < 0
        return TURN_LEFT if toward_person_left else TURN_RIGHT


def _add(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)


def _thumbnail(pixels: np.ndarray) -> np.ndarray:
    """64x64 grey copy of the whole frame, for telling repeated or mirrored pictures apart."""
    grey = Image.fromarray(pixels).convert("L").resize((64, 64), Image.BILINEAR)
    return np.asarray(grey, dtype=np.float32)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a - b)))


def _has_mirrored_pair(thumbnails: Sequence[np.ndarray], limit: float) -> bool:
    flipped = [t[:, ::-1] for t in thumbnails]
    return any(
        _mad(flipped[i], thumbnails[j]) < limit
        for i in range(len(thumbnails))
        for j in range(i + 1, len(thumbnails))
    )
