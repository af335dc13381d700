"""GB 11643-1999 resident ID numbers: every rule, in its order."""
import datetime as dt

import pytest

from services.common.errors import InvalidInput
from services.common.idnumber import ResidentId, parse_id_number

TODAY = dt.date(2024, 6, 15)


def iso7064_check(first17: str) -> str:
    """ISO 7064 MOD 11-2 by the standard's recursive method (independent of
    the weight table the module uses): P = ((P + a) * 2) mod 11, then the
    check c makes (P + c) mod 11 == 1."""
    p = 0
    for ch in first17:
        p = ((p + int(ch)) * 2) % 11
    c = (1 - p) % 11
    return "X" if c == 10 else str(c)


def make(address="110105", birth="19491231", seq="002") -> str:
    body = address + birth + seq
    return body + iso7064_check(body)


def rule_of(value, today=TODAY) -> str:
    with pytest.raises(InvalidInput) as info:
        parse_id_number(value, today=today)
    assert info.value.field == "id_number"
    return info.value.rule


def test_helper_agrees_with_the_standards_examples():
    # Guards the independent helper itself against the published examples.
    assert iso7064_check("11010519491231002") == "X"
    assert iso7064_check("44052418800101001") == "4"


def test_standard_example_beijing_1949():
    rid = parse_id_number("11010519491231002X", today=TODAY)
    assert rid == ResidentId(number="11010519491231002X", province_code="11",
                             birth_date=dt.date(1949, 12, 31), sex="female")
    assert rid.province == "北京"


def test_standard_example_guangdong_1880():
    rid = parse_id_number("440524188001010014", today=TODAY)
    assert rid.number == "440524188001010014"
    assert rid.birth_date == dt.date(1880, 1, 1)
    assert rid.sex == "male"  # 17th digit 1 is odd
    assert rid.province_code == "44"


def test_lower_case_x_is_accepted_and_normalised():
    assert parse_id_number("11010519491231002x", today=TODAY).number == "11010519491231002X"


@pytest.mark.parametrize("seq,sex", [("001", "male"), ("002", "female"), ("999", "male"), ("990", "female")])
def test_sex_from_seventeenth_digit(seq, sex):
    assert parse_id_number(make(seq=seq), today=TODAY).sex == sex


def test_today_defaults_to_the_real_date():
    assert parse_id_number("11010519491231002X").birth_date.year == 1949
    beijing_today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    assert parse_id_number(make(birth=beijing_today.strftime("%Y%m%d"))).birth_date == beijing_today
    future = make(birth=(beijing_today + dt.timedelta(days=1)).strftime("%Y%m%d"))
    assert rule_of(future, today=None) == "birth_date"


# --- length ---------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "",
    "11010519491231002",      # 17
    "11010519491231002XX",    # 19
    "110105491231002",        # legacy 15-digit number
    " 11010519491231002X",    # surrounding space is not trimmed
    "11010519491231002X\n",
])
def test_wrong_length(value):
    assert rule_of(value) == "length"


def test_length_counts_code_points_not_bytes():
    # 18 full-width digits are 18 characters (54 UTF-8 bytes): the failure is
    # the charset, not the length.
    full_width = "".join(chr(ord("０") + int(c)) for c in "44052418800101001") + "４"
    assert len(full_width) == 18
    assert rule_of(full_width) == "charset"


# --- charset --------------------------------------------------------------

@pytest.mark.parametrize("position", [0, 5, 10, 16, 17])
def test_a_single_full_width_digit_is_rejected(position):
    valid = "440524188001010014"
    digit = valid[position]
    tampered = valid[:position] + chr(ord("０") + int(digit)) + valid[position + 1:]
    assert tampered[position].isdigit()  # why the module cannot use isdigit()
    assert rule_of(tampered) == "charset"


# Arabic-Indic 4, Devanagari 1, Malayalam 1, mathematical double-struck 1
@pytest.mark.parametrize("foreign_digit", ["\u0664", "\u0967", "\u0d67", "\U0001d7d9"])
def test_other_unicode_digits_are_rejected(foreign_digit):
    value = foreign_digit + "10105" + "19491231002X"
    assert len(value) == 18
    assert rule_of(value) == "charset"


