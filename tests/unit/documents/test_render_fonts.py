"""The CJK font stack: coverage of rare name characters, fallback runs, and
a clear error when no usable font is installed."""
from __future__ import annotations

import os
import re

import pytest
from reportlab.pdfbase import pdfmetrics

from services.common import fonts
from services.common.fonts import FontFace, FontNotInstalled, coverage_check, default_font_stack, load_font_stack

HANAZONO = "/usr/share/fonts/truetype/hanazono"
EXT_A = "䶮"          # U+4DAE, CJK Ext A
EXT_B = "𠮷"          # U+20BB7, CJK Ext B (HanaMinA carries it)
EXT_B_ONLY_IN_B = "𫝀"  # U+2B740, CJK Ext D: only HanaMinB has it
EXT_G = "\U00030000"  # CJK Ext G (Unicode 13): newer than the Hanazono fonts


def test_default_stack_puts_hanazono_mincho_first():
    stack = default_font_stack()
    assert [f.face.name for f in stack.faces][:2] == ["HanaMinA", "HanaMinB"]
    assert stack.primary == "HanaMinA"


def test_rare_name_characters_are_covered():
    assert coverage_check(f"王{EXT_A}李{EXT_B}祥{EXT_B_ONLY_IN_B}") == []


def test_uncovered_characters_are_reported_once_in_order():
    text = f"张{EXT_G}三\u200b{EXT_G}\x00"
    assert coverage_check(text) == [EXT_G, "\u200b", "\x00"]


def test_line_break_is_layout_not_a_missing_glyph():
    assert coverage_check("第一行\n第二行") == []


def test_runs_switch_to_the_fallback_face_only_where_needed():
    stack = default_font_stack()
    assert stack.runs(f"钱{EXT_B_ONLY_IN_B}多") == [
        ("HanaMinA", "钱"), ("HanaMinB", EXT_B_ONLY_IN_B), ("HanaMinA", "多"),
    ]


def test_runs_refuse_an_uncovered_character():
    with pytest.raises(ValueError, match=re.escape("U+30000")):
        default_font_stack().runs(f"张{EXT_G}")


def test_checker_and_reportlab_agree_on_every_code_point():
    """The check reads the cmap with fontTools; reportlab draws from its own
    cmap parser. A code point the check accepts but reportlab lacks would be
    silently dropped, so the two must agree."""
    for loaded in default_font_stack().faces:
        drawn = set(pdfmetrics.getFont(loaded.face.name).face.charToGlyph)
        assert loaded.codepoints <= drawn, loaded.face.name


def test_no_font_found_names_the_debian_package(tmp_path):
    with pytest.raises(FontNotInstalled) as caught:
        load_font_stack(dirs=(str(tmp_path),))
    message = str(caught.value)
    assert "fonts-hanazono" in message and "ESIGN_FONT_DIR" in message and str(tmp_path) in message


def test_font_dir_env_replaces_the_search_path(tmp_path, monkeypatch):
    os.symlink(f"{HANAZONO}/HanaMinA.ttf", tmp_path / "HanaMinA.ttf")
    monkeypatch.setenv(fonts.FONT_DIR_ENV, str(tmp_path))
    stack = default_font_stack()
    assert [f.face.name for f in stack.faces] == ["HanaMinA"]
    assert stack.faces[0].path == str(tmp_path / "HanaMinA.ttf")
    # without HanaMinB the Ext D character is no longer drawable
    assert stack.coverage_check(EXT_B_ONLY_IN_B) == [EXT_B_ONLY_IN_B]


def _cff_font(path) -> None:
    """A one-glyph OpenType font with CFF outlines (as Noto CJK ships), built here."""
    from fontTools.fontBuilder import FontBuilder
    from fontTools.pens.t2CharStringPen import T2CharStringPen

    pen = T2CharStringPen(600, None)
    pen.moveTo((50, 0)), pen.lineTo((550, 0)), pen.lineTo((550, 700)), pen.lineTo((50, 700)), pen.closePath()
    builder = FontBuilder(1000, isTTF=False)
    builder.setupGlyphOrder([".notdef", "uni738B"])
    builder.setupCharacterMap({0x738B: "uni738B"})  # 王
    empty = T2CharStringPen(600, None).getCharString()
    builder.setupCFF("TestCFF", {"FullName": "TestCFF"}, {".notdef": empty, "uni738B": pen.getCharString()}, {})
    builder.setupHorizontalMetrics({".notdef": (600, 0), "uni738B": (600, 50)})
    builder.setupHorizontalHeader(ascent=800, descent=-200)
    builder.setupNameTable({"familyName": "TestCFF", "styleName": "Regular"})
    builder.setupOS2()
    builder.setupPost()
    builder.save(str(path))


def test_cff_outline_font_is_not_usable(tmp_path):
    """reportlab cannot embed CFF outlines (Noto CJK), so such a face counts as absent."""
    _cff_font(tmp_path / "TestCFF.otf")
    from fontTools.ttLib import TTFont

    assert "CFF " in TTFont(str(tmp_path / "TestCFF.otf"))  # it really is a CFF font with 王 in its cmap
    with pytest.raises(FontNotInstalled, match="fonts-noto-cjk"):
        load_font_stack(faces=(FontFace("TestCFF", "TestCFF.otf", "fonts-noto-cjk"),), dirs=(str(tmp_path),))


