"""Every reason a ``Forbidden``, ``RateLimited`` or ``Conflict`` can name
(services/common/errors.py): a short stable id, the same on every service,
in the gateway's answers (``message``) and in the web pages, which say each
one in Chinese (services/gateway/web/api.js ``REASONS``;
tests/unit/test_gateway_web.py holds the two lists equal). Detail that
varies (which states were expected, which signature field) goes in the
error's optional ``message``, not in the reason.

A reason that is not listed is a bug where it is raised, and the tests fail
on it (:class:`UnlistedReason` is an error there, see pyproject.toml); a
service of another version may still send one across RPC, so rebuilding the
error only warns.
"""
from __future__ import annotations

import warnings
from enum import StrEnum


class Reason(StrEnum):
    # -- sessions and accounts
    SESSION_REQUIRED = "session_required"  # a route behind a session was called without a token or cookie
    SESSION_INVALID = "session_invalid"  # the token names no session
    SESSION_REVOKED = "session_revoked"  # the session was logged out (here or from another device)
    SESSION_EXPIRED = "session_expired"  # the session was idle too long, or is older than its lifetime
    CSRF_ORIGIN = "csrf_origin"  # a state change the cookie authenticates came from a page of another origin
    ACCOUNT_FROZEN = "account_frozen"  # an authority-proofed person took the account's ID number back
    ACCOUNT_PENDING = "account_pending"  # the account's ID number is held by another: it waits for a face check

    # -- phone codes
    OTP_WRONG_CODE = "otp_wrong_code"  # the code does not match
    OTP_EXPIRED = "otp_expired"  # the code is older than its lifetime
    OTP_LOCKED = "otp_locked"  # too many wrong codes: the code is locked, and new ones wait a while
    OTP_ALREADY_USED = "otp_already_used"  # the code was accepted once already
    OTP_RESEND_TOO_SOON = "otp_resend_too_soon"  # another code for the same phone within the resend interval
    OTP_SEND_LIMIT = "otp_send_limit"  # the phone had its codes for the window
    OTP_NOT_DELIVERABLE = "otp_not_deliverable"  # notify asked for a code already delivered or expired
    PHONE_NOT_CONFIRMED = "phone_not_confirmed"  # the phone challenge was not confirmed (or is for another phone)
    PHONE_CONFIRMATION_EXPIRED = "phone_confirmation_expired"  # the phone was confirmed too long ago
    PHONE_CHALLENGE_USED = "phone_challenge_used"  # the phone confirmation registered or logged in once already

    # -- registration
    PHONE_REGISTERED = "phone_registered"  # an active account has this phone
    ID_NUMBER_REGISTERED = "id_number_registered"  # another account holds the ID number, at a level not taken back
    REGISTRATION_CONFLICT = "registration_conflict"  # a concurrent registration won a unique index

    # -- face checks and step-up
    FACE_NOT_VERIFIED = "face_not_verified"  # no proofed face is kept to compare a face check with
    FACE_PROOFING_LOCKED = "face_proofing_locked"  # too many failed face proofs: locked for a while
    FACE_WILLINGNESS_LOCKED = "face_willingness_locked"  # too many failed face checks: locked for a while
    LIVENESS_CHALLENGE_USED = "liveness_challenge_used"  # the head-turn challenge was filmed once already
    LIVENESS_CHALLENGE_EXPIRED = "liveness_challenge_expired"  # the head-turn challenge is older than its lifetime
    LIVENESS_FAILED = "liveness_failed"  # a face check's capture failed liveness
    FACE_MISMATCH = "face_mismatch"  # a face check's face is not the proofed one
    STEP_UP_REQUIRED = "step_up_required"  # a change of who can sign needs a fresh matched face proof
    STEP_UP_LEVEL_TOO_LOW = "step_up_level_too_low"  # the face proof's assurance is below the step-up level
    STEP_UP_EXPIRED = "step_up_expired"  # the face proof is older than the step-up window
    STEP_UP_USED = "step_up_used"  # the face proof stepped up a change once already

    # -- certificates, willingness, signing grants
    NO_ACTIVE_CERTIFICATE = "no_active_certificate"  # a willingness check for a person without a certificate
    CERTIFICATE_NOT_VALID = "certificate_not_valid"  # the signer's certificate is not good (expired, unknown)
    CERTIFICATE_REVOKED = "certificate_revoked"  # the signer's certificate is revoked
    CERTIFICATE_CHANGED = "certificate_changed"  # a new certificate was issued while a willingness check was pending
    ASSURANCE_TOO_LOW = "assurance_too_low"  # the certificate states less assurance than the flow requires
    WILLINGNESS_USED = "willingness_used"  # the willingness check was confirmed already
    WILLINGNESS_FAILED = "willingness_failed"  # the willingness check failed (too many tries)
    WILLINGNESS_EXPIRED = "willingness_expired"  # the willingness check is older than its lifetime
    GRANT_UNKNOWN = "grant_unknown"  # the signing grant was never issued
    GRANT_FOREIGN_PERSON = "grant_foreign_person"  # the signing grant is another person's
    GRANT_CERTIFICATE_MISMATCH = "grant_certificate_mismatch"  # the signing grant is for another certificate
    GRANT_REPLAYED = "grant_replayed"  # the signing grant signed once already
    GRANT_EXPIRED = "grant_expired"  # the signing grant is older than its lifetime
    GRANT_DIGEST_MISMATCH = "grant_digest_mismatch"  # the signing grant is for another digest

    # -- flows: the state a flow is in, when the action needs another (the message names the expected ones)
    FLOW_DRAFT = "flow_draft"  # not sent yet
    FLOW_WAITING = "flow_waiting"  # still being signed
    FLOW_COMPLETED = "flow_completed"  # signed by every party
    FLOW_DECLINED = "flow_declined"  # a party declined
    FLOW_EXPIRED = "flow_expired"  # its expiry passed (also: a waiting flow past its expiry, before the job ends it)
    FLOW_VOID_REQUESTED = "flow_void_requested"  # a party asked to void it
    FLOW_VOIDED = "flow_voided"  # voided
    FLOW_CANCELLED = "flow_cancelled"  # cancelled: a party's identity was disputed while it was being signed
    # -- flows: who may do what
    FLOW_NOT_EXPIRED = "flow_not_expired"  # the expiry job found a flow whose expiry has not passed
    NOT_A_PARTY = "not_a_party"  # the person is not a party of the flow (nor named for an open place)
    ALREADY_A_PARTY = "already_a_party"  # a person joining a flow holds another place of it
    PARTY_TAKEN = "party_taken"  # the open place was taken by someone else
    NOT_YOUR_TURN = "not_your_turn"  # another party signs first
    YOUR_TURN = "your_turn"  # a reminder asked by the party whose turn it is
    ALREADY_SIGNED = "already_signed"  # a party who signed declines
    REMINDED_TODAY = "reminded_today"  # the flow's party was reminded less than a day ago
    VOID_REQUESTER_CANNOT_CONFIRM = "void_requester_cannot_confirm"  # the void's requester confirms it
    VOID_ALREADY_CONFIRMED = "void_already_confirmed"  # the party confirmed the void once already
    NOT_YOUR_ACTION = "not_your_action"  # the pending action is another person's, or another flow's
    PENDING_ACTION_USED = "pending_action_used"  # the pending action was completed once already
    PENDING_ACTION_EXPIRED = "pending_action_expired"  # the pending action is older than its lifetime
    DOCUMENT_CHANGED_SINCE_PREPARE = "document_changed_since_prepare"  # the PDF changed between prepare and sign

    # -- signatures in the PDF (ISO 32000, PAdES)
    FIELD_NOT_SIGNABLE = "field_not_signable"  # the PDF library refuses to sign the field (the message says why)
    FIELD_ALREADY_SIGNED = "field_already_signed"  # the party's signature field carries a signature
    CERTIFICATION_NOT_FIRST = "certification_not_first"  # a certification signature on a PDF already signed
    NO_SIGNATURES = "no_signatures"  # PAdES B-LTA asked of a PDF without signatures

    # -- IOUs (services/signing/loans.py)
    NOT_A_LOAN = "not_a_loan"  # a repayment or extension of a flow that is a statement, not an IOU
    IDENTITY_DISPUTED = "identity_disputed"  # a statement about an IOU whose party's identity was disputed
    STATEMENT_PENDING = "statement_pending"  # another statement about the IOU is still being signed
    LOAN_REPAID = "loan_repaid"  # a repayment or extension of an IOU repaid in full
    LENDER_ONLY = "lender_only"  # a repayment confirmed by someone other than the lender

    # -- documents and invites
    DOCUMENT_IN_FLOW = "document_in_flow"  # the document is being signed in another flow
    DOCUMENT_CHANGED = "document_changed"  # the document's PDF is not the one the flow read
    DOCUMENT_LOCKED = "document_locked"  # an edit of a document locked for signing
    INVITE_INVALID = "invite_invalid"  # the invite link is malformed, forged, or made with another key
    INVITE_EXPIRED = "invite_expired"  # the invite link is older than its lifetime

    # -- signed tokens (services/common/tokens.py)
    TOKEN_MALFORMED = "token_malformed"  # not a token of ours in shape
    TOKEN_BAD_SIGNATURE = "token_bad_signature"  # the token's MAC does not match
    TOKEN_EXPIRED = "token_expired"  # the token is older than its lifetime

    # -- notify
    DEDUPE_KEY_REUSED = "dedupe_key_reused"  # an SMS's dedupe key was used for another template or phone

    # -- the gateway's rate limits for anonymous routes (services/gateway/limits.py RATE_GROUPS)
    TOO_MANY_REQUESTS_PHONE_CODES = "too_many_requests_phone_codes"  # phone codes sent or confirmed
    TOO_MANY_REQUESTS_VERIFY = "too_many_requests_verify"  # PDFs verified
    TOO_MANY_REQUESTS_DOCUMENT_STATUS = "too_many_requests_document_status"  # documents' statuses asked
    TOO_MANY_REQUESTS_TSA = "too_many_requests_tsa"  # time-stamps asked
    TOO_MANY_REQUESTS_OCSP = "too_many_requests_ocsp"  # OCSP answers asked

    # -- the certificate authority (esign ca)
    CA_EXISTS = "ca_exists"  # a root or issuing CA is in the directory already (the message says which)


class UnlistedReason(UserWarning):
    """A reason not in :class:`Reason`."""


def listed(reason: str) -> Reason | str:
    """``reason`` as its :class:`Reason`; one that is not listed is kept as
    it came, with an :class:`UnlistedReason` warning (see the module docstring)."""
    try:
        return Reason(reason)
    except ValueError:
        warnings.warn(f"{reason!r} is not a listed reason (services/common/reasons.py)", UnlistedReason,
                      stacklevel=3)
        return reason
