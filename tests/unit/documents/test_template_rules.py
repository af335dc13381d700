"""Every rule of the shipped templates, broken one at a time, and the violation it gives."""
import datetime as dt
from decimal import Decimal

import pytest
from nameko.exceptions import deserialize, serialize

from services.common.errors import InvalidInput
from services.documents.lpr import LprPublication, LprTable
from services.documents.template import load_templates
from services.documents.validation import ValidationFailed

from .samples import (
    BORROWER,
    HASH_A,
    LENDER,
    TODAY,
    employment_values,
    iou_contract_values,
    iou_values,
    receipt_values,
    rental_values,
)

MAKERS = {
    "iou": iou_values,
    "receipt": receipt_values,
    "iou_contract": iou_contract_values,
    "rental": rental_values,
    "employment": employment_values,
}


def violations(catalog, template_id, values, today=TODAY):
    with pytest.raises(InvalidInput) as err:
        catalog.get(template_id).validate(values, today)
    assert isinstance(err.value, ValidationFailed)
    return [(v.field, v.rule) for v in err.value.violations], err.value


def only(catalog, template_id, values, today=TODAY):
    found, err = violations(catalog, template_id, values, today)
    assert len(found) == 1, found
    return found[0], err


def without(make, key):
    values = make()
    del values[key]
    return values


