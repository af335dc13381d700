"""Properties (hypothesis) of the document field rules: amounts and their 大写,
rates and the LPR cap, dates, and character limits.

test_amount_words.py, test_lpr.py and test_template_rules.py pin the
documented examples; these state the rules over every value hypothesis can
build, against oracles written out here (a parser of 大写 amounts, the LPR in
force found by brute force, a count of characters as a person types them).
Refusals are checked by the field and rule of the typed error.
"""
import datetime as dt
import unicodedata
from decimal import Context, Decimal

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from services.common.errors import InvalidInput
from services.documents.amount_words import amount_in_words
from services.documents.lpr import LprPublication, LprTable, load_lpr_table
from services.documents.template import load_templates
from services.documents.validation import ValidationFailed
from tests.support.properties import property_settings

from .samples import TODAY, employment_values, iou_values, receipt_values, rental_values

# A decimal context wide enough to quantize anything the tests build exactly.
FAR = Context(prec=10_000, Emax=10**6, Emin=-10**6)

PROPERTY = property_settings(150)  # tests/support/properties.py

CATALOG = load_templates()
IOU = CATALOG.get("iou")
RECEIPT = CATALOG.get("receipt")
EMPLOYMENT = CATALOG.get("employment")
RENTAL = CATALOG.get("rental")
LPR = load_lpr_table()


def violations(template, values, today=TODAY) -> list[tuple[str, str]]:
    """[] when the values are valid, else the (field, rule) of every violation."""
    try:
        template.validate(values, today)
    except ValidationFailed as err:
        assert (isinstance(err, InvalidInput)
                and (err.field, err.rule) == (err.violations[0].field, err.violations[0].rule))
        return [(v.field, v.rule) for v in err.violations]
    return []


# --- 大写 amounts -----------------------------------------------------------------

DIGITS = "零壹贰叁肆伍陆柒捌玖"
PLACES = {"拾": 10, "佰": 100, "仟": 1000}


def parse_words(words: str) -> int:
    """Fen from 大写 written by the PBoC rules: an oracle independent of the writer."""
    if words == "零元整":
        return 0
    yuan_text, sep, rest = words.partition("元")
    if not sep:
        yuan_text, rest = "", words
    if rest == "整":
        return parse_integer(yuan_text) * 100
    assert not rest.endswith("整"), words  # 整 only right after 元
    rest = rest.removeprefix("零")
    jiao = fen = 0
    if "角" in rest:
        head, _, rest = rest.partition("角")
        jiao = DIGITS.index(head)
    if rest:
        assert rest.endswith("分") and len(rest) == 2, words
        fen = DIGITS.index(rest[0])
    return parse_integer(yuan_text) * 100 + jiao * 10 + fen


def parse_integer(text: str) -> int:
    for unit, value in (("亿", 10**8), ("万", 10**4)):
        if unit in text:
            high, _, low = text.rpartition(unit)
            return parse_integer(high) * value + parse_integer(low)
    total, digit = 0, 0
    for ch in text:
        if ch in PLACES:
            assert digit, text  # every 拾/佰/仟 has its digit (壹拾, never a bare 拾)
            total, digit = total + digit * PLACES[ch], 0
        else:
            digit = DIGITS.index(ch)
    return total + digit


fen_amounts = st.one_of(
    st.integers(0, 10**12 * 100),  # up to 壹万亿元
    st.integers(0, 10**6),  # many zeros inside small amounts
    # round amounts with a few non-zero digits: the 零 rules between groups
    st.lists(st.tuples(st.integers(0, 13), st.integers(1, 9)), min_size=1, max_size=4).map(
        lambda parts: sum(d * 10**p for p, d in dict(parts).items())),
)


def as_yuan(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2)


