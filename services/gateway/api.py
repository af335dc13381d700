"""The public HTTP API (``/api/v1``). Each route checks the request's shape,
takes the acting person from the session (never from the body), calls one
service over RPC and returns its answer. Business rules live in the services.

Sessions: an opaque token identity issues at registration or login and
records server-side (services/identity/sessions.py). API clients send it as
``Authorization: Bearer <token>`` (the JSON answer of login and registration
carries it); the web pages never see it: those two answers also set it as an
HttpOnly cookie, which every tab of the browser sends (services/gateway/
session_cookie.py: its flags, and the Origin check, 403 ``csrf_origin``, on
the state-changing requests it authenticates). A bearer header wins over the
cookie. Identity says whose session it is, and the gateway remembers its
answer for a few seconds (services/gateway/session_cache.py) while it hears
identity's ``sessions_ended`` events, so a logout, a session ended from
another device or a frozen account is refused at once (403 ``session_*`` /
``account_frozen``; a cookie naming it is cleared in that answer).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.common import listing
from services.common.errors import Forbidden, NotFound
from services.common.reasons import Reason
from services.gateway import my_files
from services.gateway.responses import BODY, SESSION, binary, errors
from services.gateway.session_cache import SessionCache
from services.gateway.session_cookie import SessionCookie

USER_AGENT_MAX = 200

router = APIRouter(prefix="/api/v1")


def rpc(request: Request):
    return request.app.state.rpc


def session_cookie(request: Request) -> SessionCookie:
    return request.app.state.session_cookie


@dataclass(frozen=True)
class CurrentSession:
    person_id: str
    session_id: str
    from_cookie: bool  # the web pages' cookie, not a bearer header, named it


def current_session(request: Request, authorization: str | None = Header(default=None)) -> CurrentSession:
    """The session of a bearer header or, without one, of the web pages' cookie
    (a state change it authenticates must come from a page of this site)."""
    cookie = session_cookie(request)
    if authorization and authorization.startswith("Bearer "):
        token, from_cookie = authorization[len("Bearer "):], False
    elif token := cookie.token(request):
        cookie.check_state_change(request)
        from_cookie = True
    else:
        raise Forbidden(Reason.SESSION_REQUIRED)
    cache = session_cache(request)
    remembered = cache.get(token)
    if remembered is not None:
        return CurrentSession(remembered.person_id, remembered.session_id, from_cookie)
    mark = cache.mark()
    try:
        answer = rpc(request).call("identity", "session_person", token=token)
    except Forbidden:
        if from_cookie:  # the cookie names a session that has ended: the 403 clears it (app.py)
            request.state.clear_session_cookie = True
        raise
    cache.put(token, answer["person_id"], answer["session_id"], mark)
    return CurrentSession(answer["person_id"], answer["session_id"], from_cookie)


def session_cache(request: Request) -> SessionCache:
    return request.app.state.session_cache


def _sessions_ended(request: Request, person_id: str) -> None:
    """This process forgets the person's sessions before answering (others hear sessions_ended)."""
    session_cache(request).forget_person(person_id)


def current_person(session: CurrentSession = Depends(current_session)) -> str:
    return session.person_id


def _user_agent(request: Request) -> str | None:
    return (request.headers.get("user-agent") or "")[:USER_AGENT_MAX] or None


def _session_answer(person: dict) -> dict:
    """identity's ``session`` answer as the API gives it: whose it is, the token, until when."""
    return dict(person["session"], person_id=person["person_id"])


PDF = binary("application/pdf", "the PDF", {"X-Content-SHA256": "the PDF's SHA-256 (hex)"})
EVIDENCE_HEADERS = {"Content-Disposition": "attachment; filename=\"evidence-<flow id>.zip\"",
                    "X-Content-SHA256": "the package's SHA-256 (hex)"}


def _pdf_response(answer: dict) -> Response:
    """A service's ``{pdf: base64, sha256}`` answer as the PDF itself."""
    return Response(base64.b64decode(answer["pdf"]), media_type="application/pdf",
                    headers={"X-Content-SHA256": answer["sha256"]})


