"""Which key store a service uses, read once from its config's ``KEYS`` section.

::

    KEYS:
      BACKEND: pkcs11              # or sealed (keys sealed under the KEK; machines without a token);
                                   # config.yaml's default is pkcs11, this code's (no KEYS) sealed
      LABEL_PREFIX: esign/         # every key label starts so; the reconciler looks only there
      RECONCILE_GRACE_SECONDS: 3600
      PKCS11:
        MODULE: /usr/lib/softhsm/libsofthsm2.so
        TOKEN_LABEL: esign
        PIN: {env: ESIGN_TOKEN_PIN, file: /run/secrets/token-pin}   # read_secret; never the PIN itself
        POOL_SIZE: 4
        PARALLEL: false            # true only for a module that is thread-safe under C_Initialize(NULL)
        ACQUIRE_TIMEOUT_SECONDS: 10
        EMBEDDED: false            # true: a SoftHSM2 token under DATA_DIR, made at first start (PIN generated)
        EMBEDDED_DIR: ""           # embedded: where the token and its PINs live instead of DATA_DIR
        MIN_FREE_BYTES: 16777216   # embedded: generate refuses (token_full) below this free space

The services' configs (``services/<service>/config.yaml``) default to
``pkcs11`` on the embedded token under ``DATA_DIR``: that is the platform's
default, for ``./dev up`` and every service process. The code's own defaults
here (``BACKEND`` sealed, ``EMBEDDED`` false) stay as they were, for a config
that has no ``KEYS`` at all (a tool's or a test's own dict): an embedded token
would be made under that config's ``DATA_DIR`` and would fix this process's
SoftHSM2 home for good (:meth:`~services.common.keystore.softhsm.SoftHsmToken.activate`),
a choice only a config that names it makes; sealed needs nothing outside the
process.

SoftHSM2 reads its configuration and finds its tokens once, when a process
first initialises it: every store of one process must use the same embedded
directory (the tests give one, ``EMBEDDED_DIR``, to every service they run in
a process), and every token it is to see must exist by then (``open_key_store``'s
``embedded_also`` makes the further ones a service opens itself).

A bad value raises :class:`~services.common.errors.InvalidInput` naming the
setting (``keys.backend``, ``keys.pkcs11.parallel`` …), and
:func:`open_key_store` connects and logs in at once, so a misconfigured
replica, a missing token or a wrong PIN stops the service at start.
"""
from __future__ import annotations

import datetime as _dt
import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from services.common.config import data_dir, read_secret, setting_flag, setting_number
from services.common.errors import InvalidInput
from services.common.keystore import BACKENDS, PKCS11, SEALED, KeyStore, check_label
from services.common.keystore.pkcs11_token import SOFTHSM2_MODULE, Pkcs11KeyStore, TokenSettings
from services.common.keystore.reconcile import DEFAULT_GRACE
from services.common.keystore.softhsm import DEFAULT_MIN_FREE_BYTES, ensure_token
from services.common.sealing import Keyring


@dataclass(frozen=True)
class Pkcs11Settings:
    token: TokenSettings = field(default_factory=TokenSettings)
    pin: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the PIN's secret spec (env / file)
    embedded: bool = False
    embedded_dir: Path | None = None  # where the embedded token lives; None: DATA_DIR


