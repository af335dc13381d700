"""The gateway's memory of sessions identity vouched for a moment ago.

Every API request names a session; asking identity whose it is
(``identity.session_person``) was 9 of a signed IOU's 41 RPCs. A gateway
process now remembers identity's answer for a token for ``SESSION_CACHE_SECONDS``
(10 by default; 0: ask every time) and answers the next requests with it.

What must not be remembered past its end:

* **A session ended** by logout, from another device, or by the account being
  frozen (a takeover): identity emits ``sessions_ended`` naming the person
  (services/common/events.py), and every gateway process forgets all it
  remembers of that person when the event reaches it, milliseconds after the
  commit. The route that ended it, in this process, forgets at once, before
  it answers (services/gateway/api.py). A lost event is bounded by the
  seconds above.
* **The events are not heard** (the broker went away, the subscription is not
  set up yet): then nothing is remembered and every request asks identity,
  as before. Remembering starts only once this process's own queue is bound,
  so no ``sessions_ended`` can slip past while it remembers.
* **Idle and absolute expiry**: identity's limits are minutes and hours;
  an entry lives seconds, and identity still sees each session in use at
  least every ``SESSION_CACHE_SECONDS``, so it records last use (at most once
  a minute anyway: services/identity/sessions.py).

Refusals (``session_*``, ``account_frozen``) are never remembered: the next
request asks again. Tokens are kept only as their SHA-256, like identity
keeps them.

The subscription is a plain AMQP consumer on a thread (the gateway is not an
eventlet process): an exclusive queue of this process
(``evt-identity-sessions_ended--gateway.session_cache_<random letters>``, the
name broker_access lets the gateway's user declare) bound to
``identity.events`` with the routing key ``sessions_ended``.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import string
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from services.common import events
from services.common.metrics import counter

log = logging.getLogger(__name__)

#: the source and event this module hears (checked against services/common/broker_access.py)
SUBSCRIPTION = ("identity", events.SESSIONS_ENDED)
#: most tokens remembered by one process (the oldest is forgotten first)
MAX_ENTRIES = 50_000

CACHE_LOOKUPS = counter("esign_gateway_session_cache_total",
                        "Session checks by where the answer came from: hit (remembered), miss (identity asked), "
                        "off (not remembering: the sessions_ended events are not heard now)", ("outcome",))
for _outcome in ("hit", "miss", "off"):
    CACHE_LOOKUPS.labels(outcome=_outcome)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Remembered:
    person_id: str
    session_id: str
    until: float  # time.monotonic()


class SessionCache:
    """Token → (person, session) for ``seconds``, forgotten by person; thread-safe. Off (remembers
    nothing) until :meth:`hearing` says the events are heard."""

    def __init__(self, seconds: float, max_entries: int = MAX_ENTRIES, clock=time.monotonic):
        self.seconds = float(seconds)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Remembered] = OrderedDict()
        self._by_person: dict[str, set[str]] = {}
        self._on = False
        self._forgotten = 0  # how many times anything was forgotten: see put()

    @property
    def on(self) -> bool:
        return self._on

    def hearing(self, on: bool) -> None:
        """Whether ``sessions_ended`` events reach this process; off forgets everything."""
        with self._lock:
            self._on = on and self.seconds > 0
            if not self._on:
                self._entries.clear()
                self._by_person.clear()
                self._forgotten += 1

    def mark(self) -> int:
        """Take before asking identity; give to :meth:`put` with its answer."""
        return self._forgotten

    def get(self, token: str) -> Remembered | None:
        if not self._on:
            CACHE_LOOKUPS.labels(outcome="off").inc()
            return None
        key = token_hash(token)
        with self._lock:
            found = self._entries.get(key)
            if found is not None and found.until <= self._clock():
                self._drop(key)
                found = None
        CACHE_LOOKUPS.labels(outcome="hit" if found else "miss").inc()
        return found

    def put(self, token: str, person_id: str, session_id: str, mark: int) -> None:
        """Remember identity's answer, unless something was forgotten since ``mark`` (:meth:`mark`,
        taken before asking): a session that ended while identity was answering would otherwise be
        remembered after its ``sessions_ended`` was heard."""
        if not self._on:
            return
        key = token_hash(token)
        with self._lock:
            if not self._on or self._forgotten != mark:
                return
            self._drop(key)
            self._entries[key] = Remembered(person_id, session_id, self._clock() + self.seconds)
            self._by_person.setdefault(person_id, set()).add(key)
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))

    def forget_person(self, person_id: str) -> int:
        """Forget every session of ``person_id``; how many were remembered."""
        with self._lock:
            self._forgotten += 1
            keys = self._by_person.pop(person_id, set())
            for key in keys:
                self._entries.pop(key, None)
            return len(keys)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            keys = self._by_person.get(found.person_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_person[found.person_id]


def queue_name() -> str:
    """This process's own queue (letters only after the prefix: the pattern broker_access grants)."""
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))
    source, event_type = SUBSCRIPTION
    return f"evt-{source}-{event_type}--gateway.session_cache_{suffix}"


class SessionEvents:
    """Hears ``sessions_ended`` on a thread and tells ``cache``; reconnects after a failure, the
    cache off meanwhile."""

    def __init__(self, amqp_uri: str, cache: SessionCache, retry_seconds: float = 2.0, heartbeat: int = 30):
        self.amqp_uri = amqp_uri
        self.cache = cache
        self.retry_seconds = retry_seconds
        self.heartbeat = heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="session-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.cache.hearing(False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception as exc:  # noqa: BLE001 - any failure: stop remembering, try again
                log.warning("sessions_ended not heard (%s): every request asks identity until it is again",
                            type(exc).__name__)
            finally:
                self.cache.hearing(False)
            self._stop.wait(self.retry_seconds)

    def _consume(self) -> None:
        from kombu import Connection, Queue
        from nameko.standalone.events import get_event_exchange

        source, event_type = SUBSCRIPTION
        with Connection(self.amqp_uri, heartbeat=self.heartbeat) as connection:
            exchange = get_event_exchange(source, {})
            queue = Queue(queue_name(), exchange=exchange, routing_key=event_type, exclusive=True,
                          auto_delete=True, durable=False)
            with connection.Consumer([queue], callbacks=[self._heard], accept=["json"]):
                # the queue is declared and bound: from now on no sessions_ended passes unheard
                self.cache.hearing(True)
                while not self._stop.is_set():
                    try:
                        connection.drain_events(timeout=1.0)
                    except socket.timeout:
                        connection.heartbeat_check()

    def _heard(self, body, message) -> None:
        try:
            ended = events.parse(events.SESSIONS_ENDED, body["data"])
        except Exception as exc:  # noqa: BLE001 - a malformed event: forget everything rather than too little
            log.error("sessions_ended not understood (%s): forgetting every session", type(exc).__name__)
            self.cache.hearing(False)
            self.cache.hearing(True)
        else:
            self.cache.forget_person(ended.person_id)
        message.ack()
