"""Console SMS provider: the development and demo "phone".

Each message becomes one JSON line appended to an outbox file (JSON Lines).
Tests and the demo read that file to find the code or link a person would
have received, so a line carries the FULL phone number and the full text
(with the sign name 【...】 in front, as a handset would show it), plus the
masked number for anything that copies it onward.

FOR DEVELOPMENT ONLY: the outbox holds personal data in clear. Deployments
use a real vendor (:mod:`.tencent`).

Several processes (notify replicas, test workers) may share one outbox. Each
line is written with a single ``write`` on a descriptor opened ``O_APPEND``,
under an exclusive ``flock``, so lines never interleave or overwrite.

A line carries the sender's ``reference`` (notify's message id), so
:meth:`ConsoleSmsProvider.check` can answer with certainty whether a message
was handed over: the line is written in one call before ``send`` returns, so
no line means it never was.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from services.common.masking import mask_phone
from services.notify.providers import Handover, HandoverState, SendResult, TransientSmsError, mainland_e164
from services.notify.sms_templates import SmsTemplate


@dataclass(frozen=True)
class ConsoleSettings:
    outbox_path: str  # notify's config says where (services.notify.settings.console_outbox)
    sign_name: str = "电子签"


class ConsoleSmsProvider:
    name = "console"

    def __init__(self, settings: ConsoleSettings, clock: Callable[[], dt.datetime] | None = None):
        self.settings = settings
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def outbox_path(self) -> Path:
        return Path(self.settings.outbox_path)

    def send(self, phone: str, template: SmsTemplate, params: Mapping[str, str], text: str,
             reference: str | None = None) -> SendResult:
        e164 = mainland_e164(phone)
        message_id = "console-" + uuid.uuid4().hex
        record = {
            "message_id": message_id,
            "reference": reference,
            "at": self._clock().isoformat(),
            "phone": e164[3:],
            "phone_masked": mask_phone(e164),
            "template": template.id,
            "template_version": template.version,
            "params": dict(params),
            "text": f"【{self.settings.sign_name}】{text}",
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self._append(line)
        except OSError as exc:
            # A full disk or a missing directory may clear up; the message is not lost.
            raise TransientSmsError("outbox_unwritable", type(exc).__name__) from None
        return SendResult(vendor_message_id=message_id, provider=self.name)

    def check(self, phone: str, reference: str, since: dt.datetime) -> Handover:
        try:
            lines = read_outbox(self.outbox_path, shared_lock=True)
        except OSError as exc:
            return Handover(HandoverState.UNKNOWN, detail=f"outbox_unreadable.{type(exc).__name__}")
        for line in lines:
            if line.get("reference") == reference:
                return Handover(HandoverState.ACCEPTED, line["message_id"], dt.datetime.fromisoformat(line["at"]))
        return Handover(HandoverState.NOT_ACCEPTED)

    def _append(self, line: bytes) -> None:
        self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.outbox_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError("short write to SMS outbox")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def read_outbox(path: Path | str, shared_lock: bool = False) -> list[dict]:
    """Every message in an outbox file, oldest first (for tests and the demo);
    ``shared_lock`` waits out a writer's line first."""
    try:
        with open(path, encoding="utf-8") as f:
            if shared_lock:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
