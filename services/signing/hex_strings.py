"""Reading a PDF hexadecimal string in one slice (ISO 32000-1 §7.3.4.3).

pyHanko 0.38 reads a hexadecimal string one byte at a time
(``pyhanko.pdf_utils.generic.read_hex_string_from_stream`` calls
``read_non_whitespace`` per digit). A PAdES signature's ``/Contents`` is such a
string, as long as the room reserved for the CMS: 16,384 hex digits here
(``SignerSettings.signature_reserved_hex``). Every read of a signed PDF
that looks at its signatures (the second party's prepare, B-LTA
finalisation, verification) parsed each of them digit by digit: in the
full-flow profile that was 15% of the signing service's CPU.

:func:`read_hex_string` gives the same object for the same bytes: it finds the
closing ``>``, drops PDF whitespace (§7.2.2) and decodes the digits at once,
a final odd digit taken as followed by ``0`` (§7.3.4.3). Anything unusual
(a ``%`` inside the string, which pyHanko's reader treats as a comment, a
character that is not a hex digit, no ``>`` before the end) is handed to
pyHanko's own reader from the same position, so its result and its errors
stay exactly pyHanko's.

:func:`install` points pyHanko's object reader at it; idempotent.
"""
from __future__ import annotations

import binascii
import os

from pyhanko.pdf_utils import generic

_WHITESPACE = b" \n\r\t\x0c\x00"  # ISO 32000-1 Table 1; pyhanko.pdf_utils.misc.PDF_WHITESPACE
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_CHUNK = 65_536

_pyhanko_reader = generic.read_hex_string_from_stream


def read_hex_string(stream):
    """The string object of the ``<…>`` at the stream's position, which is left after the ``>``."""
    start = stream.tell()
    stream.read(1)  # the opening '<'
    parts = []
    while True:
        chunk = stream.read(_CHUNK)
        if not chunk:
            return _fallback(stream, start)
        end = chunk.find(b">")
        if end < 0:
            parts.append(chunk)
            continue
        parts.append(chunk[:end])
        # back to just after the '>': what the chunk read past it belongs to the next object
        stream.seek(end + 1 - len(chunk), os.SEEK_CUR)
        break
    digits = b"".join(parts).translate(None, _WHITESPACE)
    if digits.translate(None, _HEX_DIGITS):  # '%' or another character: pyHanko's reader decides
        return _fallback(stream, start)
    if len(digits) % 2:
        digits += b"0"
    return generic.pdf_string(binascii.unhexlify(digits))


def _fallback(stream, start: int):
    stream.seek(start)
    return _pyhanko_reader(stream)


def install() -> None:
    """Make pyHanko's ``read_object`` read hexadecimal strings with :func:`read_hex_string`."""
    generic.read_hex_string_from_stream = read_hex_string
