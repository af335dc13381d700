"""The embedded PKCS#11 token: a SoftHSM2 token under the data directory, for
``./dev up`` and the tests (Debian package ``softhsm2``).

:func:`ensure_token` is idempotent. Under ``<data dir>/softhsm`` it writes its
own ``softhsm2.conf`` (object files in ``tokens/``, mode 0700) and
initialises a token with the given label in the first free slot
(``softhsm2-util --init-token --free``); the user PIN and the security
officer's PIN are random, kept as secrets under ``<data dir>/secrets``
(mode 0600, made once, as :func:`services.common.config.read_secret` makes
generated secrets). A second call finds the token and changes nothing;
a call after the token directory was wiped makes the token again with the
same PINs. Concurrent starts are serialised by a lock file.

SoftHSM2 reads ``SOFTHSM2_CONF`` when the module is initialised, so a
process must set it (:meth:`SoftHsmToken.activate`) before its first key
store opens; it then holds for the whole process.

The PINs pass on ``softhsm2-util``'s command line for the instant it runs
(it reads them from a terminal otherwise). The token's files are only the
data directory's owner's, who can read the PIN files anyway; a production
HSM is initialised by its own key ceremony, never by this module.

:func:`init_token` makes a token whose user PIN its owner holds instead (the
offline root's, ``esign ca init``: the root passphrase). It is made with a
random user PIN that is written nowhere and handed back once, for the caller
to replace at once through PKCS#11 (``C_SetPIN``,
:func:`~services.common.keystore.pkcs11_token.change_pin`): the owner's PIN
never passes on a command line and is never stored. The security officer's
PIN is random and kept as :func:`ensure_token` keeps it.
"""
from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from services.common.keystore.pkcs11_token import SOFTHSM2_MODULE

CONF_ENV = "SOFTHSM2_CONF"
UTIL = "softhsm2-util"
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,32}\Z")
#: ``generate`` refuses below this much free space in the token directory (see pkcs11_token: token full)
DEFAULT_MIN_FREE_BYTES = 16 * 1024 * 1024


#: the configuration this process activated (SoftHSM2 reads it once, at its first C_Initialize)
_activated: str | None = None


class SoftHsmUnavailable(RuntimeError):
    """softhsm2-util is missing or failed; the message says which and how to fix it."""


@dataclass(frozen=True)
class SoftHsmToken:
    """Where an embedded token lives; its PINs are read from files, never kept here."""

    label: str
    conf: Path
    token_dir: Path
    pin_file: Path
    so_pin_file: Path
    module: str = SOFTHSM2_MODULE

    def pin(self) -> str:
        return self.pin_file.read_text("utf-8").strip()

    def activate(self) -> None:
        """Point this process's SoftHSM2 at this token's configuration (before the module loads).

        A process that activated another configuration already cannot see this one's tokens
        (SoftHSM2 read the first when it was initialised): that is refused here, by name,
        rather than found later as ``token_missing``."""
        global _activated
        conf = str(self.conf)
        if _activated is not None and _activated != conf:
            raise SoftHsmUnavailable(f"this process uses the SoftHSM2 configuration {_activated} already and cannot"
                                     f" switch to {conf}: one embedded token directory per process"
                                     " (KEYS.PKCS11.EMBEDDED_DIR)")
        _activated = conf
        os.environ[CONF_ENV] = conf


def token_paths(data_dir: str | os.PathLike, label: str = "esign") -> SoftHsmToken:
    """Where the token labelled ``label`` under ``data_dir`` lives (nothing is made or checked)."""
    if not _LABEL.match(label):
        raise ValueError("a SoftHSM2 token label here is 1-32 characters of A-Z a-z 0-9 . _ -")
    base = Path(data_dir)
    home = base / "softhsm"
    return SoftHsmToken(label=label, conf=home / "softhsm2.conf", token_dir=home / "tokens",
                        pin_file=base / "secrets" / f"softhsm-{label}-pin",
                        so_pin_file=base / "secrets" / f"softhsm-{label}-so-pin")


