"""Names as on the ID card: Han characters (BMP and beyond), middle dots."""
import pytest

from services.common.errors import InvalidInput
from services.identity.person_name import MIDDLE_DOT, NameRules, is_han, normalise_name


def rule_of(value, rules=NameRules()) -> str:
    with pytest.raises(InvalidInput) as info:
        normalise_name(value, rules)
    assert info.value.field == "name"
    return info.value.rule


@pytest.mark.parametrize("name", ["张三", "欧阳娜娜", "李䶮", "吉𠮷", "𠮷𠮷", "买买提·艾力", "阿卜杜拉·买买提·艾力",
                                  "王〇", "司马懿"])
def test_accepted_names_come_back_unchanged(name):
    assert normalise_name(name) == name


def test_rare_characters_are_what_the_issue_names():
    assert ord("䶮") == 0x4DAE   # CJK Extension A
    assert ord("𠮷") == 0x20BB7  # CJK Extension B, outside the BMP
    assert len("𠮷".encode("utf-16-le")) == 4  # two UTF-16 units…
    rules = NameRules(min_length=2, max_length=2)
    assert normalise_name("𠮷𠮷", rules) == "𠮷𠮷"  # …but one character each


def test_extension_characters_newer_than_pythons_unicode_tables():
    ext_i = "\U0002EBF0"  # CJK Extension I (Unicode 15.1)
    ext_h = "\U00031350"  # CJK Extension H (Unicode 15.0)
    assert normalise_name("张" + ext_i) == "张" + ext_i
    assert normalise_name("张" + ext_h) == "张" + ext_h


def test_compatibility_ideographs_are_not_folded():
    name = "金\uf900"  # 豈 U+F900, NFC would make it U+8C48
    assert normalise_name(name) == name


@pytest.mark.parametrize("dot", ["\u00b7", "\u2022", "\u2027", "\u2219", "\u22c5", "\u30fb", "\uff65", "\u0387",
                                 "\uff0e", "."])
def test_middle_dot_look_alikes_become_u00b7(dot):
    assert normalise_name(f"买买提{dot}艾力") == "买买提\u00b7艾力"


def test_surrounding_white_space_is_trimmed():
    assert normalise_name("  张三\u3000") == "张三"


@pytest.mark.parametrize("value", ["", "   ", "\u3000"])
def test_empty(value):
    assert rule_of(value) == "required"


@pytest.mark.parametrize("value", ["张3", "张三1", "张٣", "张３"])
def test_digits(value):
    assert rule_of(value) == "digits"


@pytest.mark.parametrize("value", ["张\x00三", "张\u200b三", "张\u202e三", "张\x7f三", "张\ufeff三"])
def test_control_and_invisible_characters(value):
    assert rule_of(value) == "control_chars"


@pytest.mark.parametrize("value", ["·买买提", "买买提·", "买买提··艾力", "买买提•·艾力", "·", "．张三"])
def test_dot_positions(value):
    assert rule_of(value) == "dot_position"


@pytest.mark.parametrize("value", ["Zhang San", "张 三", "张-三", "张三!", "キム", "김철수",
                                   "张\u0301三", "张\ufe00三", "张\ue000三"])
def test_other_characters(value):
    assert rule_of(value) == "charset"


def test_length_limits_count_code_points_and_dots():
    assert rule_of("张") == "min_length"
    assert rule_of("𠮷", NameRules(min_length=2)) == "min_length"
    assert normalise_name("𠮷" * 30) == "𠮷" * 30
    assert rule_of("𠮷" * 31) == "max_length"
    long_dotted = MIDDLE_DOT.join(["买买提"] * 8)  # 24 + 7 dots = 31
    assert len(long_dotted) == 31
    assert rule_of(long_dotted) == "max_length"
    assert normalise_name(long_dotted, NameRules(max_length=31)) == long_dotted


def test_non_text():
    assert rule_of(None) == "charset"


def test_is_han():
    assert is_han("张") and is_han("䶮") and is_han("𠮷")
    assert not is_han("A") and not is_han("の") and not is_han("·")
