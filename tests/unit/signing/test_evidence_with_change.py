"""A flow event's evidence leaf is sequenced in the transaction that changes the flow
(services/signing/flow_store.py ``apply``), in signing's own workers on SQLite: the leaf
and the event commit together or not at all, a flow's leaves are queued in the order of
its transactions, and the log's event handlers leave such an event alone while still
logging one emitted without its leaf (a queue drained after an upgrade)."""
from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from services.common.outbox import UnitOfWork
from services.signing.evidence import LOGGED_WITH_CHANGE
from services.signing.models import LogLeaf, LogSequenced
from tests.support.service_worker import ServiceWorkers, documents_and_signing
from tests.unit.signing.test_start_flow_worker import LENDER_ID, Directory, rendered_iou

PARTIES = [{"role": "lender"}, {"role": "借款人"}]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with documents_and_signing(tmp_path_factory.mktemp("workers"), Directory()) as workers:
        yield workers


def sequenced(signing: ServiceWorkers) -> list[tuple[str, str, dict]]:
    """(flow id, event id, record) of every record queued for the tree, in queue order."""
    with signing.database().db.session() as session:
        rows = session.execute(select(LogSequenced.flow_id, LogSequenced.event_id, LogSequenced.record)
                               .order_by(LogSequenced.seq)).all()
    return [(flow_id, event_id, json.loads(bytes(record))) for flow_id, event_id, record in rows]


def leaves_of(signing: ServiceWorkers, flow_id: str) -> list[dict]:
    with signing.database().db.session() as session:
        rows = session.execute(select(LogLeaf.leaf_data).where(LogLeaf.flow_id == flow_id)
                               .order_by(LogLeaf.leaf_index)).scalars().all()
    return [json.loads(bytes(data)) for data in rows]


def start(documents: ServiceWorkers, signing: ServiceWorkers) -> str:
    rendered = rendered_iou(documents)
    return signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=LENDER_ID,
                        parties=PARTIES)["flow_id"]


def test_the_leaf_is_queued_by_the_transaction_that_emits_the_event(services):
    documents, signing = services
    signing.call("integrate_log")
    flow_id = start(documents, signing)
    [sent] = [e for e in signing.events("flow_sent") if e["data"]["flow_id"] == flow_id]
    assert sent[LOGGED_WITH_CHANGE] is True
    # queued before any handler ran: the event has not been handed to one
    assert [(f, e, r["event_type"]) for f, e, r in sequenced(signing)] == [(flow_id, sent["event_id"], "flow_sent")]
    signing.call("integrate_log")
    [leaf] = leaves_of(signing, flow_id)
    assert (leaf["event_id"], leaf["event_type"], leaf["prev_index"]) == (sent["event_id"], "flow_sent", None)
    assert sequenced(signing) == []


def test_the_handler_leaves_an_event_logged_with_its_change_alone(services):
    documents, signing = services
    flow_id = start(documents, signing)
    [sent] = [e for e in signing.events("flow_sent") if e["data"]["flow_id"] == flow_id]
    signing.call("integrate_log")
    signing.call("log_flow_sent", sent)  # the broker delivers it to the log's handler as well
    assert sequenced(signing) == []
    signing.call("integrate_log")
    assert [leaf["event_id"] for leaf in leaves_of(signing, flow_id)] == [sent["event_id"]]


def test_an_event_emitted_without_its_leaf_is_still_logged_by_the_handler(services):
    """An event published before this change, still queued after the upgrade, carries no mark."""
    documents, signing = services
    flow_id = start(documents, signing)
    [sent] = [e for e in signing.events("flow_sent") if e["data"]["flow_id"] == flow_id]
    older = {key: value for key, value in sent.items() if key != LOGGED_WITH_CHANGE}
    older["event_id"] = str(uuid.uuid4())
    signing.call("integrate_log")
    signing.call("log_flow_sent", older)
    assert [(f, e) for f, e, _ in sequenced(signing)] == [(flow_id, older["event_id"])]
    signing.call("integrate_log")
    first, second = leaves_of(signing, flow_id)
    assert [first["event_id"], second["event_id"]] == [sent["event_id"], older["event_id"]]
    assert second["prev_index"] is not None  # chained to the flow's first leaf


def test_a_change_that_does_not_commit_leaves_no_leaf_and_no_event(services, monkeypatch):
    documents, signing = services
    signing.call("integrate_log")
    rendered = rendered_iou(documents)
    events_before = len(signing.events())

    def commit_fails(self):
        raise OperationalError("COMMIT", {}, Exception("the database went away"))

    monkeypatch.setattr(UnitOfWork, "commit", commit_fails)
    with pytest.raises(Exception):  # noqa: B017 - whichever error the database's loss becomes
        signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=LENDER_ID,
                     parties=PARTIES)
    monkeypatch.undo()
    assert sequenced(signing) == [] and len(signing.events()) == events_before
