"""A live person turning their head, for liveness tests: frames of the real
stage clip (face_recognition's short_hamilton_clip.mp4, read from the shared
faces folder, never copied into the repository).

Frames 96-159 of the clip show one performer turning from frontal to their
right (yaw about -0.37 at frame 135) and back past frontal to their left
(about +0.10 at frame 159); frames 168-180 show the same performer frontal
again. Their faces are 75-107 px wide in a 640x360 stage shot, so every frame
used here is the region around the performer (x 120-440, y 0-240) scaled 2x
(faces 150-210 px, as in a phone selfie).

* :func:`frames_for` gives frames that perform any challenge the service
  issues (two or three alternating turns): the turn as filmed, its mirror
  image for the opposite directions (every frame mirrored: one consistent
  picture, not a mirrored pair), and the way back for a third turn. This is a
  person performing what they were asked, as the client sends it.
* :func:`reference_photo` is a frame outside the turn (frame 176), used as the
  authority's ID photo of this performer in test registries.

Measured (2x crops, mean encoding of the live frames against frame 176):
distance 0.31; the same performer's frames among themselves up to ~0.6.
"""
from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image

from tests.support.faces import video_path

# frontal -> their right (yaw -0.37 at 135) -> their left (+0.10 at 159); 113-119 are blurred (no face found)
TURN = (96, 102, 108, 112, 120, 126, 131, 135, 140, 146, 152, 159)
BACK = (159, 152, 146, 140, 135)  # their left -> their right again, for a third turn
REFERENCE_FRAME = 176
CROP = (120, 0, 440, 240)  # left, top, right, bottom in the clip's pixels
SCALE = 2

TURN_LEFT, TURN_RIGHT = "turn_left", "turn_right"


def available() -> bool:
    return video_path() is not None


@cache
def _clip_frames() -> dict[int, np.ndarray]:
    import av

    path = video_path()
    if path is None:
        raise FileNotFoundError("short_clip.mp4 exists only in the shared faces folder (ESIGN_FACES_DIR)")
    wanted = set(TURN) | set(BACK) | {REFERENCE_FRAME}
    found: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                found[index] = _crop(frame.to_ndarray(format="rgb24"))
            if index >= max(wanted):
                break
    return found


def _crop(pixels: np.ndarray) -> np.ndarray:
    left, top, right, bottom = CROP
    image = Image.fromarray(pixels[top:bottom, left:right])
    return np.asarray(image.resize((image.width * SCALE, image.height * SCALE), Image.BICUBIC))


def jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def pixel_frames_for(actions) -> list[np.ndarray]:
    """RGB frames of the performer doing ``actions`` (alternating turns, unmirrored camera)."""
    actions = tuple(actions)
    frames = _clip_frames()
    if not 2 <= len(actions) <= 3 or any(a == b for a, b in zip(actions, actions[1:], strict=False)):
        raise ValueError(f"expected two or three alternating turns, got {actions}")
    indices = list(TURN) + (list(BACK[1:]) if len(actions) == 3 else [])
    sequence = [frames[i] for i in indices]
    # as filmed the performer turns to their right first; a mirror image of every frame turns left first
    if actions[0] == TURN_LEFT:
        sequence = [np.ascontiguousarray(f[:, ::-1]) for f in sequence]
    return sequence


def frames_for(actions) -> list[bytes]:
    """JPEG frames performing ``actions``, as a browser would send them."""
    return [jpeg(f) for f in pixel_frames_for(actions)]


def still_frames(count: int = 6) -> list[bytes]:
    """The same frontal frame again and again: a photo held up to the camera."""
    return [jpeg(_clip_frames()[TURN[0]])] * count


def reference_photo() -> bytes:
    """The performer frontal, outside the turn: their 'ID photo' in test registries."""
    return jpeg(_clip_frames()[REFERENCE_FRAME], quality=95)