def ensure_token(data_dir: str | os.PathLike, label: str = "esign") -> SoftHsmToken:
    """The token labelled ``label`` under ``data_dir``, initialised if it is not there yet."""
    token = token_paths(data_dir, label)
    with _home_lock(token):
        if _token_present(token):
            if not token.pin_file.exists():
                raise SoftHsmUnavailable(
                    f"token {label!r} exists under {token.token_dir} but its PIN file {token.pin_file} is gone;"
                    " remove the token directory to start again (its keys are lost)")
            return token
        pin, so_pin = _pin_secret(token.pin_file), _pin_secret(token.so_pin_file)
        _run(token.conf, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", pin)
    return token


def init_token(data_dir: str | os.PathLike, label: str) -> tuple[SoftHsmToken, str]:
    """A new token labelled ``label`` under ``data_dir``, and its user PIN for now: random, written
    nowhere, for the caller to replace at once with the PIN its owner holds (see the module
    docstring). Refuses a label that is there already (its PIN is not this module's to know)."""
    token = token_paths(data_dir, label)
    with _home_lock(token):
        if _token_present(token):
            raise SoftHsmUnavailable(f"a token {label!r} exists under {token.token_dir} already")
        so_pin, initial_pin = _pin_secret(token.so_pin_file), secrets.token_urlsafe(24)
        _run(token.conf, "--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", initial_pin)
    return token, initial_pin


def existing_token(data_dir: str | os.PathLike, label: str) -> SoftHsmToken:
    """The paths of a token made before under ``data_dir``, its home's configuration rewritten for
    where the home is now (it may have moved with its directory: an offline root's, copied to
    another machine); no token is made. A home that is not there is ``SoftHsmUnavailable``."""
    token = token_paths(data_dir, label)
    if not token.token_dir.is_dir():
        raise SoftHsmUnavailable(f"no SoftHSM2 token directory at {token.token_dir}")
    _write_conf(token)
    return token


@contextmanager
def _home_lock(token: SoftHsmToken) -> Iterator[None]:
    """The token's home made (0700) with its configuration written, locked against concurrent starts."""
    home = token.conf.parent
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    token.token_dir.mkdir(exist_ok=True, mode=0o700)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _write_conf(token)
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_conf(token: SoftHsmToken) -> None:
    text = (f"# written by services/common/keystore/softhsm.py\n"
            f"directories.tokendir = {token.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n")
    if not token.conf.exists() or token.conf.read_text("utf-8") != text:
        token.conf.write_text(text, "utf-8")


def _pin_secret(path: Path) -> str:
    """The PIN in ``path``, made (random, 0600, never overwritten) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text("utf-8").strip()
    value = secrets.token_urlsafe(24)  # 32 characters; SoftHSM2 takes PINs of 4 to 255
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


#: reads of the slots before a token this module made (its PIN file is there) is taken as wiped
MADE_TOKEN_READS = 20
MADE_TOKEN_READ_PAUSE = 0.025


def _token_present(token: SoftHsmToken) -> bool:
    """Whether the home has a token labelled ``token.label``. A process logging in to a token rewrites
    its token.object (SoftHSM2 clears the PIN-count flags on every C_Login), and softhsm2-util reading
    it then may show the slot without its label (measured: 27 of 1,073 reads while two processes logged
    in and out). So a token this module made before, whose PIN file is there, is looked for again
    before it is taken as gone: once, a second token of the same label was made beside it, and every
    process using the label then failed to start (``more than one token is labelled``)."""
    reads = MADE_TOKEN_READS if token.pin_file.exists() else 1
    for attempt in range(reads):
        if attempt:
            time.sleep(MADE_TOKEN_READ_PAUSE)
        if token.label in _token_labels(token.conf):
            return True
    return False


def _token_labels(conf: Path) -> set[str]:
    out = _run(conf, "--show-slots")
    return {match.group(1).strip() for match in re.finditer(r"^\s*Label:\s*(.*?)\s*$", out, re.MULTILINE)}


def _run(conf: Path, *args: str) -> str:
    util = shutil.which(UTIL)
    if util is None:
        raise SoftHsmUnavailable(f"{UTIL} is not installed: apt-get install softhsm2 (./dev bootstrap does)")
    done = subprocess.run([util, *args], env=dict(os.environ, **{CONF_ENV: str(conf)}), capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        # the arguments hold PINs: name only the action, and softhsm2-util's own words (which echo none)
        raise SoftHsmUnavailable(f"{UTIL} {args[0]} failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout
