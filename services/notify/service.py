"""The notify service: wires events, RPC and a scheduler to SMS templates,
providers, the delivery log, rate limits and reminders.

What it answers (RPC)
=====================

``send_sms(phone, template, params, dedupe_key=None) -> {message_id, status}``
    Direct sending for other services. ``template`` is a notice or reminder
    template (one-time codes go only through identity's ``otp_requested``);
    ``params`` are checked against the template (errors name
    ``params.<name>``). The same ``dedupe_key`` answers with the first
    message instead of sending again. ``status`` is ``sent``, ``queued`` (a
    retry is pending), ``failed`` or ``rate_limited``.
``delivery_status(message_id)``
    The delivery-log row: template, masked number, status, attempts, vendor id.

What it needs from identity (RPC)
=================================

``identity.otp_message(challenge_id) -> {phone, template, params}``
    (exists) the number and code of a pending challenge.
``identity.contact(person_id) -> {phone, name}``
    (TO BE PROVIDED by identity) the person's confirmed mobile number (11
    national digits) and real name, or ``NotFound("person", id)``. Notify asks
    at sending time and keeps the number only sealed, only until the message
    is out; names are shown masked (张*) in texts.

Events handled (each idempotent by event id, and by a dedupe key per event,
template and recipient)
=======================

The event's mark (``processed_events``) commits with the messages it records and their first
attempt, before the vendor is called: a redelivery finds it; a message that worker did not get to
send is the scheduler's (its claim runs out, :mod:`.delivery`).

Each event's payload is its type in :data:`services.common.events.PAYLOADS`;
one that is not (or breaks notify's own rules below) is logged and dropped.

``identity.otp_requested`` (:class:`~services.common.events.OtpRequested`):
the code SMS; the number and code come from identity.

``signing.*`` (a :class:`~services.common.events.FlowEvent` each, read into
:class:`.notices.FlowFacts`): ids fit a dedupe key (1-64 characters
``[A-Za-z0-9._:-]``); a party with a null ``person_id`` is named by the
document but not registered yet, and reached at the number documents gives
its role; at most 20 characters of the title are shown; ``repayment_date``
(null for a statement's flow: 还款确认书, 借款展期协议) and ``loan`` plan an
IOU's reminders. The loan events (``loan_*``) name the IOU's flow.

=================  ===============  ============================================
event              template         to
=================  ===============  ============================================
flow_sent          sign_request     next_person_id, unless it is the initiator (who
                                    sent the document and is signing it now)
sign_reminder      sign_request     next_person_id (催签, the requester named)
flow_completed     flow_completed   every party; plans reminders to every party
                                    if repayment_date (:mod:`.reminders`:
                                    interest_due, due_soon, due_today, overdue)
void_requested     void_requested   every party but the requester
flow_voided        flow_voided      every party; cancels the flow's reminders
flow_declined      flow_declined    every party but the decliner
flow_expired       flow_expired     every party
flow_cancelled     flow_cancelled   every party but the one whose identity was
                                    disputed (identity froze that account)
loan_extended      loan_extended    every party; cancels the flow's reminders not
                                    yet sent and plans them anew from the new
                                    repayment_date (a cancelled one whose day
                                    comes again is scheduled again)
loan_repayment_    repayment_       every party but actor_person_id (the lender);
recorded           recorded         reminders stay: principal is still owed
loan_repaid        loan_repaid      every party; cancels the flow's reminders not
                                    yet sent, overdue ones too
=================  ===============  ============================================

Events emitted: ``sms_sent``, ``sms_failed`` (also for ``rate_limited``),
``sms_given_up``, each with a :class:`~services.common.events.SmsOutcome`.

The scheduler (:mod:`.scheduler`) runs in the replica holding the lease:
it sends due reminders (never in quiet hours, never after the day they
speak about) and retries due messages (:mod:`.delivery`).
"""
from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from typing import Any, Callable, Iterable

import eventlet
from nameko.exceptions import MethodNotFound
from nameko.extensions import DependencyProvider
from nameko.timer import timer
from sqlalchemy.exc import IntegrityError