@PROPERTY
@given(fen=fen_amounts)
def test_amount_words_round_trip_and_follow_the_writing_rules(fen):
    words = amount_in_words(as_yuan(fen))
    assert parse_words(words) == fen
    assert set(words) <= set(DIGITS + "拾佰仟万亿元角分整")
    assert "零零" not in words
    if fen:
        assert not words.startswith("零")
        # a zero is written only between two non-zero parts, never before a unit
        assert not any(words[i + 1] in "拾佰仟万亿元角分整" for i, ch in enumerate(words[:-1]) if ch == "零")
        # 整 right after 元 and only there: not after 角, never after 分
        assert words.endswith("元整") == (fen % 100 == 0) and "整" not in words[:-1]
    # the same amount written as an int, a string or a Decimal with trailing zeros
    assert amount_in_words(str(as_yuan(fen))) == words
    assert amount_in_words(as_yuan(fen).quantize(Decimal("0.0001"))) == words
    if fen % 100 == 0:
        assert amount_in_words(fen // 100) == words


@PROPERTY
@given(a=fen_amounts, b=fen_amounts)
def test_amount_words_are_injective(a, b):
    assume(a != b)
    assert amount_in_words(as_yuan(a)) != amount_in_words(as_yuan(b))


@PROPERTY
@given(fen=st.integers(1, 10**12), extra=st.integers(1, 9), places=st.integers(3, 8))
def test_amount_words_refuse_fractions_of_a_fen_and_negatives(fen, extra, places):
    with pytest.raises(ValueError):
        amount_in_words(as_yuan(fen) + Decimal(extra).scaleb(-places))
    with pytest.raises(ValueError):
        amount_in_words(-as_yuan(fen))


@PROPERTY
@given(fen=st.integers(-10**10, 2 * 10**9 + 1), spelled=st.sampled_from(["text", "decimal", "json_number"]))
def test_iou_amounts_in_range_are_accepted_with_their_words_and_the_rest_refused_by_min_or_max(fen, spelled):
    amount = as_yuan(fen)
    raw = {"text": str(amount), "decimal": amount, "json_number": float(amount)}[spelled]
    values = iou_values(amount=raw)
    if fen < 1:
        assert violations(IOU, values) == [("amount", "min")]
    elif fen > 10**9:
        assert violations(IOU, values) == [("amount", "max")]
    else:
        assert IOU.validate(values, TODAY)["amount"] == f"{amount:.2f}"
        content = IOU.content(values, TODAY)
        assert content["amount"]["words"] == "人民币" + amount_in_words(amount)
        assert parse_words(content["amount"]["words"].removeprefix("人民币")) == fen


@PROPERTY
@given(fen=st.integers(1, 10**9), extra=st.integers(1, 9), places=st.integers(3, 6), as_number=st.booleans())
def test_iou_amounts_finer_than_a_fen_are_refused_by_precision(fen, extra, places, as_number):
    amount = as_yuan(fen) + Decimal(extra).scaleb(-places)
    raw = float(amount) if as_number else str(amount)
    assume(not as_number or Decimal(repr(raw)) == amount)  # the JSON number is that decimal
    assert violations(IOU, iou_values(amount=raw)) == [("amount", "precision")]


@PROPERTY
@example(value=Decimal("1e27"))  # was decimal.InvalidOperation
@given(value=st.decimals(min_value=-10**32, max_value=10**32, allow_nan=False, allow_infinity=False))
def test_amount_words_write_any_decimal_exactly_or_refuse_it_with_value_error(value):
    exact = value.quantize(Decimal("0.01"), context=FAR)
    try:
        words = amount_in_words(value)
    except ValueError:
        assert value < 0 or value != exact or len(exact.as_tuple().digits) > 28
    else:
        assert Decimal(parse_words(words)).scaleb(-2) == value


@PROPERTY
@example(digits=31, field="amount", spelled="text")  # was decimal.InvalidOperation
@given(digits=st.integers(1, 5000), field=st.sampled_from(["amount", "annual_rate"]),
       spelled=st.sampled_from(["text", "decimal", "fraction"]))
def test_numbers_of_any_length_are_refused_by_a_rule_never_by_a_crash(digits, field, spelled):
    text = {"text": "9" * digits, "decimal": "9" * digits, "fraction": "0." + "0" * (digits + 4) + "1"}[spelled]
    raw = Decimal(text) if spelled == "decimal" else text
    expected = "precision" if spelled == "fraction" else "max"
    if expected == "max" and digits <= {"amount": 7, "annual_rate": 1}[field]:
        return  # 9999999 yuan and 9 % are allowed
    assert violations(IOU, iou_values(**{field: raw})) == [(field, expected)]


@PROPERTY
@example(exponent=-5, mantissa=1, field="annual_rate")  # was refused by type, not precision
@example(exponent=300, mantissa=1, field="amount")  # was refused by type, not max
@given(exponent=st.integers(-320, 308), mantissa=st.integers(1, 9), field=st.sampled_from(["amount", "annual_rate"]))
def test_json_numbers_of_any_magnitude_are_judged_by_their_value(exponent, mantissa, field):
    number = float(f"{mantissa}e{exponent}")
    assume(number != 0)  # underflow
    value = Decimal(repr(number))
    places, high = {"amount": (2, Decimal(10**7)), "annual_rate": (4, Decimal(12))}[field]
    found = violations(IOU, iou_values(**{field: number}))
    if not value.is_finite():  # overflow: Python's json reads Infinity too
        assert found == [(field, "type")]
    elif value != value.quantize(Decimal(1).scaleb(-places), context=FAR):
        assert found == [(field, "precision")]
    elif value > high:
        assert found == [(field, "max")]
    else:
        assert found == []  # every such number is at least 0.01 and 12 % is within the cap


@PROPERTY
@example(digits=4301)  # was ValueError: Exceeds the limit (4300 digits)
@given(digits=st.integers(1, 5000))
def test_whole_numbers_of_any_length_are_refused_by_max(digits):
    found = violations(RENTAL, rental_values(payment_day="9" * digits))
    assert found == ([] if digits == 1 else [("payment_day", "max")])


# --- rates and the LPR cap ------------------------------------------------------------


def lpr_in_force(day: dt.date, publications) -> LprPublication | None:
    """Brute force: the latest publication on or before ``day``."""
    earlier = [p for p in publications if p.date <= day]
    return max(earlier, key=lambda p: p.date) if earlier else None


rates = st.builds(lambda units, places: Decimal(units).scaleb(-places),
                  st.integers(-200_000, 200_000), st.integers(0, 6))
start_dates = st.dates(min_value=dt.date(2019, 1, 1), max_value=TODAY + dt.timedelta(days=365))


@PROPERTY
@example(rate=Decimal("0.00001"), start=dt.date(2026, 1, 31), as_number=True)  # was type, not precision
@given(rate=rates, start=start_dates, as_number=st.booleans())
def test_iou_rates_are_refused_by_precision_min_max_or_the_lpr_cap_in_force_on_the_start_date(rate, start, as_number):
    raw = float(rate) if as_number else format(rate, "f")
    values = iou_values(annual_rate=raw, start_date=start.isoformat(),
                        repayment_date=(start + dt.timedelta(days=90)).isoformat())
    lpr = lpr_in_force(start, LPR.publications)
    if rate != rate.quantize(Decimal("0.0001")):
        expected = [("annual_rate", "precision")]
    elif rate < 0:
        expected = [("annual_rate", "min")]
    elif rate > 12:
        expected = [("annual_rate", "max")]
    elif lpr is None:
        expected = [("start_date", "rate_cap")]  # no LPR published before 2019-08-20
    elif rate > min(Decimal(12), 4 * lpr.rate):
        expected = [("annual_rate", "rate_cap")]
    else:
        expected = []
    assert violations(IOU, values) == expected
    if lpr is not None and not expected:
        cap = IOU.content(values, TODAY)["rate_cap"]
        assert cap["lpr_date"] == f"{lpr.date.year}年{lpr.date.month}月{lpr.date.day}日"


@PROPERTY
@example(units=0, sign="-", leading=0, trailing=0, as_number=False)  # was shown as -0%
@given(units=st.one_of(st.integers(0, 12_0000), st.integers(0, 12).map(lambda n: n * 10_000)),
       sign=st.sampled_from(["", "+", "-"]), leading=st.integers(0, 2), trailing=st.integers(0, 3),
       as_number=st.booleans())
def test_every_spelling_of_a_rate_gives_the_same_document(units, sign, leading, trailing, as_number):
    rate = Decimal(units).scaleb(-4)
    canonical = format(rate.normalize(), "f")  # 3.65, 12, 0
    if rate:
        sign = sign.replace("-", "")  # -0 is zero; any other negative is refused (min)
    zeros = "0" * trailing
    text = sign + "0" * leading + canonical + (zeros if "." in canonical else "." + zeros if zeros else "")
    raw = float(text) if as_number else text
    values = iou_values(annual_rate=raw, start_date="2026-01-31", repayment_date="2026-04-15")
    assert IOU.validate(values, TODAY)["annual_rate"] == canonical
    content = IOU.content(values, TODAY)
    row = next(r for s in content["sections"] for r in s["rows"] if r["label"] == "年利率")
    assert row["value"] == canonical + "%"
    paragraphs = [p for s in content["sections"] for p in s["paragraphs"]]
    assert ("本借款不计利息。" in paragraphs) == (rate == 0)
    assert not any("-0" in p or "E" in p for p in paragraphs)


@PROPERTY
@example(fen=0, sign="-", as_number=True)  # was shown as ¥-0.00
@given(fen=st.integers(0, 10**9), sign=st.sampled_from(["", "+", "-"]), as_number=st.booleans())
def test_every_spelling_of_an_amount_shows_the_same_figures(fen, sign, as_number):
    if fen:
        sign = sign.replace("-", "")  # -0 is zero; any other negative is refused (min)
    text = sign + str(as_yuan(fen))
    raw = float(text) if as_number else text
    content = RENTAL.content(rental_values(deposit=raw), TODAY)
    assert content["values"]["deposit"] == f"{as_yuan(fen):.2f}"
    row = next(r for s in content["sections"] for r in s["rows"] if r["label"] == "押金")
    assert row["value"] == f"¥{as_yuan(fen):,.2f}"


publications = st.lists(
    st.builds(LprPublication, st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2040, 12, 31)),
              st.integers(1, 1000).map(lambda n: Decimal(n).scaleb(-2))),
    min_size=1, max_size=12, unique_by=lambda p: p.date)


