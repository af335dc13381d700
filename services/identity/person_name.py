"""Personal names as written on a resident identity card.

A name on the card is written in Han characters; names of many minority
nationalities and transliterated names separate their parts with the middle
dot U+00B7 (``买买提·艾力``), the separator GB 18030 and the public-security
name rules use. Rare characters outside the Basic Multilingual Plane
(``𠮷`` U+20BB7 in CJK Extension B) are ordinary name characters here, and so
are those of Extension A (``䶮`` U+4DAE).

Decisions, each for a reason:

* Length is counted in code points, the characters a person sees; a Python
  ``str`` is already a sequence of code points, so ``𠮷`` counts as one (it is
  two UTF-16 units in a browser's ``String.length``).
* Han characters are recognised by explicit Unicode block ranges rather than
  ``unicodedata``, whose tables lag behind (Python 3.11 knows Unicode 14 and
  would not recognise Extension I).
* No Unicode normalisation is applied to the Han characters: NFC folds the
  CJK compatibility ideographs (U+F900…) into their unified forms, and the
  stored name would then no longer be the character on the card.
* Look-alikes of the middle dot that input methods produce are normalised to
  U+00B7: • U+2022, ‧ U+2027, ∙ U+2219, ⋅ U+22C5, ・ U+30FB, ･ U+FF65,
  · U+0387 (canonically equal to U+00B7), ． U+FF0E and the ASCII full stop.
  A dot in a Chinese name can only ever mean the separator, so this loses
  nothing and makes the same person's name compare equal.
* Private-use code points (some old systems put rare characters there) are
  rejected: they mean different characters on different systems.
* Surrounding white space (ASCII or the ideographic space U+3000) is trimmed;
  white space inside a name is rejected.

Failures raise :class:`~services.common.errors.InvalidInput` with
``field="name"`` and one of the rules ``required``, ``control_chars``,
``digits``, ``charset``, ``dot_position``, ``min_length``, ``max_length``.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from services.common.errors import InvalidInput

FIELD = "name"
MIDDLE_DOT = "\u00b7"

_DOT_LOOKALIKES = frozenset("\u2022\u2027\u2219\u22c5\u30fb\uff65\u0387\uff0e.")

# Han blocks (Unicode 15.1): unified ideographs and their extensions A-I,
# the two compatibility blocks, and 〇 U+3007 (used as a name character).
_HAN_RANGES: tuple[tuple[int, int], ...] = (
    (0x3007, 0x3007),
    (0x3400, 0x4DBF),    # Extension A
    (0x4E00, 0x9FFF),    # URO
    (0xF900, 0xFAFF),    # Compatibility Ideographs
    (0x20000, 0x2A6DF),  # Extension B
    (0x2A700, 0x2B73F),  # Extension C
    (0x2B740, 0x2B81F),  # Extension D
    (0x2B820, 0x2CEAF),  # Extension E
    (0x2CEB0, 0x2EBEF),  # Extension F
    (0x2EBF0, 0x2EE5F),  # Extension I
    (0x2F800, 0x2FA1F),  # Compatibility Ideographs Supplement
    (0x30000, 0x3134F),  # Extension G
    (0x31350, 0x323AF),  # Extension H
)
_TRIM = " \t\r\n\u3000"


@dataclass(frozen=True)
class NameRules:
    """Length limits in characters (code points), the middle dot included."""

    min_length: int = 2
    # The household-register systems allow long transliterated names; 30
    # characters holds the longest minority names with several dots.
    max_length: int = 30


DEFAULT_RULES = NameRules()


def is_han(ch: str) -> bool:
    """True when the single code point ``ch`` is a Han ideograph."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _HAN_RANGES)


def normalise_name(value: object, rules: NameRules = DEFAULT_RULES) -> str:
    """Validate a person's name and return it with dots normalised to U+00B7."""
    if not isinstance(value, str):
        raise InvalidInput(FIELD, "charset", f"expected text, found {type(value).__name__}")
    name = value.strip(_TRIM)
    if not name:
        raise InvalidInput(FIELD, "required", "expected a name, found nothing")

    chars = []
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Cn") and not is_han(ch):
            # Cn covers code points unassigned in Python's Unicode version;
            # Han blocks are checked first so newer ideographs still pass.
            raise InvalidInput(FIELD, "control_chars", "expected no control or invisible characters")
        if category == "Nd" or ch in "0123456789":
            raise InvalidInput(FIELD, "digits", "expected no digits in a name")
        if ch == MIDDLE_DOT or ch in _DOT_LOOKALIKES:
            chars.append(MIDDLE_DOT)
        elif is_han(ch):
            chars.append(ch)
        else:
            raise InvalidInput(FIELD, "charset", "expected Han characters, optionally parts joined by a middle dot")

    if chars[0] == MIDDLE_DOT or chars[-1] == MIDDLE_DOT:
        raise InvalidInput(FIELD, "dot_position", "expected the middle dot only between parts of the name")
    if any(a == MIDDLE_DOT and b == MIDDLE_DOT for a, b in zip(chars, chars[1:], strict=False)):
        raise InvalidInput(FIELD, "dot_position", "expected a single middle dot between parts of the name")

    if len(chars) < rules.min_length:
        raise InvalidInput(FIELD, "min_length", f"expected at least {rules.min_length} characters, found {len(chars)}")
    if len(chars) > rules.max_length:
        raise InvalidInput(FIELD, "max_length", f"expected at most {rules.max_length} characters, found {len(chars)}")
    return "".join(chars)
