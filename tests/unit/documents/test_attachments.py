"""Image attachments: type by content, safe decoding, metadata stripped,
orientation applied, thumbnails."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from services.common.errors import InvalidInput
from services.documents.attachments import AttachmentPolicy, sanitize_image

GPS_IFD = 0x8825
ORIENTATION = 0x0112
MARKER = "Beijing-Haidian-secret-spot"


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = MARKER  # Make: a string that must not survive
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (39.0, 59.0, 0.5), 3: "E", 4: (116.0, 18.0, 0.25)})
    return exif


def two_colour(width: int = 120, height: int = 80) -> Image.Image:
    """Left half red, right half blue: shows which way the image was turned."""
    image = Image.new("RGB", (width, height), (220, 20, 20))
    image.paste((20, 20, 220), (width // 2, 0, width, height))
    return image


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kwargs)
    return out.getvalue()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_no_metadata(data: bytes) -> None:
    image = reopen(data)
    assert len(image.getexif()) == 0
    assert "exif" not in image.info and "icc_profile" not in image.info and "xmp" not in image.info
    assert MARKER.encode() not in data
    assert b"Exif\x00\x00" not in data


def test_jpeg_gps_exif_is_stripped_and_orientation_applied():
    source = encode(two_colour(), "JPEG", exif=exif_with_gps(orientation=6), quality=95)
    assert reopen(source).getexif().get_ifd(GPS_IFD), "fixture must carry GPS"
    result = sanitize_image(source)
    assert_no_metadata(result.data)
    assert result.mime == "image/jpeg"
    # orientation 6: turn 90° clockwise to display, so 120x80 becomes 80x120, left (red) on top
    assert (result.width, result.height) == (80, 120)
    shown = reopen(result.data).convert("RGB")
    assert shown.size == (80, 120)
    top, bottom = shown.getpixel((40, 10)), shown.getpixel((40, 110))
    assert top[0] > 150 and top[2] < 100, top
    assert bottom[2] > 150 and bottom[0] < 100, bottom


def test_result_hash_is_over_the_stored_bytes():
    result = sanitize_image(encode(two_colour(), "JPEG"))
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


def test_same_upload_gives_same_stored_bytes():
    source = encode(two_colour(), "PNG")
    assert sanitize_image(source) == sanitize_image(source)


def test_png_text_and_exif_chunks_are_stripped():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", MARKER)
    info.add_itxt("Location", MARKER)
    source = encode(two_colour(), "PNG", pnginfo=info, exif=exif_with_gps())
    assert MARKER.encode() in source
    result = sanitize_image(source)
    assert result.mime == "image/png"
    assert_no_metadata(result.data)
    assert not reopen(result.data).text
    # PNG is lossless: the pixels are unchanged
    assert reopen(result.data).convert("RGB").tobytes() == two_colour().tobytes()


def test_webp_exif_is_stripped():
    source = encode(two_colour(), "WEBP", exif=exif_with_gps(), quality=90)
    result = sanitize_image(source)
    assert result.mime == "image/webp"
    assert_no_metadata(result.data)
    assert reopen(result.data).format == "WEBP"


def test_palette_png_with_transparency_keeps_alpha():
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.paste(1, (10, 0, 20, 20))
    result = sanitize_image(encode(image, "PNG", transparency=0))
    stored = reopen(result.data)
    assert stored.mode == "RGBA"
    assert stored.getpixel((2, 2))[3] == 0 and stored.getpixel((15, 2)) == (0, 255, 0, 255)


def test_thumbnail_is_a_small_jpeg_of_the_oriented_image():
    source = encode(two_colour(1200, 800), "JPEG", exif=exif_with_gps(orientation=6))
    thumb = reopen(sanitize_image(source).thumbnail_jpeg)
    assert thumb.format == "JPEG"
    assert max(thumb.size) == 320 and thumb.size[0] < thumb.size[1]


def test_rgba_thumbnail_is_flattened_on_white():
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    thumb = reopen(sanitize_image(encode(image, "PNG")).thumbnail_jpeg)
    assert thumb.mode == "RGB" and min(thumb.getpixel((20, 20))) > 245


def test_type_is_judged_by_content_not_name():
    gif = encode(two_colour(), "GIF")
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(gif, field="attachments[0]")
    assert (caught.value.field, caught.value.rule) == ("attachments[0]", "image_type")
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(b"%PDF-1.7\n...")
    assert caught.value.rule == "image_type"


def test_jpeg_magic_on_png_body_is_refused():
    png = encode(two_colour(), "PNG")
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(b"\xff\xd8\xff" + png)
    assert caught.value.rule == "image_decode"


def test_truncated_image_is_refused():
    jpeg = encode(two_colour(600, 400), "JPEG")
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(jpeg[: len(jpeg) // 2])
    assert caught.value.rule == "image_decode"


def test_empty_and_oversized_uploads_are_refused():
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(b"")
    assert caught.value.rule == "required"
    data = encode(two_colour(), "PNG")
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(data, policy=AttachmentPolicy(max_bytes=len(data) - 1))
    assert caught.value.rule == "max_size"
    assert f"{len(data)} bytes > {len(data) - 1} bytes" in caught.value.message


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_decompression_bomb_is_refused_from_the_header():
    """A 60000x60000 PNG header (3.6 gigapixels) with almost no data: refused
    before any pixel buffer is allocated."""
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(bomb)
    assert caught.value.rule == "max_pixels"
    assert "at most 16000000 pixels" in caught.value.message


def test_pixel_limit_follows_the_policy():
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(encode(two_colour(), "PNG"), policy=AttachmentPolicy(max_pixels=120 * 80 - 1))
    assert caught.value.rule == "max_pixels"
    assert sanitize_image(encode(two_colour(), "PNG"), policy=AttachmentPolicy(max_pixels=120 * 80)).width == 120


def test_animated_image_is_refused():
    frames = [two_colour(), two_colour().transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(animated)
    assert caught.value.rule == "animated"


def test_header_above_our_limit_but_below_pillows_is_refused_with_its_size():
    ihdr = struct.pack(">IIBBBBB", 8000, 8000, 8, 2, 0, 0, 0)  # 64 megapixels
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _png_chunk(b"IEND", b""))
    with pytest.raises(InvalidInput) as caught:
        sanitize_image(bomb)
    assert caught.value.rule == "max_pixels"
    assert "8000x8000" in caught.value.message
