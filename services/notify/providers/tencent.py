"""Tencent Cloud SMS provider (API version 2021-01-11, action SendSms).

One request per message: ``POST https://sms.tencentcloudapi.com/`` with a JSON
body ``{PhoneNumberSet: ["+86..."], SmsSdkAppId, SignName, TemplateId,
TemplateParamSet: [...]}``, headers ``X-TC-Action``, ``X-TC-Version``,
``X-TC-Timestamp``, ``X-TC-Region`` and an ``Authorization`` signed with
TC3-HMAC-SHA256 (:mod:`.tencent_signature`) over content-type, host and
x-tc-action. The endpoint is configurable so tests can point it at a local
fake vendor.

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
not understand risks sending a person the same SMS several times.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping
from urllib.parse import urlsplit

import requests

from services.common.errors import InvalidInput
from services.common.masking import mask_phone
from services.notify.providers import (
    PermanentSmsError,
    SendResult,
    SmsDeliveryError,
    TransientSmsError,
    mainland_e164,
)
from services.notify.providers.tencent_signature import sign_request
from services.notify.sms_templates import SmsTemplate

API_VERSION = "2021-01-11"
ACTION = "SendSms"
SERVICE = "sms"
DEFAULT_ENDPOINT = "https://sms.tencentcloudapi.com"
CONTENT_TYPE = "application/json; charset=utf-8"
SIGNED_HEADERS = ["content-type", "host", "x-tc-action"]
VENDOR = "tencent"

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


class TencentSmsProvider:
    name = VENDOR

    def __init__(
        self,
        settings: TencentSmsSettings,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self._session = session or requests.Session()
        self._clock = clock
        parts = urlsplit(settings.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidInput("sms.tencent.endpoint", "url_format", "expected an http(s) URL")
        self._host = parts.netloc
        self._url = f"{parts.scheme}://{parts.netloc}/"

    def template_id_for(self, template: SmsTemplate) -> str:
        configured = self.settings.template_ids.get(template.id)
        template_id = str(configured) if configured else template.vendor_template_id(VENDOR)
        if not template_id:
            raise PermanentSmsError("template_not_configured", f"no Tencent template id for {template.id}")
        return template_id

    def send(self, phone: str, template: SmsTemplate, params: Mapping[str, str], text: str) -> SendResult:
        e164 = mainland_e164(phone)
        body = {
            "PhoneNumberSet": [e164],
            "SmsSdkAppId": self.settings.sms_sdk_app_id,
            "SignName": self.settings.sign_name,
            "TemplateId": self.template_id_for(template),
            "TemplateParamSet": [str(params[name]) for name in template.variable_names],
        }
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        response = self._post(payload)
        return self._interpret(response, e164)

    def _post(self, payload: bytes) -> requests.Response:
        timestamp = int(self._clock())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": ACTION,
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self.settings.region,
        }
        signed = sign_request(
            secret_id=self.settings.secret_id,
            secret_key=self.settings.secret_key,
            service=SERVICE,
            timestamp=timestamp,
            headers=headers,
            signed_headers=SIGNED_HEADERS,
            payload=payload,
        )
        headers["Authorization"] = signed.authorization
        try:
            return self._session.post(
                self._url,
                data=payload,
                headers=headers,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
            )
        except requests.Timeout:
            raise TransientSmsError("timeout", "Tencent SMS did not answer in time") from None
        except requests.RequestException as exc:
            raise TransientSmsError("network", type(exc).__name__) from None

    def _interpret(self, response: requests.Response, e164: str) -> SendResult:
        status = response.status_code
        if status >= 500 or status == 429:
            raise TransientSmsError(f"http_{status}", "Tencent SMS answered with an HTTP error")
        if status != 200:
            raise PermanentSmsError(f"http_{status}", "unexpected HTTP status from Tencent SMS")
        try:
            answer = response.json()["Response"]
        except (ValueError, KeyError, TypeError):
            raise TransientSmsError("bad_response", "Tencent SMS answer is not its JSON") from None

        error = answer.get("Error")
        if error:
            raise classify_vendor_code(str(error.get("Code", "")), str(error.get("Message", "")))
        statuses = answer.get("SendStatusSet") or []
        mine = next((s for s in statuses if s.get("PhoneNumber") == e164), statuses[0] if statuses else None)
        if mine is None:
            raise TransientSmsError("bad_response", "Tencent SMS answer has no send status")
        code = str(mine.get("Code", ""))
        if code != "Ok":
            error_obj = classify_vendor_code(code, str(mine.get("Message", "")))
            error_obj.reason = f"{error_obj.reason} (to {mask_phone(e164)})".strip()
            raise error_obj
        # "Ok" means the vendor took the message: never retry it, even if the
        # serial number is missing (the request id still identifies it).
        serial = mine.get("SerialNo") or answer.get("RequestId") or ""
        return SendResult(vendor_message_id=str(serial), provider=self.name)
