"""A camera for browser tests of the live selfie: Chromium's fake capture device
fed from a YUV4MPEG2 file of the stage clip's performer (tests.support.liveness_clip).

Chromium started with :func:`chromium_arguments` (``--use-fake-device-for-media-stream
--use-fake-ui-for-media-stream --use-file-for-fake-video-capture=<file.y4m>``)
plays the file as its only camera and grants the page access without asking.
Measured with Debian's Chromium 156 (headless=new; ``--headless=old`` and a bare
``--headless`` behave the same) through Selenium:

* the file is opened anew each time getUserMedia starts the device (after the
  previous stream's tracks were stopped), and plays from its first frame: a
  test can write the video for the challenge the page shows, then click;
* while a stream is live the device reads the open file frame by frame: a file
  rewritten in place shows up mid-stream, and a frame read short trips a CHECK
  in Chromium's parser; hence :func:`write_y4m` writes a new file and renames
  it over the old (a live stream plays the old one on);
* the frame size is the one the file had when the browser first used it: keep
  it (640x480 here) for the browser's lifetime; and the file must exist before
  getUserMedia (else ``NotFoundError``). Write a :func:`still_video` before
  starting the browser;
* it plays at the header's frame rate, an integer (``F30000:1001`` would be
  read as 29 fps), paced by the capture thread's own timer: 100 ms +- 5 ms a
  frame at 10 fps; at the end it loops to the first frame (shown twice);
* getUserMedia resolves when the device has started (its first frame goes out
  at once); the page's first frame (requestVideoFrameCallback) follows 10-250 ms
  later and is mostly the file's frame 1, so the file runs 1/fps + 0-50 ms ahead
  of a clock started at the page's first frame, and keeps to it within a few
  tens of ms (two busy CPUs included) over the 5 s a capture takes;
* an ``.mjpeg`` file (JPEGs back to back) also works and is smaller (25 kB
  against 461 kB a 640x480 frame), but always plays at 30 fps whatever is meant;
  Y4M at 10 fps is simple and exact, so the tests use it.

The timeline of :func:`challenge_video` with the defaults, in seconds of the
file (which starts ~0.1 s before the page's first frame): frontal and still
until 1.9 (``lead_seconds`` 1.7 plus the clip's first 0.2 s), the far point of
the first turn from 3.0 to 3.47 (the one frame of the clip past the liveness
threshold from frontal: 0.17 s in the clip, plus ``hold_seconds`` 0.3, a pause
at the turn), the last pose from 4.1 (two turns) or 4.9 (three turns; the
clip's own pace at 29.97 fps plus that pause), held until 7.1 or 7.9. A page
that counts down 1.5 s from its first frame and then captures 12-15 frames
evenly over 3.5 s (camera.js: the first when the countdown ends, the last 3.5 s
later) takes its first frame at 1.6-1.65, still frontal, one or two at the far
point, and its last at 5.1-5.15, after the performance and long before the
file loops back to the start. Measured with camera.js and the liveness engine
(every run alike: the timing is that steady): countdowns of 1.2-1.7 s and
captures of 3.5-4 s pass, with 12, 14 or 15 frames; a countdown of 1.8 s or
more fails the challenges that start with turn_left (the first frame is then
the clip's second, whose mirror image is already 0.08-0.1 turned), and a
capture ending before ~4.95 s of file time (1.0 s countdown, or 3.2 s capture)
misses the end of three turns.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from tests.support import liveness_clip

FPS = 10
LEAD_SECONDS = 1.7
TAIL_SECONDS = 3.0
#: the performer pauses this long at the far point of the first turn: its frame is the only one
#: of the clip that clears the liveness threshold (0.25) from frontal, and would show ~0.17 s
HOLD_SECONDS = 0.3
CLIP_FPS = 30000 / 1001
#: the clip's frame at the far point of the first turn (yaw -0.37, see liveness_clip)
FAR_POINT = 135


def chromium_arguments(path: str | os.PathLike) -> list[str]:
    """Chromium's command-line switches for a fake camera playing ``path`` (a ``.y4m`` file)."""
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={os.fspath(path)}"]


