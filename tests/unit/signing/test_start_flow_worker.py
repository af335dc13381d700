"""Starting a flow in signing's own workers (tests/support/service_worker.py):
documents' workers beside it on SQLite and in-memory S3, identity a directory
of two people. Each party is the person the document names, by role;
every refusal names its field and rule; one live flow per document, which is
locked for it at once; nothing is recorded for a refused start."""
from __future__ import annotations

import pytest

from services.common.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.support.service_worker import ServiceWorkers, documents_and_signing
from tests.support.stack import BORROWER, LENDER, party

IOU_VALUES = {"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "2000",
              "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01", "repayment_date": "2026-12-01",
              "repayment_method": "一次性还本付息", "remark": ""}
PEOPLE = {"person-lender": LENDER, "person-borrower": BORROWER}


class Directory:
    """identity's find_person and person_matches over two registered people."""

    def find_person(self, name: str, id_number: str) -> dict:
        for person_id, (known_name, known_id, _) in PEOPLE.items():
            if (known_name, known_id) == (name, id_number):
                return {"person_id": person_id}
        raise NotFound("person", "by name and ID number")

    def person_matches(self, person_id: str, name: str, id_number: str) -> dict:
        return {"matches": PEOPLE.get(person_id, (None, None))[:2] == (name, id_number)}


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    with documents_and_signing(tmp_path_factory.mktemp("workers"), Directory()) as workers:
        yield workers


LENDER_ID, BORROWER_ID = "person-lender", "person-borrower"


def rendered_iou(documents: ServiceWorkers, **changes) -> dict:
    draft = documents.call("create_draft", template_id="iou", values=dict(IOU_VALUES, **changes))
    return documents.call("render", document_id=draft["document_id"])


def flows_recorded(signing: ServiceWorkers) -> int:
    from sqlalchemy import func, select

    from services.signing.models import FlowRow

    with signing.database().db.session() as session:
        return session.execute(select(func.count()).select_from(FlowRow)).scalar_one()


def test_each_party_is_the_person_the_document_names(services):
    documents, signing = services
    rendered = rendered_iou(documents)
    flows_before, events_before = flows_recorded(signing), len(signing.events())

    def refused(parties: list[dict], initiator: str = LENDER_ID, document_id: str = rendered["document_id"]):
        with pytest.raises(InvalidInput) as error:
            signing.call("start_flow", document_id=document_id, initiator_person_id=initiator, parties=parties)
        return error.value.field, error.value.rule

    # the borrower cannot start the IOU as its lender, nor can the lender put himself in as the borrower
    assert refused([{"role": "出借人"}, {"role": "借款人"}], initiator=BORROWER_ID) == ("parties.0.person_id",
                                                                                      "not_the_named_party")
    assert refused([{"role": "出借人"}, {"role": "借款人", "person_id": LENDER_ID}]) == ("parties.1.person_id",
                                                                                     "not_the_named_party")
    assert refused([{"role": "出借人"}]) == ("parties", "every_named_party")
    assert refused([{"role": "出借人"}, {"role": "担保人"}]) == ("parties.1.role", "document_role")
    assert refused([{"role": "出借人", "signature_field": "sig_borrower"}, {"role": "借款人"}]) == (
        "parties.0.signature_field", "role_field")
    draft = documents.call("create_draft", template_id="iou", values=IOU_VALUES)
    assert refused([{"role": "出借人"}, {"role": "借款人"}], document_id=draft["document_id"]) == ("document_id",
                                                                                                 "not_rendered")
    # the document says the lender starts it
    assert refused([{"role": "借款人", "person_id": BORROWER_ID}, {"role": "出借人", "person_id": LENDER_ID}],
                   initiator=BORROWER_ID) == ("parties.0.role", "initiator_role")
    # a document someone else made (the gateway names its caller as the owner): NotFound, as for none
    mine = documents.call("render", document_id=documents.call(
        "create_draft", template_id="iou", values=IOU_VALUES, owner_person_id=LENDER_ID)["document_id"])
    with pytest.raises(NotFound):
        signing.call("start_flow", document_id=mine["document_id"], initiator_person_id=BORROWER_ID,
                     parties=[{"role": "借款人"}, {"role": "出借人"}], owner_person_id=BORROWER_ID)
    with pytest.raises(NotFound):
        documents.call("render", document_id=mine["document_id"], owner_person_id=BORROWER_ID)
    # nothing was recorded or announced for a refused start, and the document is not locked
    assert (flows_recorded(signing), len(signing.events())) == (flows_before, events_before)
    assert documents.call("get_document", document_id=rendered["document_id"])["locked"] is False

    # by role alone: signing finds the counterparty the document names
    flow = signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=LENDER_ID,
                        parties=[{"role": "lender"}, {"role": "借款人"}])
    assert [(p["person_id"], p["role"], p["signature_field"]) for p in flow["parties"]] == [
        (LENDER_ID, "出借人", "sig_lender"), (BORROWER_ID, "借款人", "sig_borrower")]
    locked = documents.call("get_document", document_id=rendered["document_id"])  # at once, not on the event
    assert locked["locked"] is True and locked["locked_by_flow"] == flow["flow_id"]
    [sent] = signing.events("flow_sent")[-1:]
    assert sent["data"]["flow_id"] == flow["flow_id"] and sent["data"]["next_person_id"] == LENDER_ID
    with pytest.raises(Conflict) as twice:  # one live flow per document
        signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=LENDER_ID,
                     parties=[{"role": "lender"}, {"role": "借款人"}])
    assert twice.value.reason == "document_in_flow"
    assert flows_recorded(signing) == flows_before + 1


def test_a_counterparty_not_registered_yet_has_an_open_place_only_they_can_take(services):
    from tests.support.stack import UNREGISTERED

    documents, signing = services
    rendered = rendered_iou(documents, borrower=party(UNREGISTERED))
    flow = signing.call("start_flow", document_id=rendered["document_id"], initiator_person_id=LENDER_ID,
                        parties=[{"role": "出借人"}, {"role": "借款人"}])
    assert [p["person_id"] for p in flow["parties"]] == [LENDER_ID, None]
    # someone registered whom the document does not name cannot take the place
    with pytest.raises(Forbidden) as outsider:
        signing.call("join_flow", flow_id=flow["flow_id"], person_id=BORROWER_ID)
    assert outsider.value.reason == "not_a_party"
    assert signing.call("get_flow", flow_id=flow["flow_id"])["parties"][1]["person_id"] is None
