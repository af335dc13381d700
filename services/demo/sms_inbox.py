"""A phone's messages as the console SMS provider writes them
(:mod:`services.notify.providers.console`): the demo's "phone screen".

The outbox holds full numbers and codes: nothing read here is printed."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from services.common.phone import normalise_phone
from services.notify.providers.console import read_outbox


class NoMessage(Exception):
    """The message a step waits for did not arrive in time."""


@dataclass(frozen=True)
class SmsInbox:
    outbox: Path
    wait_seconds: float = 30.0

    def mark(self) -> int:
        """How many messages the outbox holds now: later ones answer what is asked next."""
        return len(read_outbox(self.outbox, shared_lock=True))

    def code(self, phone: str, template: str, after: int) -> str:
        """The code of the newest ``template`` message to ``phone`` after ``mark()`` gave ``after``."""
        national = normalise_phone(phone)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            found = [line for line in read_outbox(self.outbox, shared_lock=True)[after:]
                     if line.get("phone") == national and line.get("template") == template]
            if found:
                return str(found[-1]["params"]["code"])
            if time.monotonic() > deadline:
                raise NoMessage(f"no {template} SMS reached {self.outbox} within {self.wait_seconds:.0f} s "
                                f"(see notify's log)")
            time.sleep(0.2)
