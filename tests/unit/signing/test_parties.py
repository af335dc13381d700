"""Party binding without RabbitMQ: each role of a document is the person the
document names (real name and ID number), checked through a directory that
here is a dictionary."""
from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.signing.parties import bind_parties, place_for

NAMED = [
    {"role": "lender", "label": "出借人", "name": "王䶮", "id_number": "11010519491231002X",
     "signature_field": "lender_signature", "initiator": True},
    {"role": "borrower", "label": "借款人", "name": "李𠮷", "id_number": "440524188001010014",
     "signature_field": "borrower_signature"},
]


class Directory:
    """Registered people: (name, id_number) -> person id."""

    def __init__(self, people: dict[tuple[str, str], str]):
        self.people = people
        self.asked: list[tuple] = []

    def find(self, name, id_number):
        self.asked.append(("find", name))
        return self.people.get((name, id_number))

    def matches(self, person_id, name, id_number):
        self.asked.append(("matches", person_id))
        return self.people.get((name, id_number)) == person_id


REGISTERED = Directory({("王䶮", "11010519491231002X"): "p-wang", ("李𠮷", "440524188001010014"): "p-li"})


def test_roles_by_id_or_label_are_bound_to_the_named_people():
    bound = bind_parties([{"role": "出借人"}, {"role": "borrower"}], NAMED, "p-wang", REGISTERED)
    assert [(p.person_id, p.role, p.signature_field) for p in bound] == [
        ("p-wang", "出借人", "lender_signature"), ("p-li", "借款人", "borrower_signature")]


def test_an_unregistered_counterparty_keeps_an_open_place():
    directory = Directory({("王䶮", "11010519491231002X"): "p-wang"})
    bound = bind_parties([{"role": "lender"}, {"role": "borrower"}], NAMED, "p-wang", directory)
    assert bound[1].person_id is None
    # once registered, the named person (and only they) takes the open place
    directory.people[("李𠮷", "440524188001010014")] = "p-li"
    assert place_for([(1, "借款人")], NAMED, "p-li", directory) == 1
    assert place_for([(1, "借款人")], NAMED, "p-someone", directory) is None


@pytest.mark.parametrize("parties, initiator, field, rule", [
    ([{"role": "lender"}, {"role": "borrower", "person_id": "p-someone"}], "p-wang",
     "parties.1.person_id", "not_the_named_party"),
    ([{"role": "borrower"}, {"role": "lender"}], "p-li", "parties.0.role", "initiator_role"),
    ([{"role": "lender", "person_id": "p-li"}, {"role": "borrower"}], "p-li", "parties.0.person_id",
     "not_the_named_party"),
    ([{"role": "lender"}], "p-wang", "parties", "every_named_party"),
    ([{"role": "lender"}, {"role": "lender"}], "p-wang", "parties", "every_named_party"),
    ([{"role": "guarantor"}, {"role": "borrower"}], "p-wang", "parties.0.role", "document_role"),
    ([{"role": "lender", "signature_field": "borrower_signature"}, {"role": "borrower"}], "p-wang",
     "parties.0.signature_field", "role_field"),
    (["lender", {"role": "borrower"}], "p-wang", "parties.0", "object"),
    ([{"role": "lender"}, {"role": "borrower", "person_id": 7}], "p-wang", "parties.1.person_id", "string"),
])
def test_every_refusal_names_the_field_and_the_rule(parties, initiator, field, rule):
    with pytest.raises(InvalidInput) as refused:
        bind_parties(parties, NAMED, initiator, REGISTERED)
    assert (refused.value.field, refused.value.rule) == (field, rule)


def test_the_initiator_signs_first():
    with pytest.raises(InvalidInput) as refused:
        bind_parties([{"role": "lender", "person_id": "p-wang"}, {"role": "borrower"}], NAMED, "p-li", REGISTERED)
    assert (refused.value.field, refused.value.rule) == ("parties.0.person_id", "initiator_first")
