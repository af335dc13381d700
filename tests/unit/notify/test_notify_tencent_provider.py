"""Tencent Cloud SMS provider (on Tencent's SDK) against the local fake vendor,
which verifies TC3-HMAC-SHA256 signatures with its own implementation."""
import datetime as dt
import logging
import time

import pytest
import requests
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from services.common.errors import InvalidInput
from services.notify.providers import (
    HandoverState,
    PermanentSmsError,
    SmsProvider,
    TransientSmsError,
    build_provider,
)
from services.notify.providers.tencent import TencentSmsProvider, TencentSmsSettings
from services.notify.retry import Outcome, RetryPolicy, deliver_with_retries
from services.notify.sms_templates import SmsTemplateCatalog
from tests.support.fake_tencent_sms import FakeTencentSms
from tests.support.tencent_tc3 import tc3_expected_signature
from tests.support.waiting import wait_for

PHONE = "13812345678"
CATALOG = SmsTemplateCatalog.load()
TEMPLATE_IDS = {template_id: str(100001 + i) for i, template_id in enumerate(CATALOG.ids)}
VENDOR_TEMPLATES = {TEMPLATE_IDS[t.id]: len(t.variables) for t in CATALOG}


@pytest.fixture
def vendor():
    with FakeTencentSms(templates=dict(VENDOR_TEMPLATES)) as fake:
        yield fake


def make_provider(vendor, **overrides):
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
    return TencentSmsProvider(TencentSmsSettings(**options))


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
        f"TC3-HMAC-SHA256 Credential={vendor.secret_id}/{today}/sms/tc3_request, SignedHeaders=content-type;host, ")
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


def test_clock_more_than_five_minutes_off_is_rejected():
    # the SDK stamps requests with the real time: move the vendor's clock instead
    with FakeTencentSms(clock=lambda: time.time() + 600) as skewed:
        with pytest.raises(PermanentSmsError) as err:
            send_code(make_provider(skewed))
    assert err.value.code == "AuthFailure.SignatureExpire"


# Tencent's "Signature v3" document, worked example (CVM DescribeInstances in ap-guangzhou)
DOC_SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_TIMESTAMP = "1551113065"
DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_SIGNATURE = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


def test_fake_vendor_verifier_reproduces_the_published_signature():
    # 1551113065 is 2019-02-26 in Beijing; the scope must use the UTC date 2019-02-25
    expected = tc3_expected_signature(
        secret_key=DOC_SECRET_KEY,
        http_method="POST",
        canonical_uri="/",
        canonical_query="",
        header_lines=[("Host", "cvm.tencentcloudapi.com"), ("Content-Type", "application/json; charset=utf-8")],
        request_payload=DOC_PAYLOAD,
        timestamp=DOC_TIMESTAMP,
        service="cvm",
    )
    assert expected == DOC_SIGNATURE


def _replay(vendor, request, body: bytes) -> dict:
    """Send a received request again, byte for byte except ``body``, as a man in the middle would."""
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return requests.post(vendor.endpoint + "/", data=body, headers=headers, timeout=5).json()["Response"]


def test_independent_verifier_accepts_the_sdk_request_and_refuses_it_tampered(vendor):
    send_code(make_provider(vendor))
    (signed,) = vendor.received
    assert signed.outcome == "Ok"  # the SDK's signature passed the fake's own TC3 check

    tampered = _replay(vendor, signed, signed.body.replace(b"042817", b"999999"))
    assert tampered["Error"]["Code"] == "AuthFailure.SignatureFailure"
    untouched = _replay(vendor, signed, signed.body)
    assert "Error" not in untouched and untouched["SendStatusSet"][0]["Code"] == "Ok"
    assert [d.params for d in vendor.delivered] == [["042817", "5"], ["042817", "5"]]


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


@pytest.mark.parametrize("status, error_type", [
    (500, TransientSmsError), (503, TransientSmsError), (429, TransientSmsError), (403, PermanentSmsError),
])
def test_http_status_keeps_its_classification(vendor, status, error_type):
    vendor.script(PHONE, http_status=status)
    with pytest.raises((PermanentSmsError, TransientSmsError)) as err:
        send_code(make_provider(vendor))
    assert type(err.value) is error_type
    assert err.value.code == f"http_{status}"


def test_answer_that_is_not_the_vendor_json_is_transient(vendor):
    vendor.script(PHONE, http_status=200)  # the fake's error page: JSON, but no "Response"
    with pytest.raises(TransientSmsError) as err:
        send_code(make_provider(vendor))
    assert err.value.code == "bad_response"