@PROPERTY
@given(table=publications, day=st.dates(min_value=dt.date(1999, 1, 1), max_value=dt.date(2042, 1, 1)))
def test_any_lpr_table_gives_the_latest_publication_and_the_lower_of_12_and_four_times_it(table, day):
    lpr = LprTable(list(reversed(table)), known_through=dt.date(2041, 1, 1))
    expected = lpr_in_force(day, table)
    if expected is None:
        with pytest.raises(LookupError):
            lpr.rate_cap(day)
        return
    cap = lpr.rate_cap(day)
    assert cap.lpr == expected
    assert cap.limit == min(Decimal(12), 4 * expected.rate)
    assert cap.binding == ("lpr_multiple" if 4 * expected.rate < 12 else "platform_max")
    assert cap.allows(cap.limit) and not cap.allows(cap.limit + Decimal("0.0001"))


# --- dates ------------------------------------------------------------------------------


@PROPERTY
@given(start=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31)),
       repayment=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31)))
def test_iou_dates_are_refused_by_max_after_and_the_lpr_table_each_where_it_applies(start, repayment):
    values = iou_values(start_date=start.isoformat(), repayment_date=repayment.isoformat())
    expected = []
    if start > TODAY + dt.timedelta(days=365):
        expected.append(("start_date", "max"))
    elif repayment <= start:
        expected.append(("repayment_date", "after"))
    if start <= TODAY + dt.timedelta(days=365) and start < dt.date(2019, 8, 20):
        expected.append(("start_date", "rate_cap"))
    assert violations(IOU, values) == expected


