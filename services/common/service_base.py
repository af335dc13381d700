"""What every nameko service of the platform has: its database (with the
outbox), metrics, and a ``health`` RPC reporting each dependency."""
from __future__ import annotations

import time

from services.common.database import DatabaseProvider
from services.common.entrypoints import rpc
from services.common.errors import EsignError
from services.common.metrics import Metrics
from services.common.offload import ReportsPoolHealth
from services.common.readiness import instance_rpc


class ServiceBase:
    name = "base"

    db = DatabaseProvider()
    metrics = Metrics()

    @rpc
    @instance_rpc  # also on this process's own queue: its readiness probe (services/common/readiness.py)
    def health(self) -> dict:
        """Liveness and readiness: the process answers and its stores respond."""
        checks = {"database": _check(lambda: self.db.session.connection().exec_driver_sql("SELECT 1"))}
        store = getattr(self, "storage", None)
        if store is not None:
            checks["storage"] = _check(store.ping)
        custody = getattr(self, "custody", None)  # the key store (services/common/keystore), when on a token
        if custody is not None and getattr(custody, "store", None) is not None:
            checks["key_store"] = _check(custody.store.ping)
        for value in list(vars(self).values()):  # worker pools: one whose fresh workers keep dying cannot work
            if isinstance(value, ReportsPoolHealth):
                checks[f"workers.{value.name}"] = value.pool_health()
        healthy = all(check["ok"] for check in checks.values())
        return {"service": self.name, "status": "ok" if healthy else "degraded", "checks": checks}


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        fn()
    except EsignError as exc:
        failed = {"ok": False, "error": exc.code, "ms": round((time.perf_counter() - started) * 1000, 1)}
        if getattr(exc, "reason", None):  # a listed word (token_missing, wrong_pin ...), never a secret
            failed["reason"] = str(exc.reason)
        return failed
    except Exception as exc:  # report, never raise: health must answer
        return {"ok": False, "error": type(exc).__name__, "ms": round((time.perf_counter() - started) * 1000, 1)}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
