"""Properties (hypothesis) of resident ID numbers, mobile numbers and their masks.

The examples in test_idnumber.py / test_phone.py pin the documented cases;
these state the rules over every input hypothesis can build: every number
made from (address code, birth date, sequence) with its ISO 7064 check
character is accepted, every single-character change is refused by the first
rule it breaks, every accepted spelling of a mobile number is the same number,
and a mask shows no digit beyond the documented ones.
"""
import datetime as dt
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from services.common.errors import InvalidInput
from services.common.idnumber import EARLIEST_BIRTH_DATE, PROVINCE_CODES, parse_id_number
from services.common.masking import mask_id_number, mask_name, mask_phone
from services.common.phone import normalise_phone
from tests.support.properties import property_settings

PROPERTY = property_settings(150)

TODAY = dt.date(2024, 6, 15)
ASCII_DIGITS = "0123456789"


def iso7064_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 by the standard's recursive method, independent of the
    module's weight table: P = ((P + a) * 2) mod 11; the check c makes P + c ≡ 1."""
    p = 0
    for ch in first17:
        p = ((p + int(ch)) * 2) % 11
    c = (1 - p) % 11
    return "X" if c == 10 else str(c)


def expected_rule(value: str, today: dt.date) -> str | None:
    """The first rule of GB 11643 that ``value`` breaks, in the module's
    documented order, written out independently; None when it is valid."""
    if len(value) != 18:
        return "length"
    if any(ch not in ASCII_DIGITS for ch in value[:17]) or value[17] not in ASCII_DIGITS + "Xx":
        return "charset"
    if value[:2] not in PROVINCE_CODES:
        return "province"
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "birth_date"
    if not EARLIEST_BIRTH_DATE <= birth <= today:
        return "birth_date"
    if value[17].upper() != iso7064_check(value[:17]):
        return "check_digit"
    return None


def rule_of(call, *args, field: str) -> str:
    with pytest.raises(InvalidInput) as info:
        call(*args)
    assert info.value.field == field
    return info.value.rule


provinces = st.sampled_from(sorted(PROVINCE_CODES))
births = st.dates(min_value=EARLIEST_BIRTH_DATE, max_value=TODAY)
sequences = st.integers(0, 999).map(lambda n: f"{n:03d}")
county = st.integers(0, 9999).map(lambda n: f"{n:04d}")


@st.composite
def resident_ids(draw):
    body = draw(provinces) + draw(county) + draw(births).strftime("%Y%m%d") + draw(sequences)
    return body + iso7064_check(body)


# --- resident ID numbers ----------------------------------------------------------


@PROPERTY
@given(province=provinces, area=county, birth=births, seq=sequences, lower_x=st.booleans())
def test_every_number_built_with_its_check_character_is_accepted(province, area, birth, seq, lower_x):
    body = province + area + birth.strftime("%Y%m%d") + seq
    check = iso7064_check(body)
    given_check = check.lower() if lower_x else check
    rid = parse_id_number(body + given_check, today=TODAY)
    assert rid.number == body + check  # x is stored as X
    assert rid.province_code == province and rid.province == PROVINCE_CODES[province]
    assert rid.birth_date == birth
    assert rid.sex == ("male" if int(seq[2]) % 2 else "female")


@PROPERTY
@given(number=resident_ids(), position=st.integers(0, 17),
       replacement=st.one_of(st.sampled_from(ASCII_DIGITS + "Xx"), st.characters()))
def test_any_single_character_change_is_refused_by_the_first_rule_it_breaks(number, position, replacement):
    assume(replacement.upper() != number[position].upper())  # x for X is the same number
    changed = number[:position] + replacement + number[position + 1:]
    rule = expected_rule(changed, TODAY)
    # MOD 11-2 catches every single substitution: nothing changed is still valid
    assert rule is not None
    assert rule_of(parse_id_number, changed, TODAY, field="id_number") == rule


@PROPERTY
@given(number=resident_ids(), position=st.integers(0, 16))
def test_any_adjacent_transposition_of_different_digits_is_refused(number, position):
    a, b = number[position], number[position + 1]
    assume(a != b and b != "X")
    swapped = number[:position] + b + a + number[position + 2:]
    rule = expected_rule(swapped, TODAY)
    assert rule is not None
    assert rule_of(parse_id_number, swapped, TODAY, field="id_number") == rule


@PROPERTY
@given(province=provinces, birth=st.dates(min_value=dt.date(1000, 1, 1), max_value=dt.date(9999, 12, 31)),
       today=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31)), seq=sequences)
def test_birth_dates_outside_1800_to_today_are_refused_by_the_birth_date_rule(province, birth, today, seq):
    body = province + "0101" + birth.strftime("%Y%m%d") + seq
    number = body + iso7064_check(body)
    if EARLIEST_BIRTH_DATE <= birth <= today:
        assert parse_id_number(number, today=today).birth_date == birth
    else:
        assert rule_of(parse_id_number, number, today, field="id_number") == "birth_date"


