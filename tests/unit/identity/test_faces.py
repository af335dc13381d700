"""Face check on real photos (face_recognition's test images: obama, obama2 and
obama3 are one person, biden another) and on crafted hostile images."""
from __future__ import annotations

import io
import struct
import zlib

import eventlet
import numpy as np
import pytest
from eventlet import tpool
from PIL import Image

from services.common.errors import InvalidInput
from services.identity.faces import (
    DlibFaceEngine,
    FaceMatch,
    FaceSettings,
    decode_image,
    encoding_from_bytes,
    encoding_to_bytes,
)
from tests.support.faces import face_path, remembering_face_engine

SAME_PERSON = [("obama", "obama2"), ("obama", "obama3"), ("obama2", "obama3")]
DIFFERENT_PERSON = [("obama", "biden"), ("obama2", "biden"), ("obama3", "biden")]


@pytest.fixture(scope="module")
def engine() -> DlibFaceEngine:
    """dlib runs once per distinct picture in this module (tests.support.faces); the tests of
    detection itself (threads, settings) make plain engines of their own."""
    return remembering_face_engine()


@pytest.fixture(scope="module")
def full_resolution() -> DlibFaceEngine:
    """Detection on the whole image, however large."""
    return remembering_face_engine(FaceSettings(detect_max_side=100_000))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92, **options)
    return out.getvalue()


def _gradient(width: int = 400, height: int = 300) -> Image.Image:
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    grey = np.tile(ramp, (height, 1))
    return Image.fromarray(np.dstack([grey, grey[:, ::-1], np.full_like(grey, 128)]))


