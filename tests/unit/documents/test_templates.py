"""Every shipped template with valid input: normalised values and document content."""
import json

import pytest

from services.common.errors import InvalidInput
from services.documents.template import TEMPLATES_DIR
from services.documents.validation import PersonCheckers, ValidationFailed

from .samples import BORROWER, HASH_A, HASH_B, LENDER, TODAY, VALID, employment_values, iou_values, receipt_values


def test_catalog_has_the_five_templates_and_two_statements(catalog):
    assert {t.id for t in catalog} == {"iou", "receipt", "iou_contract", "rental", "employment", "iou_repayment",
                                       "iou_extension"}
    assert {t.id for t in catalog if t.statement} == {"iou_repayment", "iou_extension"}
    assert catalog.get("iou").version == 1
    assert catalog.get("iou", 1).title == "借条"
    with pytest.raises(LookupError):
        catalog.get("iou", 2)


@pytest.mark.parametrize("template_id", sorted(VALID))
def test_valid_input_gives_json_content(catalog, template_id):
    template = catalog.get(template_id)
    content = template.content(VALID[template_id](), TODAY)
    text = json.dumps(content, ensure_ascii=False)  # plain JSON, no Decimals or dates
    assert "{" not in "".join(p for s in content["sections"] for p in s["paragraphs"])  # every placeholder filled
    assert content["title"] == template.title
    # a 还款确认书 is signed by the lender alone
    assert [p["name"] for p in content["parties"]] == [LENDER["name"], BORROWER["name"]][:len(template.roles)]
    assert all(p["signature_field"].startswith("sig_") for p in content["parties"])
    assert [s["field"] for s in content["signatures"]] == [p["signature_field"] for p in content["parties"]]
    assert sum(p["initiator"] for p in content["parties"]) == 1
    assert "𠮷" in text  # the rare name character survives normalisation
    # Same input → same content (the renderer's byte-for-byte reproducibility starts here).
    assert template.content(VALID[template_id](), TODAY) == content


@pytest.mark.parametrize("template_id", sorted(VALID))
def test_validate_normalises_to_json(catalog, template_id):
    values = catalog.get(template_id).validate(VALID[template_id](), TODAY)
    json.dumps(values)
    assert values[catalog.get(template_id).roles[0].person_field]["id_number"] == LENDER["id_number"]


def test_iou_content(catalog):
    c = catalog.get("iou").content(iou_values(), TODAY)
    assert c["amount"] == {"field": "amount", "label": "借款金额", "figures": "¥10,005.00", "value": "10005.00",
                           "words": "人民币壹万零伍元整"}
    assert c["initiator"] == {"role": "borrower", "label": "借款人"}
    assert ([(p["role"], p["signature_field"]) for p in c["parties"]]
            == [("lender", "sig_lender"), ("borrower", "sig_borrower")])
    rows = dict((r["label"], r["value"]) for r in c["sections"][0]["rows"])
    assert rows["借款金额"] == "¥10,005.00"
    assert rows["大写金额"] == "人民币壹万零伍元整"
    assert rows["借款日期"] == "2026年1月31日"
    assert rows["年利率"] == "3.65%"
    # ¥10,005 × 3.65 % ÷ 365 = ¥1.0005 a day: 28, 31 and 15 days.
    sched = c["schedule"]
    assert [r[1] for r in sched["rows"]] == [
        "2026年1月31日至2026年2月28日", "2026年2月28日至2026年3月31日", "2026年3月31日至2026年4月15日"]
    assert [r[5] for r in sched["rows"]] == ["¥28.01", "¥31.02", "¥10,020.01"]
    assert sched["total_interest"] == "¥74.04"
    assert "365" in sched["convention"]
    assert c["rate_cap"]["lpr"] == "3%" and c["rate_cap"]["lpr_date"] == "2025年5月20日"
    assert c["remark"] == "按期还款"
    assert c["attachments"] == [{"field": "images", "label": "图片", "sha256": HASH_A, "caption": "转账截图"}]
    clause = " ".join(c["sections"][2]["paragraphs"])
    assert "今借到出借人张三" in clause and "人民币壹万零伍元整（¥10,005.00）" in clause
    assert "2025年5月20日公布" in clause


def test_iou_lump_sum_and_zero_rate(catalog):
    c = catalog.get("iou").content(iou_values(annual_rate="0", repayment_method="一次性还本付息", remark=""), TODAY)
    assert c["schedule"]["rows"] == [[
        "第1期", "2026年1月31日至2026年4月15日", "74", "¥10,005.00", "¥0.00", "¥10,005.00", "2026年4月15日"]]
    paragraphs = c["sections"][2]["paragraphs"]
    assert "本借款不计利息。" in paragraphs
    assert not any(p.startswith("备注") for p in paragraphs)
    assert c["remark"] is None
    assert all(r["label"] != "备注" for r in c["sections"][0]["rows"])


