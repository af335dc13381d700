"""Run one nameko service in this process: ``esign run <service>``.

The equivalent of ``nameko run --config services/<svc>/config.yaml
services.<svc>.service``, plus the platform's logging (personal data masked)
and a clean stop on SIGTERM/SIGINT.
"""
from __future__ import annotations

import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()  # noqa: E402  (before anything imports socket or threading)

import importlib  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from services.common.config import load_config  # noqa: E402
from services.common.logs import configure_logging  # noqa: E402

SERVICE_CLASSES = {
    "identity": "services.identity.service:IdentityService",
    "documents": "services.documents.service:DocumentsService",
    "signing": "services.signing.service:SigningService",
    "notify": "services.notify.service:NotifyService",
}


def service_class(name: str):
    module_name, cls_name = SERVICE_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def run(name: str) -> int:
    from nameko.runners import ServiceRunner

    config = load_config(name)
    configure_logging(config.get("LOGGING_LEVEL", "INFO"))
    log = logging.getLogger("esign.runner")
    runner = ServiceRunner(config)
    runner.add_service(service_class(name))

    stopping = eventlet.event.Event()

    def _on_signal(signum, _frame):
        if not stopping.ready():
            stopping.send(signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    runner.start()
    log.info("%s started", name)

    def _watch():
        # a container that died (an error nameko does not survive) leaves the process up
        # but deaf: end it instead, so its supervisor (esign up, Kubernetes) starts a new one
        try:
            runner.wait()
        except Exception as exc:  # the container's own error, logged by nameko
            if not stopping.ready():
                stopping.send(exc)

    eventlet.spawn(_watch)
    why = stopping.wait()
    if isinstance(why, Exception):
        log.critical("%s died (%s: %s); exiting so it is started again", name, type(why).__name__, why)
        runner.kill()
        return 1
    log.info("%s stopping", name)
    with eventlet.Timeout(15, False):
        runner.stop()
        return 0
    runner.kill()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(sys.argv[1]))