def _side_by_side(left: bytes, right: bytes) -> bytes:
    a, b = Image.open(io.BytesIO(left)).convert("RGB"), Image.open(io.BytesIO(right)).convert("RGB")
    height = min(a.height, b.height)
    a = a.resize((a.width * height // a.height, height))
    b = b.resize((b.width * height // b.height, height))
    canvas = Image.new("RGB", (a.width + b.width, height))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    return _jpeg(canvas)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` but carries almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("first,second", SAME_PERSON)
def test_same_person_matches(engine, photo, first, second):
    match = engine.compare(photo(first), photo(second))
    assert isinstance(match, FaceMatch)
    assert match.matched is True
    assert match.distance < 0.6
    assert match.threshold == 0.6


@pytest.mark.parametrize("first,second", DIFFERENT_PERSON)
def test_different_person_does_not_match(engine, photo, first, second):
    match = engine.compare(photo(first), photo(second))
    assert match.matched is False
    assert match.distance >= 0.6


def test_threshold_is_configurable(photo):
    strict = remembering_face_engine(FaceSettings(threshold=0.2))
    match = strict.compare(photo("obama"), photo("obama2"))
    assert match.threshold == 0.2
    assert match.matched is (match.distance < 0.2)
    assert match.matched is False  # the same person is about 0.35 apart in these photos


def test_full_resolution_encoding_equals_face_recognition(photo, full_resolution):
    """Without the detection downscale, the engine computes exactly what face_recognition does."""
    import face_recognition

    ours = full_resolution.encode(photo("obama2"), "selfie")
    pixels = face_recognition.load_image_file(str(face_path("obama2")))
    (reference,) = face_recognition.face_encodings(pixels)
    assert np.linalg.norm(ours - reference) < 1e-6


def test_downscaled_detection_keeps_encodings_close(engine, full_resolution, photo):
    for name in ("biden",):  # large enough to be downscaled (obama3 is too, and costs 1.5 s more at full size)
        drift = np.linalg.norm(engine.encode(photo(name), "selfie") - full_resolution.encode(photo(name), "selfie"))
        assert drift < 0.1


def test_stored_encoding_compares_with_a_later_selfie(engine, photo):
    stored = encoding_to_bytes(engine.encode(photo("obama"), "id_portrait"))
    assert len(stored) == 1024
    registered = encoding_from_bytes(stored)
    assert engine.compare_encodings(registered, engine.encode(photo("obama3"), "selfie")).matched is True
    assert engine.compare_encodings(registered, engine.encode(photo("biden"), "selfie")).matched is False


def test_bad_stored_encoding_is_refused(engine):
    with pytest.raises(InvalidInput) as short:
        encoding_from_bytes(b"\x00" * 100)
    assert short.value.rule == "length"
    with pytest.raises(InvalidInput) as wrong_shape:
        engine.compare_encodings(np.zeros(64), np.zeros(128))
    assert wrong_shape.value.rule == "shape"
    with pytest.raises(InvalidInput) as not_finite:
        engine.compare_encodings(np.full(128, np.nan), np.zeros(128))
    assert not_finite.value.rule == "finite"


@pytest.mark.parametrize("which", ["id_portrait", "selfie"])
def test_no_face_names_the_image(engine, photo, which):
    blank = _png(_gradient())
    images = {"id_portrait": photo("obama"), "selfie": photo("obama2"), which: blank}
    with pytest.raises(InvalidInput) as caught:
        engine.compare(images["id_portrait"], images["selfie"])
    assert caught.value.field == which
    assert caught.value.rule == "no_face"


@pytest.mark.parametrize("which", ["id_portrait", "selfie"])
def test_two_faces_name_the_image(engine, photo, which):
    crowd = _side_by_side(photo("obama"), photo("biden"))
    images = {"id_portrait": photo("obama"), "selfie": photo("obama2"), which: crowd}
    with pytest.raises(InvalidInput) as caught:
        engine.compare(images["id_portrait"], images["selfie"])
    assert caught.value.field == which
    assert caught.value.rule == "multiple_faces"
    assert "found 2" in caught.value.message


def test_too_small_face(engine, photo):
    whole = Image.open(io.BytesIO(photo("obama")))
    shrunk = whole.resize((whole.width // 4, whole.height // 4))  # face about 67 px, image 227x284
    with pytest.raises(InvalidInput) as caught:
        engine.encode(_jpeg(shrunk), "selfie")
    assert caught.value.rule == "face_too_small"
    assert caught.value.field == "selfie"


@pytest.mark.parametrize(
    "data,rule",
    [
        (b"%PDF-1.7\n" + b"0" * 1000, "not_an_image"),
        (b"", "not_an_image"),
        (b"GIF89a" + b"\x00" * 200, "not_an_image"),  # a real image format, but not one accepted
        (b"\xff\xd8\xff\xe0" + b"\x13" * 5000, "corrupt_image"),  # JPEG magic, garbage after
    ],
)
def test_not_an_image(engine, data, rule):
    with pytest.raises(InvalidInput) as caught:
        engine.encode(data, "selfie")
    assert caught.value.rule == rule
    assert caught.value.field == "selfie"


def test_non_bytes_is_not_an_image():
    with pytest.raises(InvalidInput) as caught:
        decode_image("obama.jpg", "selfie")  # type: ignore[arg-type]
    assert caught.value.rule == "not_an_image"


def test_truncated_jpeg_is_refused(photo):
    with pytest.raises(InvalidInput) as caught:
        decode_image(photo("obama")[:20_000], "id_portrait")
    assert caught.value.rule == "corrupt_image"


def test_oversize_bytes(engine):
    limit = engine.settings.image.max_bytes
    with pytest.raises(InvalidInput) as caught:
        engine.encode(b"\xff\xd8\xff" + b"\x00" * limit, "id_portrait")
    assert caught.value.rule == "max_bytes"
    assert str(limit) in caught.value.message


@pytest.mark.parametrize(
    "width,height",
    [
        (100_000, 100_000),  # beyond Pillow's own bomb limit: refused inside Image.open
        (8_000, 8_000),  # 64 MP: under Pillow's limit, over ours (40 MP)
    ],
)
def test_decompression_bomb(engine, width, height):
    with pytest.raises(InvalidInput) as caught:
        engine.encode(_png_header_only(width, height), "selfie")
    assert caught.value.rule == "max_pixels"


def test_too_small_image(engine):
    with pytest.raises(InvalidInput) as caught:
        engine.encode(_png(_gradient(64, 64)), "selfie")
    assert caught.value.rule == "min_size"
    assert "64x64" in caught.value.message


def test_exif_orientation_is_applied(engine, photo):
    """A phone photo stored sideways with an EXIF 'rotate 90' tag: HOG finds only upright faces,
    so the face is found (and matches) only if the orientation is applied."""
    upright = Image.open(io.BytesIO(photo("obama")))
    stored_sideways = upright.transpose(Image.Transpose.ROTATE_90)  # stored 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    tagged = _jpeg(stored_sideways, exif=exif.tobytes())
    assert engine.compare(tagged, photo("obama2")).matched is True
    untagged = _jpeg(stored_sideways)
    with pytest.raises(InvalidInput) as caught:
        engine.encode(untagged, "selfie")
    assert caught.value.rule == "no_face"


def test_png_and_webp_are_accepted(engine, photo):
    upright = Image.open(io.BytesIO(photo("obama2"))).convert("RGB")
    reference = engine.encode(photo("obama2"), "selfie")
    for fmt in ("PNG", "WEBP"):
        out = io.BytesIO()
        upright.save(out, format=fmt, **({"quality": 95} if fmt == "WEBP" else {}))
        assert engine.compare_encodings(engine.encode(out.getvalue(), "selfie"), reference).distance < 0.1


def test_decoded_arrays_are_checked(engine, photo):
    pixels = decode_image(photo("obama2"), "selfie")
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert engine.compare_encodings(engine.encode(pixels, "selfie"),
                                    engine.encode(photo("obama2"), "selfie")).distance < 1e-9
    with pytest.raises(InvalidInput) as caught:
        engine.encode(pixels.astype(np.float32), "selfie")
    assert caught.value.rule == "pixel_format"


def test_messages_do_not_carry_image_content(engine):
    with pytest.raises(InvalidInput) as caught:
        engine.encode(b"\xff\xd8\xff\xe0SECRET-PAYLOAD" + b"\x13" * 300, "selfie")
    assert "SECRET" not in str(caught.value)
    assert "SECRET" not in repr(caught.value.args)


def test_concurrent_calls_from_tpool_threads_agree_with_sequential(engine, photo):
    """The service runs encode() in eventlet.tpool OS threads; several at once must not mix up
    dlib's non-thread-safe models (or deadlock on a green lock in an OS thread)."""
    concurrent = DlibFaceEngine(FaceSettings(model_instances=2))  # detects every time
    names = ["obama2", "biden", "obama2", "biden"]  # four at once on two model sets
    sequential = {name: engine.encode(photo(name), name) for name in set(names)}
    pool = eventlet.GreenPool(len(names))
    results = list(pool.imap(lambda name: (name, tpool.execute(concurrent.encode, photo(name), name)), names))
    assert [name for name, _ in results] == names
    for name, encoding in results:
        assert np.linalg.norm(encoding - sequential[name]) < 1e-9
