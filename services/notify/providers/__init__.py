"""The SMS provider interface: one small seam between notify and any SMS vendor.

A provider delivers one rendered message to one mainland mobile number and
returns the vendor's message id, or raises one of two errors the retry
policy tells apart:

* :class:`TransientSmsError` - worth trying again later: network failure,
  timeout, HTTP 5xx, vendor-side throttling, vendor internal errors;
* :class:`PermanentSmsError` - trying again cannot help: invalid number,
  template or sign name not approved, bad credentials, number on the
  vendor's do-not-disturb list.

A message handed over may still be lost on our side: the process may die, or
the database go away, between the vendor's "accepted" and our record of it;
a read timeout leaves the same doubt. So every send carries ``reference``,
our own message id, which the vendor keeps with the message, and
:meth:`SmsProvider.check` asks the vendor afterwards whether it took the
message with that reference: :class:`Handover` ``accepted`` (with its id),
``not_accepted`` (the vendor is sure it never got it) or ``unknown``. The
delivery log decides from that answer instead of sending blindly again
(:mod:`services.notify.delivery`).

Implementations: :mod:`.console` (development outbox file) and
:mod:`.tencent` (Tencent Cloud SMS, API 2021-01-11). Which one runs is
configuration (:func:`build_provider`), never ``if test:``.

Error messages carry vendor error codes and masked numbers only.
"""
from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Mapping, Protocol, runtime_checkable

from services.common.errors import InvalidInput
from services.common.masking import mask_phone
from services.notify.sms_templates import SmsTemplate


@dataclass(frozen=True)
class SendResult:
    """What a vendor said when it accepted a message."""

    vendor_message_id: str
    provider: str


class HandoverState(str, enum.Enum):
    ACCEPTED = "accepted"          # the vendor has the message (it went out, or will)
    NOT_ACCEPTED = "not_accepted"  # the vendor is sure it never got it: sending it is safe
    UNKNOWN = "unknown"            # the vendor cannot tell (yet): sending it could be a second time


@dataclass(frozen=True)
class Handover:
    """A vendor's answer about one reference: did it take that message?"""

    state: HandoverState
    vendor_message_id: str | None = None
    accepted_at: dt.datetime | None = None
    detail: str = ""  # why unknown: a vendor error code, "no_report_yet"... (no numbers)


class SmsDeliveryError(Exception):
    """A provider could not hand the message over. ``code`` is the vendor's
    error code (or ours, e.g. ``network``), ``reason`` a short description."""

    def __init__(self, code: str, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}" if self.reason else self.code


class TransientSmsError(SmsDeliveryError):
    """Try again later. ``retry_after`` (seconds) is the vendor's hint of
    the earliest sensible retry, when it gives one. ``maybe_accepted``: the
    request may have reached the vendor (it timed out waiting for the
    answer), so the message must be checked with the vendor, not sent again."""

    def __init__(self, code: str, reason: str = "", retry_after: float | None = None,
                 maybe_accepted: bool = False):
        super().__init__(code, reason)
        self.retry_after = retry_after
        self.maybe_accepted = maybe_accepted


class PermanentSmsError(SmsDeliveryError):
    """Retrying the same message cannot succeed."""


@runtime_checkable
class SmsProvider(Protocol):
    """Deliver one message. ``template`` says which vendor template to use,
    ``params`` are the rendered variable values (in the template's order),
    ``text`` is the full body without sign name (what the person reads),
    ``reference`` our message id, kept by the vendor with the message."""

    name: str

    def send(self, phone: str, template: SmsTemplate, params: Mapping[str, str], text: str,
             reference: str | None = None) -> SendResult:
        ...

    def check(self, phone: str, reference: str, since: dt.datetime) -> Handover:
        """Whether the vendor took the message sent with ``reference`` to
        ``phone`` at or after ``since`` (aware UTC). Never raises for the
        vendor's failures: they are an ``unknown`` answer, with the reason."""
        ...


_NATIONAL_MOBILE = re.compile(r"1[3-9][0-9]{9}\Z")


def mainland_e164(phone: str) -> str:
    """``+86`` plus the 11 national digits, from the national or +86 form.

    Identity normalises numbers when people register; anything else reaching
    a provider is a bug upstream, so it is a permanent failure here."""
    digits = phone[3:] if phone.startswith("+86") else phone
    if not _NATIONAL_MOBILE.match(digits):
        raise PermanentSmsError("invalid_number", f"not a mainland mobile number: {mask_phone(phone)}")
    return "+86" + digits


def build_provider(settings: Mapping[str, object]) -> SmsProvider:
    """The provider named by ``settings['provider']`` (``console`` or ``tencent``),
    built from the sub-mapping of the same name. Example::

        provider: console
        console: {outbox_path: /srv/esign/sms-outbox.jsonl, sign_name: 电子签}
        tencent: {secret_id: ..., secret_key: ..., sms_sdk_app_id: ..., sign_name: ...,
                  template_ids: {phone_code: "1234567", ...}}
    """
    # Imported here: the implementations import this module for the interface.
    from services.notify.providers.console import ConsoleSettings, ConsoleSmsProvider
    from services.notify.providers.tencent import TencentSmsProvider, TencentSmsSettings

    name = settings.get("provider", "console")
    options = dict(settings.get(name) or {})  # type: ignore[arg-type]
    if name == "console":
        unknown = sorted(set(options) - {"outbox_path", "sign_name"})
        if unknown:
            raise InvalidInput(f"sms.console.{unknown[0]}", "unknown_setting", "expected outbox_path, sign_name")
        if not options.get("outbox_path"):
            raise InvalidInput("sms.console.outbox_path", "required", "expected the outbox file's path")
        return ConsoleSmsProvider(ConsoleSettings(**options))
    if name == "tencent":
        return TencentSmsProvider(TencentSmsSettings.from_mapping(options))
    raise InvalidInput("sms.provider", "one_of", f"expected 'console' or 'tencent', found {name!r}")


__all__ = [
    "Handover",
    "HandoverState",
    "SendResult",
    "SmsDeliveryError",
    "TransientSmsError",
    "PermanentSmsError",
    "SmsProvider",
    "mainland_e164",
    "build_provider",
]
