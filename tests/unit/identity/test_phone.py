"""Mainland mobile numbers: prefixes and separators accepted, the rest refused."""
import pytest

from services.common.errors import InvalidInput
from services.common.phone import normalise_phone


def rule_of(value) -> str:
    with pytest.raises(InvalidInput) as info:
        normalise_phone(value)
    assert info.value.field == "phone"
    return info.value.rule


@pytest.mark.parametrize("value", [
    "13800138000",
    "+8613800138000",
    "+86 138 0013 8000",
    "+86-138-0013-8000",
    "0086 13800138000",
    "008613800138000",
    "8613800138000",
    "86 138-0013-8000",
    "138 0013 8000",
    "138-0013-8000",
    " 13800138000 ",
])
def test_accepted_forms_normalise_to_eleven_digits(value):
    assert normalise_phone(value) == "13800138000"


@pytest.mark.parametrize("second", "3456789")
def test_every_allowed_second_digit(second):
    number = "1" + second + "012345678"
    assert normalise_phone(number) == number


def test_a_number_starting_186_is_not_mistaken_for_a_prefix():
    assert normalise_phone("18612345678") == "18612345678"
    assert normalise_phone("+86 18612345678") == "18612345678"
    assert normalise_phone("8618612345678") == "18612345678"


@pytest.mark.parametrize("value", ["10012345678", "11012345678", "12012345678", "23800138000", "03800138000"])
def test_wrong_leading_digits(value):
    assert rule_of(value) == "prefix"


@pytest.mark.parametrize("value", ["1380013800", "138001380001", "+86138001380", "0086138001380000", "1"])
def test_wrong_lengths(value):
    assert rule_of(value) == "length"


@pytest.mark.parametrize("value", ["+1 650 253 0000", "+852 9123 4567", "00852 91234567"])
def test_other_country_codes(value):
    assert rule_of(value) == "country_code"


@pytest.mark.parametrize("value", [
    "",
    "   ",
    "１３８００１３８０００",       # full-width digits
    "138001380\u0660\u0660",       # Arabic-Indic zeros
    "138.0013.8000",
    "(+86)13800138000",
    "138\t0013\t8000",
    "138\u30000013\u30008000",     # ideographic space
    "1380013800O",                  # letter O
    "++8613800138000",
    "86+13800138000",
])
def test_bad_characters(value):
    assert rule_of(value) == "charset"


def test_non_text():
    assert rule_of(13800138000) == "charset"


@pytest.mark.parametrize("value", ["1380013800", "12012345678", "+1 650 253 0000"])
def test_messages_do_not_echo_the_number(value):
    with pytest.raises(InvalidInput) as info:
        normalise_phone(value)
    assert value.replace(" ", "") not in str(info.value).replace(" ", "")
