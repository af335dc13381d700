"""SMS templates: the catalogue promised by the product, and rendering guards."""
import datetime as dt

import pytest
import yaml

from services.common.errors import InvalidInput, NotFound
from services.notify.sms_templates import (
    DEFAULT_CATALOG_PATH,
    SmsTemplateCatalog,
    TemplateCategory,
    render,
    vendor_template_text,
)

REQUIRED = {
    "phone_code": TemplateCategory.CODE,
    "willingness_code": TemplateCategory.CODE,
    "sign_request": TemplateCategory.NOTICE,
    "flow_completed": TemplateCategory.NOTICE,
    "due_soon": TemplateCategory.REMINDER,
    "due_today": TemplateCategory.REMINDER,
    "overdue": TemplateCategory.REMINDER,
    "interest_due": TemplateCategory.REMINDER,
    "loan_extended": TemplateCategory.NOTICE,
    "repayment_recorded": TemplateCategory.NOTICE,
    "loan_repaid": TemplateCategory.NOTICE,
    "void_requested": TemplateCategory.NOTICE,
    "flow_voided": TemplateCategory.NOTICE,
    "flow_declined": TemplateCategory.NOTICE,
    "flow_expired": TemplateCategory.NOTICE,
    "flow_cancelled": TemplateCategory.NOTICE,
}

SAMPLE = {
    "code": "042817",
    "minutes": "5",
    "document_title": "借条",
    "initiator": "王小明",
    "requester": "李雷",
    "decliner": "韩梅梅",
    "link": "https://esign.example.cn/s/Ab3dE9",
    "due_date": "2025-03-10",
    "days": "3",
}


@pytest.fixture(scope="module")
def catalog():
    return SmsTemplateCatalog.load()


def sample_params(template):
    return {name: SAMPLE[name] for name in template.variable_names}


def test_catalog_has_every_promised_template_with_its_category(catalog):
    assert set(catalog.ids) == set(REQUIRED)
    for template_id, category in REQUIRED.items():
        template = catalog.get(template_id)
        assert template.category is category
        assert template.version >= 1
        assert template.vendor_template_ids.get("tencent"), template_id


def test_every_template_renders_its_sample_without_leftover_placeholders(catalog):
    for template in catalog:
        message = render(template, sample_params(template))
        assert "{" not in message.text and "}" not in message.text
        assert "【" not in message.text  # the provider adds the sign name
        assert list(message.params) == list(template.variable_names)


def test_phone_code_text_reads_as_written(catalog):
    message = catalog.render("phone_code", {"code": "042817", "minutes": 5})
    assert message.text == "您的手机验证码为042817，5分钟内有效。如非本人操作，请忽略本短信。"
    assert message.ordered_params == ("042817", "5")


def test_code_messages_fit_one_sms_segment_with_a_sign_name(catalog):
    # A single SMS holds 70 characters including 【sign name】; a code must not be split.
    for template_id in ("phone_code", "willingness_code"):
        template = catalog.get(template_id)
        longest = {name: {"document_title": "个人房屋租赁合同补充协议二", "code": "12345678"}.get(name, SAMPLE[name])
                   for name in template.variable_names}
        text = "【电子签约平台】" + render(template, longest).text
        assert len(text) <= 70, (template_id, len(text))


def test_sign_request_masks_the_initiator_and_keeps_the_link(catalog):
    message = catalog.render("sign_request", {
        "initiator": "王小明", "document_title": "借条", "link": SAMPLE["link"]})
    assert "王小明" not in message.text
    assert message.text.startswith("王**邀请您签署《借条》")
    assert SAMPLE["link"] in message.text


def test_dates_are_shown_in_chinese(catalog):
    message = catalog.render("due_today", {"document_title": "借条", "due_date": dt.date(2025, 3, 1)})
    assert "2025年3月1日" in message.text


