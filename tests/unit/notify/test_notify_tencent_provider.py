"""Tencent Cloud SMS provider against the local fake vendor (which verifies signatures itself)."""
import datetime as dt
import time

import pytest
import requests

from services.notify.providers import PermanentSmsError, SmsProvider, TransientSmsError, build_provider
from services.notify.providers.tencent import TencentSmsProvider, TencentSmsSettings
from services.notify.retry import Outcome, RetryPolicy, deliver_with_retries
from services.notify.sms_templates import SmsTemplateCatalog
from tests.support.fake_tencent_sms import FakeTencentSms

PHONE = "13812345678"
CATALOG = SmsTemplateCatalog.load()
TEMPLATE_IDS = {template_id: str(100001 + i) for i, template_id in enumerate(CATALOG.ids)}
VENDOR_TEMPLATES = {TEMPLATE_IDS[t.id]: len(t.variables) for t in CATALOG}


@pytest.fixture
def vendor():
    with FakeTencentSms(templates=dict(VENDOR_TEMPLATES)) as fake:
        yield fake


def make_provider(vendor, session=None, clock=time.time, **overrides):
    options = dict(
        secret_id=vendor.secret_id,
        secret_key=vendor.secret_key,
        sms_sdk_app_id=vendor.sms_sdk_app_id,
        sign_name="电子签",
        endpoint=vendor.endpoint,
        connect_timeout=2.0,
        read_timeout=2.0,
        template_ids=TEMPLATE_IDS,
    )
    options.update(overrides)
    return TencentSmsProvider(TencentSmsSettings(**options), session=session, clock=clock)


def send_code(provider, phone=PHONE):
    message = CATALOG.render("phone_code", {"code": "042817", "minutes": "5"})
    return provider.send(phone, message.template, message.params, message.text)


def test_accepted_message_returns_the_vendor_serial_number(vendor):
    provider = make_provider(vendor)
    assert isinstance(provider, SmsProvider)
    result = send_code(provider)

    assert len(vendor.delivered) == 1
    delivered = vendor.delivered[0]
    assert result.vendor_message_id == delivered.serial_no != ""
    assert result.provider == "tencent"
    assert delivered.phone == "+8613812345678"
    assert delivered.template_id == TEMPLATE_IDS["phone_code"]
    assert delivered.params == ["042817", "5"]
    assert delivered.sign_name == "电子签"


def test_request_carries_the_vendor_headers_and_body(vendor):
    message = CATALOG.render("sign_request", {
        "initiator": "王小明", "document_title": "借条", "link": "https://esign.example.cn/s/Ab3dE9"})
    make_provider(vendor, region="ap-beijing").send(PHONE, message.template, message.params, message.text)

    (request,) = vendor.received
    assert request.outcome == "Ok"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["x-tc-action"] == "SendSms"
    assert headers["x-tc-version"] == "2021-01-11"
    assert headers["x-tc-region"] == "ap-beijing"
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert headers["authorization"].startswith(
        f"TC3-HMAC-SHA256 Credential={vendor.secret_id}/{today}/sms/tc3_request, SignedHeaders=content-type;host;x-tc-action, ")
    body = request.json
    assert body["PhoneNumberSet"] == ["+8613812345678"]
    assert body["SmsSdkAppId"] == vendor.sms_sdk_app_id
    assert body["TemplateId"] == TEMPLATE_IDS["sign_request"]
    assert body["TemplateParamSet"] == ["王**", "借条", "https://esign.example.cn/s/Ab3dE9"]


def test_wrong_secret_key_is_rejected_by_the_vendor_signature_check(vendor):
    provider = make_provider(vendor, secret_key="not-the-right-key-0000000000000")
    with pytest.raises(PermanentSmsError) as err:
        send_code(provider)
    assert err.value.code == "AuthFailure.SignatureFailure"
    assert "not-the-right-key" not in str(err.value)
    assert vendor.delivered == []


def test_unknown_secret_id_is_rejected(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, secret_id="AKIDsomeoneElse"))
    assert err.value.code == "AuthFailure.SecretIdNotFound"


def test_clock_more_than_five_minutes_off_is_rejected(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, clock=lambda: time.time() - 600))
    assert err.value.code == "AuthFailure.SignatureExpire"


class TamperingSession(requests.Session):
    """Changes the body after it was signed, as a man in the middle would."""

    def post(self, url, data=None, **kwargs):
        return super().post(url, data=data.replace(b"042817", b"999999"), **kwargs)


def test_body_changed_after_signing_fails_the_signature(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, session=TamperingSession()))
    assert err.value.code == "AuthFailure.SignatureFailure"
    assert vendor.delivered == []


