"""The delivery log: every SMS is recorded before it leaves, attempted, and
its outcome recorded; transient failures come back later.

Lifecycle of a message (rules, in order):

1. :meth:`DeliveryLog.record` renders the template (so bad values are
   refused before anything is stored) and adds a ``queued`` row: template and
   version, masked number, ``next_attempt_at`` = now, and the recipient
   SEALED (number and template values, AES-256-GCM under notify's KEK, bound
   to the message id; one-time codes left out). The row is *claimed* by its
   creator, so the scheduler does not attempt it while the creator does. The
   caller commits: the intent is durable before anything is sent.
2. :meth:`DeliveryLog.deliver` makes one attempt. The first attempt must be
   admitted by the rate limiter (per phone per minute/hour/day and global,
   counted under a row lock, :mod:`.rate_store`); reminders also wait out
   quiet hours. A refusal by a per-phone limit ends a code as
   ``rate_limited`` (whoever asked may ask again later); a notice or
   reminder (owed to the person), or a refusal by the global limit, waits
   until the limiter's ``not_before``.
   The attempt is counted and the message marked ``sending`` (with
   ``in_flight_since`` and a claim) and committed before the vendor is
   called, with the message id as the vendor's ``reference``.
3. Outcome: ``sent`` (vendor id kept, ``sms_sent``); a transient error gets
   ``next_attempt_at`` from :func:`~services.notify.retry.decide`
   (exponential backoff, full jitter) and is ``queued`` again until
   ``max_attempts``, then ``given_up`` (``sms_given_up``); a permanent error
   is ``failed`` (``sms_failed``) and never retried. Every end wipes the
   sealed recipient.
4. :meth:`DeliveryLog.retry_due` (the scheduler) claims due ``queued`` rows
   one by one with an atomic update and attempts them. A one-time code is
   asked of identity again at that moment (it is never stored here).

A handover in doubt is checked, never repeated blindly
(:meth:`DeliveryLog.resolve_in_flight`, first in every scheduler tick). A
message is left ``sending`` when its worker died, or its database went
away, between the vendor call and the record of its outcome (found once its
claim has run out), or when the vendor call timed out after the request
went out (``maybe_accepted``). The provider is asked about the message's
reference (:meth:`~services.notify.providers.SmsProvider.check`):

* ``accepted``: it was handed over: ``sent``, with the vendor's id;
* ``not_accepted``: it never was: ``queued`` again, attempted at once;
* ``unknown``: asked again every ``in_flight_recheck_seconds`` until
  ``in_flight_limit_seconds`` after the attempt, then :data:`WHEN_UNKNOWN`
  decides by the template's category: a one-time code or a reminder ends
  ``outcome_unknown`` (a code is stale by then and its person can ask for
  another; a reminder is a courtesy), a notice is sent again (the person
  it is owed to may otherwise never learn they are asked to sign: a second
  copy is the lesser harm).

The column ``recovery`` records how a doubt was settled (``vendor_accepted``,
``vendor_not_accepted``, ``resent_outcome_unknown``, ``outcome_unknown``),
with the vendor's detail in ``last_error`` for the last two.

Metrics: ``esign_sms_total{template,provider,outcome}`` with outcome
``sent``, ``failed``, ``given_up``, ``retried``, ``rate_limited``,
``outcome_unknown``, and ``recovered_accepted`` / ``recovered_not_accepted``
/ ``recovered_unknown`` for each check that settled a doubt;
``esign_sms_vendor_latency_seconds{provider}``.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import or_, select, update

from services.common import events
from services.common.clock import aware, naive, utcnow
from services.common.errors import (
    EsignError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.common.failpoints import failpoint
from services.common.masking import mask_phone
from services.common.metrics import Series
from services.common.outbox import UnitOfWork
from services.common.sealing import (
    BlindIndex,
    Keyring,
    associated_data,
    from_text,
    to_text,
)
from services.notify.clock import ClockSource
from services.notify.models import SmsMessage
from services.notify.providers import Handover, HandoverState, SmsProvider, TransientSmsError
from services.notify.rate_limit import SmsRateLimiter
from services.notify.rate_store import SqlRateCounterStore, admit
from services.notify.retry import Outcome, decide
from services.notify.settings import NotifySettings
from services.notify.sms_templates import SmsTemplateCatalog, TemplateCategory

log = logging.getLogger(__name__)

QUEUED, SENDING = "queued", "sending"
SENT, FAILED, RATE_LIMITED, GIVEN_UP, OUTCOME_UNKNOWN = (
    "sent", "failed", "rate_limited", "given_up", "outcome_unknown")
FINAL = (SENT, FAILED, RATE_LIMITED, GIVEN_UP, OUTCOME_UNKNOWN)
RESEND, GIVE_UP = "resend", "give_up"
RETRIED = "retried"
#: every outcome esign_sms_total counts, shown at 0 from the start for each template of the provider
SMS_OUTCOMES = (*FINAL, RETRIED, *(f"recovered_{state.value}" for state in HandoverState))
#: what becomes of a message whose handover the vendor still cannot confirm after the limit
WHEN_UNKNOWN = {TemplateCategory.CODE: GIVE_UP, TemplateCategory.REMINDER: GIVE_UP,
                TemplateCategory.NOTICE: RESEND}
OTP = "otp"
PER_PHONE_REASONS = ("phone_per_minute", "phone_per_hour", "phone_per_day")

#: identity's answer for a one-time code: {phone, template, params}
OtpLookup = Callable[[str], Mapping[str, Any]]


def sms_series(provider: str, templates: Sequence[str]) -> Series:
    return Series("sms", "SMS by template, provider and outcome",
                  {"template": templates, "provider": (provider,), "outcome": SMS_OUTCOMES})


@dataclass(frozen=True)
class SmsChannel:
    """What every worker shares: templates, the configured provider, notify's
    keys and settings."""

    catalog: SmsTemplateCatalog
    provider: SmsProvider
    provider_name: str
    keyring: Keyring
    phone_index: BlindIndex
    settings: NotifySettings
    rng: random.Random

    def limiter(self, store: SqlRateCounterStore) -> SmsRateLimiter:
        return SmsRateLimiter(
            self.settings.rate_limits, store, self.settings.quiet_hours,
            phone_key=lambda phone: self.phone_index.digest("sms-rate-phone", phone)[:64],
        )


class DeliveryLog:
    """One worker's view of the delivery log (see the module rules)."""

    def __init__(self, unit: UnitOfWork, channel: SmsChannel, clock: ClockSource, metrics):
        self.unit = unit
        self.session = unit.session
        self.channel = channel
        self.clock = clock
        self.metrics = metrics

    # -- recording -----------------------------------------------------------------
    def find(self, dedupe_key: str) -> SmsMessage | None:
        return self.session.execute(select(SmsMessage).where(SmsMessage.dedupe_key == dedupe_key)).scalar_one_or_none()

    def record(self, *, dedupe_key: str, phone: str, template_id: str, params: Mapping[str, Any],
               ref_type: str | None, ref_id: str | None, flush: bool = True) -> SmsMessage:
        """Add a queued message (not committed). Raises InvalidInput for bad params.

        ``flush=False``: the row is written with the transaction's commit, not now; for a message
        whose first attempt (:meth:`deliver`) follows in the same transaction, so the row is
        written once, as that attempt leaves it, with the intent and the attempt durable together
        before the vendor is called."""
        rendered = self.channel.catalog.render(template_id, params)
        kept = {k: v for k, v in params.items()
                if not (rendered.template.category is TemplateCategory.CODE and k == "code")}
        now = naive(self.clock.now())
        message_id = str(uuid.uuid4())
        message = SmsMessage(
            id=message_id, dedupe_key=dedupe_key, template_id=template_id,
            template_version=rendered.template.version, provider=self.channel.provider_name,
            phone_masked=mask_phone(phone), status=QUEUED, attempts=0, created_at=now, updated_at=now,
            ref_type=ref_type, ref_id=ref_id, next_attempt_at=now,
            claimed_until=utcnow() + dt.timedelta(seconds=self.channel.settings.scheduler.claim_seconds),
            recipient_sealed=self._seal(message_id, {"phone": phone, "params": _plain(kept)}),
        )
        self.session.add(message)
        if flush:
            self.session.flush()
        return message

    # -- attempting ----------------------------------------------------------------
    def deliver(self, message: SmsMessage, phone: str | None = None, params: Mapping[str, Any] | None = None,
                otp_lookup: OtpLookup | None = None) -> SmsMessage:
        """One attempt at a queued message this worker has claimed, recorded or committed; commits,
        on every path, before the vendor is called (with what the transaction holds besides)."""
        template = self.channel.catalog.get(message.template_id)
        now = self.clock.now()
        try:
            if phone is None or params is None:
                phone, params = self._recipient(message, otp_lookup)
            rendered = self.channel.catalog.render(message.template_id, params)
        except (Forbidden, NotFound, InvalidInput) as exc:
            return self._finish(message, FAILED, _error_code(exc), events.SMS_FAILED)
        except (Unavailable, TransientSmsError) as exc:
            message.attempts += 1
            return self._after_failure(message, TransientSmsError(_error_code(exc)), now)

        if message.attempts == 0:
            store = SqlRateCounterStore(self.session)
            with self.session.no_autoflush:  # a message recorded in this transaction is written once, at its commit
                permission = admit(self.channel.limiter(store), store, phone, template.category, now)
            if not permission.allowed:
                # a code is asked for again by its person; a notice or reminder is owed, so it waits
                if permission.reason in PER_PHONE_REASONS and template.category is TemplateCategory.CODE:
                    return self._finish(message, RATE_LIMITED, f"rate_limited.{permission.reason}", events.SMS_FAILED)
                if permission.reason != "quiet_hours":
                    self._count(message, RATE_LIMITED)
                return self._defer(message, permission.not_before or now, f"deferred.{permission.reason}")
        elif template.category is TemplateCategory.REMINDER and self.channel.settings.quiet_hours.contains(now):
            return self._defer(message, self.channel.settings.quiet_hours.next_allowed(now), "deferred.quiet_hours")

        message.attempts += 1
        message.status = SENDING  # a crash from here on leaves it in doubt, to be checked, not resent
        message.in_flight_since = utcnow()  # real time, as the claim and the vendor's reports
        message.claimed_until = utcnow() + dt.timedelta(seconds=self.channel.settings.scheduler.claim_seconds)
        message.updated_at = naive(now)
        self.unit.commit()  # the attempt is counted (and rate locks released) before the vendor call

        started = time.perf_counter()
        try:
            result = self.channel.provider.send(phone, template, rendered.params, rendered.text, reference=message.id)
        except Exception as exc:  # noqa: BLE001 - retry.classify: anything not transient is permanent
            self._observe(started)
            if not isinstance(exc, EsignError) and not hasattr(exc, "code"):
                # no traceback: its messages could carry the number; the type and message id locate it
                log.error("SMS %s to %s: unexpected %s from the provider", message.id, message.phone_masked,
                          type(exc).__name__)
            if getattr(exc, "maybe_accepted", False):
                return self._in_doubt(message, _error_code(exc))
            return self._after_failure(message, exc, self.clock.now())
        self._observe(started)
        failpoint("notify.sms_handed_over")  # the window a crash leaves in doubt (tests/reliability)
        message.vendor_message_id = result.vendor_message_id[:100]
        message.sent_at = naive(self.clock.now())
        log.info("SMS %s (%s) sent to %s", message.id, message.template_id, message.phone_masked)
        return self._finish(message, SENT, None, events.SMS_SENT)

    # -- handovers in doubt --------------------------------------------------------
    def in_doubt_message_ids(self, limit: int) -> list[str]:
        return list(self.session.execute(
            select(SmsMessage.id)
            .where(SmsMessage.status == SENDING,
                   or_(SmsMessage.claimed_until.is_(None), SmsMessage.claimed_until < utcnow()))
            .order_by(SmsMessage.in_flight_since)
            .limit(limit)
        ).scalars())

    def resolve_in_flight(self, otp_lookup: OtpLookup | None, limit: int) -> int:
        """Settle every message left ``sending`` whose claim ran out (see the
        module rules); returns how many were checked with the vendor."""
        checked = 0
        for message_id in self.in_doubt_message_ids(limit):
            message = self._claim(message_id, SENDING)
            if message is None:
                continue
            checked += 1
            try:
                self._settle(message, otp_lookup)
            except Exception:  # one broken message must not stop the others
                self.unit.rollback()
                log.exception("checking SMS %s with the vendor failed", message_id)
        return checked

    def _settle(self, message: SmsMessage, otp_lookup: OtpLookup | None) -> SmsMessage:
        settings = self.channel.settings.scheduler
        since = aware(message.in_flight_since or message.updated_at)
        try:
            phone, _ = self._recipient(message, otp_lookup, for_check=True)
        except (Forbidden, NotFound, InvalidInput, Unavailable, TransientSmsError) as exc:
            handover = Handover(HandoverState.UNKNOWN, detail=_error_code(exc))
        else:
            handover = self.channel.provider.check(phone, message.id, since)
        now = self.clock.now()
        self._count(message, f"recovered_{handover.state.value}")
        if handover.state is HandoverState.ACCEPTED:
            message.vendor_message_id = (handover.vendor_message_id or "")[:100] or None
            message.sent_at = naive(handover.accepted_at or since)
            message.recovery = "vendor_accepted"
            log.info("SMS %s to %s: the vendor had it (%s); recorded as sent, not sent again",
                     message.id, message.phone_masked, handover.detail or "accepted")
            return self._finish(message, SENT, None, events.SMS_SENT)
        if handover.state is HandoverState.NOT_ACCEPTED:
            message.recovery = "vendor_not_accepted"
            log.info("SMS %s to %s: the vendor never had it; attempting it again", message.id, message.phone_masked)
            return self._requeue(message, now, handover.detail or "vendor_not_accepted")
        waited = (aware(utcnow()) - since).total_seconds()
        if waited < settings.in_flight_limit_seconds:
            message.claimed_until = utcnow() + dt.timedelta(seconds=settings.in_flight_recheck_seconds)
            message.last_error = f"in_doubt.{handover.detail or 'unknown'}"[:200]
            message.updated_at = naive(now)
            self.unit.commit()
            return message
        category = self.channel.catalog.get(message.template_id).category
        detail = f"outcome_unknown.{handover.detail or 'unknown'}"
        if WHEN_UNKNOWN[category] == RESEND:
            message.recovery = "resent_outcome_unknown"
            log.warning("SMS %s to %s: the vendor cannot say whether it had it after %.0f s; a %s is owed, "
                        "so it is sent again", message.id, message.phone_masked, waited, category.value)
            return self._requeue(message, now, detail)
        message.recovery = "outcome_unknown"
        log.warning("SMS %s to %s: the vendor cannot say whether it had it after %.0f s; not sent again (%s)",
                    message.id, message.phone_masked, waited, category.value)
        return self._finish(message, OUTCOME_UNKNOWN, detail, events.SMS_GIVEN_UP)

    def _in_doubt(self, message: SmsMessage, code: str) -> SmsMessage:
        """The vendor may have taken it (a read timeout): check it before anything else."""
        message.claimed_until = utcnow() + dt.timedelta(
            seconds=self.channel.settings.scheduler.in_flight_recheck_seconds)
        message.last_error = f"in_doubt.{code}"[:200]
        message.updated_at = naive(self.clock.now())
        log.info("SMS %s to %s: %s after the request went out; to be checked with the vendor", message.id,
                 message.phone_masked, code)
        self.unit.commit()
        return message

    def _requeue(self, message: SmsMessage, now: dt.datetime, reason: str) -> SmsMessage:
        message.status = QUEUED
        message.next_attempt_at = naive(now)
        message.claimed_until = None
        message.last_error = reason[:200]
        message.updated_at = naive(now)
        self.unit.commit()
        return message

    def due_message_ids(self, limit: int) -> list[str]:
        now = naive(self.clock.now())
        return list(self.session.execute(
            select(SmsMessage.id)
            .where(SmsMessage.status == QUEUED, SmsMessage.next_attempt_at <= now,
                   or_(SmsMessage.claimed_until.is_(None), SmsMessage.claimed_until < utcnow()))
            .order_by(SmsMessage.next_attempt_at)
            .limit(limit)
        ).scalars())

    def claim(self, message_id: str) -> SmsMessage | None:
        """Atomically take one queued message for an attempt; commits."""
        return self._claim(message_id, QUEUED)

    def _claim(self, message_id: str, status: str) -> SmsMessage | None:
        real_now = utcnow()
        claimed = self.session.execute(
            update(SmsMessage)
            .where(SmsMessage.id == message_id, SmsMessage.status == status,
                   or_(SmsMessage.claimed_until.is_(None), SmsMessage.claimed_until < real_now))
            .values(claimed_until=real_now + dt.timedelta(seconds=self.channel.settings.scheduler.claim_seconds))
        ).rowcount
        self.unit.commit()
        if claimed != 1:
            return None
        return self.session.get(SmsMessage, message_id, populate_existing=True)

    def forget_expired_sends(self) -> int:
        """Rate-limit history no window looks back to any more (scheduler; not per send); commits."""
        store = SqlRateCounterStore(self.session)
        dropped = self.channel.limiter(store).forget_expired(self.clock.now())
        self.unit.commit()
        return dropped

    def retry_due(self, otp_lookup: OtpLookup, limit: int) -> int:
        """Settle handovers in doubt, then attempt every due queued message
        (scheduler); returns how many were tried."""
        self.resolve_in_flight(otp_lookup, limit)
        tried = 0
        for message_id in self.due_message_ids(limit):
            message = self.claim(message_id)
            if message is None:
                continue
            tried += 1
            try:
                self.deliver(message, otp_lookup=otp_lookup)
            except Exception:  # one broken message must not stop the others
                self.unit.rollback()
                log.exception("retrying SMS %s failed", message_id)
        return tried

    # -- outcomes ------------------------------------------------------------------
    def _after_failure(self, message: SmsMessage, error: BaseException, now: dt.datetime) -> SmsMessage:
        decision = decide(self.channel.settings.retry, message.attempts, error, self.channel.rng)
        code = _error_code(error)
        if decision.outcome is Outcome.RETRY:
            message.status = QUEUED
            message.next_attempt_at = naive(now + dt.timedelta(seconds=decision.delay or 0.0))
            message.claimed_until = None
            message.last_error = code[:200]
            message.updated_at = naive(now)
            self._count(message, RETRIED)
            log.info("SMS %s to %s: %s, retry %d in %.1f s", message.id, message.phone_masked, code,
                     message.attempts + 1, decision.delay or 0.0)
            self.unit.commit()
            return message
        if decision.outcome is Outcome.GIVEN_UP:
            log.warning("SMS %s to %s given up after %d attempts (%s)", message.id, message.phone_masked,
                        message.attempts, code)
            return self._finish(message, GIVEN_UP, code, events.SMS_GIVEN_UP)
        log.warning("SMS %s to %s failed permanently (%s)", message.id, message.phone_masked, code)
        return self._finish(message, FAILED, code, events.SMS_FAILED)

    def _finish(self, message: SmsMessage, status: str, error: str | None, event_type: str) -> SmsMessage:
        message.status = status
        message.last_error = error[:200] if error else None
        message.recipient_sealed = None  # nothing personal outlives the attempt
        message.next_attempt_at = None
        message.claimed_until = None
        message.updated_at = naive(self.clock.now())
        self.unit.emit(event_type, events.SmsOutcome(message_id=message.id, template=message.template_id,
                                                     ref_type=message.ref_type, ref_id=message.ref_id,
                                                     error=error or None))
        self._count(message, status)
        self.unit.commit()
        return message

    def _defer(self, message: SmsMessage, until: dt.datetime, reason: str) -> SmsMessage:
        message.next_attempt_at = naive(aware(until))
        message.claimed_until = None
        message.last_error = reason
        message.updated_at = naive(self.clock.now())
        self.unit.commit()
        return message

    def _count(self, message: SmsMessage, outcome: str) -> None:
        self.metrics.inc("sms", "SMS by template, provider and outcome", template=message.template_id,
                         provider=message.provider, outcome=outcome)

    def _observe(self, started: float) -> None:
        self.metrics.observe("sms_vendor_latency_seconds", time.perf_counter() - started,
                             "SMS vendor call latency", provider=self.channel.provider_name)

    # -- the sealed recipient ------------------------------------------------------
    def _seal(self, message_id: str, value: dict) -> str:
        plain = json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return to_text(self.channel.keyring.seal(plain, associated_data("sms_recipient", message_id)))

    def _recipient(self, message: SmsMessage, otp_lookup: OtpLookup | None,
                   for_check: bool = False) -> tuple[str, dict]:
        if message.ref_type == OTP and not (for_check and message.recipient_sealed is not None):
            if otp_lookup is None or not message.ref_id:
                raise NotFound("otp_challenge", message.ref_id or "")
            answer = otp_lookup(message.ref_id)  # the code is asked for again, never stored
            return str(answer["phone"]), dict(answer["params"])
        if message.recipient_sealed is None:
            raise NotFound("sms_recipient", message.id)
        opened = self.channel.keyring.open(from_text(message.recipient_sealed),
                                           associated_data("sms_recipient", message.id))
        value = json.loads(opened.decode("utf-8"))
        return value["phone"], value["params"]


def _plain(params: Mapping[str, Any]) -> dict:
    return {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in params.items()}


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if isinstance(exc, InvalidInput):
        return f"invalid_input.{exc.field}"
    if isinstance(exc, Forbidden):
        return f"forbidden.{exc.reason}"
    if isinstance(code, str) and code:
        return code
    return type(exc).__name__