@pytest.mark.parametrize("value", [
    "1101051949123100X2",   # X not last
    "11010519491231002Y",
    "11010519491231002 ",
    "1101051949-231002X",
    "A1010519491231002X",
    "11010519491231002Ｘ",  # full-width X
])
def test_bad_characters(value):
    assert rule_of(value) == "charset"


def test_non_text_is_rejected():
    assert rule_of(110105194912310024) == "charset"
    assert rule_of(None) == "charset"


# --- province -------------------------------------------------------------

REAL_PROVINCES = ["11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37",
                  "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64",
                  "65", "71", "81", "82", "83"]


@pytest.mark.parametrize("code", REAL_PROVINCES)
def test_every_province_level_code_is_accepted(code):
    assert parse_id_number(make(address=code + "0101"), today=TODAY).province_code == code


@pytest.mark.parametrize("code", ["00", "10", "16", "20", "24", "30", "38", "40", "47", "49", "55", "60", "66",
                                  "70", "72", "80", "84", "90", "91", "99"])
def test_unknown_province_codes(code):
    assert rule_of(make(address=code + "0101")) == "province"


# --- birth date -----------------------------------------------------------

@pytest.mark.parametrize("birth", [
    "19000229",  # 1900 is not a leap year
    "19010229",
    "19490230",
    "19491131",
    "19491301",
    "19490001",
    "19491200",
    "00000000",
])
def test_impossible_dates(birth):
    assert rule_of(make(birth=birth)) == "birth_date"


def test_leap_day_of_2000_is_real():
    assert parse_id_number(make(birth="20000229"), today=TODAY).birth_date == dt.date(2000, 2, 29)


def test_not_before_1800():
    assert rule_of(make(birth="17991231")) == "birth_date"
    assert parse_id_number(make(birth="18000101"), today=TODAY).birth_date == dt.date(1800, 1, 1)


def test_future_birth_dates_relative_to_injected_today():
    assert parse_id_number(make(birth="20240615"), today=TODAY).birth_date == TODAY
    assert rule_of(make(birth="20240616")) == "birth_date"
    assert rule_of(make(birth="20990101")) == "birth_date"
    # The same number is fine once that day has come.
    assert parse_id_number(make(birth="20240616"), today=dt.date(2024, 6, 16)).birth_date == dt.date(2024, 6, 16)


# --- check digit ----------------------------------------------------------

@pytest.mark.parametrize("wrong", [c for c in "0123456789X" if c != "X"])
def test_every_wrong_check_character_of_the_example(wrong):
    assert rule_of("11010519491231002" + wrong) == "check_digit"


@pytest.mark.parametrize("wrong", [c for c in "0123456789X" if c != "4"])
def test_every_wrong_check_character_of_the_1880_example(wrong):
    assert rule_of("44052418800101001" + wrong) == "check_digit"


def test_single_digit_error_is_caught():
    valid = "440524188001010014"
    tampered = valid[:3] + "6" + valid[4:]  # address digit changed
    assert rule_of(tampered) == "check_digit"


def test_adjacent_transposition_is_caught():
    valid = "440524188001010014"
    tampered = valid[:2] + valid[3] + valid[2] + valid[4:]  # 05 -> 50
    assert tampered != valid
    assert rule_of(tampered) == "check_digit"


# --- order and privacy ----------------------------------------------------

def test_rules_are_checked_in_order():
    # Bad province and bad check: the province rule wins.
    assert iso7064_check("00010519491231002") != "1"
    assert rule_of("000105194912310021") == "province"
    # Bad date and bad check: the date rule wins.
    assert iso7064_check("11010519000229002") != "1"
    assert rule_of("110105190002290021") == "birth_date"


@pytest.mark.parametrize("value", ["11010519491231002", "110105194912310021", "110105190002290021",
                                   "000105194912310021"])
def test_messages_never_echo_the_number(value):
    with pytest.raises(InvalidInput) as info:
        parse_id_number(value, today=TODAY)
    text = str(info.value) + repr(info.value.to_dict())
    assert value not in text
    assert value[6:14] not in text  # not even the birth date
    assert info.value.message
