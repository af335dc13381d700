"""The key store of a nameko service: opened once per process from its ``KEYS``
settings, closed when the container stops.

With ``KEYS.BACKEND: sealed`` there is no store: the service keeps its keys
sealed under its KEK as it always has (person keys in their rows, the CA's in
``CA.DIR``, the evidence-log key as a secret), and :meth:`KeyStoreProvider.open`
answers ``None``. With ``pkcs11`` it is the token, connected and logged in at
start, so a missing token or a wrong PIN stops the service before it serves.

Workers get a :class:`KeyCustody` (settings and store). Other providers of the
service reach it from their own ``setup`` (nameko sets
providers up in no fixed order) through :func:`key_store_of`.
"""
from __future__ import annotations

# The providers of a container are set up in greenthreads at once, and opening the store may wait
# on a subprocess (the embedded token's softhsm2-util), which yields to the hub: the lock between
# them must be green (the monkey-patched one), or the second waiter would block the hub for good.
import threading as _threading
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from nameko.extensions import DependencyProvider

from services.common.keystore import PKCS11, KeyStore
from services.common.keystore.settings import KeyStoreSettings, open_key_store


@dataclass(frozen=True)
class KeyCustody:
    """What a worker is handed: the ``KEYS`` settings, and the store (``None``: keys are sealed)."""

    settings: KeyStoreSettings
    store: Optional[KeyStore]


class KeyStoreProvider(DependencyProvider):
    """Hands workers the service's :class:`KeyCustody`."""

    def __init__(self, embedded_also: Callable[[dict], Sequence[str]] | None = None) -> None:
        """``embedded_also``: given the config, the labels of further tokens of the embedded home
        the service opens itself (:func:`~services.common.keystore.settings.open_key_store`)."""
        self._embedded_also = embedded_also
        self._lock = _threading.Lock()
        self._settings: KeyStoreSettings | None = None
        self._store: KeyStore | None = None

    @property
    def settings(self) -> KeyStoreSettings:
        if self._settings is None:
            self._settings = KeyStoreSettings.from_config(self.container.config)  # a bad value stops the start
        return self._settings

    def setup(self) -> None:
        self.open()

    def open(self) -> Optional[KeyStore]:
        """The store, opened on the first call (idempotent; safe from any provider's setup)."""
        if self.settings.backend != PKCS11:
            return None
        with self._lock:
            if self._store is None:
                config = self.container.config
                also = self._embedded_also(config) if self._embedded_also is not None else ()
                self._store = open_key_store(config, embedded_also=also)
            return self._store

    def stop(self) -> None:
        self._close()

    def kill(self) -> None:
        self._close()

    def _close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def get_dependency(self, worker_ctx) -> KeyCustody:
        return KeyCustody(self.settings, self._store)


def key_store_of(container) -> KeyStoreProvider:
    """The container's :class:`KeyStoreProvider` (a service that keeps keys declares one)."""
    return next(dep for dep in container.dependencies if isinstance(dep, KeyStoreProvider))
