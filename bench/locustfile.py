"""Locust load for complete IOU flows over HTTP (run by bench/full_flow.py).

Each simulated user is one pair of registered people (lender, borrower) and
does, again and again, what the two would do in the web pages:

lender: ``POST /documents`` (an IOU naming both), ``POST /documents/{id}/render``,
``POST /flows``; then each party in turn: ``POST /flows/{id}/signature``
(prepare), the SMS code read from the console outbox (the person's phone),
``POST /willingness/{id}/confirm``, ``POST /flows/{id}/sign``. The flow is
complete after the borrower's sign (the last signer's step adds B-LTA).

Every request is a Locust request (name = the route); one more event,
``IOU flow`` (request_type ``FLOW``), times the whole flow, so Locust's
stats give flows/s and the flow's p50/p99.

Configuration (environment, set by bench/full_flow.py):
``ESIGN_BENCH_PEOPLE`` a JSON file: {"people": [{person_id, name, id_number,
phone, token}, ...], "outbox": path of the SMS outbox}.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import gevent
from locust import HttpUser, constant, events, task

from outbox_tail import OutboxTail  # bench/, beside this file

_CONFIG = json.loads(Path(os.environ["ESIGN_BENCH_PEOPLE"]).read_text("utf-8"))
_PEOPLE = _CONFIG["people"]
_NEXT_PAIR = itertools.count()
_SIGNATURE = _CONFIG["signature_image"]


class Outbox:
    """The latest willingness code per phone, with its line number in the outbox."""

    def __init__(self, path: str):
        self.tail = OutboxTail(path)
        self.codes: dict[str, tuple[int, str]] = {}
        self.lock = threading.Lock()

    def position(self) -> int:
        with self.lock:
            self._read()
            return self.tail.lines

    def code_after(self, phone: str, line: int, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                self._read()
                found = self.codes.get(phone)
            if found and found[0] >= line:
                return found[1]
            gevent.sleep(0.05)
        raise RuntimeError(f"no willingness code for {phone[:3]}****{phone[-4:]} in {timeout}s")

    def _read(self) -> None:
        for number, message in self.tail.new_messages():
            if message.get("template") == "willingness_code":
                self.codes[message["phone"]] = (number, message["params"]["code"])


OUTBOX = Outbox(_CONFIG["outbox"])


def _party(person: dict) -> dict:
    return {"name": person["name"], "id_number": person["id_number"], "phone": person["phone"]}


class IouPair(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        pair = next(_NEXT_PAIR) % (len(_PEOPLE) // 2)
        self.lender, self.borrower = _PEOPLE[2 * pair], _PEOPLE[2 * pair + 1]

    def _post(self, person: dict, path: str, name: str, body: dict | None = None) -> dict:
        with self.client.post("/api/v1" + path, json=body or {}, name=name, catch_response=True,
                              headers={"Authorization": f"Bearer {person['token']}"}) as answer:
            if answer.status_code >= 400:
                answer.failure(f"{answer.status_code} {answer.text[:200]}")
                raise _FlowFailed(name)
            return answer.json()

    def _sign(self, person: dict, flow_id: str) -> dict:
        before = OUTBOX.position()
        pending = self._post(person, f"/flows/{flow_id}/signature", "POST /flows/{id}/signature",
                             {"signature_image": _SIGNATURE, "method": "sms"})
        try:
            code = OUTBOX.code_after(person["phone"], before + 1)
        except RuntimeError as exc:
            events.request.fire(request_type="SMS", name="willingness code", response_time=30000,
                                response_length=0, exception=exc)
            raise _FlowFailed("willingness code") from None
        grant = self._post(person, f"/willingness/{pending['willingness_id']}/confirm",
                           "POST /willingness/{id}/confirm", {"code": code})["grant"]
        return self._post(person, f"/flows/{flow_id}/sign", "POST /flows/{id}/sign",
                          {"pending_id": pending["pending_id"], "grant": grant})

    @task
    def iou_flow(self) -> None:
        started = time.perf_counter()
        try:
            values = {"initiator_role": "出借方", "lender": _party(self.lender), "borrower": _party(self.borrower),
                      "amount": "2000", "purpose": "其它事由", "annual_rate": "0", "start_date": "2026-11-01",
                      "repayment_date": "2027-12-01", "repayment_method": "一次性还本付息", "remark": ""}
            document = self._post(self.lender, "/documents", "POST /documents",
                                  {"template_id": "iou", "values": values, "initiator_role": "出借方"})
            self._post(self.lender, f"/documents/{document['document_id']}/render", "POST /documents/{id}/render")
            flow = self._post(self.lender, "/flows", "POST /flows",
                              {"document_id": document["document_id"],
                               "parties": [{"role": "lender"}, {"role": "borrower"}]})
            self._sign(self.lender, flow["flow_id"])
            done = self._sign(self.borrower, flow["flow_id"])
            if done.get("state") != "completed":
                raise _FlowFailed(f"state {done.get('state')}")
        except _FlowFailed as exc:
            events.request.fire(request_type="FLOW", name="IOU flow", response_time=(time.perf_counter() - started)
                                * 1000, response_length=0, exception=exc)
            return
        events.request.fire(request_type="FLOW", name="IOU flow",
                            response_time=(time.perf_counter() - started) * 1000, response_length=0, exception=None,
                            context={"flow_id": flow["flow_id"]})
        _COMPLETED.append(flow["flow_id"])


class _FlowFailed(Exception):
    pass


_COMPLETED: list[str] = []


@events.test_stop.add_listener
def _write_completed(environment, **_kwargs) -> None:
    target = os.environ.get("ESIGN_BENCH_COMPLETED")
    if target:
        Path(target).write_text(json.dumps(_COMPLETED), "utf-8")


