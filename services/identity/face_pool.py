"""Face and liveness checks off the eventlet hub, in a process pool.

nameko's workers are greenthreads on one OS thread; a face encoding holds the
GIL for ~75 ms and a check of two photos takes ~0.3 s, which would stall every
other RPC of the process and its AMQP heartbeats. :class:`FacePool` owns the
platform's :class:`~services.common.offload.WorkerPool` (1-2 ``spawn``-started
worker processes), created on first use and shut down when the container
stops. Each worker process loads the dlib models once (:func:`_init_worker`)
and keeps them.

Only plain values cross the process boundary: image bytes in, verdicts,
encodings (as bytes) and the best frame out. An ``InvalidInput`` raised in a worker
(no face, not an image ...) comes back as the same typed error.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from nameko.extensions import DependencyProvider

from services.common.offload import ReportsPoolHealth, WorkerPool
from services.identity.faces import FaceSettings, ImageLimits
from services.identity.liveness import Challenge, LivenessSettings
from services.identity.settings import IdentitySettings

# --- inside a worker process ----------------------------------------------

_faces = None
_liveness = None


def _init_worker(face_settings: FaceSettings, liveness_settings: LivenessSettings) -> None:
    global _faces, _liveness
    from services.identity.faces import DlibFaceEngine
    from services.identity.liveness import LandmarkLivenessEngine

    _faces = DlibFaceEngine(face_settings)
    # one model set per process, shared by the face and the liveness checks
    _liveness = LandmarkLivenessEngine(liveness_settings, faces=_faces)
    with _faces._pool.lease():  # load the models now (~0.5 s), not in the first request
        pass


def encode_image(image: bytes, field: str) -> bytes:
    from services.identity.faces import encoding_to_bytes

    return encoding_to_bytes(_faces.encode(image, field))


def _check_liveness(actions: Sequence[str], frames: Sequence[bytes] | None, video: bytes | None) -> dict:
    """The liveness verdict, the live face's (mean) encoding, and the most
    frontal frame as image bytes (what a remote authority is sent)."""
    import io

    from PIL import Image

    from services.identity.faces import encoding_to_bytes
    from services.identity.liveness import read_video_frames

    challenge = Challenge(tuple(actions))
    if video is not None:
        decoded = read_video_frames(video, _liveness.settings.max_frames, _liveness.settings.video)
        result = _liveness.check(challenge, decoded)
    else:
        decoded = None
        result = _liveness.check(challenge, frames)
    best = None
    if result.best_frame is not None:
        if decoded is None:
            best = bytes(frames[result.best_frame])
        else:
            out = io.BytesIO()
            Image.fromarray(decoded[result.best_frame]).save(out, format="JPEG", quality=92)
            best = out.getvalue()
    return {"passed": result.passed, "reasons": list(result.reasons), "audit": result.to_audit(),
            "encoding": encoding_to_bytes(result.encoding) if result.encoding is not None else None,
            "best_frame": best}


# --- in the service process ------------------------------------------------

class FaceWorkers(ReportsPoolHealth):
    """What a worker gets: blocking-looking calls that yield to the hub."""

    def __init__(self, pool: "FacePool"):
        self._pool = pool

    @property
    def threshold(self) -> float:
        return self._pool.face_settings.threshold

    @property
    def liveness_settings(self) -> LivenessSettings:
        return self._pool.liveness_settings

    @property
    def name(self) -> str:
        return self._pool.pool.name

    def pool_health(self) -> dict:
        return self._pool.pool.health()

    def encode(self, image: bytes, field: str) -> bytes:
        return self._pool.run(encode_image, image, field)

    def check_liveness(self, challenge: Challenge, frames: Sequence[bytes] | None, video: bytes | None) -> dict:
        """``{passed, reasons, audit, encoding (bytes|None), best_frame (image bytes|None)}``."""
        return self._pool.run(_check_liveness, list(challenge.actions), frames, video)


def face_settings_from(config: dict) -> tuple[FaceSettings, LivenessSettings, int]:
    """The face and liveness settings of the worker processes, from identity's settings
    (services/identity/settings.py: a wrong value stops the service at start, named)."""
    settings = IdentitySettings.from_config(config)
    face_settings = FaceSettings(threshold=settings.face_threshold,
                                 image=ImageLimits(max_bytes=settings.max_image_bytes),
                                 min_face_px=settings.min_face_px,
                                 model_instances=1)  # one request at a time per worker process
    return face_settings, LivenessSettings(face=face_settings, mirrored_input=settings.mirrored_input), \
        settings.face_workers


class FacePool(DependencyProvider):
    """Owns the worker processes (a :class:`~services.common.offload.WorkerPool`);
    started lazily, shut down on container stop."""

    def setup(self) -> None:
        self.face_settings, self.liveness_settings, self.workers = face_settings_from(self.container.config)
        self.pool = WorkerPool(self.workers, _init_worker, (self.face_settings, self.liveness_settings),
                               name="identity.faces")

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.run(fn, *args)

    def stop(self) -> None:
        self.pool.shutdown()

    def kill(self) -> None:
        self.pool.shutdown(wait=False)

    def get_dependency(self, worker_ctx) -> FaceWorkers:
        return FaceWorkers(self)