@dataclass(frozen=True)
class KeyStoreSettings:
    backend: str = SEALED
    label_prefix: str = "esign/"
    reconcile_grace: _dt.timedelta = DEFAULT_GRACE
    pkcs11: Pkcs11Settings = field(default_factory=Pkcs11Settings)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "KeyStoreSettings":
        keys = _section(config, "KEYS", "keys")
        backend = str(keys.get("BACKEND") or SEALED).strip().lower()
        if backend not in BACKENDS:
            raise InvalidInput("keys.backend", "allowed_values", f"expected one of {', '.join(BACKENDS)}")
        prefix = str(keys.get("LABEL_PREFIX") or "esign/")
        try:
            check_label(prefix)
        except InvalidInput:
            raise InvalidInput("keys.label_prefix", "format",
                               "expected 1-128 characters of A-Z a-z 0-9 . _ : / + -") from None
        grace = setting_number(keys, "RECONCILE_GRACE_SECONDS", DEFAULT_GRACE.total_seconds(),
                               "keys.reconcile_grace_seconds")
        p11 = _section(keys, "PKCS11", "keys.pkcs11")
        module = str(p11.get("MODULE") or SOFTHSM2_MODULE)
        softhsm = "softhsm" in os.path.basename(module).lower()
        parallel = setting_flag(p11, "PARALLEL", False, "keys.pkcs11.parallel")
        if parallel and softhsm:
            raise InvalidInput("keys.pkcs11.parallel", "unsafe_module",
                               "SoftHSM2 turns its locks off under C_Initialize(NULL), as python-pkcs11 calls it:"
                               " expected false")
        embedded = setting_flag(p11, "EMBEDDED", False, "keys.pkcs11.embedded")
        if embedded and not softhsm:
            raise InvalidInput("keys.pkcs11.embedded", "softhsm_only", "an embedded token is a SoftHSM2 token:"
                               " expected MODULE to be libsofthsm2.so, or EMBEDDED false")
        embedded_dir = str(p11.get("EMBEDDED_DIR") or "").strip()
        if embedded_dir and not os.path.isabs(embedded_dir):
            raise InvalidInput("keys.pkcs11.embedded_dir", "absolute", "expected an absolute directory, or empty")
        pin = p11.get("PIN") or {}
        if not isinstance(pin, Mapping):
            raise InvalidInput("keys.pkcs11.pin", "mapping", "expected {env: …} or {file: …}, never the PIN itself")
        if backend == PKCS11 and not embedded and not (pin.get("env") or pin.get("file")):
            raise InvalidInput("keys.pkcs11.pin", "required", "expected the PIN's environment variable or file")
        token = TokenSettings(
            module=module,
            token_label=str(p11.get("TOKEN_LABEL") or "esign"),
            pool_size=int(setting_number(p11, "POOL_SIZE", 4, "keys.pkcs11.pool_size")),
            parallel=parallel,
            acquire_timeout=setting_number(p11, "ACQUIRE_TIMEOUT_SECONDS", 10.0, "keys.pkcs11.acquire_timeout_seconds"),
            min_free_bytes=int(setting_number(p11, "MIN_FREE_BYTES", DEFAULT_MIN_FREE_BYTES,
                                              "keys.pkcs11.min_free_bytes"))
            if embedded else 0,
        )
        return cls(backend=backend, label_prefix=prefix, reconcile_grace=_dt.timedelta(seconds=grace),
                   pkcs11=Pkcs11Settings(token=token, pin=dict(pin), embedded=embedded,
                                         embedded_dir=Path(embedded_dir) if embedded_dir else None))


def open_key_store(config: Mapping[str, Any], keyring: Keyring | None = None,
                   sealed_storage: MutableMapping | None = None, embedded_also: Sequence[str] = ()) -> KeyStore:
    """The key store ``KEYS`` names, connected: the sealed one over ``keyring`` and
    ``sealed_storage``, or the token (made first, when embedded). ``embedded_also``: labels of
    further tokens of the embedded home this process will open itself (identity's development
    root, :func:`services.identity.ca_store.development_tokens`), made here before the module is
    first initialised, since SoftHSM2 sees only the tokens there are then."""
    settings = KeyStoreSettings.from_config(config)
    if settings.backend == SEALED:
        if keyring is None:
            raise InvalidInput("keyring", "required", "expected the KEK keyring of a sealed key store")
        from services.common.keystore.sealed import SealedKeyStore

        return SealedKeyStore(keyring, sealed_storage)
    token = settings.pkcs11.token
    if settings.pkcs11.embedded:
        home = settings.pkcs11.embedded_dir or data_dir(dict(config))
        for label in embedded_also:
            ensure_token(home, label)
        embedded = ensure_token(home, token.token_label)
        embedded.activate()
        pin = embedded.pin()
        token = replace(token, storage_dir=embedded.token_dir)
    else:
        raw = read_secret(dict(settings.pkcs11.pin), "token-pin")
        try:
            pin = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("keys.pkcs11.pin", "utf8", "expected the PIN as UTF-8 text") from None
    return Pkcs11KeyStore.open(token, pin)


def _section(config: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidInput(name, "mapping", "expected a section of settings")
    return value


