"""Persons as the identity service keeps them: sealed personal fields, blind-
index look-ups, account states and the proofed face.

Name, ID number and phone are sealed (AES-256-GCM envelope, bound to the
person id by associated data) and found by keyed hash (blind index); the ID
number and phone are unique among *active* accounts. States:

``active``
    the account that holds its ID number;
``pending_takeover``
    registered with an ID number a weaker account holds; it may only prove
    its face, and a winning authority proof makes it ``active``
    (:mod:`services.identity.takeover`);
``frozen``
    lost its ID number to a stronger proof: no session, no certificate,
    records kept as evidence.
"""
from __future__ import annotations

import hmac

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.assurance import AssuranceLevel, parse_level
from services.common.errors import Forbidden, NotFound
from services.common.idnumber import parse_id_number
from services.common.reasons import Reason
from services.common.sealing import associated_data, from_text, to_text
from services.identity.faces import encoding_from_bytes
from services.identity.models import ACTIVE, FROZEN, PENDING_TAKEOVER, Person
from services.identity.person_name import normalise_name
from services.identity.proofing import Claimant
from services.identity.secrets import IdentityKeys

#: a person's sealed fields: column, and the context of the associated data they are sealed with
SEALED = {"name": ("name_sealed", "person_name"), "id_number": ("id_number_sealed", "id_number"),
          "phone": ("phone_sealed", "phone"), "face": ("face_encoding_sealed", "face_encoding")}


class People:
    """A worker's view of the persons table."""

    def __init__(self, session: Session, keys: IdentityKeys):
        self.session = session
        self.keys = keys

    # -- finding --------------------------------------------------------------
    def get(self, person_id: str, lock: bool = False) -> Person:
        person = (self.session.get(Person, person_id, with_for_update=lock, populate_existing=lock)
                  if isinstance(person_id, str) else None)
        if person is None:
            raise NotFound("person", person_id if isinstance(person_id, str) else "")
        return person

    def usable(self, person_id: str, lock: bool = False) -> Person:
        """The person, unless their account is frozen."""
        person = self.get(person_id, lock)
        if person.status == FROZEN:
            raise Forbidden(Reason.ACCOUNT_FROZEN)
        return person

    def active(self, person_id: str, lock: bool = False) -> Person:
        """The person, if their account holds its ID number (not frozen, not pending)."""
        person = self.usable(person_id, lock)
        if person.status == PENDING_TAKEOVER:
            raise Forbidden(Reason.ACCOUNT_PENDING)
        return person

    def holder_of(self, id_index: str) -> Person | None:
        """The active account holding an ID number (blind index)."""
        return self.session.execute(select(Person).where(Person.id_number_index == id_index,
                                                         Person.status == ACTIVE)).scalar_one_or_none()

    def by_phone(self, phone_index: str, statuses: tuple[str, ...] = (ACTIVE, PENDING_TAKEOVER)) -> list[Person]:
        return list(self.session.execute(
            select(Person).where(Person.phone_index == phone_index, Person.status.in_(statuses))
            .order_by(Person.created_at.desc())).scalars())

    def id_index(self, id_number: str) -> str:
        return self.keys.blind_index.digest("id_number", id_number)

    def phone_index(self, phone: str) -> str:
        return self.keys.blind_index.digest("phone", phone)

    # -- sealed fields -------------------------------------------------------------
    def unsealed(self, person: Person, field: str) -> str:
        """One of ``name``, ``id_number``, ``phone`` in clear."""
        return self._open(person, field).decode()

    def seal(self, person_id: str, field: str, value: bytes) -> str:
        return to_text(self.keys.keyring.seal(value, associated_data(SEALED[field][1], person_id)))

    def _open(self, person: Person, field: str) -> bytes:
        column, context = SEALED[field]
        return self.keys.keyring.open(from_text(getattr(person, column)), associated_data(context, person.id))

    def claimant(self, person: Person) -> Claimant:
        return Claimant(self.unsealed(person, "name"), self.unsealed(person, "id_number"))

    # -- who a document names ----------------------------------------------------
    def named(self, name: str, id_number: str) -> tuple[str, str]:
        """(normalised name, ID-number blind index) of a party as a document names it."""
        return normalise_name(name), self.id_index(parse_id_number(id_number).number)

    def has_name(self, person: Person, name: str) -> bool:
        return hmac.compare_digest(self.unsealed(person, "name").encode(), name.encode())

    # -- face and level -------------------------------------------------------------
    def face(self, person: Person) -> np.ndarray:
        """The proofed face's encoding; ``Forbidden("face_not_verified")`` if none is kept."""
        if person.face_encoding_sealed is None:
            raise Forbidden(Reason.FACE_NOT_VERIFIED)
        return encoding_from_bytes(self._open(person, "face"))

    @staticmethod
    def level(person: Person) -> AssuranceLevel:
        return parse_level(person.assurance_level)