def write_y4m(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int) -> Path:
    """Write RGB uint8 frames (height x width x 3, all one even size) as a YUV4MPEG2 4:2:0 file.

    BT.601 studio range (Chromium reads the file's I420 so: grey 0/64/128/192/255
    come back exact in the page), chroma averaged over 2x2 pixels (``C420jpeg``
    siting). Written to a temporary file beside ``path`` and renamed over it. A
    frame object given several times (a held pose) is converted once.
    """
    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive integer (Chromium reads the rate as one), got {fps!r}")
    converted: dict[int, tuple[np.ndarray, bytes]] = {}  # id -> (the frame, kept alive; its bytes)
    size = None
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as out:
            for number, frame in enumerate(frames):
                if id(frame) not in converted:
                    pixels = _rgb(frame, number)
                    if size is None:
                        size = pixels.shape[:2]
                        out.write(f"YUV4MPEG2 W{size[1]} H{size[0]} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
                    elif pixels.shape[:2] != size:
                        raise ValueError(f"frame {number} is {pixels.shape[1]}x{pixels.shape[0]}, "
                                         f"the first was {size[1]}x{size[0]}")
                    converted[id(frame)] = (frame, _i420(pixels))
                out.write(b"FRAME\n")
                out.write(converted[id(frame)][1])
            if size is None:
                raise ValueError("no frames to write")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def challenge_video(path: str | os.PathLike, actions: Sequence[str], *, fps: int = FPS,
                    lead_seconds: float = LEAD_SECONDS, tail_seconds: float = TAIL_SECONDS,
                    hold_seconds: float = HOLD_SECONDS) -> Path:
    """The performer doing ``actions`` (two or three alternating turns) in front of the fake camera.

    Still (the first frame of the turn) for ``lead_seconds``, then the frames of
    :func:`liveness_clip.pixel_frames_for` each shown for as long as the clip
    takes to reach the next one (repeated, never blended: a cross-fade is two
    faces), with ``hold_seconds`` more at the far point of the first turn, then
    the last pose for ``tail_seconds``. ``fps`` of 8 or more shows every frame.
    """
    frames = liveness_clip.pixel_frames_for(actions)
    clip = list(liveness_clip.TURN) + (list(liveness_clip.BACK[1:]) if len(frames) > len(liveness_clip.TURN) else [])
    if len(clip) != len(frames):
        raise RuntimeError(f"liveness_clip gave {len(frames)} frames for {tuple(actions)}, expected {len(clip)}")
    far_point = clip.index(FAR_POINT)
    starts = [lead_seconds]  # when each frame of the performance comes on
    for position in range(1, len(clip)):
        hold = hold_seconds if position - 1 == far_point else 0.0
        starts.append(starts[-1] + abs(clip[position] - clip[position - 1]) / CLIP_FPS + hold)
    shown = []
    for k in range(math.ceil((starts[-1] + tail_seconds) * fps)):
        middle = (k + 0.5) / fps  # output frame k shows what is on in the middle of its time
        shown.append(frames[max(0, sum(1 for start in starts if start <= middle) - 1)])
    return write_y4m(path, shown, fps)


def still_video(path: str | os.PathLike, frame: np.ndarray | bytes | None = None, seconds: float = 2.0,
                fps: int = FPS) -> Path:
    """A photo held up to the camera: one frame (RGB array or image bytes; by default the
    performer frontal, the first frame of the turn) for ``seconds``. It loops, so any length works."""
    if frame is None:
        frame = liveness_clip.pixel_frames_for((liveness_clip.TURN_RIGHT, liveness_clip.TURN_LEFT))[0]
    elif isinstance(frame, (bytes, bytearray, memoryview)):
        frame = np.asarray(Image.open(io.BytesIO(bytes(frame))).convert("RGB"))
    return write_y4m(path, [frame] * max(1, round(seconds * fps)), fps)


def _rgb(frame: np.ndarray, number: int) -> np.ndarray:
    pixels = np.asarray(frame)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"frame {number}: expected RGB uint8 (height x width x 3), "
                         f"found {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    if height % 2 or width % 2 or not height or not width:
        raise ValueError(f"frame {number}: 4:2:0 needs an even width and height, found {width}x{height}")
    return pixels


def _i420(pixels: np.ndarray) -> bytes:
    """Y, then U and V at half width and height (2x2 means), BT.601 studio range."""
    height, width = pixels.shape[:2]
    red, green, blue = (pixels[..., channel].astype(np.float32) for channel in range(3))
    luma = 16 + (65.481 * red + 128.553 * green + 24.966 * blue) / 255
    blue_difference = 128 + (-37.797 * red - 74.203 * green + 112.0 * blue) / 255
    red_difference = 128 + (112.0 * red - 93.786 * green - 18.214 * blue) / 255

    def half(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))

    return b"".join(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes()
                    for plane in (luma, half(blue_difference), half(red_difference)))
