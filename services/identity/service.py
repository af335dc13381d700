"""The identity service: wires RPC and event entrypoints to the identity
domain. Each method decodes, calls one domain object, commits, answers.

A person's way in (README 'Identity'):

1. ``request_phone_code`` / ``confirm_phone_code``: the phone is theirs
   (:mod:`.phone_codes`);
2. ``register``: name, ID number, phone; the configured authority confirms
   that the name and ID number belong together (:mod:`.registration`,
   :mod:`.proofing`); answers a session (:mod:`.sessions`);
3. ``start_liveness`` then ``proof_face``: a live capture, compared by the
   authority with its ID photo for that person (:mod:`.proofs`); a match
   raises the assurance level and is a step-up;
4. ``issue_certificate`` with that step-up: a certificate stating the level
   (:mod:`.certificates`);
5. per signature: ``start_willingness`` → ``confirm_willingness`` (SMS code or
   live face) → a single-use grant → ``sign_digest`` (:mod:`.willingness`).

Anything that changes who can sign (a new certificate, a new phone) needs a
fresh step-up; replacing the face needs the authority to match it again. An
ID number a weaker account squats is taken back by a winning proof
(:mod:`.takeover`).

RPC methods for other services only (never exposed by the gateway):
``otp_message`` (notify), ``contact`` (notify), ``party_details``
(documents), ``person_matches`` / ``find_person`` / ``report_profile`` /
``sign_digest`` (signing), ``session_person`` (the gateway's session check).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from datetime import timedelta

from cryptography.x509.oid import NameOID
from eventlet import tpool
from nameko.dependency_providers import Config
from nameko.timer import timer
from sqlalchemy import select

from services.common import events
from services.common.assurance import parse_level
from services.common.clock import iso, utcnow
from services.common.entrypoints import handles_event, rpc
from services.common.errors import Forbidden, InvalidInput, NotFound, Unavailable
from services.common.failpoints import failpoint
from services.common.keystore.provider import KeyStoreProvider
from services.common.lease import acquire, holder_id
from services.common.masking import mask_phone
from services.common.metrics import Metrics, Series
from services.common.phone import normalise_phone
from services.common.reasons import Reason
from services.common.service_base import ServiceBase
from services.common.wire import CONTACTS_PER_CALL, b64, decode_base64
from services.identity import audit, ca, certificates
from services.identity.ca_store import CaProvider, build_delegated_ocsp_response, development_tokens
from services.identity.dependencies import ProofingProvider, SettingsProvider
from services.identity.face_pool import FacePool
from services.identity.models import IdentityProof, Person
from services.identity.otp import OtpOutcome
from services.identity.people import People
from services.identity.person_keys import PersonKeys
from services.identity.phone_codes import PURPOSES, PhoneCodes
from services.identity.proofs import Proofs
from services.identity.registration import Registrations
from services.identity.secrets import IdentityKeysProvider
from services.identity.sessions import Sessions
from services.identity.takeover import take_back
from services.identity.willingness import Willingness

log = logging.getLogger(__name__)

ACTORS = ("person", "admin")
#: identity's counters shown at 0 from the start: the phone-code alerts watch wrong codes and lockouts
KNOWN_SERIES = (
    *certificates.CERTIFICATE_SERIES,
    Series("otp_requested", "Phone codes requested", {"purpose": PURPOSES[:1]}),  # request_phone_code's only purpose
    Series("otp_checks", "Phone code checks", {"outcome": tuple(outcome.value for outcome in OtpOutcome)}),
)
#: how often the reconciler of person keys on the token runs (seconds)
RECONCILE_INTERVAL_SECONDS = 600


def _an_otp_outcome(event: dict) -> bool:
    """Whether notify's ``sms_sent`` is about a phone code (identity has nothing to do with a flow's
    notices, 3 of a flow's 5 SMS); anything malformed is let through, for the handler to log."""
    data = event.get("data")
    return not isinstance(data, dict) or data.get("ref_type") in ("otp", None)


