"""Failpoints: named places where a test deployment can make a process die
exactly there, as a crash would.

Some windows are too narrow to hit by killing a process from outside at a
random moment: notify's, between the SMS vendor taking a message and the
commit that records it, lasts a millisecond. A failpoint names such a place
in the code (``failpoint("notify.sms_handed_over")``); the fault-injection
suite (tests/reliability) arms it, and the next process to pass it SIGKILLs
itself.

Off unless ``ESIGN_FAILPOINTS`` is set (never in a real deployment):
``name=path[,name=path]``. A failpoint is armed while its file exists; the
process that passes it first removes the file (only one can) and dies, so
it fires once per arming, across restarts and replicas.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "ESIGN_FAILPOINTS"


def _armed() -> dict[str, str]:
    spec = os.environ.get(ENV, "")
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, path = item.partition("=")
        if path:
            points[name.strip()] = path.strip()
    return points


_POINTS = _armed()


def failpoint(name: str) -> None:
    """Die here (SIGKILL) if ``name`` is armed; otherwise nothing."""
    path = _POINTS.get(name)
    if path is None:
        return
    try:
        os.unlink(path)  # whoever removes the arming file fires it
    except FileNotFoundError:
        return
    log.warning("failpoint %s: killing this process, as armed", name)
    os.kill(os.getpid(), signal.SIGKILL)