def test_answer_slower_than_the_read_timeout_is_transient_and_maybe_accepted(vendor):
    vendor.script(PHONE, delay=0.6)
    with pytest.raises(TransientSmsError) as err:
        send_code(make_provider(vendor, read_timeout=0.2))
    assert err.value.code == "timeout"
    assert err.value.maybe_accepted  # the request went out: it must be checked, not sent again
    assert wait_for(lambda: len(vendor.delivered) == 1)  # and indeed the vendor took it


@pytest.mark.parametrize("timeout, maybe", [(requests.ConnectTimeout, False), (requests.ReadTimeout, True)])
def test_only_a_read_timeout_may_have_been_accepted(vendor, timeout, maybe):
    provider = make_provider(vendor)

    def as_the_sdk_raises_it(request):  # the SDK wraps requests' error, keeping it as the context
        try:
            raise timeout("timed out")
        except requests.RequestException as exc:
            raise TencentCloudSDKException("ClientNetworkError", str(exc))  # noqa: B904

    provider._client.SendSms = as_the_sdk_raises_it
    with pytest.raises(TransientSmsError) as err:
        send_code(provider)
    assert (err.value.code, err.value.maybe_accepted) == ("timeout", maybe)


# --- checking a handover with the vendor's delivery reports -------------------------------

def send_with_reference(provider, reference, phone=PHONE):
    message = CATALOG.render("flow_voided", {"document_title": "借条"})
    return provider.send(phone, message.template, message.params, message.text, reference=reference)


def test_the_reference_goes_out_as_session_context_and_finds_its_report(vendor):
    provider = make_provider(vendor)
    since = dt.datetime.now(dt.timezone.utc)
    other = send_with_reference(provider, "msg-other")
    mine = send_with_reference(provider, "msg-mine")
    assert [d.session_context for d in vendor.delivered] == ["msg-other", "msg-mine"]
    handover = provider.check(PHONE, "msg-mine", since)
    assert handover.state is HandoverState.ACCEPTED
    assert handover.vendor_message_id == mine.vendor_message_id != other.vendor_message_id
    assert handover.detail == "SUCCESS"
    pull = [r for r in vendor.received if r.headers.get("X-TC-Action") == "PullSmsSendStatusByPhoneNumber"]
    assert pull and pull[-1].json["PhoneNumber"] == "+8613812345678"


def test_no_report_is_unknown_until_the_grace_when_reports_carry_the_context(vendor):
    provider = make_provider(vendor, session_context_in_reports=True, report_grace_seconds=300)
    since = dt.datetime.now(dt.timezone.utc)
    send_with_reference(provider, "msg-someone-else")
    assert provider.check(PHONE, "msg-never-sent", since).state is HandoverState.UNKNOWN
    later = since + dt.timedelta(seconds=301)
    answer = provider.check(PHONE, "msg-never-sent", since, now=later)
    assert (answer.state, answer.detail) == (HandoverState.NOT_ACCEPTED, "no_report_after_grace")
    # an account whose reports do not carry the context never concludes "not accepted"
    blind = make_provider(vendor, session_context_in_reports=False)
    assert blind.check(PHONE, "msg-never-sent", since, now=later).state is HandoverState.UNKNOWN


def test_a_late_report_or_a_failing_pull_is_unknown(vendor):
    provider = make_provider(vendor)
    since = dt.datetime.now(dt.timezone.utc)
    send_with_reference(provider, "msg-late")
    vendor.reports_withheld = True
    assert provider.check(PHONE, "msg-late", since).state is HandoverState.UNKNOWN
    vendor.reports_withheld, vendor.reports_error = False, "InternalError.Timeout"
    answer = provider.check(PHONE, "msg-late", since)
    assert (answer.state, answer.detail) == (HandoverState.UNKNOWN, "InternalError.Timeout")
    vendor.reports_error = None
    assert provider.check(PHONE, "msg-late", since).state is HandoverState.ACCEPTED


def test_reports_are_paged(vendor):
    provider = make_provider(vendor)
    since = dt.datetime.now(dt.timezone.utc)
    for n in range(105):
        send_with_reference(provider, f"msg-{n}")
    assert provider.check(PHONE, "msg-104", since).state is HandoverState.ACCEPTED
    offsets = [r.json["Offset"] for r in vendor.received
               if r.headers.get("X-TC-Action") == "PullSmsSendStatusByPhoneNumber"]
    assert offsets == [0, 100]


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


def test_endpoint_must_be_an_http_url(vendor):
    with pytest.raises(InvalidInput) as err:
        make_provider(vendor, endpoint="sms.tencentcloudapi.com")
    assert (err.value.field, err.value.rule) == ("sms.tencent.endpoint", "url_format")


def test_sdk_debug_log_never_shows_the_number(vendor, caplog):
    caplog.set_level(logging.DEBUG)
    send_code(make_provider(vendor))
    assert len(vendor.delivered) == 1
    assert "13812345678" not in caplog.text and "042817" not in caplog.text


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
