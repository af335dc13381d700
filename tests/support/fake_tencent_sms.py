"""A local stand-in for Tencent Cloud SMS (SendSms, API 2021-01-11) for tests.

It listens on 127.0.0.1 (a free port), checks each request the way the vendor
documents it, and answers in the vendor's shapes:

* the ``Authorization`` header is verified with the test support's OWN
  TC3-HMAC-SHA256 implementation (:mod:`tests.support.tencent_tc3`), written
  from Tencent's "Signature v3" documentation, not from the SDK that signs
  the provider's requests; a mismatch gets
  ``AuthFailure.SignatureFailure``, an unknown SecretId
  ``AuthFailure.SecretIdNotFound``, a timestamp more than five minutes off
  ``AuthFailure.SignatureExpire``, a malformed header
  ``AuthFailure.InvalidAuthorization`` - all as HTTP 200 with
  ``Response.Error``, as the vendor does;
* a valid request gets ``Response.SendStatusSet`` with ``SerialNo``,
  ``PhoneNumber``, ``Fee``, ``SessionContext``, ``Code`` ("Ok"), ``Message``,
  ``IsoCode`` and a ``RequestId``; a malformed number gets
  ``InvalidParameterValue.IncorrectPhoneNumber``, an unapproved sign name or a
  template id / parameter count it does not know
  ``FailedOperation.SignatureIncorrectOrUnapproved`` /
  ``FailedOperation.TemplateIncorrectOrUnapproved``;
* tests can script answers per phone number: a send-status code, a top-level
  error code, an HTTP status (e.g. 500), or a delay before answering (the
  message is still taken, as the vendor would, when the client gave up);
* ``PullSmsSendStatusByPhoneNumber`` answers with a delivery report
  (``PullSmsSendStatusSet``: SerialNo, PhoneNumber, ReportStatus,
  UserReceiveTime, SessionContext as sent) for every message delivered to
  that number between ``BeginTime`` and ``EndTime``, ``Offset``/``Limit``
  paged; ``reports_withheld`` holds them back (a carrier that reports late),
  ``session_context_in_reports=False`` leaves SessionContext out (an account
  without that feature), ``reports_error`` fails every pull with that code.

Use as a context manager::

    with FakeTencentSms() as vendor:
        settings = TencentSmsSettings(..., endpoint=vendor.endpoint)
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from tests.support.tencent_tc3 import verify_request

_CN_MOBILE = re.compile(r"\+861[3-9][0-9]{9}\Z")


# --- scripted behaviour ----------------------------------------------------------------

@dataclass
class Scripted:
    status_code: str | None = None   # per-number SendStatus.Code
    error_code: str | None = None    # top-level Response.Error.Code
    http_status: int | None = None   # e.g. 500
    delay: float = 0.0               # seconds to wait before answering


@dataclass
class ReceivedRequest:
    headers: dict[str, str]
    body: bytes
    outcome: str  # "Ok", a vendor error code, or "http_<status>"

    @property
    def json(self) -> dict:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class DeliveredMessage:
    phone: str
    template_id: str
    params: list[str]
    sign_name: str
    serial_no: str
    session_context: str = ""
    at: float = 0.0


def _e164(phone: str) -> str:
    return phone if phone.startswith("+") else "+86" + phone


@dataclass
class FakeTencentSms:
    secret_id: str = "AKIDfakeTestSecretId0000000000000000"
    secret_key: str = "fakeTestSecretKey000000000000000"
    sms_sdk_app_id: str = "1400000001"
    sign_names: frozenset[str] = frozenset({"电子签"})
    #: template id -> number of parameters; None accepts any template
    templates: dict[str, int] | None = None
    clock: Callable[[], float] = time.time
    max_skew_seconds: int = 300
    reports_withheld: bool = False
    session_context_in_reports: bool = True
    reports_error: str | None = None  # every report pull answers this error code

    received: list[ReceivedRequest] = field(default_factory=list)
    delivered: list[DeliveredMessage] = field(default_factory=list)
    _scripts: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # scripting -------------------------------------------------------------------------
    def script(self, phone: str, *, times: int = 1, **behaviour) -> None:
        """Answer the next ``times`` requests for ``phone`` as described
        (``status_code=``, ``error_code=``, ``http_status=``, ``delay=``)."""
        with self._lock:
            for _ in range(times):
                self._scripts[_e164(phone)].append(Scripted(**behaviour))

    def _next_script(self, phones: list[str]) -> Scripted:
        with self._lock:
            for phone in phones:
                queue = self._scripts.get(phone)
                if queue:
                    return queue.popleft()
        return Scripted()

    # lifecycle -------------------------------------------------------------------------
    def start(self) -> "FakeTencentSms":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes; with Nagle on, a kept-alive
            # connection's next answer waits for the client's delayed ACK (about 40 ms)
            disable_nagle_algorithm = True

            def log_message(self, format, *args):  # noqa: A002 - keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status, answer = fake._answer(self.command, self.path, dict(self.headers.items()), body)
                data = json.dumps(answer, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its read timeout); that is the point of a delay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeTencentSms":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # the vendor's behaviour ------------------------------------------------------------
    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
        request_id = str(uuid.uuid4())
        lower = {k.lower(): v for k, v in headers.items()}

        def error(code: str, message: str) -> tuple[int, dict]:
            self._record(headers, body, code)
            return 200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id}}

        auth_problem = self._check_signature(method, path, lower, body)
        if auth_problem:
            return error(*auth_problem)
        if lower.get("x-tc-action") not in ("SendSms", "PullSmsSendStatusByPhoneNumber"):
            return error("InvalidAction", "The requested action does not exist.")
        if lower.get("x-tc-version") != "2021-01-11":
            return error("NoSuchVersion", "The requested version does not exist.")
        if not lower.get("x-tc-region"):
            return error("MissingParameter", "The request is missing a required parameter `Region`.")
        if lower.get("x-tc-action") == "PullSmsSendStatusByPhoneNumber":
            return self._reports(headers, body, request_id, error)
        try:
            request = json.loads(body.decode("utf-8"))
            phones = list(request["PhoneNumberSet"])
        except (ValueError, KeyError, TypeError):
            return error("FailedOperation.JsonParseFail", "parse json fail")
        if not phones:
            return error("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty")
        if request.get("SmsSdkAppId") != self.sms_sdk_app_id:
            return error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId not exist")

        scripted = self._next_script(phones)
        if scripted.delay:
            time.sleep(scripted.delay)
        if scripted.http_status:
            self._record(headers, body, f"http_{scripted.http_status}")
            return scripted.http_status, {"message": "internal server error"}
        if scripted.error_code:
            return error(scripted.error_code, "scripted failure")

        template_id = str(request.get("TemplateId", ""))
        params = [str(p) for p in request.get("TemplateParamSet") or []]
        statuses = []
        for phone in phones:
            code, message = "Ok", "send success"
            if scripted.status_code:
                code, message = scripted.status_code, "scripted failure"
            elif not _CN_MOBILE.match(str(phone)):
                code, message = "InvalidParameterValue.IncorrectPhoneNumber", "incorrect phone number"
            elif request.get("SignName") not in self.sign_names:
                code, message = "FailedOperation.SignatureIncorrectOrUnapproved", "signature unapproved or format error"
            elif self.templates is not None and self.templates.get(template_id) != len(params):
                code, message = ("FailedOperation.TemplateIncorrectOrUnapproved",
                                 "template is not approved or request content does not match "
                                 "the approved template content")
            serial = f"2433:{random.getrandbits(64):020d}" if code == "Ok" else ""
            if code == "Ok":
                with self._lock:
                    self.delivered.append(DeliveredMessage(phone, template_id, params, request.get("SignName", ""),
                                                           serial, str(request.get("SessionContext") or ""),
                                                           self.clock()))
            statuses.append({
                "SerialNo": serial, "PhoneNumber": phone, "Fee": 1 if code == "Ok" else 0,
                "SessionContext": request.get("SessionContext", ""), "Code": code,
                "Message": message, "IsoCode": "CN",
            })
        self._record(headers, body, statuses[0]["Code"])
        return 200, {"Response": {"SendStatusSet": statuses, "RequestId": request_id}}

    def _reports(self, headers, body, request_id, error) -> tuple[int, dict]:
        try:
            request = json.loads(body.decode("utf-8"))
            phone, begin, end = str(request["PhoneNumber"]), int(request["BeginTime"]), int(request["EndTime"])
            offset, limit = int(request.get("Offset", 0)), int(request["Limit"])
        except (ValueError, KeyError, TypeError):
            return error("MissingParameter", "BeginTime, EndTime, Limit and PhoneNumber are required")
        if request.get("SmsSdkAppId") != self.sms_sdk_app_id:
            return error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId not exist")
        if not 0 < limit <= 100:
            return error("InvalidParameterValue", "Limit must be between 1 and 100")
        if self.reports_error:
            return error(self.reports_error, "scripted failure")
        with self._lock:
            mine = [] if self.reports_withheld else [
                m for m in self.delivered if m.phone == phone and begin <= int(m.at) <= end]
        page = mine[offset:offset + limit]
        self._record(headers, body, "Ok")
        return 200, {"Response": {"PullSmsSendStatusSet": [{
            "UserReceiveTime": int(m.at) + 1, "CountryCode": "86", "SubscriberNumber": m.phone[3:],
            "PhoneNumber": m.phone, "SerialNo": m.serial_no, "ReportStatus": "SUCCESS",
            "Description": "DELIVRD", "SessionContext": m.session_context if self.session_context_in_reports else "",
        } for m in page], "RequestId": request_id}}

    def _check_signature(self, method: str, path: str, lower: dict[str, str], body: bytes) -> tuple[str, str] | None:
        refusal = verify_request(method=method, path=path, headers=lower, body=body, service="sms",
                                 secret_id=self.secret_id, secret_key=self.secret_key,
                                 now=self.clock(), max_skew_seconds=self.max_skew_seconds)
        return (refusal.code, refusal.message) if refusal else None

    def _record(self, headers: dict[str, str], body: bytes, outcome: str) -> None:
        with self._lock:
            self.received.append(ReceivedRequest(dict(headers), body, outcome))
