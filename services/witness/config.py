"""The witness's state directory: its key, the logs it follows, its state.

::

    <state dir>/            mode 0700
      witness.key           0600  PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>  (the name is the witness's)
      logs.yaml             origin -> the log's verifier key(s), <name>+<key id>+<base64(0x01 || key)>
      state.db              SQLite, see services.witness.state

``logs.yaml``::

    logs:
      esign.example/evidence-log:
        - esign.example/evidence-log+1a2b3c4d+AVqo...

A running witness rereads ``logs.yaml`` when the file changes, so
``esign witness add-log`` takes effect without a restart; a file that no
longer parses leaves the previous list in force (and is logged).
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from services.common.errors import EsignError
from services.signing.checkpoint import MalformedNoteError, NoteVerifier
from services.witness.cosignature import CosignatureSigner

KEY_FILE = "witness.key"
LOGS_FILE = "logs.yaml"
STATE_FILE = "state.db"
_LOGS_HEADER = (
    "# Logs this witness cosigns: origin -> the log's verifier keys (C2SP signed-note vkeys).\n"
    "# Add one with: esign witness add-log --state-dir DIR --origin ORIGIN --key KEY\n"
)

log = logging.getLogger(__name__)


class WitnessConfigError(EsignError):
    """The state directory is missing, incomplete, or holds something unusable."""

    code = "witness_config"


def _check_origin(origin: str) -> None:
    if not origin or any(ch < " " for ch in origin) or origin != origin.strip():
        raise WitnessConfigError("expected a one-line origin without control characters or edge spaces, "
                                 f"found {origin!r}")


# --- the key ------------------------------------------------------------------------


def init_state_dir(state_dir: Path, name: str) -> CosignatureSigner:
    """Make a new witness: the directory, a fresh key (0600), an empty log list.
    Refuses to touch a directory that already has a key."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = state_dir / KEY_FILE
    if key_path.exists():
        raise WitnessConfigError(f"{key_path} exists: refusing to overwrite a witness key")
    if (state_dir / STATE_FILE).exists():
        # its notes carry another key's cosignatures: a new key starts a new directory
        raise WitnessConfigError(f"{state_dir / STATE_FILE} exists without a key: use a new state directory")
    try:
        signer = CosignatureSigner.generate(name)
    except MalformedNoteError as exc:
        raise WitnessConfigError(f"witness name: {exc.message}") from None
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WitnessConfigError(f"{key_path} exists: refusing to overwrite a witness key") from None
    with os.fdopen(fd, "w") as out:
        out.write(signer.to_key_string() + "\n")
        out.flush()
        os.fsync(out.fileno())
    if not (state_dir / LOGS_FILE).exists():
        write_logs(state_dir, {})
    _fsync_dir(state_dir)
    return signer


def load_signer(state_dir: Path) -> CosignatureSigner:
    key_path = state_dir / KEY_FILE
    if not key_path.is_file():
        raise WitnessConfigError(f"no witness key at {key_path}: run 'esign witness init' first")
    if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
        raise WitnessConfigError(f"{key_path} is readable by others: chmod 600 it")
    try:
        return CosignatureSigner.from_key_string(key_path.read_text())
    except MalformedNoteError as exc:
        raise WitnessConfigError(f"{key_path}: {exc.message}") from None


# --- the logs ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedLogs:
    """Origin -> the verifier keys whose signatures on that log's checkpoints count."""

    keys: Mapping[str, tuple[NoteVerifier, ...]]

    def verifiers(self, origin: str) -> tuple[NoteVerifier, ...]:
        return self.keys.get(origin, ())

    def key_strings(self) -> dict[str, list[str]]:
        return {origin: [v.to_key_string() for v in verifiers] for origin, verifiers in self.keys.items()}


def read_logs(path: Path) -> TrustedLogs:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise WitnessConfigError(f"{path}: not YAML: {exc}") from None
    logs = data.get("logs") if isinstance(data, dict) else None
    if logs is None:
        logs = {}
    if not isinstance(logs, dict):
        raise WitnessConfigError(f"{path}: expected 'logs:' to map origins to key lists")
    keys: dict[str, tuple[NoteVerifier, ...]] = {}
    for origin, entries in logs.items():
        if not isinstance(origin, str):
            raise WitnessConfigError(f"{path}: expected text origins, found {origin!r}")
        _check_origin(origin)
        entries = [entries] if isinstance(entries, str) else entries
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
            raise WitnessConfigError(f"{path}: expected a list of verifier keys for {origin!r}")
        try:
            keys[origin] = tuple(NoteVerifier.from_key_string(e.strip()) for e in entries)
        except MalformedNoteError as exc:
            raise WitnessConfigError(f"{path}: key of {origin!r}: {exc.message}") from None
    return TrustedLogs(keys)


def write_logs(state_dir: Path, keys: Mapping[str, list[str]]) -> None:
    """Replace ``logs.yaml`` atomically (temporary file, fsync, rename)."""
    path = state_dir / LOGS_FILE
    text = _LOGS_HEADER + yaml.safe_dump({"logs": dict(keys)}, sort_keys=True, allow_unicode=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(state_dir)


def add_log(state_dir: Path, origin: str, key: str) -> NoteVerifier:
    """Trust ``key`` for checkpoints of ``origin`` (adding to any keys it has)."""
    _check_origin(origin)
    try:
        verifier = NoteVerifier.from_key_string(key.strip())
    except MalformedNoteError as exc:
        raise WitnessConfigError(f"log key: {exc.message}") from None
    path = state_dir / LOGS_FILE
    if not (state_dir / KEY_FILE).is_file():
        raise WitnessConfigError(f"no witness key in {state_dir}: run 'esign witness init' first")
    current = read_logs(path).key_strings() if path.exists() else {}
    keys = current.setdefault(origin, [])
    if verifier.to_key_string() not in keys:
        keys.append(verifier.to_key_string())
    write_logs(state_dir, current)
    return verifier


class LogsFile:
    """``logs.yaml``, reread when it changes (size, mtime or inode)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._logs = read_logs(path)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> TrustedLogs:
        stamp = self._stat()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._logs = read_logs(self.path)
                    log.info("reread %s: %d logs", self.path, len(self._logs.keys))
                except (WitnessConfigError, OSError) as exc:
                    log.error("keeping the previous log list: %s", exc)
            return self._logs


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