@PROPERTY
@given(year=st.integers(1, 9999), month=st.integers(0, 19), day=st.integers(0, 39))
def test_a_date_that_is_not_on_the_calendar_is_refused_by_type(year, month, day):
    text = f"{year:04d}-{month:02d}-{day:02d}"
    try:
        real = dt.date(year, month, day)
    except ValueError:
        real = None
    found = violations(IOU, iou_values(repayment_date=text))
    if real is None:
        assert found == [("repayment_date", "type")]
    else:
        assert found == ([] if real > dt.date(2026, 1, 31) else [("repayment_date", "after")])


@PROPERTY
@given(moment=st.datetimes(min_value=dt.datetime(2026, 11, 20), max_value=dt.datetime(2026, 12, 5)),
       offset_minutes=st.one_of(st.none(), st.integers(-12 * 60, 14 * 60)),
       utc_as_z=st.booleans())
def test_a_receipt_time_is_judged_by_its_calendar_day_in_beijing(moment, offset_minutes, utc_as_z):
    moment = moment.replace(microsecond=0)
    if offset_minutes is None:
        text, beijing = moment.isoformat(), moment  # no offset means Beijing time
    else:
        aware = moment.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset_minutes)))
        text = aware.isoformat()
        if offset_minutes == 0 and utc_as_z:
            text = text.replace("+00:00", "Z")
        beijing = aware.astimezone(dt.timezone(dt.timedelta(hours=8))).replace(tzinfo=None)
    found = violations(RECEIPT, receipt_values(received_at=text))
    if beijing.date() > TODAY:
        assert found == [("received_at", "max")]
    else:
        assert found == []
        assert RECEIPT.validate(receipt_values(received_at=text), TODAY)["received_at"] == beijing.isoformat()