def test_receipt_content(catalog):
    c = catalog.get("receipt").content(receipt_values(received_at="2026-11-28T01:30:00Z"), TODAY)
    rows = dict((r["label"], r["value"]) for r in c["sections"][0]["rows"])
    assert rows["收款时间"] == "2026年11月28日 09:30"  # UTC 01:30 is 09:30 Beijing time
    assert c["amount"]["words"] == "人民币壹仟肆佰零玖元伍角"
    assert c["initiator"]["role"] == "payer"
    assert "交来押金人民币壹仟肆佰零玖元伍角" in c["sections"][1]["paragraphs"][0]
    assert c["schedule"] is None and c["rate_cap"] is None


def test_iou_contract_words_and_optional_article(catalog):
    from .samples import iou_contract_values

    t = catalog.get("iou_contract")
    c = t.content(iou_contract_values(), TODAY)
    assert c["amount"]["words"] == "人民币壹拾万柒仟元零伍角叁分"
    articles = [p for s in c["sections"] for p in s["paragraphs"]]
    assert "第四条 乙方应将款项归还至甲方指定的收款账户。" in articles
    assert all(s["label"] != "其他约定" for s in c["sections"])  # an empty section is left out
    c2 = t.content(iou_contract_values(repayment_account="中国银行 6216 **** 0001", other_terms="第一行\n第二行"),
                   TODAY)
    articles2 = [p for s in c2["sections"] for p in s["paragraphs"]]
    assert "第四条 乙方应将款项归还至甲方收款账户：中国银行 6216 **** 0001。" in articles2
    assert c2["sections"][-1] == {"label": "其他约定", "rows": [], "table": None, "paragraphs": ["第一行\n第二行"]}
    assert c2["signatures"][0]["label"] == "甲方（出借人）签名"


def test_rental_content(catalog):
    from .samples import rental_values

    t = catalog.get("rental")
    values = t.validate(rental_values(), TODAY)
    # Listed items in the template's order, free items after them, zero counts dropped.
    assert values["furnishings"] == [{"name": "床", "count": 1}, {"name": "空调", "count": 2},
                                     {"name": "沙发", "count": 1}]
    assert values["tenant_fees"] == ["水费", "电费", "垃圾清运费"]
    assert values["ownership_proof"] == [{"sha256": HASH_B, "caption": ""}]
    assert values["building_area"] == "89.5"
    c = t.content(rental_values(), TODAY)
    labels = [s["label"] for s in c["sections"]]
    assert labels[:3] == ["房屋信息", "租期及费用", "承诺约定"]
    rows = {r["label"]: r["value"] for s in c["sections"] for r in s["rows"]}
    assert rows["家具家电"] == "床×1、空调×2、沙发×1"
    assert rows["租赁期限"] == "自2027年1月1日起至2027年12月31日止"
    assert rows["月租金"] == "¥6,500.00" and rows["月租金大写"] == "人民币陆仟伍佰元整"
    assert rows["是否允许装修"] == "不允许" and rows["是否允许转租"] == "允许"
    assert rows["续租提前通知天数"] == "30天"
    assert ([(a["field"], a["sha256"]) for a in c["attachments"]]
            == [("property_photos", HASH_A), ("ownership_proof", HASH_B)])
    assert c["initiator"]["role"] == "tenant"


def test_employment_open_ended_needs_no_end_date(catalog):
    t = catalog.get("employment")
    values = employment_values(contract_type="无固定期限")
    del values["end_date"]
    c = t.content(values, TODAY)
    paragraphs = [p for s in c["sections"] for p in s["paragraphs"]]
    assert "本合同为无固定期限劳动合同，自2027年1月1日起履行。" in paragraphs
    assert not any("止。" in p for p in paragraphs)
    fixed = [p for s in t.content(employment_values(), TODAY)["sections"] for p in s["paragraphs"]]
    assert "本合同为固定期限劳动合同，自2027年1月1日起至2029年12月31日止。" in fixed


def test_draft_may_leave_required_fields_empty(catalog):
    t = catalog.get("iou")
    values = t.validate({"initiator_role": "出借方", "amount": "12345.6"}, TODAY, complete=False)
    assert values == {"initiator_role": "出借方", "amount": "12345.60"}
    with pytest.raises(InvalidInput) as err:
        t.validate({"initiator_role": "出借方", "amount": "-1"}, TODAY, complete=False)
    assert (err.value.field, err.value.rule) == ("amount", "min")


