"""What the platform leaves behind holds no personal data in clear: after two people
register (phone codes, live faces), sign an IOU and get its report, every log line
(the services' and the gateway's), every event the services emitted (their outboxes),
every error body answered, every metric label and every S3 object (metadata and
bytes) is searched for the two ID numbers, the two phone numbers, the login and
willingness codes sent, and each service's KEK. The SMS outbox file is left out: it
is the console stand-in for the SMS vendor, which must see phone and code."""
from __future__ import annotations

import base64
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import text

from services.common.config import read_secret
from services.common.database import Database
from services.common.storage import ObjectStore, S3Settings
from tests.support.stack import people, signed_iou
from tests.unit.documents.samples import BORROWER, LENDER


def _http(url: str, body: dict | None = None, token: str | None = None) -> str:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.read().decode("utf-8", "replace")


def _outbox_payloads(config: dict, service: str) -> list[str]:
    database = Database(config["DATABASE"]["URL"], config["DATABASE"]["SCHEMA"], service)
    try:
        with database.session() as session:
            return [row[0] for row in session.execute(text("SELECT payload FROM outbox"))]
    finally:
        database.dispose()


def _kek(config: dict, name: str) -> bytes:
    data = Path(config["DATA_DIR"])
    spec = dict((config.get("SECRETS") or {}).get("KEK") or {})
    spec.setdefault("file", str(data / "secrets" / name))
    return read_secret(spec, name)


def test_nothing_personal_is_left_in_clear(stack, tmp_path, caplog):
    caplog.set_level(logging.INFO)  # as the services log in production
    lender, borrower = people(stack)
    flow_id = signed_iou(stack, lender, borrower)
    stack.rpc.signing.report(flow_id=flow_id)

    # error bodies: what a caller is told when it gets something wrong about a person
    base = stack.gateway_url + "/api/v1"
    bodies = [
        _http(base + "/phone-codes", {"phone": LENDER["phone"] + "0"}),
        _http(base + "/persons", {"name": LENDER["name"], "id_number": LENDER["id_number"], "phone": LENDER["phone"],
                                  "phone_challenge_id": "0" * 36}),
        _http(base + "/persons", {"name": "王五", "id_number": LENDER["id_number"][:-1] + "3",
                                  "phone": BORROWER["phone"], "phone_challenge_id": "0" * 36}),
        _http(base + "/documents", {"template_id": "iou", "values": {"lender": {"name": LENDER["name"],
              "id_number": LENDER["id_number"][:-1] + "0", "phone": LENDER["phone"]}}}, stack.tokens[lender]),
        _http(base + f"/flows/{flow_id}/join", {}, stack.tokens[lender]),
    ]
    assert all(body for body in bodies)

    codes = {message["params"]["code"] for message in stack.sms() if "code" in message.get("params", {})}
    assert len(codes) >= 4  # two registrations' and logins' phone codes, two willingness codes at least
    needles = {"lender ID number": LENDER["id_number"], "borrower ID number": BORROWER["id_number"],
               "lender phone": LENDER["phone"], "borrower phone": BORROWER["phone"]}
    needles.update({f"code {i}": code for i, code in enumerate(sorted(codes))})
    for service, config, name in (("identity", stack.identity_config, "kek"),
                                  ("documents", stack.documents_config, "documents-kek"),
                                  ("notify", stack.notify_config, "notify-kek"),
                                  ("signing", stack.signing_config, "signing-kek")):
        key = _kek(config, name)
        needles[f"{service} KEK (base64)"] = base64.b64encode(key).decode()
        needles[f"{service} KEK (hex)"] = key.hex()

    haystacks: dict[str, str] = {
        "service logs": caplog.text,
        "gateway log": (tmp_path / "gateway.log").read_text("utf-8", "replace"),
        "error bodies": "\n".join(bodies),
    }
    for service, config in (("identity", stack.identity_config), ("documents", stack.documents_config),
                            ("signing", stack.signing_config), ("notify", stack.notify_config)):
        haystacks[f"{service} events"] = "\n".join(_outbox_payloads(config, service))
    haystacks["metric labels"] = "\n".join(
        value for metric in REGISTRY.collect() for sample in metric.samples for value in sample.labels.values())
    for service, config in (("documents", stack.documents_config), ("signing", stack.signing_config)):
        admin = S3Settings.from_config(config)
        store = ObjectStore(admin)
        seen = []
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
            for item in page.get("Contents", []):
                head = store.client.head_object(Bucket=store.bucket, Key=item["Key"])
                body = store.client.get_object(Bucket=store.bucket, Key=item["Key"])["Body"].read()
                seen.append(json.dumps({"key": item["Key"], "metadata": head.get("Metadata"),
                                        "type": head.get("ContentType")}))
                seen.append(body.decode("latin-1"))
        assert seen, f"no objects in {service}'s bucket"
        haystacks[f"{service} S3 objects"] = "\n".join(seen)
    assert "events" in " ".join(haystacks) and all(haystacks.values())

    # a needle counts as a whole token: a six-digit code inside a hash or a UUID is not one
    found = [(what, where) for what, needle in needles.items() for where, hay in haystacks.items()
             if re.search(rf"(?<![0-9A-Za-z+/]){re.escape(needle)}(?![0-9A-Za-z+/=])", hay)]
    assert found == [], f"in clear: {found}"