# -- request bodies ---------------------------------------------------------
class PhoneCodeRequest(BaseModel):
    phone: str = Field(..., description="mainland mobile number; +86, spaces and hyphens allowed")
    purpose: str = Field("phone_confirmation", description="phone_confirmation")


class PhoneCodeConfirmation(BaseModel):
    code: str = Field(..., description="the 6-digit code from the SMS")


class Registration(BaseModel):
    name: str
    id_number: str
    phone: str
    phone_challenge_id: str


class Login(BaseModel):
    phone_challenge_id: str = Field(..., description="a phone code challenge confirmed just before")


class FaceProof(BaseModel):
    challenge_id: str | None = Field(None, description="the liveness challenge the frames answer (POST /me/liveness)")
    frames: list[str] | None = Field(None, description="base64 JPEG/PNG frames of the live capture, in time order")
    video: str | None = Field(None, description="or a short base64 MP4/WebM video of it")
    selfie: str | None = Field(None, description="a selfie file, only where the platform allows uploads")
    id_portrait: str | None = Field(None, description="development provider (self_declared) only")


class StepUp(BaseModel):
    proof_id: str | None = Field(None, description="a fresh matched face proof (POST /me/face)")


class PhoneChange(BaseModel):
    phone_challenge_id: str = Field(..., description="a phone code for the new phone, confirmed just before")
    proof_id: str = Field(..., description="a fresh matched face proof (POST /me/face)")


class DraftIn(BaseModel):
    template_id: str
    values: dict[str, Any]
    initiator_role: str | None = None


class DraftUpdate(BaseModel):
    values: dict[str, Any]


class AttachmentIn(BaseModel):
    image: str = Field(..., description="base64 JPEG, PNG or WebP")
    label: str = ""
    field: str | None = Field(None, description="the template's image field (default: its first)")


class PartyIn(BaseModel):
    role: str = Field(..., description="the role as the document names it (出借方) or its id (lender)")
    person_id: str | None = Field(None, description="optional: signing finds the person the document names")
    signature_field: str | None = Field(None, description="optional: the role's own field")


class FlowIn(BaseModel):
    document_id: str
    parties: list[PartyIn] = Field(..., description="in signing order, the initiator (you) first")
    expires_in_hours: int = 72
    repayment_date: str | None = None


class SignatureIn(BaseModel):
    signature_image: str = Field(..., description="base64 PNG of the handwritten signature")
    method: str = Field(..., description="sms or face")


class WillingnessConfirmation(BaseModel):
    code: str | None = Field(None, description="the SMS code (sms method)")
    frames: list[str] | None = Field(None, description="face method: base64 frames answering the check's challenge")
    video: str | None = Field(None, description="face method: or a short video")
    selfie: str | None = Field(None, description="face method: a selfie file, only where uploads are allowed")


class SignIn(BaseModel):
    pending_id: str
    grant: str


class ReasonIn(BaseModel):
    reason: str
    method: str = "sms"


class MethodIn(BaseModel):
    method: str = "sms"


class RepaymentIn(BaseModel):
    amount: str = Field(..., description="yuan, at most to the fen: 1500 or 1500.50")
    date: str = Field(..., description="the day it was received, YYYY-MM-DD (not a future day)")
    method: str = Field(..., description="银行转账, 微信转账, 支付宝转账, 现金 or 其他")


class ExtensionIn(BaseModel):
    repayment_date: str = Field(..., description="the new repayment date, YYYY-MM-DD, after today and the current one")
    annual_rate: str | None = Field(None, description="the rate a year from the current repayment date on, in "
                                                      "percent (3.65); default the rate in force")


class GrantIn(BaseModel):
    grant: str


class PdfIn(BaseModel):
    pdf: str = Field(..., description="base64 PDF")


# -- identity ------------------------------------------------------------------
@router.post("/phone-codes", tags=["identity"], status_code=201, responses=errors(BODY, 429))
def request_phone_code(body: PhoneCodeRequest, request: Request) -> dict:
    """Send a 6-digit confirmation code to a phone (expires in 5 minutes)."""
    return rpc(request).call("identity", "request_phone_code", phone=body.phone, purpose=body.purpose)


