"""The SoftHSM2 token home of a test process.

SoftHSM2 reads ``SOFTHSM2_CONF`` and finds its tokens once, at the first
``C_Initialize`` of a process; a token made later, or under another
configuration, stays invisible to that process (tried: ``token_missing``).
So every test of one process that uses a token uses this one home, made with
every token a test needs before any test loads the module: ``esign`` for the
services (identity and signing share it, each under its own label prefix, as
in ``./dev up``), ``esign-dev-root`` for the development CAs' roots (each an
identity's, its key labelled under that identity's prefix and the root's
serial), ``esign-test`` and ``esign-other`` for the key-store tests.

Tests keep apart on the shared token by label prefix: :func:`pkcs11_keys`
gives each service a prefix of its own test, so one test's reconciler never
sees another test's keys. ``service_config`` (tests/conftest.py) gives identity
and signing such a ``KEYS`` by default, as their config.yaml does; a test about
the sealed backend passes :data:`SEALED_KEYS`.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from services.common.keystore.softhsm import SoftHsmToken, ensure_token

SERVICES_TOKEN = "esign"
DEV_ROOT_TOKEN = "esign-dev-root"  # services/identity/ca_store.py's DEV_ROOT_TOKEN (checked by its tests)
LABELS = (SERVICES_TOKEN, DEV_ROOT_TOKEN, "esign-test", "esign-other")

_home: Path | None = None


def token_home(base: Path) -> Path:
    """The process's token home: made under ``base`` by the first caller, the same one after."""
    global _home
    if _home is None:
        for label in LABELS:
            ensure_token(base, label)
        ensure_token(base, SERVICES_TOKEN).activate()
        _home = base
    return _home


def token(home: Path, label: str = SERVICES_TOKEN) -> SoftHsmToken:
    """A token of the home (it exists: :func:`token_home` made it)."""
    return ensure_token(home, label)


def pkcs11_keys(home: Path, service: str, run: str | None = None) -> dict:
    """The ``KEYS`` section of a service on the home's embedded token, under a label prefix of
    its own (``esign/t<run>/<service>/``)."""
    run = run or uuid.uuid4().hex[:10]
    return {"BACKEND": "pkcs11", "LABEL_PREFIX": f"esign/t{run}/{service}/",
            "PKCS11": {"EMBEDDED": True, "EMBEDDED_DIR": str(home), "TOKEN_LABEL": SERVICES_TOKEN}}


#: the ``KEYS`` section of a service whose keys are sealed under its KEK (a test about the sealed
#: backend says so: the services' default is the token, and so is ``service_config``'s)
SEALED_KEYS = {"BACKEND": "sealed"}


def services_keys(backend: str, home: Path | None) -> dict:
    """``stack_factory``'s overrides for identity and signing: the home's token under one run's
    prefixes for ``pkcs11`` (what ``service_config`` gives anyway), :data:`SEALED_KEYS` for ``sealed``."""
    if backend == "sealed":
        return {service: {"KEYS": dict(SEALED_KEYS)} for service in ("identity", "signing")}
    run = uuid.uuid4().hex[:10]
    return {service: {"KEYS": pkcs11_keys(home, service, run)} for service in ("identity", "signing")}