from services.common import events
from services.common.clock import aware
from services.common.config import read_secret, secret_generation_dir, setting_flag
from services.common.entrypoints import BoundedRpcProxy, handles_event, rpc
from services.common.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unavailable,
)
from services.common.masking import mask_phone
from services.common.metrics import Metrics, Series
from services.common.phone import normalise_phone
from services.common.reasons import Reason
from services.common.sealing import BlindIndex, Keyring, keyring_from_secrets
from services.common.service_base import ServiceBase
from services.common.wire import CONTACTS_PER_CALL
from services.notify import reminder_book
from services.notify.clock import Clock
from services.notify.delivery import OTP, DeliveryLog, SmsChannel, sms_series
from services.notify.models import SmsMessage
from services.notify.notices import NAMED_PARTY, FlowFacts, notices_for
from services.notify.providers import build_provider
from services.notify.reminders import plan_reminders
from services.notify.scheduler import SchedulerLease, scheduled
from services.notify.settings import NotifySettings, console_outbox, sms_provider_name
from services.notify.sms_templates import SmsTemplateCatalog, TemplateCategory

log = logging.getLogger(__name__)

FLOW = "flow"


class SmsChannelProvider(DependencyProvider):
    """Builds the process's :class:`~services.notify.delivery.SmsChannel` from
    config: the provider named by ``SMS.PROVIDER``, notify's keys, settings."""

    def setup(self) -> None:
        config = self.container.config
        sms = config.get("SMS") or {}
        name = sms_provider_name(config)
        sign_name = str(sms.get("SIGN_NAME") or "电子签")
        catalog = SmsTemplateCatalog.load()
        if name == "console":
            outbox = console_outbox(config)
            outbox.parent.mkdir(parents=True, exist_ok=True)
            settings = {"provider": "console", "console": {"outbox_path": str(outbox), "sign_name": sign_name}}
        elif name == "tencent":
            tencent = sms.get("TENCENT") or {}
            ids = {k: str(v) for k, v in (tencent.get("TEMPLATE_IDS") or {}).items() if v not in (None, "")}
            catalog = catalog.with_vendor_template_ids("tencent", ids)
            missing = catalog.unconfigured_for("tencent")
            if missing:
                raise InvalidInput(f"sms.tencent.template_ids.{missing[0]}", "required",
                                   "every template needs its approved Tencent template id")
            options = {
                "secret_id": read_secret(tencent.get("SECRET_ID"), "tencent-secret-id").decode(),
                "secret_key": read_secret(tencent.get("SECRET_KEY"), "tencent-secret-key").decode(),
                "sms_sdk_app_id": str(tencent.get("SDK_APP_ID") or ""),
                "sign_name": sign_name,
            }
            for key in ("REGION", "ENDPOINT", "CONNECT_TIMEOUT", "READ_TIMEOUT", "REPORT_GRACE_SECONDS"):
                if tencent.get(key) not in (None, ""):
                    options[key.lower()] = (float(tencent[key]) if key.endswith(("TIMEOUT", "SECONDS"))
                                            else str(tencent[key]))
            options["session_context_in_reports"] = setting_flag(
                tencent, "SESSION_CONTEXT_IN_REPORTS", False, "sms.tencent.session_context_in_reports")
            settings = {"provider": "tencent", "tencent": options}
        else:
            raise InvalidInput("sms.provider", "one_of", f"expected console or tencent, found {name!r}")
        keyring, phone_index = _load_keys(config)
        provider = build_provider(settings)
        notify_settings = NotifySettings.from_config(config)
        vendor = getattr(provider, "settings", None)
        notify_settings.scheduler.require_outlasting(getattr(vendor, "connect_timeout", 0.0)
                                                     + getattr(vendor, "read_timeout", 0.0))
        self.channel = SmsChannel(catalog, provider, name, keyring, phone_index, notify_settings,
                                  random.SystemRandom())

    def get_dependency(self, worker_ctx) -> SmsChannel:
        return self.channel


def _load_keys(config: dict) -> tuple[Keyring, BlindIndex]:
    """Notify's own KEK (sealed recipients) and phone-hash key (rate limits);
    generated under DATA_DIR only when ``SECRETS.GENERATE_MISSING`` (embedded)."""
    secrets = config.get("SECRETS") or {}
    generate = secret_generation_dir(config)
    index_key = read_secret(secrets.get("PHONE_INDEX_KEY"), "notify-phone-index", generate_in=generate)
    return keyring_from_secrets(secrets, "notify-kek", "notify-kek-1", generate), BlindIndex(index_key)


def known_series(config: dict) -> tuple[Series, ...]:
    """notify's counters shown at 0 from the start: every SMS outcome of every template (the SMS alerts)."""
    provider = str((config.get("SMS") or {}).get("PROVIDER") or "console")
    return (sms_series(provider, SmsTemplateCatalog.load().ids),)


