"""The whole platform for end-to-end tests and benchmarks, driven over RPC:
people registered against a local identity registry (the authority) and
proved live with the stage clip's performer (tests/support/liveness_clip.py),
documents, flows, signatures with SMS-code or live-face willingness, and the
console SMS outbox the codes are read from. The ``stack`` fixture
(tests/e2e/conftest.py) starts it; bench/sign_rpc.py builds one itself."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import liveness_clip
from tests.support.registry import PERFORMER, write_registry
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
HANDWRITING = None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def handwriting_png() -> str:
    global HANDWRITING
    if HANDWRITING is None:
        import io

        from PIL import Image, ImageDraw

        image = Image.new("RGBA", (240, 90), (255, 255, 255, 0))
        draw = ImageDraw.Draw(image)
        draw.line([(10, 60), (60, 20), (110, 70), (170, 25), (230, 55)], fill=(20, 20, 120, 255), width=5)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        HANDWRITING = b64(buffer.getvalue())
    return HANDWRITING


class Stack:
    def __init__(self, rpc, outbox: Path, gateway_url: str, tmp_path: Path, signing_config: dict):
        self.signing_config = signing_config
        self.rpc = rpc
        self.outbox = outbox
        self.gateway_url = gateway_url
        self.tmp_path = tmp_path
        #: each registered person's session token (person_id -> token), for the gateway over HTTP
        self.tokens: dict[str, str] = {}

    def move_expiry_into_the_past(self, flow_id: str) -> None:
        from datetime import datetime, timedelta

        from sqlalchemy import update

        from services.common.database import Database
        from services.signing.models import FlowRow

        cfg = self.signing_config["DATABASE"]
        database = Database(cfg["URL"], cfg["SCHEMA"], "signing")
        with database.session() as session:
            session.execute(update(FlowRow).where(FlowRow.id == flow_id)
                            .values(expires_at=datetime.utcnow() - timedelta(minutes=1)))
            session.commit()
        database.dispose()

    def sms(self) -> list[dict]:
        if not self.outbox.exists():
            return []
        return [json.loads(line) for line in self.outbox.read_text("utf-8").splitlines() if line.strip()]

    def latest_code(self, phone: str, template: str, before: int) -> str:
        found = wait_for(lambda: [m for m in self.sms()[before:] if m["phone"] == phone and m["template"] == template])
        assert found, f"no {template} SMS for {phone}"
        return found[-1]["params"]["code"]

    def person(self, name: str, id_number: str, phone: str) -> str:
        """Register (the registry vouches for name and ID number), prove the face
        live (the performer doing the challenge's turns), take a certificate."""
        before = len(self.sms())
        challenge = self.rpc.identity.request_phone_code(phone=phone)["challenge_id"]
        self.rpc.identity.confirm_phone_code(challenge_id=challenge, code=self.latest_code(phone, "phone_code", before))
        registered = self.rpc.identity.register(name=name, id_number=id_number, phone=phone,
                                                phone_challenge_id=challenge)
        person_id = registered["person_id"]
        self.tokens[person_id] = registered["session"]["token"]  # the session registration opened
        liveness = self.rpc.identity.start_liveness(person_id=person_id)
        proof = self.rpc.identity.proof_face(person_id=person_id, challenge_id=liveness["challenge_id"],
                                             frames=live_frames(liveness["actions"]))
        assert proof["matched"], proof
        self.rpc.identity.issue_certificate(person_id=person_id, proof_id=proof["proof_id"])
        return person_id

    def document(self, template_id: str, values: dict) -> dict:
        draft = self.rpc.documents.create_draft(template_id=template_id, values=values)
        return self.rpc.documents.render(document_id=draft["document_id"])

    def start(self, rendered: dict, order: list[tuple[str, str]], **kwargs) -> dict:
        """``order``: (person_id, role id) in signing order."""
        by_role = {p["role"]: p for p in rendered["parties"]}
        parties = [{"person_id": person, "role": by_role[role]["label"],
                    "signature_field": by_role[role]["signature_field"]}
                   for person, role in order]
        return self.rpc.signing.start_flow(document_id=rendered["document_id"], initiator_person_id=order[0][0],
                                           parties=parties, **kwargs)

    def grant_by_sms(self, person_phone: str, willingness_id: str, before: int) -> str:
        code = self.latest_code(person_phone, "willingness_code", before)
        return self.rpc.identity.confirm_willingness(willingness_id=willingness_id, code=code)["grant"]

    def grant_by_face(self, person_id: str, willingness_id: str) -> str:
        """The person, live, performing a fresh challenge of the face check."""
        challenge = self.rpc.identity.new_willingness_challenge(willingness_id=willingness_id, person_id=person_id)
        return self.rpc.identity.confirm_willingness(willingness_id=willingness_id, person_id=person_id,
                                                     frames=live_frames(challenge["actions"]))["grant"]

    def sign(self, flow_id: str, person_id: str, phone: str | None = None, face: bool = False) -> dict:
        """Sign with an SMS code (``phone``) or, with ``face=True``, a live face."""
        assert bool(phone) != face, "sign by SMS code (phone=...) or by face (face=True)"
        before = len(self.sms())
        method = "sms" if phone else "face"
        pending = self.rpc.signing.prepare_signature(flow_id=flow_id, person_id=person_id,
                                                     signature_image=handwriting_png(), method=method)
        grant = (self.grant_by_sms(phone, pending["willingness_id"], before) if phone
                 else self.grant_by_face(person_id, pending["willingness_id"]))
        return self.rpc.signing.sign(flow_id=flow_id, person_id=person_id, pending_id=pending["pending_id"],
                                     grant=grant)

    def void_action(self, start_rpc, person_id: str, phone: str, **kwargs) -> dict:
        before = len(self.sms())
        pending = start_rpc(person_id=person_id, method="sms", **kwargs)
        grant = self.grant_by_sms(phone, pending["willingness_id"], before)
        return self.rpc.signing.complete_action(pending_id=pending["pending_id"], person_id=person_id, grant=grant)


LENDER = ("王䶮", "11010519491231002X", "13800138000")
BORROWER = ("李𠮷", "440524188001010014", "13900139000")
UNREGISTERED = ("赵六", "110105198001010032", "13700137000")  # named by a document before registering


def live_frames(actions) -> list[str]:
    return [b64(frame) for frame in liveness_clip.frames_for(actions)]


def write_stack_registry(folder: Path, more: tuple = ()) -> Path:
    """The authority of the test stack: every test person (and ``more``: (name, id_number)),
    each with the performer's photo (the one face tests can show live)."""
    return write_registry(folder, [(name, id_number, PERFORMER) for name, id_number, *_ in
                                   (LENDER, BORROWER, UNREGISTERED, *more)])


def people(stack: Stack) -> tuple[str, str]:
    return stack.person(*LENDER), stack.person(*BORROWER)


def party(values: dict) -> dict:
    return {"name": values[0], "id_number": values[1], "phone": values[2]}


def iou_values(**changes) -> dict:
    """An IOU's values between LENDER and BORROWER (a one-off repayment), with ``changes``."""
    return dict({"initiator_role": "出借方", "lender": party(LENDER), "borrower": party(BORROWER), "amount": "2000",
                 "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01",
                 "repayment_date": "2026-12-01", "repayment_method": "一次性还本付息", "remark": ""}, **changes)


def signed_iou(stack: Stack, lender: str, borrower: str, **changes) -> str:
    """An IOU (``iou_values(**changes)``) both parties signed by SMS code: its flow id."""
    flow_id = stack.start(stack.document("iou", iou_values(**changes)),
                          [(lender, "lender"), (borrower, "borrower")])["flow_id"]
    stack.sign(flow_id, lender, phone=LENDER[2])
    stack.sign(flow_id, borrower, phone=BORROWER[2])
    return flow_id


class Http:
    """The gateway over HTTP, with one person's session."""

    def __init__(self, stack: Stack, token: str | None = None):
        self.stack, self.token = stack, token

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.stack.gateway_url + "/api/v1" + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read(), answer.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read(), error.headers

    def json(self, method: str, path: str, body: dict | None = None, expect: int = 200) -> dict:
        status, content, _ = self.call(method, path, body)
        assert status == expect, (status, content)
        return json.loads(content)

    def register(self, name: str, id_number: str, phone: str) -> "Http":
        """Real-name registration over HTTP: phone code, person (the authority
        checks name and ID number), live face proof, certificate with that proof."""
        before = len(self.stack.sms())
        challenge = self.json("POST", "/phone-codes", {"phone": phone}, expect=201)["challenge_id"]
        code = self.stack.latest_code(phone, "phone_code", before)
        self.json("POST", f"/phone-codes/{challenge}/confirm", {"code": code})
        person = self.json("POST", "/persons", {"name": name, "id_number": id_number, "phone": phone,
                                                "phone_challenge_id": challenge}, expect=201)
        session = Http(self.stack, person["session"]["token"])
        session.person_id = person["person_id"]
        assert session.json("GET", "/me")["next_step"] == "proofing"
        status, content, _ = session.call("POST", "/me/certificate", {})
        assert status == 403 and json.loads(content)["error"]["message"] == "step_up_required"  # a session alone
        challenge = session.json("POST", "/me/liveness", expect=201)
        proof = session.json("POST", "/me/face", {"challenge_id": challenge["challenge_id"],
                                                  "frames": live_frames(challenge["actions"])})
        assert proof["matched"] and proof["assurance_level"] == "authority_face_liveness"
        assert session.json("GET", "/me")["next_step"] == "certificate"  # reading it issues nothing
        issued = session.json("POST", "/me/certificate", {"proof_id": proof["proof_id"]}, expect=201)
        me = session.json("GET", "/me")
        assert me["next_step"] == "ready" and me["certificate"]["serial"] == issued["serial"]
        assert me["name_masked"].endswith("*") and "id_number" not in me
        return session