def test_missing_variable_is_refused(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("phone_code", {"code": "123456"})
    assert err.value.field == "params.minutes"
    assert err.value.rule == "missing_variable"


def test_extra_variable_is_refused(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_voided", {"document_title": "借条", "amount": "5000"})
    assert err.value.rule == "unexpected_variable"
    assert err.value.field == "params.amount"


@pytest.mark.parametrize("value", ["11010519491231002X", "110105194912310021", "110105491231002"])
def test_value_that_looks_like_an_id_number_is_refused_and_not_echoed(catalog, value):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_expired", {"document_title": value})
    assert err.value.rule == "looks_like_id_number"
    assert value not in str(err.value)


def test_id_number_hidden_in_a_link_is_refused(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_completed", {
            "document_title": "借条", "link": "https://esign.example.cn/s/11010519491231002X"})
    assert err.value.rule == "looks_like_id_number"


@pytest.mark.parametrize("title", ["借款5000元", "借款 3.5 万", "¥800 收据", "借款壹万元整"])
def test_amounts_are_refused_where_the_template_has_none(catalog, title):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_voided", {"document_title": title})
    assert err.value.rule == "looks_like_amount"


def test_forged_sign_name_is_refused(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_voided", {"document_title": "【某银行】借条"})
    assert err.value.rule == "charset"


@pytest.mark.parametrize("code", ["12a456", "123", "123456789", "１２３４５６"])
def test_codes_must_be_4_to_8_ascii_digits(catalog, code):
    with pytest.raises(InvalidInput) as err:
        catalog.render("phone_code", {"code": code, "minutes": "5"})
    assert err.value.rule == "code_format"


def test_links_must_be_http_urls(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_completed", {"document_title": "借条", "link": "javascript:alert(1)"})
    assert err.value.rule == "link_format"


def test_long_titles_are_refused(catalog):
    with pytest.raises(InvalidInput) as err:
        catalog.render("flow_voided", {"document_title": "长" * 21})
    assert err.value.rule == "max_length"


def test_unknown_template_is_not_found(catalog):
    with pytest.raises(NotFound):
        catalog.get("marketing_blast")


def test_vendor_template_text_numbers_variables_in_declared_order(catalog):
    assert vendor_template_text(catalog.get("sign_request")) == "{1}邀请您签署《{2}》，请打开 {3} 查看并签署。"


def test_flow_cancelled_names_nobody_and_reads_as_submitted_for_approval(catalog):
    template = catalog.get("flow_cancelled")
    assert vendor_template_text(template) == "《{1}》因签署方身份存在争议，已由平台取消，本次签署流程已结束。"
    assert catalog.render("flow_cancelled", {"document_title": "借条"}).text == \
        "《借条》因签署方身份存在争议，已由平台取消，本次签署流程已结束。"


@pytest.mark.parametrize("template_id, params, text", [
    ("overdue", {"due_date": "2027-06-15"}, "《借条》约定的还款日2027年6月15日已过，借款尚未还清，请尽快履行。"),
    ("interest_due", {"due_date": "2027-02-15", "days": "3"},
     "《借条》下一期利息应于2027年2月15日支付，还有3天，请按约定履行。"),
    ("loan_extended", {"due_date": "2027-09-15"}, "《借条》已展期，新的还款日为2027年9月15日。"),
    ("repayment_recorded", {"link": SAMPLE["link"]}, f"《借条》：出借人已确认收到您的一笔还款，查看：{SAMPLE['link']}"),
    ("loan_repaid", {}, "《借条》的借款已全部还清，感谢您守约。"),
])
def test_the_texts_of_a_signed_ious_life_read_as_submitted_for_approval(catalog, template_id, params, text):
    assert catalog.render(template_id, {"document_title": "借条", **params}).text == text


def test_vendor_ids_start_unconfigured_and_configuration_overrides_them(catalog):
    assert set(catalog.unconfigured_for("tencent")) == set(REQUIRED)
    configured = catalog.with_vendor_template_ids("tencent", {"phone_code": "1876543"})
    assert configured.get("phone_code").vendor_template_id("tencent") == "1876543"
    assert "phone_code" not in configured.unconfigured_for("tencent")
    assert catalog.get("phone_code").vendor_template_id("tencent") is None  # original untouched
    with pytest.raises(InvalidInput) as err:
        catalog.with_vendor_template_ids("tencent", {"no_such_template": "1"})
    assert err.value.rule == "unknown_template"


def _data_with(**changes):
    data = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    data["templates"][0].update(changes)
    return data


@pytest.mark.parametrize("changes, rule", [
    ({"text": "您的验证码为{code}。"}, "variables_match"),            # declared 'minutes' unused
    ({"text": "验证码{code}，{minutes}分钟，{extra}"}, "variables_match"),
    ({"text": "【电子签】验证码{code}，{minutes}分钟"}, "sign_name"),
    ({"category": "marketing"}, "one_of"),
    ({"version": 0}, "positive_integer"),
])
def test_bad_template_data_is_rejected_at_load(changes, rule):
    with pytest.raises(InvalidInput) as err:
        SmsTemplateCatalog.from_data(_data_with(**changes))
    assert err.value.rule == rule


def test_duplicate_template_ids_are_rejected():
    data = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text(encoding="utf-8"))
    data["templates"].append(dict(data["templates"][0]))
    with pytest.raises(InvalidInput) as err:
        SmsTemplateCatalog.from_data(data)
    assert err.value.rule == "unique"


def test_rare_name_characters_are_names_too():
    """䶮 (CJK ext. A) and 𠮷 (ext. B) occur in real names; they are shown masked."""
    from services.notify.sms_templates import SmsTemplateCatalog

    rendered = SmsTemplateCatalog.load().render("sign_request", {
        "initiator": "李𠮷", "document_title": "借条", "link": "https://esign.example/f/1"})
    assert "李*" in rendered.text and "𠮷" not in rendered.text
    assert "王*" in SmsTemplateCatalog.load().render("sign_request", {
        "initiator": "王䶮", "document_title": "借条", "link": "https://esign.example/f/1"}).text
