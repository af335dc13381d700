"""The reconciler: destroy keys that were generated but never recorded.

Making a key is two steps in two systems: the key store generates it, then
the caller commits a record naming its :class:`~services.common.keystore.KeyRef`.
A process that dies between the two leaves a key on the token that nothing
names and nothing will ever use: a live signing key without an owner. The
reconciler lists the keys under the platform's label prefix, and destroys
those that no record names and that are older than a grace period (a key
younger than that may belong to a record about to be committed).

It fails safe: it refuses to destroy more than ``max_destroy`` keys in one
run (a list of records that is incomplete, such as one read from the wrong
database, would otherwise condemn every key), never touches a key outside
the prefix or whose id it did not make, and with ``dry_run`` only reports.
"""
from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.errors import InvalidInput
from services.common.keystore import KeyRef, KeyStore

log = logging.getLogger(__name__)

DEFAULT_GRACE = _dt.timedelta(hours=1)
DEFAULT_MAX_DESTROY = 100


@dataclass(frozen=True)
class Reconciliation:
    """What one run found and did."""

    destroyed: tuple[KeyRef, ...]  # unrecorded and older than the grace: destroyed (or, dry run, would be)
    too_recent: tuple[KeyRef, ...]  # unrecorded but younger than the grace: left for a later run
    recorded: int  # keys under the prefix that a record names
    dry_run: bool = False


def reconcile(
    store: KeyStore,
    recorded: Iterable[KeyRef | str],
    prefix: str,
    grace: _dt.timedelta = DEFAULT_GRACE,
    now: _dt.datetime | None = None,
    max_destroy: int = DEFAULT_MAX_DESTROY,
    dry_run: bool = False,
) -> Reconciliation:
    """Destroy the keys under ``prefix`` that none of ``recorded`` (refs, or their key ids) names
    and that were generated more than ``grace`` before ``now``."""
    if not prefix:
        raise InvalidInput("prefix", "required", "expected the platform's label prefix, such as 'esign/'")
    if grace <= _dt.timedelta(0):
        raise InvalidInput("grace", "positive", "expected a grace period above zero")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    known = {item.key_id if isinstance(item, KeyRef) else str(item) for item in recorded}
    on_store = store.list_refs(prefix)
    unrecorded = [ref for ref in on_store if ref.key_id not in known]
    orphans = tuple(ref for ref in unrecorded if now - ref.created_at > grace)
    too_recent = tuple(ref for ref in unrecorded if now - ref.created_at <= grace)
    if len(orphans) > max_destroy:
        raise InvalidInput("recorded", "too_many_orphans",
                           f"expected at most {max_destroy} unrecorded keys to destroy, found {len(orphans)}:"
                           " is the list of records complete?")
    if not dry_run:
        for ref in orphans:
            store.destroy(ref)
            log.warning("key store: destroyed unrecorded key %s (%s, generated %s)", ref.key_id, ref.label,
                        ref.created_at.isoformat())
    return Reconciliation(destroyed=orphans, too_recent=too_recent, recorded=len(on_store) - len(unrecorded),
                          dry_run=dry_run)
