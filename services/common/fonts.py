"""The CJK font stack documents are rendered with (TrueType, ISO/IEC 14496-22 ``glyf`` outlines).

reportlab embeds only TrueType-outline fonts: it refuses CFF-outline fonts
(the Noto/Source Han CJK ``.otf``/``.ttc``) and, worse, draws nothing for a
character its font lacks. So the stack is made of TrueType faces only, and
every string is checked against the stack's ``cmap`` (read with fontTools)
before anything is drawn.

Default stack, searched in this order (the first face that has a character
draws it, so a name is split into runs by face):

1. HanaMinA (Debian ``fonts-hanazono``): BMP, CJK Ext A (e.g. 䶮 U+4DAE) and
   part of the supplementary plane; a Mincho face that suits contracts.
2. HanaMinB (``fonts-hanazono``): CJK Ext B and later (e.g. 𠮷 U+20BB7).
3. WenQuanYi Zen Hei (``fonts-wqy-zenhei``): a last resort, so a machine
   without Hanazono still renders common text.

``ESIGN_FONT_DIR`` replaces the search path by one directory. The stack
found is part of what a rendering depends on: a machine with other fonts
produces other bytes, so :attr:`FontStack.fingerprint` names it.
"""
from __future__ import annotations

import functools
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from fontTools.ttLib import TTCollection, TTFont
from reportlab.pdfbase import pdfmetrics, ttfonts
from reportlab.pdfbase.ttfonts import TTFont as ReportlabTTFont

FONT_DIR_ENV = "ESIGN_FONT_DIR"

#: Directories searched when ``ESIGN_FONT_DIR`` is not set (Debian's layout first).
SEARCH_DIRS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/hanazono",
    "/usr/share/fonts/truetype/wqy",
    "/usr/share/fonts/truetype",
    "/usr/local/share/fonts",
    "/usr/share/fonts",
)

#: Characters that are layout, not glyphs: a line break ends a line.
LAYOUT_CHARACTERS = frozenset("\n")

#: Unicode general categories never drawn, whatever a font's cmap says: control,
#: format (zero-width, bidi overrides), surrogate, private use, unassigned.
#: Fonts map some of these to empty glyphs, which would hide them on paper.
UNDRAWABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


class FontNotInstalled(RuntimeError):
    """No usable TrueType CJK font was found: a deployment fault, not bad input."""


@dataclass(frozen=True)
class FontFace:
    """One TrueType face the stack may use."""

    #: name the face is registered under in reportlab (also its PDF BaseFont suffix)
    name: str
    #: file name looked up in the search directories
    filename: str
    #: Debian package that ships the file, named in the error when none is found
    debian_package: str
    #: face index inside a TrueType collection (``.ttc``)
    subfont_index: int = 0


DEFAULT_FACES: tuple[FontFace, ...] = (
    FontFace("HanaMinA", "HanaMinA.ttf", "fonts-hanazono"),
    FontFace("HanaMinB", "HanaMinB.ttf", "fonts-hanazono"),
    FontFace("WenQuanYiZenHei", "wqy-zenhei.ttc", "fonts-wqy-zenhei"),
)


@dataclass(frozen=True)
class LoadedFace:
    face: FontFace
    path: str
    #: code points the face draws (cmap entries that do not map to .notdef)
    codepoints: frozenset[int]


@dataclass(frozen=True)
class FontStack:
    """Faces in fallback order, each registered with reportlab."""

    faces: tuple[LoadedFace, ...]

    @property
    def primary(self) -> str:
        return self.faces[0].face.name

    @property
    def fingerprint(self) -> str:
        """Names the fonts a rendering used (face name, file size), so a change
        of installed fonts can be told apart from a change of content."""
        return ";".join(f"{f.face.name}:{os.path.getsize(f.path)}" for f in self.faces)

    def face_for(self, char: str) -> str | None:
        """Name of the first face that draws ``char``, or None."""
        if unicodedata.category(char) in UNDRAWABLE_CATEGORIES:
            return None
        code = ord(char)
        for loaded in self.faces:
            if code in loaded.codepoints:
                return loaded.face.name
        return None

    def coverage_check(self, text: str) -> list[str]:
        """Characters of ``text`` no face draws, each once, in order of first appearance."""
        missing: list[str] = []
        for char in text:
            if char in LAYOUT_CHARACTERS or char in missing:
                continue
            if self.face_for(char) is None:
                missing.append(char)
        return missing

    def runs(self, text: str) -> list[tuple[str, str]]:
        """Split ``text`` into (face name, text) runs. Raises ``ValueError`` on a
        character no face draws: callers run :meth:`coverage_check` first."""
        result: list[tuple[str, str]] = []
        for char in text:
            name = self.face_for(char) or (self.primary if char in LAYOUT_CHARACTERS else None)
            if name is None:
                raise ValueError(f"no face draws {describe_characters([char])}")
            if result and result[-1][0] == name:
                result[-1] = (name, result[-1][1] + char)
            else:
                result.append((name, char))
        return result


