"""How much memory sanitising one attachment takes, measured: each image is
sanitised in a fresh process and the rise of its peak RSS (VmHWM) is read.

Before: a 170 KB PNG that decodes to 6324x6324 RGBA (40 MP, under the old limit)
raised the peak by about 616 MB, and a 16 MP one by 249 MB (five full copies)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
MEASURE = """
import sys
from services.documents.attachments import sanitize_image
data = open(sys.argv[1], "rb").read()
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
before = peak_mb()
try:
    sanitize_image(data, "image")
    outcome = "ok"
except Exception as exc:
    outcome = getattr(exc, "rule", type(exc).__name__)
print(outcome, peak_mb() - before)
"""


def _sanitise_in_a_fresh_process(path: Path) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=120)
    outcome, rise = done.stdout.split()
    return outcome, float(rise)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("big-png")
    made = {}
    for name, side in (("largest_allowed", 4000), ("bomb_40mp", 6324)):
        path = folder / f"{name}.png"
        Image.new("RGBA", (side, side), (10, 20, 30, 128)).save(path, "PNG", optimize=True)
        made[name] = path
    return made


def test_the_largest_allowed_image_needs_about_two_copies(pngs):
    outcome, rise = _sanitise_in_a_fresh_process(pngs["largest_allowed"])  # 16 MP RGBA: 61 MiB a copy
    assert outcome == "ok"
    assert rise < 160, f"peak RSS rose by {rise:.0f} MiB"


def test_a_small_png_that_decodes_to_40_megapixels_is_refused_before_decoding(pngs):
    assert pngs["bomb_40mp"].stat().st_size < 300_000
    outcome, rise = _sanitise_in_a_fresh_process(pngs["bomb_40mp"])
    assert outcome == "max_pixels"
    assert rise < 20, f"peak RSS rose by {rise:.0f} MiB"
