"""Tencent Cloud SMS provider (API version 2021-01-11, action SendSms),
through Tencent's own SDK (``tencentcloud-sdk-python-sms``, ``SmsClient``).

One request per message: ``SendSms`` with ``PhoneNumberSet: ["+86..."]``,
``SmsSdkAppId``, ``SignName``, ``TemplateId``, ``TemplateParamSet``. The SDK
signs it with TC3-HMAC-SHA256 (Tencent's "Signature v3") and posts it; the
endpoint is configurable so tests can point it at a local fake vendor, which
checks the signature with its own verifier.

How vendor answers map onto our two errors (``classify_vendor_code``):

==========================================================  =========================
Vendor answer                                               Ours
==========================================================  =========================
``SendStatusSet[0].Code == "Ok"``                           success, id = ``SerialNo``
network error, timeout, HTTP 5xx, HTTP 429                  transient
body that is not the vendor's JSON                          transient (an outage page)
``InternalError.*`` (Timeout, SendAndRecvFail, OtherError   transient
ParseBackendResponseFail, ...) and bare ``InternalError``
``RequestLimitExceeded*`` (API call rate)                   transient
``LimitExceeded.PhoneNumberThirtySecondLimit``              transient, retry after 30 s
``LimitExceeded.PhoneNumberOneHourLimit``                   transient, retry after 1 h
``LimitExceeded.DeliveryFrequencyLimit``                    transient, retry after 30 s
``LimitExceeded.PhoneNumberDailyLimit``,                    permanent: retrying today
``...SameContentDailyLimit``, ``AppDailyLimit``,             only burns attempts; our own
``AppCountryOrRegionDailyLimit``                            rate limits should hit first
``InvalidParameterValue.*`` (IncorrectPhoneNumber,           permanent
TemplateParameterFormatError, ContentLengthLimit, ...)
``FailedOperation.TemplateIncorrectOrUnapproved``,           permanent (needs an operator)
``FailedOperation.SignatureIncorrectOrUnapproved``,
``FailedOperation.PhoneNumberInBlacklist``,
``FailedOperation.ContainSensitiveWord``,
``FailedOperation.InsufficientBalanceInSmsPackage``
``AuthFailure.*`` (SignatureFailure, SignatureExpire,       permanent (configuration or
SecretIdNotFound ...), ``UnauthorizedOperation.*``,          clock; retrying the same
``MissingParameter*``, ``UnsupportedOperation*``             request cannot succeed)
``InternalError.RequestTimeException`` (clock skew)         permanent, same reason
any other code                                              permanent
any other HTTP 4xx                                          permanent
==========================================================  =========================

Unknown codes are permanent on purpose: a retry loop around an answer we do
not understand risks sending a person the same SMS several times. For the
same reason a read timeout (the request went out; the answer did not come
back) is ``maybe_accepted``: the delivery log checks with the vendor before
anything is sent again.

Checking a handover (:meth:`TencentSmsProvider.check`): Tencent has no
idempotency key, but ``SendSms`` takes a ``SessionContext`` that the vendor
keeps with the message and returns in its delivery reports. Every send
carries notify's message id there; ``PullSmsSendStatusByPhoneNumber`` (the
number's reports since the attempt, 100 a page) finds the report that
carries it: ``accepted``, with its ``SerialNo``. No report yet is
``unknown``: carriers report late. Once ``report_grace_seconds`` have passed
since the attempt, and the account is known to return SessionContext in
its reports (``session_context_in_reports``, which Tencent enables on
request), no report means ``not_accepted``; without that setting the answer
stays ``unknown`` and the delivery log's policy for unknown outcomes decides.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, fields
from typing import Mapping
from urllib.parse import urlsplit

from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models
from tencentcloud.sms.v20210111.sms_client import SmsClient

from services.common.errors import InvalidInput
from services.common.masking import mask_phone
from services.common.tencent_cloud import (
    caused_by_connect_timeout,
    caused_by_timeout,
    is_vendor_answer,
    quiet_sdk_request_dumps,
)
from services.notify.providers import (
    Handover,
    HandoverState,
    PermanentSmsError,
    SendResult,
    SmsDeliveryError,
    TransientSmsError,
    mainland_e164,
)
from services.notify.sms_templates import SmsTemplate

DEFAULT_ENDPOINT = "https://sms.tencentcloudapi.com"
VENDOR = "tencent"
#: the SDK's logger; at DEBUG it writes whole requests (numbers, codes) - see _quiet_sdk_request_dumps

_RETRY_AFTER = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.DeliveryFrequencyLimit": 30.0,
}
_PERMANENT_DESPITE_PREFIX = {"InternalError.RequestTimeException"}
_TRANSIENT_PREFIXES = ("InternalError", "RequestLimitExceeded")
_LONG_DIGITS = re.compile(r"\+?[0-9]{7,}")


def classify_vendor_code(code: str, message: str = "") -> SmsDeliveryError:
    """The error to raise for a Tencent error code (see the module table)."""
    # Vendor messages are free text; keep them short and free of numbers.
    reason = _LONG_DIGITS.sub("[number]", message)[:120]
    if code in _RETRY_AFTER:
        return TransientSmsError(code, reason, retry_after=_RETRY_AFTER[code])
    if code in _PERMANENT_DESPITE_PREFIX:
        return PermanentSmsError(code, reason)
    if code.startswith(_TRANSIENT_PREFIXES):
        return TransientSmsError(code, reason)
    return PermanentSmsError(code, reason)


@dataclass(frozen=True)
class TencentSmsSettings:
    secret_id: str
    secret_key: str = field(repr=False)
    sms_sdk_app_id: str
    sign_name: str
    region: str = "ap-guangzhou"
    endpoint: str = DEFAULT_ENDPOINT
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    #: template id at Tencent per our template id; overrides the YAML placeholders
    template_ids: Mapping[str, str] = field(default_factory=dict)
    #: Tencent returns SendSms's SessionContext in delivery reports for this account (enabled on request)
    session_context_in_reports: bool = False
    #: after this long without a delivery report, a message is taken as never accepted (with the above)
    report_grace_seconds: float = 300.0

    @classmethod
    def from_mapping(cls, options: Mapping[str, object]) -> "TencentSmsSettings":
        required = ("secret_id", "secret_key", "sms_sdk_app_id", "sign_name")
        for name in required:
            if not options.get(name):
                raise InvalidInput(f"sms.tencent.{name}", "required", f"Tencent SMS needs {name}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInput(f"sms.tencent.{unknown[0]}", "unknown_setting", f"expected one of {sorted(known)}")
        return cls(**options)  # type: ignore[arg-type]


class _HttpStatus(TencentCloudSDKException):
    """A non-200 answer, with its status kept: the SDK's own ServerNetworkError
    drops it, and the table above tells 5xx and 429 from other 4xx."""

    def __init__(self, status: int):
        super().__init__(f"http_{status}", "HTTP error from Tencent SMS")
        self.status = status


class _StatusKeepingSmsClient(SmsClient):
    def _check_status(self, resp):  # the SDK's hook for non-200 answers
        if resp.status_code != 200:
            resp.close()  # the body is not read (the SDK streams): give the connection back
            raise _HttpStatus(resp.status_code)


def _client(settings: TencentSmsSettings) -> SmsClient:
    parts = urlsplit(settings.endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput("sms.tencent.endpoint", "url_format", "expected an http(s) URL")
    for name in ("secret_id", "secret_key"):
        value = getattr(settings, name)
        if not value or value.strip() != value:  # the SDK's Credential refuses both
            raise InvalidInput(f"sms.tencent.{name}", "format", "expected a value without surrounding spaces")
    # The SDK hands reqTimeout to requests as is, so the (connect, read) pair keeps
    # both limits. Its default NoopRetryer is kept: our RetryPolicy decides about
    # retries, and a second try inside the SDK could send a person the SMS twice.
    http = HttpProfile(protocol=parts.scheme, endpoint=parts.netloc,
                       reqTimeout=(settings.connect_timeout, settings.read_timeout))
    credential = Credential(settings.secret_id, settings.secret_key)
    return _StatusKeepingSmsClient(credential, settings.region, ClientProfile(httpProfile=http))


def _delivery_error(exc: TencentCloudSDKException) -> SmsDeliveryError:
    """Our error for anything the SDK raised (see the module table)."""
    if isinstance(exc, _HttpStatus):
        if exc.status >= 500 or exc.status == 429:  # the vendor answered: it did not take the message
            return TransientSmsError(exc.code, "Tencent SMS answered with an HTTP error")
        return PermanentSmsError(exc.code, "unexpected HTTP status from Tencent SMS")
    # The vendor's error answers carry its RequestId; the SDK's own failures
    # (ClientNetworkError around requests' errors, a Python exception's name
    # for an unparsable body) do not, and keep the original as their context.
    if is_vendor_answer(exc):
        return classify_vendor_code(str(exc.code), str(exc.message or ""))
    if caused_by_timeout(exc):
        # a connect timeout sent nothing; a read timeout may have been accepted
        return TransientSmsError("timeout", "Tencent SMS did not answer in time",
                                 maybe_accepted=not caused_by_connect_timeout(exc))
    cause = exc.__context__
    if isinstance(cause, (ValueError, KeyError, TypeError)):
        return TransientSmsError("bad_response", "Tencent SMS answer is not its JSON")
    return TransientSmsError("network", type(cause).__name__ if cause is not None else str(exc.code))


class TencentSmsProvider:
    name = VENDOR

    def __init__(self, settings: TencentSmsSettings):
        self.settings = settings
        self._client = _client(settings)
        quiet_sdk_request_dumps()

    def template_id_for(self, template: SmsTemplate) -> str:
        configured = self.settings.template_ids.get(template.id)
        template_id = str(configured) if configured else template.vendor_template_id(VENDOR)
        if not template_id:
            raise PermanentSmsError("template_not_configured", f"no Tencent template id for {template.id}")
        return template_id

    def send(self, phone: str, template: SmsTemplate, params: Mapping[str, str], text: str,
             reference: str | None = None) -> SendResult:
        e164 = mainland_e164(phone)
        request = models.SendSmsRequest()
        if reference:
            request.SessionContext = reference
        request.PhoneNumberSet = [e164]
        request.SmsSdkAppId = self.settings.sms_sdk_app_id
        request.SignName = self.settings.sign_name
        request.TemplateId = self.template_id_for(template)
        request.TemplateParamSet = [str(params[name]) for name in template.variable_names]
        try:
            answer = self._client.SendSms(request)
        except TencentCloudSDKException as exc:  # SendSms wraps every failure in it
            raise _delivery_error(exc) from None
        return self._interpret(answer, e164)

    def check(self, phone: str, reference: str, since: dt.datetime,
              now: dt.datetime | None = None) -> Handover:
        e164 = mainland_e164(phone)
        now = now or dt.datetime.now(dt.timezone.utc)
        request = models.PullSmsSendStatusByPhoneNumberRequest()
        request.PhoneNumber = e164
        request.SmsSdkAppId = self.settings.sms_sdk_app_id
        request.BeginTime = int(since.timestamp()) - 60  # the vendor's clock may be behind ours
        request.EndTime = int(now.timestamp()) + 60
        request.Limit = 100
        request.Offset = 0
        while True:
            try:
                answer = self._client.PullSmsSendStatusByPhoneNumber(request)
            except TencentCloudSDKException as exc:
                return Handover(HandoverState.UNKNOWN, detail=_delivery_error(exc).code)
            reports = answer.PullSmsSendStatusSet or []
            for report in reports:
                if report.SessionContext == reference:
                    received = (dt.datetime.fromtimestamp(report.UserReceiveTime, dt.timezone.utc)
                                if report.UserReceiveTime else None)
                    return Handover(HandoverState.ACCEPTED, str(report.SerialNo or ""), received,
                                    detail=str(report.ReportStatus or ""))
            if len(reports) < request.Limit or request.Offset >= 900:
                break
            request.Offset += request.Limit
        waited = (now - since).total_seconds()
        if self.settings.session_context_in_reports and waited >= self.settings.report_grace_seconds:
            return Handover(HandoverState.NOT_ACCEPTED, detail="no_report_after_grace")
        return Handover(HandoverState.UNKNOWN, detail="no_report_yet")

    def _interpret(self, answer: models.SendSmsResponse, e164: str) -> SendResult:
        statuses = answer.SendStatusSet or []
        mine = next((s for s in statuses if s.PhoneNumber == e164), statuses[0] if statuses else None)
        if mine is None:
            raise TransientSmsError("bad_response", "Tencent SMS answer has no send status")
        code = str(mine.Code or "")
        if code != "Ok":
            error_obj = classify_vendor_code(code, str(mine.Message or ""))
            error_obj.reason = f"{error_obj.reason} (to {mask_phone(e164)})".strip()
            raise error_obj
        # "Ok" means the vendor took the message: never retry it, even if the
        # serial number is missing (the request id still identifies it).
        serial = mine.SerialNo or answer.RequestId or ""
        return SendResult(vendor_message_id=str(serial), provider=self.name)