def test_person_checkers_are_pluggable(catalog):
    seen = []

    def id_number(value, today):
        seen.append(today)
        if value.endswith("0"):
            raise InvalidInput("id_number", "province", "expected a province code")
        return value.lower()

    checkers = PersonCheckers(id_number=id_number, phone=lambda v, today: v)
    t = catalog.get("iou")
    values = t.validate(iou_values(), TODAY, checkers=checkers)
    assert values["lender"]["id_number"] == LENDER["id_number"].lower()
    assert seen == [TODAY, TODAY]
    bad = iou_values(borrower=dict(BORROWER, id_number="110105199003071230"))
    with pytest.raises(InvalidInput) as err:
        t.validate(bad, TODAY, checkers=checkers)
    # The checker's own field name is replaced by the dotted path of the person field.
    assert (err.value.field, err.value.rule) == ("borrower.id_number", "province")


def test_describe_lists_the_form(catalog):
    d = catalog.get("receipt").describe()
    json.dumps(d, ensure_ascii=False)
    reason = next(f for f in d["fields"] if f["name"] == "reason")
    assert reason["choices"] == ["租金", "贷款", "学费", "押金", "预付款", "定金", "合同款", "其他"]
    assert [r["initiator_choice"] for r in d["roles"]] == ["收款人", "付款人"]


def test_template_files_follow_the_naming(catalog):
    names = sorted(p.name for p in TEMPLATES_DIR.glob("*.yaml"))
    assert names == sorted(f"{t.id}.v{t.version}.yaml" for t in catalog)


@pytest.mark.parametrize(
    "template_id, field, choices",
    [
        ("iou", "purpose", ["购买房屋", "购买汽车", "家庭装修", "生产经营需要", "其它事由"]),
        ("iou", "repayment_method", ["一次性还本付息", "按月付息、到期还本"]),
        ("iou", "initiator_role", ["借款方", "出借方"]),
        ("receipt", "reason", ["租金", "贷款", "学费", "押金", "预付款", "定金", "合同款", "其他"]),
        ("receipt", "initiator_role", ["收款人", "付款人"]),
        ("rental", "initiator_role", ["房东", "租客"]),
    ],
)
def test_every_choice_of_the_issue_is_accepted(catalog, template_id, field, choices):
    template = catalog.get(template_id)
    assert template.fields[field].choices == choices
    for choice in choices:
        assert template.validate(VALID[template_id](**{field: choice}), TODAY)[field] == choice


def test_rental_furniture_and_fee_items_are_those_of_the_issue(catalog):
    fields = catalog.get("rental").fields
    assert fields["furnishings"].items == ["床", "冰箱", "电视", "洗衣机", "空调", "热水器", "宽带"]
    assert fields["tenant_fees"].choices == ["水费", "电费", "燃气费", "宽带费", "物业费", "停车费"]


@pytest.mark.parametrize("template_id", sorted(VALID))
def test_render_input_has_the_renderer_json_form(catalog, template_id):
    from services.documents.rendering.content import DocumentContent
    from services.documents.template import render_input

    content = catalog.get(template_id).content(VALID[template_id](), TODAY)
    model = DocumentContent.from_dict(render_input(content, "D-1", TODAY))
    assert [p.signature_field for p in model.parties] == [p["signature_field"] for p in content["parties"]]
    assert model.amount_words == content["amount"]["words"]
    assert (model.schedule is not None) == (content["schedule"] is not None)
    assert [a.sha256 for a in model.attachments] == [a["sha256"] for a in content["attachments"]]


def test_a_statement_keeps_its_templates_rules(catalog):
    """The figures of a 还款确认书 and a 借款展期协议 are signing's, but their
    templates still refuse what no such statement may say."""
    from .samples import extension_values, repayment_values

    def violations(template_id, values):
        with pytest.raises(ValidationFailed) as refused:
            catalog.get(template_id).validate(values, TODAY)
        return {(v.field, v.rule) for v in refused.value.violations}

    assert ("repaid_on", "max") in violations("iou_repayment", repayment_values(repaid_on="2026-11-29"))
    # an extension is agreed today, to a later date, at a rate under the cap of today
    assert ("agreed_on", "min") in violations("iou_extension", extension_values(agreed_on="2026-11-27"))
    assert ("repayment_date", "after") in violations("iou_extension", extension_values(repayment_date="2026-12-01"))
    assert ("annual_rate", "rate_cap") in violations("iou_extension", extension_values(annual_rate="12.5"))
    content = catalog.get("iou_extension").content(extension_values(), TODAY)
    assert [p["label"] for p in content["parties"]] == ["出借人", "借款人"]