class NotifyService(ServiceBase):
    name = "notify"
    metrics = Metrics(known=known_series)
    sms = SmsChannelProvider()
    clock = Clock()
    lease = SchedulerLease()
    identity = BoundedRpcProxy("identity")
    documents = BoundedRpcProxy("documents")

    # -- RPC -----------------------------------------------------------------------
    @rpc
    def send_sms(self, phone: str, template: str, params: dict, dedupe_key: str | None = None) -> dict:
        """Send one notice or reminder SMS now (see the module docstring)."""
        number = normalise_phone(phone)
        catalog = self.sms.catalog
        if template not in catalog:
            raise InvalidInput("template", "unknown_template", f"no SMS template named {template[:40]!r}")
        if catalog.get(template).category is TemplateCategory.CODE:
            raise InvalidInput("template", "code_template", "one-time codes are sent for identity's otp_requested only")
        if dedupe_key is not None and not 1 <= len(dedupe_key) <= 100:
            raise InvalidInput("dedupe_key", "length", "expected 1-100 characters")
        key = f"rpc:{dedupe_key}" if dedupe_key else f"rpc:{uuid.uuid4()}"
        delivery = self._delivery()
        existing = delivery.find(key)
        if existing is None:
            message = delivery.record(dedupe_key=key, phone=number, template_id=template, params=params,
                                      ref_type="rpc", ref_id=None)
            try:
                self.db.commit()
            except IntegrityError:  # the same dedupe key, sent by a concurrent call
                self.db.rollback()
                existing = delivery.find(key)
            else:
                delivery.deliver(message, number, params)
                return {"message_id": message.id, "status": message.status}
        if existing.template_id != template or existing.phone_masked != mask_phone(number):
            raise Conflict(Reason.DEDUPE_KEY_REUSED)
        return {"message_id": existing.id, "status": existing.status}

    @rpc
    def delivery_status(self, message_id: str) -> dict:
        message = self.db.session.get(SmsMessage, message_id)
        if message is None:
            raise NotFound("sms_message", message_id)
        return {
            "message_id": message.id, "id": message.id, "template": message.template_id,
            "template_version": message.template_version, "provider": message.provider,
            "status": message.status, "phone_masked": message.phone_masked, "attempts": message.attempts,
            "vendor_message_id": message.vendor_message_id, "last_error": message.last_error,
            "next_attempt_at": _iso(message.next_attempt_at), "created_at": _iso(message.created_at),
            "sent_at": _iso(message.sent_at), "recovery": message.recovery,
        }

    # -- events --------------------------------------------------------------------
    @handles_event("identity", events.OTP_REQUESTED, mark_first=True)
    def on_otp_requested(self, event: dict) -> None:
        """Deliver a phone or willingness code. The event carries only the
        challenge id; the phone and code are fetched from identity over RPC."""
        challenge_id = events.parse(events.OTP_REQUESTED, event["data"]).challenge_id
        dedupe_key = f"otp:{challenge_id}"
        delivery = self._delivery()
        if delivery.find(dedupe_key):
            return
        try:
            message = self._otp_message(challenge_id)
        except (Forbidden, NotFound) as exc:  # expired or already delivered: nothing to send
            log.info("otp challenge %s not deliverable: %s", challenge_id, exc)
            return
        phone, params = normalise_phone(message["phone"]), dict(message["params"])
        record = delivery.record(dedupe_key=dedupe_key, phone=phone, template_id=message["template"],
                                 params=params, ref_type=OTP, ref_id=challenge_id, flush=False)
        # the intent, the first attempt and the event's mark commit together, before anything leaves
        delivery.deliver(record, phone, params, otp_lookup=self._otp_message)

    @handles_event("signing", events.FLOW_SENT, mark_first=True)
    def on_flow_sent(self, event: dict) -> None:
        self._notify_flow(event, events.FLOW_SENT)

    @handles_event("signing", events.SIGN_REMINDER, mark_first=True)
    def on_sign_reminder(self, event: dict) -> None:
        """催签: the sign request again, to the party whose turn it is."""
        self._notify_flow(event, events.SIGN_REMINDER)

    @handles_event("signing", events.FLOW_COMPLETED, mark_first=True)
    def on_flow_completed(self, event: dict) -> None:
        """Tell every party; plan repayment reminders when the flow has a repayment date."""
        self._notify_flow(event, events.FLOW_COMPLETED, lambda flow: self._plan_reminders(flow, self.clock.now()))

    @handles_event("signing", events.VOID_REQUESTED, mark_first=True)
    def on_void_requested(self, event: dict) -> None:
        self._notify_flow(event, events.VOID_REQUESTED)

    @handles_event("signing", events.FLOW_VOIDED, mark_first=True)
    def on_flow_voided(self, event: dict) -> None:
        """Tell every party and cancel the flow's pending reminders."""
        self._notify_flow(event, events.FLOW_VOIDED,
                          lambda flow: reminder_book.cancel(self.db.session, flow.flow_id, self.clock.now()))

    @handles_event("signing", events.LOAN_EXTENDED, mark_first=True)
    def on_loan_extended(self, event: dict) -> None:
        """Tell every party the new repayment date; the reminders not yet sent give way to
        those of the new date."""
        def plan_again(flow: FlowFacts) -> None:
            now = self.clock.now()
            reminder_book.cancel(self.db.session, flow.flow_id, now)
            self._plan_reminders(flow, now)

        self._notify_flow(event, events.LOAN_EXTENDED, plan_again)

    @handles_event("signing", events.LOAN_REPAYMENT_RECORDED, mark_first=True)
    def on_loan_repayment_recorded(self, event: dict) -> None:
        """A part repayment: tell the parties but the lender; principal is still owed, so the reminders stay."""
        self._notify_flow(event, events.LOAN_REPAYMENT_RECORDED)

    @handles_event("signing", events.LOAN_REPAID, mark_first=True)
    def on_loan_repaid(self, event: dict) -> None:
        """The loan is settled: tell every party and cancel the reminders not yet sent, overdue ones too."""
        self._notify_flow(event, events.LOAN_REPAID,
                          lambda flow: reminder_book.cancel(self.db.session, flow.flow_id, self.clock.now()))

    @handles_event("signing", events.FLOW_DECLINED, mark_first=True)
    def on_flow_declined(self, event: dict) -> None:
        self._notify_flow(event, events.FLOW_DECLINED)

    @handles_event("signing", events.FLOW_EXPIRED, mark_first=True)
    def on_flow_expired(self, event: dict) -> None:
        self._notify_flow(event, events.FLOW_EXPIRED)

    @handles_event("signing", events.FLOW_CANCELLED, mark_first=True)
    def on_flow_cancelled(self, event: dict) -> None:
        """The platform cancelled the flow over a disputed identity: tell the other parties."""
        self._notify_flow(event, events.FLOW_CANCELLED)

    # -- the scheduler ---------------------------------------------------------------
    @scheduled
    def run_scheduler(self) -> None:
        """In the lease holder only: send due reminders, then retry due messages."""
        if not self.lease.held(self.db.session):
            return
        self._send_due_reminders()
        self._delivery().retry_due(self._otp_message, self.sms.settings.scheduler.batch)

    @timer(interval=60)
    def drop_expired_rate_history(self) -> None:
        """In the lease holder only, once a minute (the delete reads every phone's rows): drop the
        rate-limit history no window looks back to any more."""
        if not self.lease.held(self.db.session):
            return
        self._delivery().forget_expired_sends()

    # -- wiring ----------------------------------------------------------------------
    def _delivery(self) -> DeliveryLog:
        return DeliveryLog(self.db, self.sms, self.clock, self.metrics)

    def _notify_flow(self, event: dict, event_type: str, also: Callable[[FlowFacts], Any] | None = None) -> None:
        """Gather contacts, record every message and do ``also``, then deliver: all of that commits
        with the first message's attempt, before the vendor is called.

        Contacts are fetched before anything is committed: if identity does not
        answer, the event goes back to the queue with nothing half-done."""
        try:
            flow = FlowFacts.of(events.parse(event_type, event.get("data")))
            notices = notices_for(event_type, flow)
        except InvalidInput as exc:  # a contract breach no retry can mend
            log.error("signing.%s %s breaks the payload contract: %s", event_type, event.get("event_id"), exc)
            return
        contacts = self._contacts((p for notice in notices for p in notice.persons), flow.document_id)
        delivery = self._delivery()
        pending = []
        for notice in notices:
            contact = contacts.get(notice.person_id)
            names = {var: contacts.get(person) for var, person in notice.names.items()}
            if contact is None or None in names.values():
                log.warning("signing.%s of flow %s: no contact for a person; %s not sent",
                            event_type, flow.flow_id, notice.template)
                continue
            params = {**notice.params, **{var: named["name"] for var, named in names.items()}}
            dedupe_key = f"{notice.template}:{event['event_id']}:{notice.person_id}"
            if delivery.find(dedupe_key):
                continue
            try:
                phone = normalise_phone(contact["phone"])
                message = delivery.record(dedupe_key=dedupe_key, phone=phone, template_id=notice.template,
                                          params=params, ref_type=FLOW, ref_id=flow.flow_id)
            except InvalidInput as exc:
                log.error("signing.%s of flow %s: %s not sent: %s", event_type, flow.flow_id, notice.template, exc)
                continue
            pending.append((message, phone, params))
        if also is not None:
            also(flow)
        # every message, ``also`` and the event's mark commit with the first attempt (before the vendor
        # is called), or here when there is nothing to send
        if not pending:
            self.db.commit()
        for message, phone, params in pending:
            delivery.deliver(message, phone, params)

    def _plan_reminders(self, flow: FlowFacts, now: dt.datetime) -> None:
        """Store an IOU's reminders (not committed); a statement flow has no repayment date and plans none."""
        if flow.repayment_date is None:
            return
        planned = plan_reminders(flow.repayment_date, now, self.sms.settings.reminders, flow.loan)
        reminder_book.schedule(self.db.session, flow.flow_id, flow.person_ids, flow.document_title, planned, now)

    def _send_due_reminders(self) -> None:
        now = self.clock.now()
        quiet_hours = self.sms.settings.quiet_hours
        delivery = self._delivery()
        session = self.db.session
        for reminder in reminder_book.due(session, now, self.sms.settings.scheduler.batch):
            if now >= aware(reminder.expires_at):
                reminder_book.move(session, reminder.id, reminder_book.EXPIRED, now)
                self.db.commit()
                continue
            if quiet_hours.contains(now):
                return  # nothing goes out at night; still due in the morning unless expired by then
            try:
                contact = self._contact(reminder.person_id)
            except NotFound:
                reminder_book.move(session, reminder.id, reminder_book.FAILED, now)
                self.db.commit()
                continue
            except Unavailable:
                log.warning("identity unavailable; reminders wait for the next tick")
                return
            params = reminder_book.params_of(reminder)
            try:
                phone = normalise_phone(contact["phone"])
                message = delivery.record(dedupe_key=f"reminder:{reminder.id}", phone=phone,
                                          template_id=reminder.kind, params=params, ref_type=FLOW,
                                          ref_id=reminder.flow_id)
                if not reminder_book.mark_sent(session, reminder.id, message.id, now):
                    self.db.rollback()  # cancelled or taken meanwhile
                    continue
                self.db.commit()
            except IntegrityError:  # another scheduler recorded it first
                self.db.rollback()
                continue
            except InvalidInput as exc:
                self.db.rollback()
                log.error("reminder %s not sendable: %s", reminder.id, exc)
                reminder_book.move(session, reminder.id, reminder_book.FAILED, now)
                self.db.commit()
                continue
            delivery.deliver(message, phone, params)

    def _call(self, service: str, method: str, **kwargs) -> Any:
        """An RPC to identity or documents, bounded by SMS.IDENTITY_TIMEOUT."""
        timeout = self.sms.settings.identity_timeout
        with eventlet.Timeout(timeout, Unavailable(service, f"no answer to {method} in {timeout:g} s")):
            return getattr(getattr(self, service), method)(**kwargs)

    def _otp_message(self, challenge_id: str) -> dict:
        return self._call("identity", "otp_message", challenge_id=challenge_id)

    def _contact(self, person_id: str) -> dict:
        return self._call("identity", "contact", person_id=person_id)

    def _contacts(self, person_ids: Iterable[str], document_id: str | None = None) -> dict[str, dict | None]:
        """Phone and name per recipient: a person's from identity; a named
        party's who has not registered yet (``named:<role>``) from the document."""
        wanted = list(dict.fromkeys(person_ids))
        people = [person_id for person_id in wanted if not person_id.startswith(NAMED_PARTY)]
        known = self._people_contacts(people) if people else {}
        contacts: dict[str, dict | None] = {}
        for person_id in wanted:
            try:
                if person_id.startswith(NAMED_PARTY):
                    contacts[person_id] = (self._call("documents", "party_contact", document_id=document_id,
                                                      role=person_id[len(NAMED_PARTY):]) if document_id else None)
                else:
                    contacts[person_id] = known[person_id] if person_id in known else self._contact(person_id)
            except NotFound:
                contacts[person_id] = None
        return contacts

    def _people_contacts(self, person_ids: list[str]) -> dict[str, dict | None]:
        """identity's ``contacts`` of registered people, one call per ``CONTACTS_PER_CALL``; {} from an
        identity older than that method (each is then asked for with ``contact``)."""
        known: dict[str, dict | None] = {}
        try:
            for start in range(0, len(person_ids), CONTACTS_PER_CALL):
                known.update(self._call("identity", "contacts", person_ids=person_ids[start:start + CONTACTS_PER_CALL]))
        except MethodNotFound:  # a stand-in serving nameko's own RPCs
            return {}
        except InvalidInput as exc:
            if exc.field == "method":
                return {}
            raise
        return known


def _iso(value) -> str | None:
    return aware(value).isoformat() if value is not None else None