@router.post("/phone-codes/{challenge_id}/confirm", tags=["identity"], responses=errors(BODY, 403, 404, 429))
def confirm_phone_code(challenge_id: str, body: PhoneCodeConfirmation, request: Request) -> dict:
    return rpc(request).call("identity", "confirm_phone_code", challenge_id=challenge_id, code=body.code)


@router.post("/persons", tags=["identity"], status_code=201, responses=errors(BODY, 403, 404, 409))
def register(body: Registration, request: Request, response: Response) -> dict:
    """Real-name registration (实名认证) after the phone is confirmed: the
    authority checks that the name and ID number belong together. Answers the
    person (masked) and a session (also set as the web pages' cookie)."""
    session_cookie(request).check_login(request)
    person = rpc(request).call("identity", "register", user_agent=_user_agent(request), **body.model_dump())
    session_cookie(request).give(response, request, person["session"])
    return dict(person, session=_session_answer(person))


@router.post("/sessions", tags=["identity"], status_code=201, responses=errors(BODY, 403, 404))
def login(body: Login, request: Request, response: Response) -> dict:
    """Log in with a phone code confirmed just before; answers a session (also
    set as the web pages' cookie)."""
    session_cookie(request).check_login(request)
    person = rpc(request).call("identity", "login", phone_challenge_id=body.phone_challenge_id,
                               user_agent=_user_agent(request))
    session_cookie(request).give(response, request, person["session"])
    return _session_answer(person)


@router.post("/sessions/current/revoke", tags=["identity"], responses=errors(SESSION, 413))
def logout(request: Request, response: Response, session: CurrentSession = Depends(current_session)) -> dict:
    """Log out: this session ends now (and the cookie that named it is cleared)."""
    ended = rpc(request).call("identity", "revoke_session", person_id=session.person_id,
                              session_id=session.session_id)
    _sessions_ended(request, session.person_id)
    if session.from_cookie:
        session_cookie(request).clear(response, request)
    return ended


@router.get("/me/sessions", tags=["identity"], responses=errors(SESSION))
def my_sessions(request: Request, session: CurrentSession = Depends(current_session)) -> list:
    """Your sessions that have not ended (this one marked ``current``)."""
    return rpc(request).call("identity", "list_sessions", person_id=session.person_id,
                             current_session_id=session.session_id)


@router.post("/me/sessions/{session_id}/revoke", tags=["identity"], responses=errors(SESSION, 404, 413, 422))
def revoke_my_session(session_id: str, request: Request, session: CurrentSession = Depends(current_session)) -> dict:
    ended = rpc(request).call("identity", "revoke_session", person_id=session.person_id, session_id=session_id)
    _sessions_ended(request, session.person_id)
    return ended


@router.post("/me/sessions/revoke-others", tags=["identity"], responses=errors(SESSION, 413))
def revoke_other_sessions(request: Request, session: CurrentSession = Depends(current_session)) -> dict:
    """End every session of yours but this one."""
    ended = rpc(request).call("identity", "revoke_other_sessions", person_id=session.person_id,
                              keep_session_id=session.session_id)
    _sessions_ended(request, session.person_id)
    return ended


@router.get("/me", tags=["identity"], responses=errors(SESSION))
def me(request: Request, person_id: str = Depends(current_person)) -> dict:
    """Your real-name status (masked), assurance level and the next step:
    proofing, certificate or ready."""
    return rpc(request).call("identity", "person_status", person_id=person_id)


@router.post("/me/liveness", tags=["identity"], status_code=201, responses=errors(SESSION, 413, 429))
def start_liveness(request: Request, person_id: str = Depends(current_person)) -> dict:
    """A liveness challenge (head turns) for the face proof."""
    return rpc(request).call("identity", "start_liveness", person_id=person_id)


