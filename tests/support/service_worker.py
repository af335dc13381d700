"""One service's workers without a broker, a database server or S3: the inner
loop's service tests (tests/unit/*/test_*_worker.py).

:class:`ServiceWorkers` builds the service's nameko container but never starts
it (no entrypoint listens, nothing connects to RabbitMQ). Its neighbours are
replaced by stubs with nameko's ``replace_dependencies``; its own dependency
providers are set up as in production, on SQLite (migrated as a deployment on
one machine is) and on an in-memory S3 (moto), with keys generated under a
temporary folder. ``call(method, **arguments)`` runs the method as the
container runs a worker (``spawn_worker``: dependencies injected, worker setup,
result and teardown), so the unit of work commits, emits into the outbox and
"publishes"; what it would publish is kept in ``published`` instead.

What these tests cannot show, and the integration and end-to-end tests do:
the broker's routing and permissions, PostgreSQL's locking, SeaweedFS, and
the neighbours' real answers.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import eventlet
from eventlet.event import Event
from nameko.containers import ServiceContainer
from nameko.extensions import DependencyProvider, Entrypoint
from nameko.testing.services import replace_dependencies
from nameko.testing.utils import get_extension

from services.common.database import DatabaseProvider
from services.common.storage import Storage

#: moto answers S3 requests to this endpoint in-process (MOTO_S3_CUSTOM_ENDPOINTS)
S3_ENDPOINT = "http://s3.unit.test"


class RecordingPublisher:
    """Stands in for the outbox's publisher: keeps each event it is handed."""

    def __init__(self):
        self.events: list[dict] = []

    def publish(self, event: dict) -> None:
        self.events.append(event)


class ServiceWorkers:
    """``ServiceWorkers(SigningService, tmp_path, documents=stub, pdf=...)``:
    keyword arguments replace the named dependencies (neighbours' proxies, pools);
    ``config`` overrides the service's configuration."""

    def __init__(self, service_cls, folder: Path, config: dict | None = None, **replacements: Any):
        from moto import mock_aws

        os.environ["MOTO_S3_CUSTOM_ENDPOINTS"] = S3_ENDPOINT
        self._aws = mock_aws()
        self._aws.start()
        self.config = {
            "AMQP_URI": "pyamqp://unused@127.0.0.1:1/never",  # never connected: nothing is started
            "DATA_DIR": str(folder / "data"),
            "DATABASE": {"URL": f"sqlite:///{folder / (service_cls.name + '.db')}", "SCHEMA": None},
            "METRICS": {"PORT": 0},
            "S3": {"ENDPOINT": S3_ENDPOINT, "BUCKET": f"esign-{service_cls.name}-unit",
                   "ACCESS_KEY": "unit-" + secrets.token_hex(4), "SECRET_KEY": secrets.token_hex(20),
                   "VERSIONING": True},
            "SECRETS": {"GENERATE_MISSING": True},
            "max_workers": 4,
            **(config or {}),
        }
        self.container = ServiceContainer(service_cls, self.config)
        if replacements:
            replace_dependencies(self.container, **replacements)
        self.providers = [d for d in self.container.dependencies if not _replaced(d)]
        for provider in _in_setup_order(self.providers):
            provider.setup()
        self.published = RecordingPublisher()
        self.database().publisher = self.published
        self.storage = next((p.store for p in self.providers if isinstance(p, Storage)), None)
        if self.storage is not None:
            self.storage.ensure_bucket()

    def call(self, method: str, /, *args: Any, **arguments: Any) -> Any:
        """Run ``method`` as one worker of the container (an RPC, an event handler given
        the envelope, a timer); raises what the worker raised."""
        entrypoint = get_extension(self.container, Entrypoint, method_name=method)
        if entrypoint is None:
            raise AttributeError(f"{self.container.service_name} has no entrypoint {method}")
        done = Event()

        def handle_result(worker_ctx, result, exc_info):
            done.send((result, exc_info))
            return result, exc_info

        self.container.spawn_worker(entrypoint, args, arguments, handle_result=handle_result)
        result, exc_info = done.wait()
        eventlet.sleep(0)  # what the worker handed to the background (publishing after commit) runs
        if exc_info is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        return result

    def events(self, event_type: str | None = None) -> list[dict]:
        """The events workers committed and published, oldest first (their envelopes)."""
        return [e for e in self.published.events if event_type is None or e["event_type"] == event_type]

    def database(self) -> DatabaseProvider:
        """The service's database provider: ``.db`` is its :class:`~services.common.database.Database`."""
        return next(p for p in self.providers if isinstance(p, DatabaseProvider))

    def stop(self) -> None:
        for provider in self.providers:
            stop = getattr(provider, "stop", None)
            if stop is not None and type(provider).stop is not DependencyProvider.stop:
                try:
                    stop()
                except Exception:  # noqa: BLE001 - a provider that never started may not stop cleanly
                    pass
        self._aws.stop()


def _replaced(provider) -> bool:
    return type(provider).__name__ == "MockDependencyProvider"


def _in_setup_order(providers: list) -> list:
    """The database first: the others find it (storage's intents, the flow store, the log)."""
    return sorted(providers, key=lambda p: 0 if isinstance(p, DatabaseProvider) else 1)


class WorkersProxy:
    """A neighbour's RPC proxy whose calls run in that neighbour's :class:`ServiceWorkers`."""

    def __init__(self, workers: ServiceWorkers):
        self._workers = workers

    def __getattr__(self, method: str):
        return lambda **arguments: self._workers.call(method, **arguments)


@contextmanager
def documents_and_signing(folder: Path, identity: Any) -> Iterator[tuple[ServiceWorkers, ServiceWorkers]]:
    """documents' and signing's workers side by side on SQLite and in-memory S3, signing calling
    documents' workers, both calling ``identity`` (a stand-in); stopped on leaving."""
    from services.documents.service import DocumentsService
    from services.signing.service import SigningService

    documents = ServiceWorkers(DocumentsService, folder / "documents", identity=identity)
    signing = ServiceWorkers(SigningService, folder / "signing", identity=identity, documents=WorkersProxy(documents))
    try:
        yield documents, signing
    finally:
        signing.stop()
        documents.stop()
