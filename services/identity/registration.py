"""Real-name registration (实名认证), login and phone changes.

Registration, in order:

1. the phone is the person's: a phone code confirmed within
   REGISTRATION.PHONE_CONFIRMATION_VALID_SECONDS, used once;
2. the form is valid: name (:mod:`.person_name`), ID number (GB 11643-1999
   checksum), mainland mobile;
3. the phone is no active account's, and the ID number is held by no account
   this proof could not win from (:mod:`.takeover`);
4. the **authority** confirms that the name and ID number belong together
   (the provider's two-element check, :mod:`.proofing`); a refusal or an
   unreachable authority leaves nothing behind;
5. the person is recorded at ``authority_two_element`` (``self_declared``
   with the development provider), ``pending_takeover`` when a weaker account
   holds the ID number. Their face is proved next (:mod:`.proofs`).

A login is a confirmed phone code for a registered phone. Changing the phone
needs a confirmed code for the new phone *and* a fresh authority face proof
(a step-up): a stolen session alone cannot redirect codes and notices.
"""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from services.common.assurance import AssuranceLevel
from services.common.clock import utcnow
from services.common.errors import Conflict, Forbidden, NotFound
from services.common.idnumber import parse_id_number
from services.common.masking import mask_id_number, mask_name, mask_phone
from services.common.phone import normalise_phone
from services.common.reasons import Reason
from services.identity import audit
from services.identity.models import ACTIVE, FROZEN, PENDING_TAKEOVER, Person
from services.identity.people import People
from services.identity.person_name import normalise_name
from services.identity.phone_codes import PhoneCodes
from services.identity.proofing import Claimant, IdentityProofing
from services.identity.proofs import Proofs
from services.identity.settings import IdentitySettings
from services.identity.takeover import can_take_back


class Registrations:
    def __init__(self, session: Session, people: People, codes: PhoneCodes, provider: IdentityProofing,
                 settings: IdentitySettings, metrics):
        self.session = session
        self.people = people
        self.codes = codes
        self.provider = provider
        self.settings = settings
        self.metrics = metrics

    def register(self, name: str, id_number: str, phone: str, phone_challenge_id: str) -> Person:
        """Record a new person (not committed); raises before anything is written."""
        person_name = normalise_name(name)
        resident = parse_id_number(id_number)
        number = normalise_phone(phone)
        phone_index = self.people.phone_index(number)
        id_index = self.people.id_index(resident.number)
        challenge = self.codes.confirmed(phone_challenge_id, self.settings.phone_confirmation_valid, phone_index,
                                         allow_used=True)
        if self.people.by_phone(phone_index, (ACTIVE,)):
            self._refused(Reason.PHONE_REGISTERED)
            raise Conflict(Reason.PHONE_REGISTERED)
        if challenge.status != "confirmed":
            raise Forbidden(Reason.PHONE_CHALLENGE_USED)
        holder = self.people.holder_of(id_index)
        if holder is not None and not can_take_back(self._best_reachable(), self.people.level(holder)):
            self._refused(Reason.ID_NUMBER_REGISTERED)
            raise Conflict(Reason.ID_NUMBER_REGISTERED)
        check = self.provider.verify_identity(Claimant(person_name, resident.number))  # may refuse; nothing written yet
        person_id = str(uuid.uuid4())
        moment = utcnow()
        person = Person(
            id=person_id, status=PENDING_TAKEOVER if holder is not None else ACTIVE,
            name_sealed=self.people.seal(person_id, "name", person_name.encode()), name_masked=mask_name(person_name),
            id_number_index=id_index,
            id_number_sealed=self.people.seal(person_id, "id_number", resident.number.encode()),
            id_masked=mask_id_number(resident.number),
            phone_index=phone_index, phone_sealed=self.people.seal(person_id, "phone", number.encode()),
            phone_masked=mask_phone(number), phone_challenge_id=phone_challenge_id,
            assurance_level=check.level.value, proofing_provider=check.provider,
            proofing_request_id=(check.request_id or "")[:64] or None, proofed_at=moment,
            face_failures=0, created_at=moment, updated_at=moment,
        )
        self.session.add(person)
        challenge.status = "registered"
        audit.record(self.session, "identity_check", "ok", person_id=person_id, method="two_element",
                     provider=check.provider, request_id=person.proofing_request_id, level=check.level.value)
        audit.record(self.session, "registration", "ok" if holder is None else "pending_takeover",
                     person_id=person_id, method="sms", name_masked=person.name_masked, id_masked=person.id_masked,
                     phone_masked=person.phone_masked)
        return person

    def committed(self, commit, person: Person) -> None:
        """Commit a registration; a concurrent one that won a unique index becomes a Conflict."""
        try:
            commit()
        except DbIntegrityError:
            self.session.rollback()
            if self.people.by_phone(person.phone_index, (ACTIVE,)):
                raise Conflict(Reason.PHONE_REGISTERED) from None
            if self.session.execute(select(Person.id)
                                    .where(Person.phone_challenge_id == person.phone_challenge_id)).first():
                raise Forbidden(Reason.PHONE_CHALLENGE_USED) from None
            raise Conflict(Reason.REGISTRATION_CONFLICT) from None
        self.metrics.inc("registrations", "Registrations by outcome", outcome="ok", level=person.assurance_level)

    def _best_reachable(self) -> AssuranceLevel:
        """The highest level a newcomer can prove here (what could win an ID number back)."""
        return self.settings.step_up_level if self.provider.max_level.at_least(self.settings.step_up_level) \
            else self.provider.max_level

    def _refused(self, reason: Reason) -> None:
        self.metrics.inc("registrations", "Registrations by outcome", outcome=reason, level="none")

    def login(self, phone_challenge_id: str) -> Person:
        """The person whose registered phone a just-confirmed code proved (not committed)."""
        challenge = self.codes.confirmed(phone_challenge_id, self.settings.phone_confirmation_valid)
        found = self.people.by_phone(challenge.phone_index)
        if not found:
            if self.people.by_phone(challenge.phone_index, (FROZEN,)):
                raise Forbidden(Reason.ACCOUNT_FROZEN)
            raise NotFound("person", "for this phone")
        person = found[0]
        challenge.status = "logged_in"
        audit.record(self.session, "login", "ok", person_id=person.id, method="sms")
        return person

    def change_phone(self, person: Person, phone_challenge_id: str, proofs: Proofs, proof_id: str | None) -> None:
        """Move the person to the phone a just-confirmed code proved, with a step-up proof (not committed)."""
        challenge = self.codes.confirmed(phone_challenge_id, self.settings.phone_confirmation_valid)
        if any(other.id != person.id for other in self.people.by_phone(challenge.phone_index, (ACTIVE,))):
            raise Conflict(Reason.PHONE_REGISTERED)
        proofs.consume(person.id, proof_id, "phone_change")
        number = self.codes.number_of(challenge)
        before = person.phone_masked
        person.phone_index = challenge.phone_index
        person.phone_sealed = self.people.seal(person.id, "phone", number.encode())
        person.phone_masked = mask_phone(number)
        person.updated_at = utcnow()
        challenge.status = "phone_changed"
        audit.record(self.session, "phone_changed", "ok", person_id=person.id, method="sms",
                     before=before, after=person.phone_masked)
