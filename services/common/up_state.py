"""What a running ``esign up`` tells the other commands on this machine.

Two files in the data directory:

* ``esign-up.lock``: ``esign up`` holds an exclusive ``flock`` on it for as
  long as it runs. The kernel drops the lock when the process ends, however it
  ends (``kill -9`` included), so "is it running?" never rests on a file a
  killed process left behind; a second ``esign up`` on the same data
  directory is refused.
* ``esign-up.json``: where things are (the gateway, the console SMS outbox,
  the identity registry, each process's pid, log and metrics, the local
  witnesses' public keys), written once every process is healthy and removed
  at stop. It holds no secret: ``esign demo`` reads it.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "esign-up.lock"
STATE_FILE = "esign-up.json"


class AlreadyRunning(RuntimeError):
    """Another ``esign up`` holds the data directory."""


class NotRunning(RuntimeError):
    """No ``esign up`` runs on the data directory."""


@dataclass(frozen=True)
class Process:
    """One process ``esign up`` started: its log, and where its Prometheus metrics are."""

    name: str
    pid: int
    log: str
    metrics: str | None = None  # its /metrics URL
    serves: str | None = None  # what it answers on besides (the gateway's or a witness's URL, S3)


@dataclass(frozen=True)
class RunningPlatform:
    pid: int  # esign up's own
    data_dir: str
    gateway: str  # base URL of the HTTP API and the pages
    sms_outbox: str | None  # the console provider's file; None with a real SMS vendor
    registry_file: str | None  # the local identity authority's registry; None with another provider
    demo: bool  # a photo stands in for a live face (esign up --demo)
    witness_keys: tuple[str, ...] = ()  # verifier keys of the local witnesses
    processes: tuple[Process, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "RunningPlatform":
        data: dict[str, Any] = json.loads(text)
        data["witness_keys"] = tuple(data.get("witness_keys") or ())
        data["processes"] = tuple(Process(**p) for p in data.get("processes") or ())
        return cls(**data)


def hold(data_dir: Path) -> IO:
    """Take the data directory for this process (the lock lives as long as the file
    object answered); :class:`AlreadyRunning` when another ``esign up`` has it."""
    handle = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        other = _state_pid(data_dir)
        raise AlreadyRunning(f"esign up is already running on {data_dir}"
                             + (f" (pid {other})" if other else "") + ": stop it first, or give another --data-dir"
                             ) from None
    return handle


def publish(data_dir: Path, platform: RunningPlatform) -> None:
    """Write the state file whole (a reader never sees half of it)."""
    partial = data_dir / (STATE_FILE + ".partial")
    partial.write_text(platform.to_json(), "utf-8")
    os.replace(partial, data_dir / STATE_FILE)


def withdraw(data_dir: Path) -> None:
    try:
        (data_dir / STATE_FILE).unlink()
    except FileNotFoundError:
        pass


def running(data_dir: Path) -> RunningPlatform:
    """The platform ``esign up`` runs on ``data_dir``; :class:`NotRunning` when none does
    (or it is still starting: the state is written once every process is healthy)."""
    lock = data_dir / LOCK_FILE
    if not lock.exists() or not _held(lock):
        raise NotRunning(f"esign up is not running on {data_dir}")
    try:
        return RunningPlatform.from_json((data_dir / STATE_FILE).read_text("utf-8"))
    except FileNotFoundError:
        raise NotRunning(f"esign up on {data_dir} is still starting (wait for 'esign is up.')") from None


def _held(lock: Path) -> bool:
    with open(lock) as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # nobody holds it; closing the file lets go of the shared lock just taken


def _state_pid(data_dir: Path) -> int | None:
    try:
        return int(json.loads((data_dir / STATE_FILE).read_text("utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None

