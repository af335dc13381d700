"""The demo's steps: two demo people of the embedded registry sign an IOU.

Each person, as the web pages would: a phone code; registration (or, on a
later run, login with the same kind of code); the face proof with the
registry's reference photo as the selfie; a certificate taken with that
proof. Then the lender drafts an IOU naming both, renders it and starts the
flow (出借人 first); each party signs with an SMS code (意愿认证); the signed
PDF and the signing report (签约报告, signed JSON and PDF) are saved, with the
platform's root certificate and the ``esign verify`` line that checks them
offline.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from services.common.masking import mask_phone
from services.common.up_state import RunningPlatform
from services.demo.api_client import ApiClient, ApiError
from services.demo.sms_inbox import NoMessage, SmsInbox

CHINA = dt.timezone(dt.timedelta(hours=8))
#: the demo people's phones: the console provider writes their messages to a file, never to a phone
DEMO_PHONES = {"演示甲": "13800000001", "演示乙": "13800000002"}
#: a new code to the same phone comes at most once a minute (identity's OTP.MIN_RESEND_SECONDS)
LONGEST_CODE_WAIT = 65


class DemoError(Exception):
    """A step of the demo failed; the message says which, what the platform answered, and what to do."""


@dataclass(frozen=True)
class DemoPerson:
    name: str
    id_number: str  # synthetic (GB 11643 check character right), never printed anyway
    phone: str
    photo: Path  # the registry's reference photo: the face this person shows

    def party(self) -> dict:
        return {"name": self.name, "id_number": self.id_number, "phone": self.phone}

    def __repr__(self) -> str:
        return f"DemoPerson({self.name}, {mask_phone(self.phone)})"


@dataclass(frozen=True)
class DemoResult:
    flow_id: str
    signed_pdf: Path
    report_json: Path
    report_pdf: Path
    root: Path
    verify_command: str


def demo_people(registry_file: Path) -> tuple[DemoPerson, DemoPerson]:
    """The two synthetic people ``esign up`` writes into a new registry, with their photos."""
    from services.identity.proofing.demo import demo_people as synthetic
    from services.identity.proofing.registry import read_registry

    entries = read_registry(registry_file)
    people = []
    for name, id_number, _ in synthetic():
        entry = entries.get(id_number)
        if entry is None or entry.name != name:
            raise DemoError(f"the identity registry {registry_file} has no demo person {name}: esign up writes them "
                            f"into a new registry only (start it with a fresh --data-dir)")
        if entry.photo is None or not entry.photo.is_file():
            raise DemoError(f"demo person {name} has no reference photo in {registry_file} (esign up fetches them "
                            f"from PyPI on its first start; remove the registry file and start it again)")
        people.append(DemoPerson(name, id_number, DEMO_PHONES[name], entry.photo))
    return people[0], people[1]


class Walkthrough:
    def __init__(self, platform: RunningPlatform, out_dir: Path, say: Callable[[str], None] = print):
        if not platform.sms_outbox:
            raise DemoError("the demo reads SMS codes from the console provider's outbox, and this platform sends "
                            "SMS through a vendor (ESIGN_SMS_PROVIDER): run it with the embedded defaults")
        if not platform.registry_file:
            raise DemoError("the demo people come from the embedded identity registry, and this platform asks "
                            "another authority (IDENTITY_PROOFING_PROVIDER): run it with the embedded defaults")
        if not platform.demo:
            raise DemoError("esign up runs without --demo: the demo people can show only their photos, and this "
                            "platform requires a live face (head-turn liveness). Stop it and start "
                            "'./dev up --demo' (or '.venv/bin/esign up --demo'), then run esign demo again")
        self.platform = platform
        self.api = ApiClient(platform.gateway)
        self.inbox = SmsInbox(Path(platform.sms_outbox))
        self.out_dir = out_dir
        self.say = say
        self.started = time.monotonic()

    def run(self) -> DemoResult:
        if not self.api.healthy():
            raise DemoError(f"the platform at {self.platform.gateway} is not healthy: see /healthz and the logs "
                            f"in {Path(self.platform.data_dir) / 'logs'}")
        lender_person, borrower_person = demo_people(Path(self.platform.registry_file))
        self.step(f"esign demo on {self.platform.gateway}: {lender_person.name} lends {borrower_person.name} "
                  f"5000 yuan with an IOU (借条)")
        lender = self.ready(lender_person)
        borrower = self.ready(borrower_person)
        flow_id = self.start_iou(lender, lender_person, borrower_person)
        self.sign(lender, lender_person, flow_id, "出借人")
        done = self.sign(borrower, borrower_person, flow_id, "借款人")
        if done.get("state") != "completed":
            raise DemoError(f"flow {flow_id} is {done.get('state')!r} after both signatures, expected 'completed'")
        return self.save(lender, flow_id)

    def step(self, text: str) -> None:
        self.say(f"[{time.monotonic() - self.started:5.1f} s] {text}")

    # -- a person ready to sign ------------------------------------------------------------
    def ready(self, person: DemoPerson) -> ApiClient:
        """``person``'s session, with a certificate: registered (or logged in), face proved."""
        challenge = self.confirmed_phone(person)
        try:
            token = self.api.json("POST", "/sessions", {"phone_challenge_id": challenge})["token"]
            self.step(f"{person.name} ({mask_phone(person.phone)}) logged in with an SMS code")
        except ApiError as refused:
            if refused.status != 404:  # 404: nobody registered this phone yet
                raise self.failed(f"logging {person.name} in", refused) from None
            registered = self.call(self.api, "POST", "/persons", dict(person.party(), phone_challenge_id=challenge),
                                   f"registering {person.name}")
            token = registered["session"]["token"]
            self.step(f"{person.name} ({mask_phone(person.phone)}) registered: the registry (the authority) "
                      f"knows this name and ID number")
        me = self.api.as_session(token)
        status = self.call(me, "GET", "/me", None, f"reading {person.name}'s status")
        if status["next_step"] == "ready":
            return me
        if status["next_step"] not in ("proofing", "certificate"):
            raise DemoError(f"{person.name}'s account is {status['next_step']!r}: the demo cannot use it")
        photo = base64.b64encode(person.photo.read_bytes()).decode("ascii")
        proof = self.call(me, "POST", "/me/face", {"selfie": photo}, f"proving {person.name}'s face")
        if not proof.get("matched"):
            raise DemoError(f"{person.name}'s photo did not match the authority's ({proof.get('reasons')})")
        self.step(f"{person.name}'s face matches the authority's photo ({proof['assurance_level']})")
        issued = self.call(me, "POST", "/me/certificate", {"proof_id": proof["proof_id"]},
                           f"issuing {person.name}'s certificate")
        self.step(f"{person.name}'s signing certificate issued (serial {issued['serial']})")
        return me

    def confirmed_phone(self, person: DemoPerson) -> str:
        """A phone-code challenge for ``person``'s phone, confirmed with the code from the outbox."""
        before = self.inbox.mark()
        try:
            challenge = self.api.json("POST", "/phone-codes", {"phone": person.phone})["challenge_id"]
        except ApiError as refused:
            if refused.status != 429:
                raise self.failed(f"asking a code for {person.name}'s phone", refused) from None
            if not refused.retry_after or refused.retry_after > LONGEST_CODE_WAIT:
                raise DemoError(f"{person.name}'s phone has had all the codes it may have for now (the platform "
                                f"limits codes per phone): run esign demo again in "
                                f"{-(-(refused.retry_after or 3600) // 60)} minute(s)") from None
            self.step(f"waiting {refused.retry_after} s: a phone gets a new code at most once a minute")
            time.sleep(refused.retry_after)
            before = self.inbox.mark()
            challenge = self.call(self.api, "POST", "/phone-codes", {"phone": person.phone},
                                  f"asking a code for {person.name}'s phone")["challenge_id"]
        code = self.code(person, "phone_code", before)
        self.call(self.api, "POST", f"/phone-codes/{challenge}/confirm", {"code": code},
                  f"confirming {person.name}'s phone")
        return challenge

    # -- the IOU -------------------------------------------------------------------------
    def start_iou(self, lender: ApiClient, lender_person: DemoPerson, borrower_person: DemoPerson) -> str:
        today = dt.datetime.now(CHINA).date()
        values = {"initiator_role": "出借方", "lender": lender_person.party(), "borrower": borrower_person.party(),
                  "amount": "5000", "purpose": "家庭装修", "annual_rate": "3.65", "start_date": today.isoformat(),
                  "repayment_date": (today + dt.timedelta(days=90)).isoformat(),
                  "repayment_method": "一次性还本付息", "remark": "esign 演示借条"}
        draft = self.call(lender, "POST", "/documents", {"template_id": "iou", "values": values}, "drafting the IOU")
        document_id = draft["document_id"]
        rendered = self.call(lender, "POST", f"/documents/{document_id}/render", None, "rendering the IOU")
        self.step(f"IOU drafted and rendered ({rendered.get('pages', '?')} page(s), "
                  f"SHA-256 {rendered['pdf_sha256'][:16]}…)")
        flow = self.call(lender, "POST", "/flows", {"document_id": document_id,
                                                    "parties": [{"role": "出借人"}, {"role": "借款人"}]},
                         "starting the signing flow")
        self.step(f"signing flow {flow['flow_id']} started: 出借人 {lender_person.name} first, "
                  f"then 借款人 {borrower_person.name}")
        return flow["flow_id"]

    def sign(self, session: ApiClient, person: DemoPerson, flow_id: str, role: str) -> dict:
        """``person`` signs: handwriting, willingness by SMS code (意愿认证), the signature."""
        before = self.inbox.mark()
        pending = self.call(session, "POST", f"/flows/{flow_id}/signature",
                            {"signature_image": handwriting_png(), "method": "sms"},
                            f"preparing {person.name}'s signature")
        code = self.code(person, "willingness_code", before)
        grant = self.call(session, "POST", f"/willingness/{pending['willingness_id']}/confirm", {"code": code},
                          f"confirming {person.name}'s willingness")["grant"]
        signed = self.call(session, "POST", f"/flows/{flow_id}/sign",
                           {"pending_id": pending["pending_id"], "grant": grant}, f"signing as {person.name}")
        self.step(f"{role} {person.name} signed (willingness by SMS code); the flow is {signed['state']}")
        return signed

    # -- what the demo leaves --------------------------------------------------------------
    def save(self, session: ApiClient, flow_id: str) -> DemoResult:
        folder = self.out_dir / flow_id
        folder.mkdir(parents=True, exist_ok=True)
        signed_pdf = folder / "signed.pdf"
        signed_pdf.write_bytes(self.call_raw(session, f"/api/v1/flows/{flow_id}/pdf", "fetching the signed PDF"))
        made = self.call(session, "POST", f"/flows/{flow_id}/report", None, "building the signing report")
        report_json, report_pdf = folder / "report.json", folder / "report.pdf"
        report_json.write_text(json.dumps(made["report"], ensure_ascii=False, indent=1), "utf-8")
        report_pdf.write_bytes(base64.b64decode(made["report_pdf"]))
        root = folder / "root.pem"
        root.write_bytes(self.call_raw(self.api, "/pki/root.pem", "fetching the platform's root certificate"))
        log_key = self.call(self.api, "GET", "/log/public-key", None, "reading the evidence log's key")["public_key"]
        command = [_esign_command(), "verify", str(signed_pdf), "--root", str(root), "--report", str(report_json),
                   "--log-key", log_key] + [arg for key in self.platform.witness_keys
                                            for arg in ("--witness-key", key)]
        self.step("signed PDF and signing report (签约报告) saved")
        return DemoResult(flow_id, signed_pdf, report_json, report_pdf, root, shlex.join(command))

    # -- calls -----------------------------------------------------------------------------
    def code(self, person: DemoPerson, template: str, before: int) -> str:
        try:
            return self.inbox.code(person.phone, template, before)
        except NoMessage as exc:
            raise DemoError(f"{person.name}'s {template}: {exc}") from None

    def call(self, client: ApiClient, method: str, path: str, body: dict | None, doing: str) -> dict:
        try:
            return client.json(method, path, body)
        except ApiError as refused:
            raise self.failed(doing, refused) from None

    def call_raw(self, client: ApiClient, path: str, doing: str) -> bytes:
        try:
            return client.raw("GET", path)
        except ApiError as refused:
            raise self.failed(doing, refused) from None

    def failed(self, doing: str, refused: ApiError) -> DemoError:
        return DemoError(f"{doing}: the platform answered {refused} (see the logs in "
                         f"{Path(self.platform.data_dir) / 'logs'})")


def _esign_command() -> str:
    """The esign script beside this Python (.venv/bin/esign), as the README runs it."""
    beside = Path(sys.executable).parent / "esign"
    return str(beside) if beside.is_file() else "esign"


def handwriting_png() -> str:
    """A handwritten stroke as a signature pad would send it (base64 PNG)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (240, 90), (255, 255, 255, 0))
    draw = ImageDraw.Draw(image)
    draw.line([(10, 60), (45, 22), (80, 66), (120, 28), (160, 70), (200, 30), (230, 52)],
              fill=(20, 20, 120, 255), width=5)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
