"""Face engine benchmark: detect + encode time per image, and what it does to the eventlet hub.

    .venv/bin/python bench/face_engine.py [N]     (default N = 7 runs per image)

For each reference photo it prints the median over N runs of
  - engine: DlibFaceEngine.encode(bytes) - safe decode, detection on a copy
    downscaled to 800 px, landmarks and encoding on the full image;
  - raw:    face_recognition.load_image_file + face_locations + face_encodings
    (full-resolution detection), the library used plainly;
  - raw decode-free split: detection alone and encoding alone on a decoded array;
and the ratio raw / engine. Then it runs engine.encode in an eventlet.tpool
thread while a greenthread ticks every millisecond, and prints the longest gap
between ticks: how long one face check keeps the hub from running other
workers (dlib holds the GIL while encoding).
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import face_recognition  # noqa: E402
from eventlet import tpool  # noqa: E402

from bench.timing import median_ms  # noqa: E402
from services.identity.faces import DlibFaceEngine, decode_image  # noqa: E402
from tests.support.faces import PHOTO_NAMES, face_path  # noqa: E402


def hub_gap_ms(engine: DlibFaceEngine, data: bytes) -> tuple[float, float]:
    """Longest pause of a 1 ms ticking greenthread while one encode runs in tpool."""
    gaps: list[float] = []
    running = [True]

    def tick() -> None:
        last = time.perf_counter()
        while running[0]:
            eventlet.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = eventlet.spawn(tick)
    eventlet.sleep(0.01)
    start = time.perf_counter()
    tpool.execute(engine.encode, data, "selfie")
    took = time.perf_counter() - start
    running[0] = False
    ticker.wait()
    return max(gaps) * 1000, took * 1000


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    engine = DlibFaceEngine()
    photos = {name: face_path(name).read_bytes() for name in PHOTO_NAMES}
    engine.encode(photos["obama"], "warm-up")  # loads the models once
    face_recognition.face_encodings(face_recognition.load_image_file(str(face_path("obama"))))

    print(f"median of {runs} runs, ms per image (one thread)")
    print(f"{'image':8} {'size':>10} {'engine':>8} {'raw':>8} {'raw/eng':>8} {'raw det':>8} {'raw enc':>8}")
    engine_all, raw_all = [], []
    for name, data in photos.items():
        pixels = decode_image(data, name)
        path = str(face_path(name))
        eng = median_ms(lambda data=data, name=name: engine.encode(data, name), runs)

        def raw(path: str = path) -> None:
            image = face_recognition.load_image_file(path)
            face_recognition.face_encodings(image, face_recognition.face_locations(image))

        raw_ms = median_ms(raw, runs)
        locations = face_recognition.face_locations(pixels)
        det = median_ms(lambda pixels=pixels: face_recognition.face_locations(pixels), runs)
        enc = median_ms(lambda pixels=pixels, locations=locations: face_recognition.face_encodings(pixels, locations),
                        runs)
        engine_all.append(eng)
        raw_all.append(raw_ms)
        size = f"{pixels.shape[1]}x{pixels.shape[0]}"
        print(f"{name:8} {size:>10} {eng:8.1f} {raw_ms:8.1f} {raw_ms / eng:8.2f} {det:8.1f} {enc:8.1f}")
    print(f"{'median':8} {'':>10} {statistics.median(engine_all):8.1f} {statistics.median(raw_all):8.1f} "
          f"{statistics.median(raw_all) / statistics.median(engine_all):8.2f}")

    gap, took = hub_gap_ms(engine, photos["obama2"])
    print(f"hub: one encode in tpool took {took:.0f} ms; longest pause of a 1 ms greenthread ticker {gap:.0f} ms")


if __name__ == "__main__":
    main()