@pytest.mark.parametrize(
    "template_id, values, expected",
    [
        # required
        ("iou", without(iou_values, "amount"), ("amount", "required")),
        ("iou", iou_values(purpose="  "), ("purpose", "required")),
        ("iou", iou_values(lender={"name": "张三", "id_number": LENDER["id_number"]}), ("lender.phone", "required")),
        ("receipt", without(receipt_values, "received_at"), ("received_at", "required")),
        ("rental", without(rental_values, "renovation_allowed"), ("renovation_allowed", "required")),
        ("employment", without(employment_values, "end_date"), ("end_date", "required")),  # required_if 固定期限
        # type
        ("iou", iou_values(amount="12,000"), ("amount", "type")),
        ("iou", iou_values(amount=True), ("amount", "type")),
        ("iou", iou_values(start_date="2026/01/31"), ("start_date", "type")),
        ("iou", iou_values(start_date="2026-02-30"), ("start_date", "type")),
        ("iou", iou_values(lender="张三"), ("lender", "type")),
        ("rental", rental_values(sublet_allowed="yes"), ("sublet_allowed", "type")),
        ("rental", rental_values(payment_day=1.5), ("payment_day", "type")),
        ("receipt", receipt_values(received_at="2026-11-28"), ("received_at", "type")),
        # precision, min, max
        ("iou", iou_values(amount="0.001"), ("amount", "precision")),
        ("iou", iou_values(amount="0"), ("amount", "min")),
        ("iou", iou_values(amount="10000000.01"), ("amount", "max")),
        ("iou", iou_values(annual_rate="-0.5"), ("annual_rate", "min")),
        ("iou", iou_values(annual_rate="12.5"), ("annual_rate", "max")),
        ("iou", iou_values(annual_rate="3.123456"), ("annual_rate", "precision")),
        ("iou", iou_values(start_date="2027-11-29", repayment_date="2028-01-01"), ("start_date", "max")),
        ("receipt", receipt_values(received_at="2026-11-29T00:00:00"), ("received_at", "max")),
        ("rental", rental_values(payment_day=32), ("payment_day", "max")),
        ("rental", rental_values(renewal_notice_days=-1), ("renewal_notice_days", "min")),
        ("rental", rental_values(building_area="0.5"), ("building_area", "min")),
        ("employment", employment_values(probation_months=7), ("probation_months", "max")),
        # enum
        ("iou", iou_values(purpose="旅游"), ("purpose", "enum")),
        ("iou", iou_values(repayment_method="等额本息"), ("repayment_method", "enum")),
        ("iou", iou_values(initiator_role="担保人"), ("initiator_role", "enum")),
        ("receipt", receipt_values(reason="工资"), ("reason", "enum")),
        ("rental", rental_values(payment_cycle="周付"), ("payment_cycle", "enum")),
        # max_chars / min_chars / charset / format
        ("receipt", receipt_values(remark="字" * 21), ("remark", "max_chars")),
        ("rental", rental_values(address="北京"), ("address", "min_chars")),
        ("iou", iou_values(remark="第一行\n第二行"), ("remark", "charset")),
        ("employment", employment_values(employer_credit_code="91110108MA0123456O"),
         ("employer_credit_code", "format")),
        # person identifiers
        ("iou", iou_values(borrower=dict(BORROWER, id_number="110105199003071238")),
         ("borrower.id_number", "check_digit")),
        ("iou", iou_values(borrower=dict(BORROWER, id_number="11010519900230123X")),
         ("borrower.id_number", "birth_date")),
        ("iou", iou_values(borrower=dict(BORROWER, id_number="1101051990")), ("borrower.id_number", "length")),
        ("iou", iou_values(lender=dict(LENDER, phone="12800138000")), ("lender.phone", "prefix")),
        ("iou", iou_values(lender=dict(LENDER, phone="1380013800")), ("lender.phone", "length")),
        ("iou", iou_values(lender=dict(LENDER, email="a@b.c")), ("lender.email", "unknown")),
        # cross-field
        ("iou", iou_values(repayment_date="2026-01-31"), ("repayment_date", "after")),
        ("iou", iou_values(repayment_date="2026-01-30"), ("repayment_date", "after")),
        ("iou_contract", iou_contract_values(repayment_date="2026-11-30"), ("repayment_date", "after")),
        ("rental", rental_values(lease_end="2026-12-31"), ("lease_end", "after")),
        ("employment", employment_values(end_date="2026-12-31"), ("end_date", "after")),
        ("iou", iou_values(borrower=dict(LENDER)), ("borrower.id_number", "distinct_persons")),
        ("receipt", receipt_values(payer=dict(LENDER)), ("payer.id_number", "distinct_persons")),
        ("iou", iou_values(start_date="2019-08-19", repayment_date="2020-01-01"), ("start_date", "rate_cap")),
        # images
        ("iou", iou_values(images=[f"{i:064x}" for i in range(10)]), ("images", "max_items")),
        ("iou", iou_values(images=[{"sha256": "A" * 64}]), ("images.0.sha256", "format")),
        ("iou", iou_values(images=[HASH_A, {"sha256": HASH_A}]), ("images.1.sha256", "duplicate")),
        ("iou", iou_values(images=[{"sha256": HASH_A, "caption": "字" * 21}]), ("images.0.caption", "max_chars")),
        ("rental", rental_values(ownership_proof=[f"{i:064x}" for i in range(4)]), ("ownership_proof", "max_items")),
        # counts and fee sets
        ("rental", rental_values(furnishings=[{"name": "床", "count": -1}]), ("furnishings.0.count", "min")),
        ("rental", rental_values(furnishings=[{"name": "床", "count": 100}]), ("furnishings.0.count", "max")),
        ("rental", rental_values(furnishings=[{"name": "床", "count": 1}, {"name": "床", "count": 2}]),
         ("furnishings.1.name", "duplicate")),
        ("rental", rental_values(furnishings=[{"name": "床"}]), ("furnishings.0", "type")),
        ("rental", rental_values(furnishings=[{"name": f"物品{i}", "count": 1} for i in range(11)]),
         ("furnishings", "max_items")),
        ("rental", rental_values(furnishings=[{"name": "一张很长很长很长的书桌", "count": 1}]),
         ("furnishings.0.name", "max_chars")),
        ("rental", rental_values(tenant_fees=["水费", "水费"]), ("tenant_fees.1", "duplicate")),
        ("rental", rental_values(tenant_fees=[f"费{i}" for i in range(6)]), ("tenant_fees", "max_items")),
        # unknown input
        ("iou", iou_values(guarantor="王五"), ("guarantor", "unknown")),
    ],
)
def test_rule(catalog, template_id, values, expected):
    found, _ = only(catalog, template_id, values)
    assert found == expected


def test_remark_limit_names_the_counts(catalog):
    (field, rule), err = only(catalog, "iou", iou_values(remark="字" * 41))
    assert (field, rule) == ("remark", "max_chars")
    assert err.message == "remark too long: 41 > 40"
    assert str(err) == "remark: max_chars: remark too long: 41 > 40"


