"""Who signs a document: each party of a flow is the person the document
names for that role (real name and resident ID number), never an id the
initiator types.

Pure functions over a small :class:`PersonDirectory` (identity answers it
over RPC in the service; tests give a dictionary), so the rules are testable
without RabbitMQ:

* :func:`bind_parties` turns ``[{role, person_id?, signature_field?}]`` in
  signing order into the flow's parties: roles by id or label, every named
  party exactly once, the initiator first and in the role the document gives
  its initiator, a given person checked against the named one, a missing one
  looked up (``None``: not registered yet, invited by SMS, joins later);
* :func:`place_for` finds the open place a newly registered person may take.

Every refusal is an ``InvalidInput`` naming the field (``parties.1.person_id``)
and the rule (``not_the_named_party``).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence

from services.common.errors import InvalidInput, NotFound
from services.signing.flow import Party

MAX_PERSON_ID = 64


class PersonDirectory(Protocol):
    """Who is registered: identity's ``find_person`` and ``person_matches``."""

    def find(self, name: str, id_number: str) -> str | None:
        """The registered (active) person with this name and ID number, or None."""

    def matches(self, person_id: str, name: str, id_number: str) -> bool:
        """Whether ``person_id`` is that person."""


class IdentityDirectory:
    """:class:`PersonDirectory` over the identity service's RPC proxy."""

    def __init__(self, identity):
        self.identity = identity

    def find(self, name: str, id_number: str) -> str | None:
        try:
            return self.identity.find_person(name=name, id_number=id_number)["person_id"]
        except NotFound:
            return None

    def matches(self, person_id: str, name: str, id_number: str) -> bool:
        return bool(self.identity.person_matches(person_id=person_id, name=name, id_number=id_number)["matches"])


def bind_parties(parties: Sequence[object], named: Sequence[Mapping], initiator_person_id: str,
                 directory: PersonDirectory) -> list[Party]:
    """The flow's parties in signing order, each the person the document names
    (``named``: the rendered document's parties, ``{role, label, name,
    id_number, signature_field, initiator?}``)."""
    by_role: dict[str, Mapping] = {}
    for entry in named:
        by_role[entry["role"]] = by_role[entry["label"]] = entry
    labels = "、".join(entry["label"] for entry in named)
    bound: list[Party] = []
    for i, party in enumerate(parties):
        if not isinstance(party, Mapping):
            raise InvalidInput(f"parties.{i}", "object", "expected {role, person_id?, signature_field?}")
        role = party.get("role")
        if not isinstance(role, str) or role not in by_role:
            raise InvalidInput(f"parties.{i}.role", "document_role", f"expected one of {labels}")
        entry = by_role[role]
        field = party.get("signature_field") or entry["signature_field"]
        if field != entry["signature_field"]:
            raise InvalidInput(f"parties.{i}.signature_field", "role_field",
                               f"{entry['label']} signs in {entry['signature_field']}")
        person_id = party.get("person_id") or (initiator_person_id if i == 0 else None)
        if person_id is not None and (not isinstance(person_id, str) or not 0 < len(person_id) <= MAX_PERSON_ID):
            raise InvalidInput(f"parties.{i}.person_id", "string", "expected a person id")
        if person_id is None:
            # not registered yet: invited by SMS at the document's number; joins later
            person_id = directory.find(entry["name"], entry["id_number"])
        elif not directory.matches(person_id, entry["name"], entry["id_number"]):
            raise InvalidInput(f"parties.{i}.person_id", "not_the_named_party",
                               f"this person is not the {entry['label']} the document names")
        bound.append(Party(person_id, entry["label"], field))
    if bound and bound[0].person_id != initiator_person_id:
        raise InvalidInput("parties.0.person_id", "initiator_first", "the initiator signs first")
    starter = next((entry for entry in named if entry.get("initiator")), None)
    if bound and starter is not None and bound[0].role != starter["label"]:
        raise InvalidInput("parties.0.role", "initiator_role", f"the document is started by its {starter['label']}")
    if sorted(p.role for p in bound) != sorted(entry["label"] for entry in named):
        raise InvalidInput("parties", "every_named_party", f"each party the document names signs once: {labels}")
    return bound


def place_for(open_places: Iterable[tuple[int, str]], named: Sequence[Mapping], person_id: str,
              directory: PersonDirectory) -> int | None:
    """The position (among ``open_places``: (position, role label)) whose role
    the document gives to ``person_id``'s real name and ID number, or None."""
    by_label = {entry["label"]: entry for entry in named}
    for position, label in open_places:
        entry = by_label.get(label)
        if entry is not None and directory.matches(person_id, entry["name"], entry["id_number"]):
            return position
    return None