class IdentityService(ServiceBase):
    name = "identity"
    metrics = Metrics(known=KNOWN_SERIES)
    config = Config()
    settings = SettingsProvider()
    keys = IdentityKeysProvider()
    custody = KeyStoreProvider(embedded_also=development_tokens)
    authority = CaProvider()
    faces = FacePool()
    proofing = ProofingProvider()
    _holder = holder_id()

    # -- the worker's domain objects ----------------------------------------------
    @property
    def people(self) -> People:
        return People(self.db.session, self.keys)

    @property
    def codes(self) -> PhoneCodes:
        return PhoneCodes(self.db.session, self.keys, self.db.emit, self.settings.otp_min_resend)

    @property
    def sessions(self) -> Sessions:
        return Sessions(self.db.session, self.settings.sessions)

    @property
    def proofs(self) -> Proofs:
        return Proofs(self.db.session, self.people, self.faces, self.proofing, self.settings, self.metrics,
                      self.db.commit)

    @property
    def person_keys(self) -> PersonKeys:
        return PersonKeys(self.custody.store, self.keys.keyring, self.custody.settings, self.db.new_session)

    @property
    def certificates(self) -> certificates.PersonCertificates:
        return certificates.PersonCertificates(self.db.session, self.person_keys, self.authority.material,
                                               self.authority.points, self.db.emit, self.metrics,
                                               self.db.after_commit)

    @property
    def willingness(self) -> Willingness:
        return Willingness(self.db.session, self.people, self.codes, self.proofs, self.keys, self.settings,
                           self.metrics, self.faces.threshold, self.db.commit, self.person_keys)

    @property
    def registrations(self) -> Registrations:
        return Registrations(self.db.session, self.people, self.codes, self.proofing, self.settings, self.metrics)

    # -- phone codes ------------------------------------------------------------------
    @rpc
    def request_phone_code(self, phone: str, purpose: str = "phone_confirmation") -> dict:
        """Send a 6-digit code to ``phone`` (purpose ``phone_confirmation``)."""
        if purpose not in PURPOSES[:1]:
            raise InvalidInput("purpose", "enum", "expected phone_confirmation")
        number = normalise_phone(phone)
        index = self.people.phone_index(number)
        row = self.codes.send(purpose, number, index, subject=index)
        self.db.commit()
        self.metrics.inc("otp_requested", "Phone codes requested", purpose=purpose)
        return {"challenge_id": row.id, "expires_at": iso(row.expires_at), "phone_masked": mask_phone(number)}

    @rpc
    def otp_message(self, challenge_id: str) -> dict:
        """For notify only: the phone and code of a pending challenge."""
        return self.codes.message(challenge_id)

    @rpc
    def confirm_phone_code(self, challenge_id: str, code: str) -> dict:
        result = self.codes.check(challenge_id, code)
        self.db.commit()
        self.metrics.inc("otp_checks", "Phone code checks", outcome=result.outcome.value)
        result.require_accepted()
        return {"challenge_id": challenge_id, "confirmed": True}

    @handles_event("notify", events.SMS_SENT, wanted=_an_otp_outcome, mark_first=True)
    def on_sms_sent(self, event: dict) -> None:
        """The code reached the SMS vendor: drop the sealed copy kept for delivery."""
        try:
            sent = events.parse(events.SMS_SENT, event["data"])
        except InvalidInput as exc:
            log.error("sms_sent %s ignored: %s", event.get("event_id"), exc)
            return
        if sent.ref_type == "otp" and sent.ref_id is not None:
            self.codes.delivered(sent.ref_id)

    # -- registration, login, sessions ----------------------------------------------------
    @rpc
    def register(self, name: str, id_number: str, phone: str, phone_challenge_id: str,
                 user_agent: str | None = None) -> dict:
        """Real-name registration (see :mod:`.registration`); answers the person and a session."""
        registrations = self.registrations
        person = registrations.register(name, id_number, phone, phone_challenge_id)
        opened = self.sessions.open(person.id, user_agent)
        registrations.committed(self.db.commit, person)
        log.info("person %s registered (%s, %s, %s)", person.id, person.id_masked, person.phone_masked,
                 person.assurance_level)
        return dict(self._summary(person), session=opened.to_dict())

    @rpc
    def login(self, phone_challenge_id: str, user_agent: str | None = None) -> dict:
        """The person whose registered phone a just-confirmed code proved, and a new session."""
        person = self.registrations.login(phone_challenge_id)
        opened = self.sessions.open(person.id, user_agent)
        self.db.commit()
        return dict(self._summary(person), session=opened.to_dict())

    @staticmethod
    def _summary(person: Person) -> dict:
        return {"person_id": person.id, "name_masked": person.name_masked, "id_masked": person.id_masked,
                "phone_masked": person.phone_masked, "assurance_level": person.assurance_level,
                "status": person.status}

    @rpc
    def session_person(self, token: str) -> dict:
        """For the gateway: the person and session a token stands for."""
        row, status = self.sessions.resolve(token)
        if status == "frozen":
            raise Forbidden(Reason.ACCOUNT_FROZEN)
        self.db.commit()
        return {"person_id": row.person_id, "session_id": row.id}

    @rpc
    def list_sessions(self, person_id: str, current_session_id: str | None = None) -> list:
        return self.sessions.listing(person_id, current_session_id)

    @rpc
    def revoke_session(self, person_id: str, session_id: str) -> dict:
        """End one of the person's sessions (logout is ending the current one)."""
        self.sessions.revoke(person_id, session_id)
        audit.record(self.db.session, "sessions_revoked", "logout", person_id=person_id, session_id=session_id)
        self.db.emit(events.SESSIONS_ENDED, events.SessionsEnded(person_id=person_id, reason="logout"))
        self.db.commit()
        return {"session_id": session_id, "revoked": True}

    @rpc
    def revoke_other_sessions(self, person_id: str, keep_session_id: str) -> dict:
        ended = self.sessions.revoke_all(person_id, "revoked_by_person", keep=keep_session_id)
        audit.record(self.db.session, "sessions_revoked", "others", person_id=person_id, count=ended)
        if ended:
            self.db.emit(events.SESSIONS_ENDED, events.SessionsEnded(person_id=person_id, reason="revoked_by_person"))
        self.db.commit()
        return {"revoked": ended}

    # -- proofing --------------------------------------------------------------------------
    @rpc
    def start_liveness(self, person_id: str) -> dict:
        """A liveness challenge for proofing (head turns to perform, single use, expiring)."""
        person = self.people.usable(person_id)
        self.proofs.refuse_if_locked(person, Reason.FACE_PROOFING_LOCKED)
        row = self.proofs.new_challenge(person_id, "proofing")
        self.db.commit()
        return self.proofs.challenge_answer(row)

    @rpc
    def proof_face(self, person_id: str, challenge_id: str | None = None, frames: list[str] | None = None,
                   video: str | None = None, selfie: str | None = None, id_portrait: str | None = None) -> dict:
        """Prove the person's face to the configured authority: frames (base64
        images, in time order) or a short video answering ``challenge_id``, or a
        selfie where uploads are allowed (``id_portrait`` only for the
        development provider). Answers whether it matched, the level, and a
        ``proof_id`` to step up with (issue a certificate, change the phone)."""
        person = self.people.usable(person_id)
        proofs = self.proofs
        proofs.refuse_if_locked(person, Reason.FACE_PROOFING_LOCKED)
        portrait = decode_base64(id_portrait, "id_portrait", self.settings.max_image_bytes) if id_portrait else None
        capture = proofs.capture(person_id, "proofing", challenge_id, frames, video, selfie)
        person = self.people.usable(person_id)
        if not capture.passed:
            proofs.record_failed_capture(person, capture)
            proofs.count_failure(person_id)
            self.db.commit()
            return {"matched": False, "liveness_passed": False, "reasons": list(capture.reasons), "proof_id": None,
                    "assurance_level": person.assurance_level}
        proof, reasons = proofs.prove(person, capture, portrait)
        if not proof.matched:
            proofs.count_failure(person_id)
        frozen = None
        if proof.matched and person.status == "pending_takeover":
            frozen = take_back(self.people, person, parse_level(proof.level), self.certificates, self.sessions,
                               self.db.emit)
        elif proof.matched:
            self.db.emit(events.PERSON_VERIFIED,
                         events.PersonVerified(person_id=person.id, assurance_level=person.assurance_level))
        self.db.commit()
        if frozen is not None:
            log.warning("ID number %s taken back from person %s by person %s", person.id_masked, frozen.id, person.id)
        return {"matched": proof.matched, "liveness_passed": capture.face.live, "reasons": list(reasons),
                "proof_id": proof.id if proof.matched else None, "assurance_level": person.assurance_level,
                "score": round(proof.score, 4), "score_kind": proof.score_kind, "threshold": proof.threshold,
                "provider": proof.provider}

    @rpc
    def delete_face_data(self, person_id: str) -> dict:
        """Erase the person's proofed face (images are never kept). Face
        willingness then needs a new proof."""
        person = self.people.get(person_id)
        had = person.face_encoding_sealed is not None
        person.face_encoding_sealed = None
        person.updated_at = utcnow()
        audit.record(self.db.session, "face_data_deleted", "ok" if had else "nothing_stored", person_id=person_id)
        self.db.commit()
        return {"person_id": person_id, "deleted": had}

    @rpc
    def change_phone(self, person_id: str, phone_challenge_id: str, proof_id: str | None = None) -> dict:
        """Move to a new phone: a confirmed code for it and a step-up proof."""
        person = self.people.active(person_id, lock=True)
        self.registrations.change_phone(person, phone_challenge_id, self.proofs, proof_id)
        self.db.commit()
        return {"person_id": person_id, "phone_masked": person.phone_masked}

    @rpc
    def person_status(self, person_id: str) -> dict:
        """Where a person stands (masked, no secrets): account status, assurance
        level, face and certificate, and the next step: ``proofing``,
        ``certificate`` or ``ready`` (``frozen`` for a frozen account). Reading
        it changes nothing. A step-up proof's id is never in it: only the
        answer of the face check that made it carries it."""
        person = self.people.get(person_id)
        session = self.db.session
        current = certificates.active_certificate(session, person_id)
        face_ok = person.face_encoding_sealed is not None
        if person.status == "frozen":
            step = "frozen"
        elif not face_ok or person.status == "pending_takeover":
            step = "proofing"
        elif current is None or parse_level(current.assurance_level).rank < self.people.level(person).rank:
            step = "certificate"
        else:
            step = "ready"
        return {"person_id": person_id, "name_masked": person.name_masked, "id_masked": person.id_masked,
                "phone_masked": person.phone_masked, "status": person.status,
                "assurance_level": person.assurance_level, "face_verified": face_ok,
                "liveness_passed": person.liveness_passed_at is not None,
                "liveness_required": self.settings.liveness_required, "upload_allowed": self.proofs.upload_allowed,
                "next_step": step,
                "certificate": None if current is None else {
                    "serial": current.serial, "not_after": iso(current.not_after),
                    "assurance_level": current.assurance_level}}

    # -- certificates ------------------------------------------------------------------------
    @rpc
    def issue_certificate(self, person_id: str, proof_id: str | None = None) -> dict:
        """Issue the person's signing certificate, stating their assurance
        level, with a fresh step-up proof (``proof_id`` from ``proof_face``); the
        active one is revoked as superseded. Without ``proof_id`` it answers
        the active certificate, if any (nothing is issued on a session alone)."""
        person = self.people.active(person_id, lock=True)
        current = certificates.active_certificate(self.db.session, person_id)
        if proof_id is None:
            if current is None:
                raise Forbidden(Reason.STEP_UP_REQUIRED)
            return self.certificates.answer(current)
        proof = self.proofs.consume(person_id, proof_id, "certificate")
        name, id_number = self.people.unsealed(person, "name"), self.people.unsealed(person, "id_number")
        issuing = self.certificates
        try:
            row = issuing.issue(person_id, name, self.keys.blind_index.digest("certificate_subject", id_number),
                                parse_level(proof.level), proof.id, self.settings.person_validity)
            self.db.commit()
        except BaseException:
            issuing.keys.discard_unrecorded()  # a key made for a certificate never recorded is no one's
            raise
        issuing.keys.recorded()
        return issuing.answer(row)

    @rpc
    def revoke_certificate(self, person_id: str, reason: str, actor: str = "person") -> dict:
        """Revoke the person's active certificate. ``reason``: an RFC 5280
        reason name (key_compromise for a reported loss, privilege_withdrawn
        for an admin action, cessation_of_operation for a closed account)."""
        if reason not in certificates.REVOCATION_REASONS:
            raise InvalidInput("reason", "allowed_values",
                               f"expected one of {', '.join(certificates.REVOCATION_REASONS)}")
        if actor not in ACTORS:
            raise InvalidInput("actor", "allowed_values", f"expected one of {', '.join(ACTORS)}")
        self.people.get(person_id)
        row = certificates.active_certificate(self.db.session, person_id)
        if row is None:
            raise NotFound("active_certificate", person_id)
        self.certificates.revoke(row, reason, actor)
        self.db.commit()
        return {"serial": row.serial, "revoked_at": iso(row.revoked_at), "reason": reason}

    @rpc
    def current_certificate(self, person_id: str) -> dict:
        """The person's active signing certificate (public part), its chain and level."""
        self.people.active(person_id)
        row = certificates.active_certificate(self.db.session, person_id)
        if row is None:
            raise NotFound("active_certificate", person_id)
        return dict(self.certificates.answer(row), status="good", not_after=iso(row.not_after))

    @rpc
    def crl(self, ca_name: str = "issuing") -> dict:
        """The DER CRL (base64) of the issuing CA: the current one, kept until a
        revocation or its nextUpdate draws near (then a new one, numbered by the
        database); ``ca_name='root'`` gives the offline root's stored CRL."""
        if ca_name == "root":
            if self.authority.material.root_crl_der is None:
                raise NotFound("crl", "root")
            return {"crl_der": b64(self.authority.material.root_crl_der)}
        if ca_name != "issuing":
            raise InvalidInput("ca_name", "allowed_values", "expected issuing or root")
        der = certificates.current_crl(self.db.session, self.authority.material)
        self.db.commit()
        return {"crl_der": b64(der)}

    @rpc
    def ocsp(self, request_der: str) -> dict:
        """RFC 6960 OCSP for certificates of the issuing CA (base64 DER in and
        out), signed by the delegated OCSP responder."""
        request = decode_base64(request_der, "request_der", 16 * 1024)
        lookup = certificates.status_lookup(self.db.session, self.authority.material)
        return {"response_der": b64(build_delegated_ocsp_response(self.authority.material, request, lookup))}

    @rpc
    def revocation_data(self, serials: list) -> dict:
        """For signing's PAdES B-LTA (services/signing/pades.py): an OCSP response (base64 DER)
        for each listed certificate and the platform TSA's, and the root's CRL, in one call
        instead of an HTTP fetch through the gateway for each (:func:`certificates.revocation_data`)."""
        found = certificates.revocation_data(self.db.session, self.authority.material, serials)
        return {"ocsp_der": [b64(der) for der in found["ocsp"]], "crl_der": [b64(der) for der in found["crls"]]}

    @rpc
    def certificate_status(self, serial: str) -> dict:
        """good / revoked (with time and reason) / unknown for a hex serial."""
        value = certificates.serial_int(serial.lower())
        row = self.db.session.get(certificates.Certificate, certificates.serial_hex(value))
        if row is None:
            known = self.authority.material.platform_status(value)
            return {"serial": certificates.serial_hex(value), "status": "good" if known else "unknown"}
        answer = {"serial": row.serial, "status": row.status if row.status == certificates.REVOKED else "good",
                  "person_id": row.person_id, "not_after": iso(row.not_after), "assurance_level": row.assurance_level}
        if row.status == certificates.REVOKED:
            answer.update(revoked_at=iso(row.revoked_at), reason=row.revocation_reason)
        return answer

    @rpc
    def timestamp(self, request_der: str) -> dict:
        """The platform's RFC 3161 time-stamp authority (base64 DER TimeStampReq
        in, TimeStampResp out); served over HTTP by the gateway at /tsa."""
        request = decode_base64(request_der, "request_der", 4096)
        return {"response_der": b64(self.authority.tsa.respond(request))}

    @rpc
    def pki_certificates(self) -> dict:
        """Public CA material (PEM): root, issuing CA, TSA, OCSP responder, platform service."""
        m = self.authority.material
        pem = lambda cert: ca.certificate_to_pem(cert).decode()  # noqa: E731
        return {"root_pem": pem(m.root), "issuing_pem": pem(m.issuing.certificate), "tsa_pem": pem(m.tsa),
                "ocsp_pem": pem(m.ocsp_responder.certificate), "service_pem": pem(m.service)}

    # -- other services' questions ---------------------------------------------------------------
    @rpc
    def contact(self, person_id: str) -> dict:
        """For notify only: where to send a person's SMS and the name to address them by."""
        person = self.people.get(person_id)
        return {"phone": self.people.unsealed(person, "phone"), "name": self.people.unsealed(person, "name")}

    @rpc
    def contacts(self, person_ids: list) -> dict:
        """For notify only: :meth:`contact` of each of ``person_ids`` (at most
        ``CONTACTS_PER_CALL``) in one call, ``{person_id: {phone, name} | None}``, None
        for a person identity does not know (a flow's notice goes to every party:
        one RPC, not one a party)."""
        if not isinstance(person_ids, list) or not 1 <= len(person_ids) <= CONTACTS_PER_CALL:
            raise InvalidInput("person_ids", "length", f"expected a list of 1 to {CONTACTS_PER_CALL} person ids")
        if not all(isinstance(person_id, str) and 0 < len(person_id) <= 64 for person_id in person_ids):
            raise InvalidInput("person_ids", "type", "expected person ids (strings of 1 to 64 characters)")
        answer: dict[str, dict | None] = {}
        for person_id in dict.fromkeys(person_ids):
            try:
                person = self.people.get(person_id)
            except NotFound:
                answer[person_id] = None
                continue
            answer[person_id] = {"phone": self.people.unsealed(person, "phone"),
                                 "name": self.people.unsealed(person, "name")}
        return answer

    @rpc
    def party_details(self, person_id: str) -> dict:
        """For documents only: the real name, ID number and phone a receipt
        opened from this person's QR invite is filled with."""
        person = self.people.active(person_id)
        return {field: self.people.unsealed(person, field) for field in ("name", "id_number", "phone")}

    @rpc
    def person_matches(self, person_id: str, name: str, id_number: str) -> dict:
        """For signing only: is ``person_id`` the active person a document names
        (real name and ID number)? A yes or no, never what differs."""
        wanted_name, id_index = self.people.named(name, id_number)
        person = self.people.get(person_id)
        matches = (person.status == "active" and hmac.compare_digest(person.id_number_index, id_index)
                   and self.people.has_name(person, wanted_name))
        return {"person_id": person_id, "matches": bool(matches)}

    @rpc
    def find_person(self, name: str, id_number: str) -> dict:
        """For signing only: the active person a document names (same real name
        and ID number); NotFound when no such person holds that ID number."""
        wanted_name, id_index = self.people.named(name, id_number)
        person = self.people.holder_of(id_index)
        if person is None or not self.people.has_name(person, wanted_name):
            raise NotFound("person", "named by the document")
        return {"person_id": person.id}

    @rpc
    def report_profile(self, person_id: str, serial: str | None = None) -> dict:
        """For the signing report (签约报告): the person's name, masked ID
        number and phone, every certificate (public fields, level) and how
        their identity was checked: the proof behind certificate ``serial``
        (else behind the newest certificate): provider, request id, score,
        liveness, level."""
        person = self.people.get(person_id)
        session = self.db.session
        rows = session.execute(select(certificates.Certificate).where(certificates.Certificate.person_id == person_id)
                               .order_by(certificates.Certificate.issued_at)).scalars().all()
        certs = []
        for row in rows:
            parsed = ca.certificate_from_pem(row.certificate_pem.encode())
            certs.append({"serial": row.serial, "issuer": parsed.issuer.rfc4514_string(),
                          "subject_cn": parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
                          "not_before": iso(row.not_before), "not_after": iso(row.not_after), "status": row.status,
                          "assurance_level": row.assurance_level})
        chosen = next((row for row in rows if row.serial == serial), rows[-1] if rows else None)
        proof = session.get(IdentityProof, chosen.proof_id) if chosen is not None and chosen.proof_id else None
        level = chosen.assurance_level if chosen is not None else person.assurance_level
        return {
            "person_id": person_id, "name": self.people.unsealed(person, "name"), "id_number_masked": person.id_masked,
            "phone_masked": person.phone_masked, "registered_at": iso(person.created_at), "certificates": certs,
            "identity_check": {
                "assurance_level": level,
                "provider": proof.provider if proof else person.proofing_provider,
                "request_id": proof.request_id if proof else person.proofing_request_id,
                "score": proof.score if proof else None, "score_kind": proof.score_kind if proof else None,
                "threshold": proof.threshold if proof else None,
                "liveness": "passed" if proof is not None and proof.live else "not_performed",
                "checked_at": iso(proof.created_at) if proof else iso(person.proofed_at),
                "account_status": person.status,
            },
        }

    # -- willingness and remote signing -------------------------------------------------------------
    @rpc
    def start_willingness(self, person_id: str, digest: str, method: str, document_title: str | None = None) -> dict:
        """意愿认证 for exactly one SHA-256 ``digest``: ``sms`` sends a code to the
        registered phone; ``face`` answers a liveness challenge to perform."""
        answer = self.willingness.start(person_id, digest, method, document_title)
        self.db.commit()
        self.metrics.inc("willingness", "Willingness checks", method=method, outcome="started")
        return answer

    @rpc
    def new_willingness_challenge(self, willingness_id: str, person_id: str) -> dict:
        """Another liveness challenge for a pending face check."""
        answer = self.willingness.new_challenge(willingness_id, person_id)
        self.db.commit()
        return answer

    @rpc
    def confirm_willingness(self, willingness_id: str, code: str | None = None, selfie: str | None = None,
                            person_id: str | None = None, frames: list[str] | None = None,
                            video: str | None = None) -> dict:
        """Check the SMS code, or the live face against the proofed one, and
        issue a single-use grant for the digest. ``person_id``, when given (the
        gateway gives the session's), must be the check's person."""
        answer = self.willingness.confirm(willingness_id, code, selfie, frames, video, person_id)
        self.db.commit()
        return answer

    @rpc
    def sign_digest(self, grant: str, person_id: str, digest: str, timestamp: bool = False) -> dict:
        """ECDSA-sign ``digest`` (64 hex, SHA-256) with the person's key, only with
        a valid grant of that person for that digest (:mod:`.willingness`).

        ``timestamp``: also stamp the signature with the platform TSA
        (``timestamp_token``, base64 DER, over the SHA-256 of the signature
        value, RFC 3161 as a CAdES signature time-stamp), so the signer needs
        no second trip to the TSA. Stamped before the grant's use commits: if
        the TSA fails, the grant is not spent."""
        certificate, signature = self.willingness.sign_digest(grant, person_id, digest)
        answer = dict(self.certificates.answer(certificate), signature=signature)
        if timestamp:
            failpoint("identity.stamping_a_signature")
            try:
                token = self.authority.tsa.token(hashlib.sha256(base64.b64decode(signature)).digest())
            except Exception as exc:  # the TSA key or its token: the grant stays unspent
                self.db.session.rollback()
                log.exception("the platform TSA could not stamp a signature")
                raise Unavailable("tsa", f"time stamp failed: {type(exc).__name__}") from exc
            answer["timestamp_token"] = b64(token)
        self.db.commit()
        return answer

    # -- keys on the token -------------------------------------------------------------------------------
    @timer(interval=RECONCILE_INTERVAL_SECONDS)
    def reconcile_person_keys(self) -> int:
        """Destroy person keys on the token that no active certificate names (a process died
        between generating one and recording it; a revocation's destroy was lost); one replica
        at a time (lease). The key store's calls run in a thread (listing a token reads every key)."""
        if self.custody.store is None or not acquire(self.db.session, "reconcile_person_keys", self._holder,
                                                 timedelta(seconds=RECONCILE_INTERVAL_SECONDS * 2)):
            return 0
        return self.run_key_reconciliation()

    def run_key_reconciliation(self, dry_run: bool = False) -> int:
        done = self.person_keys.reconcile(self.db.session, dry_run, offload=tpool.execute)
        if done is None:
            return 0
        if done.destroyed:
            self.metrics.inc("person_keys_reclaimed", "Person keys on the token no active certificate named",
                             amount=len(done.destroyed))
        return len(done.destroyed)

    # -- audit ---------------------------------------------------------------------------------------
    @rpc
    def audit_records(self, person_id: str) -> list:
        """The person's audit trail, oldest first (ids and masked values only)."""
        self.people.get(person_id)
        return audit.records_of(self.db.session, person_id)

