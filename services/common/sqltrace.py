"""Which code issues which SQL: a diagnostic for benchmarks, off unless ``ESIGN_SQL_TRACE`` names a
directory.

pg_stat_statements counts statements per text, but cannot say which service's call sent them, nor
how many transactions a call opened (every BEGIN looks alike). With ``ESIGN_SQL_TRACE=DIR`` each
service process counts, per (entry point of the worker, the service code that asked, statement kind
and table), its statements and transactions, and rewrites ``DIR/<service>-<pid>.json`` at most once
a second. ``bench/full_flow.py --sql-trace DIR`` sums them per flow.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine

ENVIRONMENT = "ESIGN_SQL_TRACE"

_local = threading.local()  # green-local once eventlet has monkey-patched threading
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+\"?([A-Za-z_][A-Za-z0-9_.]*)", re.IGNORECASE)
_PLUMBING = (os.sep + "sqlalchemy" + os.sep, os.sep + "sqltrace.py", os.sep + "database.py",
             os.sep + "outbox.py", os.sep + "eventlet" + os.sep, os.sep + "nameko" + os.sep)


def enabled() -> bool:
    return bool(os.environ.get(ENVIRONMENT))


def set_entry(name: str | None) -> None:
    """The entry point the current (green)thread's statements are counted under."""
    _local.entry = name


def _caller() -> str:
    """The innermost frame of the platform's own code that is not database plumbing."""
    frame = sys._getframe(3)
    fallback = None
    while frame is not None:
        path = frame.f_code.co_filename
        if os.sep + "services" + os.sep in path:
            if not any(part in path for part in _PLUMBING):
                return f"{Path(path).stem}.{frame.f_code.co_name}"
            fallback = fallback or f"{Path(path).stem}.{frame.f_code.co_name}"
        frame = frame.f_back
    return fallback or "?"


class _Trace:
    def __init__(self, directory: Path, service: str):
        self.path = directory / f"{service}-{os.getpid()}.json"
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.written = 0.0
        directory.mkdir(parents=True, exist_ok=True)

    def count(self, what: str) -> None:
        self.counts[(getattr(_local, "entry", None) or "-", _caller(), what)] += 1
        now = time.monotonic()
        if now - self.written >= 1.0:
            self.written = now
            self.write()

    def write(self) -> None:
        rows = [[entry, caller, what, n] for (entry, caller, what), n in self.counts.items()]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        tmp.replace(self.path)


def install(engine: Engine, service: str) -> None:
    """Count ``engine``'s statements and transactions when ``ESIGN_SQL_TRACE`` is set."""
    directory = os.environ.get(ENVIRONMENT)
    if not directory:
        return
    trace = _Trace(Path(directory), service)

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(_conn, _cursor, statement, _parameters, _context, _executemany):
        words = statement.lstrip().split(None, 1)
        verb = words[0].upper() if words else "?"
        table = _TABLE.search(statement)
        trace.count(f"{verb} {table.group(1) if table else ''}".strip())

    @event.listens_for(engine, "begin")
    def _begin(_conn):
        trace.count("BEGIN")

    @event.listens_for(engine, "commit")
    def _commit(_conn):
        trace.count("COMMIT")

    @event.listens_for(engine, "rollback")
    def _rollback(_conn):
        trace.count("ROLLBACK")


def load(directory: Path) -> Counter[tuple[str, str, str, str]]:
    """(service, entry point, caller, statement kind) -> count, over every process's file."""
    total: Counter[tuple[str, str, str, str]] = Counter()
    for path in sorted(Path(directory).glob("*.json")):
        service = path.stem.rsplit("-", 1)[0]
        for entry, caller, what, n in json.loads(path.read_text()):
            total[(service, entry, caller, what)] += n
    return total
