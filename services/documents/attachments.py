"""Image attachments: accept JPEG (ISO/IEC 10918), PNG (ISO/IEC 15948) and
WebP (RFC 9649) by content, decode them safely and re-encode them clean.

What arrives is untrusted: the name and the declared type are ignored, the
format is read from the magic bytes and must agree with what Pillow decodes.
The pixel count is checked from the header before any decoding, so a
decompression bomb is refused without allocating its pixels.

The stored image is a fresh encoding of the decoded pixels, with the EXIF
orientation applied first and no metadata carried over: no EXIF (GPS
location, camera serial, time), no XMP, no text chunks, no ICC profile (a
non-sRGB profile is converted to sRGB first so colours survive). The
returned SHA-256 is over those stored bytes: the hash the document lists.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from services.common.errors import InvalidInput

#: magic bytes -> (Pillow format, MIME type)
JPEG, PNG, WEBP = "JPEG", "PNG", "WEBP"
MIME_TYPES = {JPEG: "image/jpeg", PNG: "image/png", WEBP: "image/webp"}


@dataclass(frozen=True)
class AttachmentPolicy:
    max_bytes: int = 10 * 1024 * 1024
    #: 16 megapixels (a 4000x4000 photo of an IOU or a transfer record is plenty): one
    #: RGBA copy is 64 MiB, and sanitising holds at most about three (peak RSS measured
    #: in tests/unit/documents/test_attachment_memory.py)
    max_pixels: int = 16_000_000
    max_side: int = 8_000
    jpeg_quality: int = 90
    webp_quality: int = 90
    thumbnail_side: int = 320
    thumbnail_quality: int = 75


DEFAULT_POLICY = AttachmentPolicy()


@dataclass(frozen=True)
class SanitizedImage:
    """The image as stored: ``data`` re-encoded without metadata, its SHA-256
    (hex), MIME type and pixel size after orientation, and a JPEG thumbnail
    for the PDF (at most ``thumbnail_side`` pixels on the long side)."""

    data: bytes
    sha256: str
    mime: str
    width: int
    height: int
    thumbnail_jpeg: bytes


def sniff_format(data: bytes) -> str | None:
    """The format named by the leading bytes, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def sanitize_image(data: bytes, field: str = "attachment", policy: AttachmentPolicy = DEFAULT_POLICY) -> SanitizedImage:
    """Check, decode and re-encode one uploaded image; ``InvalidInput(field, rule)``
    on any violation (``required``, ``max_size``, ``image_type``, ``image_decode``,
    ``max_pixels``, ``animated``)."""
    if not data:
        raise InvalidInput(field, "required", "expected image data, found 0 bytes")
    if len(data) > policy.max_bytes:
        raise InvalidInput(field, "max_size", f"{len(data)} bytes > {policy.max_bytes} bytes")
    kind = sniff_format(data)
    if kind is None:
        raise InvalidInput(field, "image_type", "expected a JPEG, PNG or WebP image (by content)")

    clean = _clean_pixels(_decode(data, kind, field, policy))
    stored = _encode(clean, kind, policy)
    return SanitizedImage(
        data=stored,
        sha256=hashlib.sha256(stored).hexdigest(),
        mime=MIME_TYPES[kind],
        width=clean.width,
        height=clean.height,
        thumbnail_jpeg=make_thumbnail(clean, policy),
    )


def _decode(data: bytes, kind: str, field: str, policy: AttachmentPolicy) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its two bomb limits; treat as an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # formats=: only the decoder the magic bytes name may run.
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            if width < 1 or height < 1 or width > policy.max_side or height > policy.max_side \
                    or width * height > policy.max_pixels:
                raise InvalidInput(field, "max_pixels",
                                   f"{width}x{height} pixels; at most {policy.max_pixels} pixels "
                                   f"and {policy.max_side} on a side")
            if getattr(image, "n_frames", 1) > 1:
                raise InvalidInput(field, "animated", f"expected one frame, found {image.n_frames}")
            image.load()
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired while reading the header: far above our limit.
        raise InvalidInput(field, "max_pixels", f"image header declares a decompression bomb; "
                                                f"at most {policy.max_pixels} pixels") from None
    except Exception:
        # Pillow raises many types on broken data (OSError, SyntaxError, ValueError...).
        raise InvalidInput(field, "image_decode", f"the {kind} data could not be decoded") from None
    return image


def _clean_pixels(image: Image.Image) -> Image.Image:
    """Oriented pixels in L, RGB or RGBA, converted to sRGB, with no metadata.
    Each step lets go of the image before it, so no more than two full-size
    copies are alive at once."""
    icc = image.info.get("icc_profile")
    ImageOps.exif_transpose(image, in_place=True)
    if image.mode not in ("L", "RGB", "RGBA"):
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    if icc and image.mode in ("RGB", "RGBA"):
        image = _to_srgb(image, icc)
    # Pixels into a new image: nothing of the original's info dict can follow
    # (one copy; tobytes + frombytes made two).
    clean = Image.new(image.mode, image.size)
    clean.paste(image)
    return clean


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode=image.mode)
    except Exception:
        # An unreadable profile is dropped: the pixels are kept as they are.
        return image


def _encode(image: Image.Image, kind: str, policy: AttachmentPolicy) -> bytes:
    out = io.BytesIO()
    if kind == JPEG:
        if image.mode == "RGBA":
            image = _flatten(image)
        image.save(out, "JPEG", quality=policy.jpeg_quality, optimize=False, progressive=False)
    elif kind == PNG:
        image.save(out, "PNG", optimize=False)
    else:
        image.save(out, "WEBP", quality=policy.webp_quality, method=4, exif=b"", icc_profile=b"", xmp=b"")
    return out.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGBA on white: JPEG and the PDF thumbnail have no alpha."""
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def make_thumbnail(image: Image.Image, policy: AttachmentPolicy = DEFAULT_POLICY) -> bytes:
    """Baseline JPEG, long side at most ``policy.thumbnail_side`` pixels (made
    small at once, not from a full-size copy)."""
    scale = min(1.0, policy.thumbnail_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    thumb = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0) if scale < 1 else image.copy()
    if thumb.mode == "RGBA":
        thumb = _flatten(thumb)
    elif thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=policy.thumbnail_quality, optimize=False, progressive=False)
    return out.getvalue()