@router.post("/me/face", tags=["identity"], responses=errors(SESSION, BODY, 404, 409, 429))
def proof_face(body: FaceProof, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Prove your face to the authority: the frames of a live capture answering
    the challenge. Answers whether it matched, your assurance level and, on a
    match, a ``proof_id`` that unlocks one certificate or phone change."""
    return rpc(request).call("identity", "proof_face", person_id=person_id, **body.model_dump())


@router.post("/me/certificate", tags=["identity"], status_code=201, responses=errors(SESSION, BODY, 404))
def issue_certificate(request: Request, body: StepUp | None = None, person_id: str = Depends(current_person)) -> dict:
    """Your signing certificate, stating your assurance level; a new one needs a fresh face proof."""
    return rpc(request).call("identity", "issue_certificate", person_id=person_id,
                             proof_id=body.proof_id if body is not None else None)


@router.post("/me/phone", tags=["identity"], responses=errors(SESSION, BODY, 404, 409))
def change_phone(body: PhoneChange, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Move to a new phone: its confirmed code and a fresh face proof."""
    return rpc(request).call("identity", "change_phone", person_id=person_id, **body.model_dump())


@router.post("/willingness/{willingness_id}/confirm", tags=["identity"], responses=errors(SESSION, BODY, 404, 429))
def confirm_willingness(willingness_id: str, body: WillingnessConfirmation, request: Request,
                        person_id: str = Depends(current_person)) -> dict:
    """Prove willingness (意愿认证) with the SMS code or a live face; answers a single-use grant."""
    return rpc(request).call("identity", "confirm_willingness", willingness_id=willingness_id,
                             person_id=person_id, **body.model_dump())


@router.post("/willingness/{willingness_id}/challenge", tags=["identity"], status_code=201,
             responses=errors(SESSION, 404, 413, 422, 429))
def new_willingness_challenge(willingness_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """A fresh liveness challenge for a face willingness check (after a failed attempt)."""
    return rpc(request).call("identity", "new_willingness_challenge", willingness_id=willingness_id,
                             person_id=person_id)


# -- documents -------------------------------------------------------------------
@router.get("/templates", tags=["documents"], responses=errors())
def list_templates(request: Request) -> list:
    return rpc(request).call("documents", "list_templates")


@router.post("/documents", tags=["documents"], status_code=201, responses=errors(SESSION, BODY, 404))
def create_document(body: DraftIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("documents", "create_draft", template_id=body.template_id, values=body.values,
                             initiator_role=body.initiator_role, owner_person_id=person_id)


def _own_document(request: Request, document_id: str, person_id: str) -> dict:
    """The document, if the session's person made it (otherwise NotFound,
    so a document id reveals nothing to anyone else)."""
    document = rpc(request).call("documents", "get_document", document_id=document_id)
    if document.get("owner_person_id") != person_id:
        raise NotFound("document", document_id)
    return document


@router.patch("/documents/{document_id}", tags=["documents"], responses=errors(SESSION, BODY, 404, 409))
def update_document(document_id: str, body: DraftUpdate, request: Request,
                    person_id: str = Depends(current_person)) -> dict:
    _own_document(request, document_id, person_id)
    return rpc(request).call("documents", "update_draft", document_id=document_id, values=body.values)


@router.post("/documents/{document_id}/attachments", tags=["documents"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409))
def add_attachment(document_id: str, body: AttachmentIn, request: Request,
                   person_id: str = Depends(current_person)) -> dict:
    _own_document(request, document_id, person_id)
    return rpc(request).call("documents", "add_attachment", document_id=document_id, image=body.image,
                             label=body.label, field=body.field)


@router.post("/documents/{document_id}/render", tags=["documents"], responses=errors(SESSION, 404, 409, 413, 422))
def render_document(document_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    # documents refuses anyone else's document as NotFound, as _own_document would, in the same call
    return rpc(request).call("documents", "render", document_id=document_id, owner_person_id=person_id)


@router.get("/documents/{document_id}", tags=["documents"], responses=errors(SESSION, 404, 422))
def get_document(document_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    return _own_document(request, document_id, person_id)


@router.get("/documents/{document_id}/pdf", tags=["documents"], response_class=Response,
            responses={**PDF, **errors(SESSION, 404, 422)})
def get_document_pdf(document_id: str, request: Request, person_id: str = Depends(current_person)) -> Response:
    """The rendered, unsigned PDF, for its maker to review before signing starts."""
    _own_document(request, document_id, person_id)
    return _pdf_response(rpc(request).call("documents", "get_pdf", document_id=document_id))


# -- 我的文件 --------------------------------------------------------------------------
STATUS_FILTER = "one or more of " + ", ".join(listing.STATUSES) + " (repeated, or comma-separated)"


@router.get("/me/files", tags=["documents"], responses=errors(SESSION, 422))
def my_files_page(
    request: Request, person_id: str = Depends(current_person),
    status: list[str] | None = Query(None, description=STATUS_FILTER),
    template: str | None = Query(None, description="a template id: iou, receipt, rental ..."),
    q: str | None = Query(None, description="part of the title or of a counterparty's name"),
    cursor: str | None = Query(None, description="the next_cursor of the previous page"),
    limit: str | None = Query(None, description=f"items per page, 1 to {listing.MAX_PAGE} (default "
                                                f"{listing.DEFAULT_PAGE})"),
) -> dict:
    """我的文件: everything you made or are a party to, newest first: your
    drafts and the flows you sign in, each with its status as you see it
    (``to_sign``: your turn; ``waiting_others``: the other party's), your
    role, the counterparty (masked), the amount and due date where the
    template has them. ``next_cursor`` is null on the last page."""
    return my_files.page(rpc(request), my_files.parse(person_id, request.query_params))


# -- receipts from a QR invite (我的二维码) ---------------------------------------
@router.get("/me/receipt-invite", tags=["documents"], responses=errors(SESSION, 422))
def my_receipt_invite(request: Request, role: str = "payee", ttl_seconds: int = 86400,
                      person_id: str = Depends(current_person)) -> dict:
    """Your QR code: whoever scans it opens a receipt with you as payee or payer."""
    return rpc(request).call("documents", "make_receipt_invite", person_id=person_id, role=role,
                             ttl_seconds=ttl_seconds)


@router.get("/receipt-invites/{token}", tags=["documents"], responses=errors(SESSION, 422))
def open_receipt_invite(token: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Who invites (masked name) and on which side of the receipt;
    ``own_invite`` when it is your own code (it is for the other party)."""
    opened = rpc(request).call("documents", "open_receipt_invite", token=token)
    opened["own_invite"] = opened.pop("person_id", None) == person_id
    return opened


@router.post("/receipt-invites/{token}/documents", tags=["documents"], status_code=201,
             responses=errors(SESSION, BODY))
def create_receipt_from_invite(token: str, body: DraftUpdate, request: Request,
                               person_id: str = Depends(current_person)) -> dict:
    """A receipt draft with the inviter and you filled from your real-name
    records; ``values`` holds the other fields (amount, reason, time, remark)."""
    return rpc(request).call("documents", "create_draft_from_invite", token=token, values=body.values,
                             owner_person_id=person_id)


# -- signing ---------------------------------------------------------------------
@router.post("/flows", tags=["signing"], status_code=201, responses=errors(SESSION, BODY, 404, 409))
def start_flow(body: FlowIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Start signing your rendered document. Give each party's role in
    signing order, yours first; signing binds each role to the person the
    document names for it (by real name and ID number)."""
    # anyone else's document is NotFound there (signing asks documents for it as the person's own)
    return rpc(request).call("signing", "start_flow", document_id=body.document_id, initiator_person_id=person_id,
                             parties=[p.model_dump(exclude_none=True) for p in body.parties],
                             expires_in_hours=body.expires_in_hours, repayment_date=body.repayment_date,
                             owner_person_id=person_id)


def _party_view(request: Request, flow_id: str, person_id: str) -> dict:
    """The flow, if the session's person is a party, or a party of the IOU a
    statement (还款确认书, 借款展期协议) is about: the borrower reads the
    repayments the lender confirmed."""
    flow = rpc(request).call("signing", "get_flow", flow_id=flow_id)
    if person_id not in {p["person_id"] for p in flow["parties"]}:
        parent = flow.get("parent_flow_id")
        if not parent or person_id not in {p["person_id"] for p in
                                           rpc(request).call("signing", "get_flow", flow_id=parent)["parties"]}:
            raise Forbidden(Reason.NOT_A_PARTY)
    return flow


@router.post("/flows/{flow_id}/join", tags=["signing"], responses=errors(SESSION, 404, 409, 413, 422))
def join_flow(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Take your place in a flow you were invited to (by SMS) before you
    registered: the document must name you (real name and ID number) for a
    party not yet taken. Answers the flow; 403 not_a_party otherwise."""
    return rpc(request).call("signing", "join_flow", flow_id=flow_id, person_id=person_id)


@router.get("/flows/{flow_id}", tags=["signing"], responses=errors(SESSION, 404, 422))
def get_flow(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    return _party_view(request, flow_id, person_id)


@router.get("/flows/{flow_id}/pdf", tags=["signing"], response_class=Response,
            responses={**PDF, **errors(SESSION, 404, 422)})
def get_flow_pdf(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> Response:
    _party_view(request, flow_id, person_id)
    return _pdf_response(rpc(request).call("signing", "get_signed_pdf", flow_id=flow_id))


@router.post("/flows/{flow_id}/signature", tags=["signing"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409, 429))
def prepare_signature(flow_id: str, body: SignatureIn, request: Request,
                      person_id: str = Depends(current_person)) -> dict:
    """Step 1 of signing: answers the willingness check to complete."""
    return rpc(request).call("signing", "prepare_signature", flow_id=flow_id, person_id=person_id,
                             signature_image=body.signature_image, method=body.method)


@router.post("/flows/{flow_id}/sign", tags=["signing"], responses=errors(SESSION, BODY, 404, 409))
def sign(flow_id: str, body: SignIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "sign", flow_id=flow_id, person_id=person_id,
                             pending_id=body.pending_id, grant=body.grant)


# -- a signed IOU's life: 还款确认, 展期 -------------------------------------------------------
@router.get("/flows/{flow_id}/loan", tags=["signing"], responses=errors(SESSION, 404, 409, 422))
def get_loan(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """Where a signed IOU stands today: principal and interest outstanding,
    each repayment as applied (interest first), each extension, the
    repayment date in force, and the statement being signed, if any
    (409 not_a_loan for a document without a repayment schedule)."""
    _party_view(request, flow_id, person_id)
    return rpc(request).call("signing", "loan", flow_id=flow_id)


@router.post("/flows/{flow_id}/repayments", tags=["signing"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409))
def confirm_repayment(flow_id: str, body: RepaymentIn, request: Request,
                      person_id: str = Depends(current_person)) -> dict:
    """还款确认, by the lender only: answers the flow of a 还款确认书 stating
    the repayment and how it was applied, for the lender to sign
    (``/signature`` then ``/sign`` on that flow, with willingness). It takes
    effect with that signature. Refused: above what is owed on that day, a
    future day, by the borrower (403 lender_only), on a voided IOU, or while
    another statement is being signed (409 statement_pending)."""
    return rpc(request).call("signing", "confirm_repayment", flow_id=flow_id, person_id=person_id,
                             amount=body.amount, date=body.date, method=body.method)


@router.post("/flows/{flow_id}/extensions", tags=["signing"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409))
def propose_extension(flow_id: str, body: ExtensionIn, request: Request,
                      person_id: str = Depends(current_person)) -> dict:
    """展期, by either party: answers the flow of a 借款展期协议; the proposer
    signs it first and the other party accepts by signing it. The rate must be
    under the legal cap on the day (422 rate_cap)."""
    return rpc(request).call("signing", "propose_extension", flow_id=flow_id, person_id=person_id,
                             repayment_date=body.repayment_date, annual_rate=body.annual_rate)


@router.post("/flows/{flow_id}/reminders", tags=["signing"], status_code=201,
             responses=errors(SESSION, 404, 409, 413, 422, 429))
def remind(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """催签: send the party whose turn it is the sign request again (a party of the flow, at most
    once a day; 429 with Retry-After before then)."""
    return rpc(request).call("signing", "remind", flow_id=flow_id, person_id=person_id)


@router.post("/flows/{flow_id}/decline", tags=["signing"], responses=errors(SESSION, BODY, 404, 409))
def decline(flow_id: str, body: ReasonIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "decline", flow_id=flow_id, person_id=person_id, reason=body.reason)


@router.post("/flows/{flow_id}/void-requests", tags=["signing"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409, 429))
def request_void(flow_id: str, body: ReasonIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "request_void", flow_id=flow_id, person_id=person_id,
                             reason=body.reason, method=body.method)


@router.post("/flows/{flow_id}/void-confirmations", tags=["signing"], status_code=201,
             responses=errors(SESSION, BODY, 404, 409, 429))
def confirm_void(flow_id: str, body: MethodIn, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "confirm_void", flow_id=flow_id, person_id=person_id, method=body.method)


@router.post("/flows/{flow_id}/void-rejections", tags=["signing"], responses=errors(SESSION, 404, 409, 413, 422))
def reject_void(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "reject_void", flow_id=flow_id, person_id=person_id)


@router.post("/actions/{pending_id}/complete", tags=["signing"], responses=errors(SESSION, BODY, 404, 409))
def complete_action(pending_id: str, body: GrantIn, request: Request,
                    person_id: str = Depends(current_person)) -> dict:
    return rpc(request).call("signing", "complete_action", pending_id=pending_id, person_id=person_id,
                             grant=body.grant)


@router.post("/verify", tags=["signing"], responses=errors(BODY, 429))
def verify(body: PdfIn, request: Request) -> dict:
    """Check a signed PDF (like Tencent's VerifyPdf): every signature, time stamp
    and chain, and whether the agreement is in force (``document_status``)."""
    return rpc(request).call("signing", "verify", pdf=body.pdf)


@router.get("/documents/{sha256}/status", tags=["signing"], responses=errors(422, 429))
def document_status(sha256: str, request: Request) -> dict:
    """Anyone holding a PDF may ask, by its SHA-256, whether the agreement is
    in force (已生效, 已作废 with the reason …), with the evidence-log leaf that
    set that status and its inclusion proof under a signed checkpoint."""
    return rpc(request).call("signing", "document_status", sha256=sha256)


# -- evidence log (public: anyone can check a proof) ------------------------------
@router.get("/log/checkpoint", tags=["evidence log"], responses=errors())
def log_checkpoint(request: Request) -> dict:
    """The latest signed checkpoint (C2SP signed note) of the evidence log."""
    return rpc(request).call("signing", "checkpoint")


@router.get("/log/public-key", tags=["evidence log"], responses=errors())
def log_public_key(request: Request) -> dict:
    return rpc(request).call("signing", "log_public_key")


@router.get("/log/inclusion/{index}", tags=["evidence log"], responses=errors(404, 422))
def log_inclusion(index: int, request: Request, tree_size: int | None = None) -> dict:
    return rpc(request).call("signing", "inclusion_proof", index=index, tree_size=tree_size)


@router.get("/log/consistency", tags=["evidence log"], responses=errors(422))
def log_consistency(old_size: int, request: Request, new_size: int | None = None) -> dict:
    return rpc(request).call("signing", "consistency_proof", old_size=old_size, new_size=new_size)


@router.post("/flows/{flow_id}/report", tags=["signing"], status_code=201,
             responses=errors(SESSION, 404, 409, 413, 422))
def make_report(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> dict:
    """The signing report (签约报告) of a completed or voided flow: signed JSON and a PDF (base64)."""
    _party_view(request, flow_id, person_id)
    return rpc(request).call("signing", "report", flow_id=flow_id)


@router.get("/flows/{flow_id}/evidence", tags=["signing"], response_class=Response,
            responses={**binary("application/zip", "the evidence package (证据包)", EVIDENCE_HEADERS),
                       **errors(SESSION, 404, 409, 422)})
def get_evidence_package(flow_id: str, request: Request, person_id: str = Depends(current_person)) -> Response:
    """The evidence package (证据包) of a completed or voided flow, for a party:
    one ZIP with the signed PDF, the report, the certificates, CRLs and OCSP
    answers, the log key, the cosigned checkpoint and the witness keys, under a
    signed manifest. ``esign verify PACKAGE.zip`` checks it all offline."""
    _party_view(request, flow_id, person_id)
    answer = rpc(request).call("signing", "evidence_package", flow_id=flow_id)
    return Response(base64.b64decode(answer["package"]), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{answer["filename"]}"',
                             "X-Content-SHA256": answer["sha256"]})