@PROPERTY
@given(value=st.text(alphabet=st.sampled_from(ASCII_DIGITS + "Xx０１ ٣"), min_size=0, max_size=20)
       | st.text(max_size=20))
def test_arbitrary_text_is_judged_by_the_documented_rules_in_order(value):
    rule = expected_rule(value, TODAY)
    if rule is None:
        assert parse_id_number(value, today=TODAY).number == value[:17] + value[17].upper()
    else:
        assert rule_of(parse_id_number, value, TODAY, field="id_number") == rule


@PROPERTY
@given(number=resident_ids())
def test_a_masked_id_number_shows_only_its_first_and_last_four(number):
    masked = mask_id_number(number)
    assert masked == number[:4] + "*" * 10 + number[-4:]
    # the birth date (positions 7-14) never shows
    assert number[6:14] not in masked


# --- mobile numbers -----------------------------------------------------------------


nationals = st.builds(lambda second, rest: "1" + second + rest,
                      st.sampled_from("3456789"), st.text(alphabet=ASCII_DIGITS, min_size=9, max_size=9))
separators = st.text(alphabet=" -", max_size=2)


@st.composite
def spellings(draw, national):
    """``national`` written with any accepted prefix (none, +86, 0086, 86),
    and spaces or hyphens anywhere among the digits and around the number."""
    prefix = draw(st.sampled_from(["", "+86", "0086", "86"]))
    chars = list(prefix + national)
    out = draw(separators)
    for i, ch in enumerate(chars):
        out += ch
        if i < len(chars) - 1:
            out += draw(separators)
    return out + draw(separators)


@PROPERTY
@given(data=st.data(), national=nationals)
def test_every_accepted_spelling_normalises_to_the_same_eleven_digits(data, national):
    first = data.draw(spellings(national))
    second = data.draw(spellings(national))
    assert normalise_phone(first) == normalise_phone(second) == national
    assert normalise_phone(normalise_phone(first)) == national  # idempotent


@PROPERTY
@given(national=st.text(alphabet=ASCII_DIGITS, min_size=11, max_size=11), prefix=st.sampled_from(["", "+86", "0086"]))
def test_eleven_digits_are_refused_by_prefix_unless_they_start_13_to_19(national, prefix):
    if not prefix and national.startswith("00"):
        # a leading 00 is the international prefix: another country
        assert rule_of(normalise_phone, national, field="phone") == "country_code"
    elif re.fullmatch(r"1[3-9][0-9]{9}", national):
        assert normalise_phone(prefix + national) == national
    else:
        assert rule_of(normalise_phone, prefix + national, field="phone") == "prefix"


@PROPERTY
@given(digits=st.text(alphabet=ASCII_DIGITS, min_size=1, max_size=16))
def test_other_digit_counts_are_refused_by_length(digits):
    assume(len(digits) != 11)
    # 13 digits starting 86 are +86 and 11 digits; 00... is a foreign country code
    assume(not (len(digits) == 13 and digits.startswith("86")) and not digits.startswith("00"))
    assert rule_of(normalise_phone, digits, field="phone") == "length"
    assert rule_of(normalise_phone, "+86 " + digits, field="phone") == "length"


@PROPERTY
@given(national=nationals, position=st.integers(0, 10),
       intruder=st.characters(exclude_characters=ASCII_DIGITS + " -+"))
def test_any_other_character_inside_a_number_is_refused_by_charset(national, position, intruder):
    value = national[:position] + intruder + national[position:]
    assert rule_of(normalise_phone, value, field="phone") == "charset"
    with pytest.raises(InvalidInput) as info:
        normalise_phone(value)
    assert national not in str(info.value)  # never echoes the number


@PROPERTY
@given(data=st.data(), national=nationals)
def test_a_masked_phone_shows_only_the_first_three_and_last_four_digits(data, national):
    spelled = data.draw(spellings(national))
    assert normalise_phone(spelled) == national
    expected = national[:3] + "****" + national[-4:]
    assert mask_phone(national) == expected
    # the mask of any accepted spelling hides the same four middle digits
    assert mask_phone(spelled) == expected


@pytest.mark.parametrize("spelled", ["+86 138 0013 8000", "138-0013-8000", "13800138000-", "0086-138 0013 8000"])
def test_spelled_numbers_found_by_the_property_mask_like_the_number(spelled):
    # mask_phone counted the separators and showed "8 0****8000" for "+86 138 0013 8000"
    assert mask_phone(spelled) == "138****8000"


@PROPERTY
@given(family=st.characters(exclude_categories=("Cs",)), given_name=st.text(min_size=1, max_size=5))
def test_a_masked_name_keeps_only_the_family_name_character(family, given_name):
    # one character per code point, so 𠮷 (outside the BMP) is one star
    masked = mask_name(family + given_name)
    assert masked == family + "*" * len(given_name)
