"""services/signing/hex_strings.py: the one-slice hex-string reader gives pyHanko's
result, leaves the stream where pyHanko's does, and fails as pyHanko's does (a signed PDF
read both ways: tests/unit/signing/test_pades.py)."""
from __future__ import annotations

import io
import os

import pytest
from pyhanko.pdf_utils.misc import PdfStreamError

from services.signing import hex_strings
from services.signing.hex_strings import read_hex_string

PYHANKO = hex_strings._pyhanko_reader

CASES = [
    b"<>",
    b"<48656C6C6F>",
    b"<48656c6c6f>",
    b"<4 8 65\n6C\r\n6C\t6F\x0c\x00>",
    b"<486>",  # odd: the last digit is followed by 0 (ISO 32000-1 7.3.4.3)
    b"<FEFF00410042>",  # a UTF-16BE text string: pyHanko's pdf_string decides its type
    b"<" + os.urandom(20_000).hex().encode() + b">",  # longer than one chunk's worth of bytes
    b"<" + b"ab" * 40_000 + b">",  # the closing '>' beyond the first chunk
    b"<41%comment\n42>",  # '%': pyHanko's reader skips a comment; handed to it
]


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("after", [b"", b" /Next 1 0 R>>", b">>"])
def test_same_object_and_position_as_pyhanko(data, after):
    theirs, ours = io.BytesIO(b"xx" + data + after), io.BytesIO(b"xx" + data + after)
    theirs.seek(2)
    ours.seek(2)
    expected = PYHANKO(theirs)
    found = read_hex_string(ours)
    assert type(found) is type(expected)
    assert found == expected
    assert ours.tell() == theirs.tell() == 2 + len(data)


@pytest.mark.parametrize("data", [b"<41G2>", b"<4142", b"<41 42 % no end"])
def test_refused_as_pyhanko_refuses(data):
    with pytest.raises(PdfStreamError) as theirs:
        PYHANKO(io.BytesIO(data))
    with pytest.raises(PdfStreamError) as ours:
        read_hex_string(io.BytesIO(data))
    assert str(ours.value) == str(theirs.value)