@pytest.mark.parametrize("code, error_type, retry_after", [
    ("InvalidParameterValue.IncorrectPhoneNumber", PermanentSmsError, None),
    ("FailedOperation.TemplateIncorrectOrUnapproved", PermanentSmsError, None),
    ("FailedOperation.SignatureIncorrectOrUnapproved", PermanentSmsError, None),
    ("FailedOperation.PhoneNumberInBlacklist", PermanentSmsError, None),
    ("LimitExceeded.PhoneNumberDailyLimit", PermanentSmsError, None),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", TransientSmsError, 30.0),
    ("LimitExceeded.PhoneNumberOneHourLimit", TransientSmsError, 3600.0),
    ("InternalError.Timeout", TransientSmsError, None),
    ("InternalError.SendAndRecvFail", TransientSmsError, None),
])
def test_send_status_codes_map_to_transient_or_permanent(vendor, code, error_type, retry_after):
    vendor.script(PHONE, status_code=code)
    with pytest.raises((PermanentSmsError, TransientSmsError)) as err:
        send_code(make_provider(vendor))
    assert type(err.value) is error_type
    assert err.value.code == code
    assert getattr(err.value, "retry_after", None) == retry_after
    assert PHONE not in str(err.value)
    assert "138****5678" in str(err.value)


@pytest.mark.parametrize("code, error_type", [
    ("RequestLimitExceeded", TransientSmsError),
    ("InternalError", TransientSmsError),
    ("UnauthorizedOperation.RequestPermissionDeny", PermanentSmsError),
    ("InternalError.RequestTimeException", PermanentSmsError),
    ("FailedOperation.InsufficientBalanceInSmsPackage", PermanentSmsError),
])
def test_top_level_errors_map_to_transient_or_permanent(vendor, code, error_type):
    vendor.script(PHONE, error_code=code)
    with pytest.raises((PermanentSmsError, TransientSmsError)) as err:
        send_code(make_provider(vendor))
    assert type(err.value) is error_type
    assert err.value.code == code


def test_unapproved_sign_name_is_permanent(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, sign_name="未审核签名"))
    assert err.value.code == "FailedOperation.SignatureIncorrectOrUnapproved"


def test_template_id_with_a_different_parameter_count_is_rejected_by_the_vendor(vendor):
    wrong = dict(TEMPLATE_IDS, phone_code=TEMPLATE_IDS["sign_request"])  # 3 parameters, not 2
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, template_ids=wrong))
    assert err.value.code == "FailedOperation.TemplateIncorrectOrUnapproved"


def test_http_500_is_transient(vendor):
    vendor.script(PHONE, http_status=500)
    with pytest.raises(TransientSmsError) as err:
        send_code(make_provider(vendor))
    assert err.value.code == "http_500"


def test_answer_slower_than_the_read_timeout_is_transient(vendor):
    vendor.script(PHONE, delay=1.5)
    with pytest.raises(TransientSmsError) as err:
        send_code(make_provider(vendor, read_timeout=0.3))
    assert err.value.code == "timeout"


def test_vendor_unreachable_is_transient():
    fake = FakeTencentSms().start()
    provider = make_provider(fake)
    fake.stop()  # nothing listens on that port any more
    with pytest.raises(TransientSmsError) as err:
        send_code(provider)
    assert err.value.code in ("network", "timeout")


def test_invalid_number_fails_before_any_request(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor), phone="0571888812345")
    assert err.value.code == "invalid_number"
    assert "0571888812345" not in str(err.value)
    assert vendor.received == []


def test_template_without_a_tencent_id_is_permanent(vendor):
    with pytest.raises(PermanentSmsError) as err:
        send_code(make_provider(vendor, template_ids={}))
    assert err.value.code == "template_not_configured"
    assert vendor.received == []


def test_settings_repr_hides_the_secret_key(vendor):
    assert vendor.secret_key not in repr(make_provider(vendor).settings)


def test_vendor_500s_are_retried_then_the_message_goes_once(vendor):
    vendor.script(PHONE, http_status=500, times=2)
    slept = []
    report = deliver_with_retries(lambda: send_code(make_provider(vendor)), RetryPolicy(base_delay=1, max_delay=10),
                                  sleep=slept.append)
    assert report.sent
    assert report.attempts == 3
    assert len(slept) == 2
    assert [r.outcome for r in vendor.received] == ["http_500", "http_500", "Ok"]
    assert len(vendor.delivered) == 1
    assert report.result.vendor_message_id == vendor.delivered[0].serial_no


def test_permanent_vendor_error_is_not_retried(vendor):
    vendor.script(PHONE, status_code="InvalidParameterValue.IncorrectPhoneNumber", times=5)
    slept = []
    report = deliver_with_retries(lambda: send_code(make_provider(vendor)), RetryPolicy(), sleep=slept.append)
    assert report.outcome is Outcome.FAILED
    assert report.attempts == 1
    assert slept == []
    assert len(vendor.received) == 1


def test_build_provider_picks_tencent_from_configuration(vendor):
    provider = build_provider({"provider": "tencent", "tencent": {
        "secret_id": vendor.secret_id, "secret_key": vendor.secret_key,
        "sms_sdk_app_id": vendor.sms_sdk_app_id, "sign_name": "电子签",
        "endpoint": vendor.endpoint, "template_ids": TEMPLATE_IDS}})
    assert isinstance(provider, TencentSmsProvider)
    send_code(provider)
    assert len(vendor.delivered) == 1