def describe_characters(chars: list[str]) -> str:
    """``U+4DAE 䶮, U+20BB7 𠮷`` — code point first, so the message is useful
    even where the character itself cannot be displayed."""
    return ", ".join(f"U+{ord(c):04X} {c}" for c in chars)


def _to_unicode_cmap(fontname: str, subset: list[int]) -> str:
    """ToUnicode CMap (PDF 1.7 §9.10.3) with destinations in UTF-16BE.

    reportlab 5.1 writes each destination as ``%04X``, which is right only in
    the BMP: 𠮷 U+20BB7 becomes ``<20BB7>`` and text extraction reads ₻. A
    supplementary character must be its surrogate pair ``<D842DFB7>``. For
    BMP characters the output is the same as reportlab's.
    """
    entries = [f"<{i:02X}> <{chr(v).encode('utf-16-be').hex().upper()}>" for i, v in enumerate(subset)]
    return "\n".join([
        "/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap", "/CIDSystemInfo",
        f"<< /Registry ({fontname})", f"/Ordering ({fontname})", "/Supplement 0", ">> def",
        f"/CMapName /{fontname} def", "/CMapType 2 def", "1 begincodespacerange",
        f"<00> <{len(subset) - 1:02X}>", "endcodespacerange", f"{len(subset)} beginbfchar",
        *entries,
        "endbfchar", "endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end",
    ])


def _search_dirs() -> tuple[str, ...]:
    override = os.environ.get(FONT_DIR_ENV)
    return (override,) if override else SEARCH_DIRS


class _TableView:
    """A font table read where it lies in the font file's bytes: slicing it copies only the slice.
    reportlab's subsetter takes the whole 'glyf' table (tens of MB for a CJK face) as a fresh copy
    on every PDF, to read the few glyphs the document uses from it."""

    def __init__(self, data: bytes, start: int, length: int):
        self._view = memoryview(data)[start:start + length]

    def __getitem__(self, index):
        part = self._view[index]
        return bytes(part) if isinstance(part, memoryview) else part

    def __len__(self) -> int:
        return len(self._view)


def _read_tables_in_place(face) -> None:
    """Serve the face's 'glyf' table as a :class:`_TableView` (the others are small)."""
    copy = face.get_table

    def get_table(tag: str):
        if tag != "glyf":
            return copy(tag)
        start, length = face.get_table_pos(tag)
        return _TableView(face._ttf_data, start, length)

    face.get_table = get_table


def _find(filename: str, dirs: tuple[str, ...]) -> str | None:
    for directory in dirs:
        candidate = Path(directory) / filename
        if candidate.is_file():
            return str(candidate)
    return None


def _read_codepoints(path: str, subfont_index: int) -> frozenset[int]:
    if path.lower().endswith(".ttc"):
        font = TTCollection(path, lazy=True).fonts[subfont_index]
    else:
        font = TTFont(path, lazy=True)
    if "glyf" not in font:
        # CFF outlines: reportlab cannot embed them, so the face is unusable.
        return frozenset()
    cmap = font.getBestCmap() or {}
    return frozenset(code for code, glyph in cmap.items() if glyph != ".notdef")


def load_font_stack(faces: tuple[FontFace, ...] = DEFAULT_FACES, dirs: tuple[str, ...] | None = None) -> FontStack:
    """Find, read and register the faces that exist; raise :class:`FontNotInstalled` if none does."""
    search = dirs if dirs is not None else _search_dirs()
    # reportlab looks the function up at embedding time; see _to_unicode_cmap.
    ttfonts.makeToUnicodeCMap = _to_unicode_cmap
    loaded: list[LoadedFace] = []
    for face in faces:
        path = _find(face.filename, search)
        if path is None:
            continue
        codepoints = _read_codepoints(path, face.subfont_index)
        if not codepoints:
            continue
        # validate=0: checksums of a 20 MB font cost time and prove nothing here.
        font = ReportlabTTFont(face.name, path, validate=0, subfontIndex=face.subfont_index)
        _read_tables_in_place(font.face)
        pdfmetrics.registerFont(font)
        loaded.append(LoadedFace(face, path, codepoints))
    if not loaded:
        packages = sorted({face.debian_package for face in faces})
        raise FontNotInstalled(
            "no TrueType CJK font found (looked for "
            + ", ".join(face.filename for face in faces)
            + " in " + ", ".join(search)
            + "); install the Debian package " + " or ".join(packages)
            + f" (apt-get install {packages[0]}), or set {FONT_DIR_ENV} to a directory holding these files"
        )
    return FontStack(tuple(loaded))


@functools.lru_cache(maxsize=4)
def _cached_stack(dirs: tuple[str, ...]) -> FontStack:
    return load_font_stack(DEFAULT_FACES, dirs)


def default_font_stack() -> FontStack:
    """The process-wide stack for the current search path (read once: the fonts are large)."""
    return _cached_stack(_search_dirs())


def coverage_check(text: str) -> list[str]:
    """Characters of ``text`` the default stack cannot draw."""
    return default_font_stack().coverage_check(text)