# --- character limits -------------------------------------------------------------------

# One character as a person types it, as one or more code points. Decomposed
# sequences are ones that NFC composes into a single code point.
typed_characters = st.one_of(
    st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF),  # CJK Extension B (𠮷), 4 UTF-8 bytes
    st.characters(min_codepoint=0x30000, max_codepoint=0x3134A),  # CJK Extension G
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # CJK unified ideographs, 3 bytes
    st.characters(min_codepoint=0x21, max_codepoint=0x7E),  # ASCII
    st.sampled_from(["e\u0301", "A\u030a", "u\u0308", "\u1100\u1161", "\u304b\u3099", "\U0001F600", "，", "。"]),
)


def typed_text(min_size=0, max_size=80):
    return st.lists(typed_characters, min_size=min_size, max_size=max_size).map(tuple)


@PROPERTY
@given(chars=typed_text(), padding=st.sampled_from(["", " ", "  "]))
def test_the_remark_limit_counts_characters_not_bytes_or_code_units(chars, padding):
    text = padding + "".join(chars) + padding  # surrounding spaces are trimmed, not counted
    found = violations(IOU, iou_values(remark=text))
    if not chars:
        assert found == []  # an empty optional remark is no remark
    elif len(chars) <= 40:
        assert found == []
        assert IOU.validate(iou_values(remark=text), TODAY)["remark"] == unicodedata.normalize("NFC", "".join(chars))
    else:
        assert found == [("remark", "max_chars")]
        with pytest.raises(ValidationFailed) as err:
            IOU.validate(iou_values(remark=text), TODAY)
        assert err.value.message == f"remark too long: {len(chars)} > 40"


@PROPERTY
@given(chars=typed_text(min_size=1, max_size=70))
def test_a_text_field_with_min_and_max_counts_the_same_characters_for_both(chars):
    text = "".join(chars)
    found = violations(EMPLOYMENT, employment_values(employer_name=text))
    if len(chars) < 2:
        assert found == [("employer_name", "min_chars")]
    elif len(chars) > 60:
        assert found == [("employer_name", "max_chars")]
    else:
        assert found == []


@PROPERTY
@given(chars=typed_text(min_size=1, max_size=60))
def test_a_person_name_limit_is_reported_at_its_dotted_path(chars):
    text = "".join(chars)
    lender = {"name": text, "id_number": "11010519491231002X", "phone": "13800138000"}
    found = violations(IOU, iou_values(lender=lender))
    assert found == ([] if len(chars) <= 50 else [("lender.name", "max_chars")])