def test_characters_outside_the_bmp_count_once(catalog):
    t = catalog.get("iou")
    # 𠮷 (U+20BB7) is two UTF-16 code units but one character as a person sees it.
    assert t.validate(iou_values(remark="𠮷" * 40), TODAY)["remark"] == "𠮷" * 40
    (field, rule), err = only(catalog, "iou", iou_values(remark="𠮷" * 41))
    assert err.message == "remark too long: 41 > 40"
    # e + combining acute is one character after NFC.
    assert t.validate(iou_values(remark="e\u0301" * 40), TODAY)["remark"] == "\u00e9" * 40


def test_twenty_char_receipt_remark_is_accepted(catalog):
    assert catalog.get("receipt").validate(receipt_values(remark="字" * 20), TODAY)["remark"] == "字" * 20


def test_rate_cap_follows_four_times_lpr_when_it_binds():
    # A table where the LPR fell to 2.5 %: the cap is 10 %, not 12 %.
    low = LprTable([LprPublication(dt.date(2019, 8, 20), Decimal("4.25")),
                    LprPublication(dt.date(2026, 6, 22), Decimal("2.5"))], known_through=dt.date(2026, 11, 20))
    catalog = load_templates(lpr_table=low)
    t = catalog.get("iou")
    assert t.validate(iou_values(start_date="2026-07-01", repayment_date="2027-07-01", annual_rate="10"), TODAY)
    with pytest.raises(InvalidInput) as err:
        t.validate(iou_values(start_date="2026-07-01", repayment_date="2027-07-01", annual_rate="10.01"), TODAY)
    assert (err.value.field, err.value.rule) == ("annual_rate", "rate_cap")
    assert "10%" in err.value.message and "2.5%" in err.value.message and "2026-06-22" in err.value.message
    # The same rate on a contract dated before the cut is fine.
    assert t.validate(iou_values(start_date="2026-06-21", repayment_date="2027-07-01", annual_rate="11"), TODAY)
    content = t.content(iou_values(start_date="2026-07-01", repayment_date="2027-07-01", annual_rate="9"), TODAY)
    assert content["rate_cap"]["limit"] == "10%" and content["rate_cap"]["lpr"] == "2.5%"


def test_all_violations_are_collected(catalog):
    values = iou_values(amount="0", remark="字" * 41, lender=dict(LENDER, phone="1"), repayment_date="2025-01-01")
    found, err = violations(catalog, "iou", values)
    assert found == [("lender.phone", "length"), ("amount", "min"), ("remark", "max_chars"),
                     ("repayment_date", "after")]
    # The exception itself names the first one and says how many more there are.
    assert (err.field, err.rule) == ("lender.phone", "length")
    assert err.message.endswith("(and 3 more)")
    assert err.to_dict()["violations"][2] == {"field": "remark", "rule": "max_chars",
                                              "message": "remark too long: 41 > 40"}


def test_violations_survive_nameko_serialisation(catalog):
    _, err = violations(catalog, "iou", iou_values(amount="0", remark="字" * 41))
    rebuilt = deserialize(serialize(err))
    assert isinstance(rebuilt, ValidationFailed) and isinstance(rebuilt, InvalidInput)
    assert rebuilt.violations == err.violations
    assert (rebuilt.field, rebuilt.rule) == ("amount", "min")


def test_messages_never_echo_identifiers(catalog):
    bad_id = "110105199003071238"
    _, err = violations(catalog, "iou", iou_values(borrower=dict(BORROWER, id_number=bad_id),
                                                    lender=dict(LENDER, phone="12800138000")))
    text = str(err.to_dict())
    assert bad_id not in text and "12800138000" not in text


def test_input_that_is_not_a_mapping(catalog):
    found, _ = violations(catalog, "iou", ["not", "a", "mapping"])
    assert found == [("", "type")]


@pytest.mark.parametrize("template_id", sorted(MAKERS))
def test_every_required_field_is_enforced(catalog, template_id):
    template = catalog.get(template_id)
    for name, field in template.fields.items():
        if not field.required:
            continue
        values = MAKERS[template_id]()
        values.pop(name, None)
        found, _ = violations(catalog, template_id, values)
        assert (name, "required") in found, name
