"""GET /api/v1/me/files at the gateway (services/gateway/my_files.py), with
documents and signing stubbed by services that page through fixed records as
the real ones do (services/common/listing.py): the two merged newest first,
a cursor bound to its person and filters, only the service a status filter
can match asked, and bad parameters refused by name and rule."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.common.listing import ListQuery, key
from services.gateway.app import create_app

START = datetime(2026, 12, 1)


def record(kind: str, n: int, owner: str, status: str) -> dict:
    return {"kind": kind, "id": f"{kind}-{n:03d}", "status": status, "title": "借条", "owner": owner,
            "key": key(START + timedelta(minutes=n), f"{kind}-{n:03d}")}


class Services:
    """documents (drafts) and signing (flows) of two persons, A and B."""

    def __init__(self):
        self.records = {
            "documents": [record("document", n, "A" if n % 2 else "B", "draft") for n in range(1, 40, 3)],
            "signing": [record("flow", n, "A", "to_sign" if n % 4 else "completed") for n in range(2, 60, 2)],
        }
        self.asked: list[str] = []

    def call(self, service, method, /, **kwargs):
        assert (service, method) == ("identity", "session_person")
        return {"person_id": kwargs["token"], "session_id": "s"}

    def call_all(self, *calls):
        return [self.list_files(service, **kwargs) for service, method, kwargs in calls]

    def list_files(self, service, person_id, limit, statuses, template_id, q, before):
        self.asked.append(service)
        query = ListQuery.parse(person_id, limit, statuses, template_id, q, before)
        mine = sorted((r for r in self.records[service] if r["owner"] == person_id and query.wants(r["status"])
                       and (query.before is None or (r["key"]["at"], r["key"]["id"]) < (before["at"], before["id"]))),
                      key=lambda r: (r["key"]["at"], r["key"]["id"]), reverse=True)
        return {"items": mine[:limit], "more": len(mine) > limit}

    def close(self):
        pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """One gateway app for the module: FastAPI builds an app's routes on its first request (about
    0.15 s of CPU), the same work for every app made from this configuration."""
    return create_app({"AMQP_URI": "memory://", "DATA_DIR": str(tmp_path_factory.mktemp("gw")),
                       "LIMITS": {"RATE_EXEMPT": "127.0.0.0/8"}}, rpc=Services())


@pytest.fixture()
def gateway(app):
    """A client of the gateway with new neighbours and new edge limits, as a gateway just started has."""
    services = Services()
    app.state.rpc = services
    app.middleware_stack = None  # built again on the next request: a new EdgeLimits
    with TestClient(app, raise_server_exceptions=False) as http:
        yield http, services


def get(http, person: str, **params):
    return http.get("/api/v1/me/files", params=params, headers={"Authorization": f"Bearer {person}"})


def every_page(http, person: str, **params) -> list[str]:
    seen, cursor = [], None
    while True:
        answer = get(http, person, **params, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["items"]) <= int(params.get("limit", 20))
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


def test_drafts_and_flows_come_merged_newest_first_page_after_page(gateway):
    http, services = gateway
    expected = sorted((r for rs in services.records.values() for r in rs if r["owner"] == "A"),
                      key=lambda r: r["key"]["at"], reverse=True)
    assert every_page(http, "A", limit="7") == [r["id"] for r in expected]
    first = get(http, "A", limit="3").json()["items"]
    assert "key" not in first[0] and first[0]["kind"] in ("document", "flow")


def test_a_status_filter_asks_only_the_service_that_has_such_records(gateway):
    http, services = gateway
    assert all(i.startswith("document-") for i in every_page(http, "A", status="draft"))
    assert services.asked and set(services.asked) == {"documents"}
    services.asked.clear()
    done = every_page(http, "A", status="completed,to_sign")
    assert set(services.asked) == {"signing"} and len(done) == len(services.records["signing"])
    services.asked.clear()
    both = every_page(http, "A", status=["draft", "completed"])
    assert set(services.asked) == {"documents", "signing"}
    assert {i.split("-")[0] for i in both} == {"document", "flow"}


def test_a_cursor_is_refused_for_another_person_or_other_filters(gateway):
    http, _ = gateway
    cursor = get(http, "A", limit="2").json()["next_cursor"]
    assert cursor
    answer = get(http, "B", limit="2", cursor=cursor)
    assert answer.status_code == 422
    assert (answer.json()["error"]["field"], answer.json()["error"]["rule"]) == ("cursor", "other_person")
    answer = get(http, "A", limit="2", cursor=cursor, status="draft")
    assert answer.json()["error"]["rule"] == "same_filters"
    assert get(http, "A", cursor="not-a-cursor!").json()["error"]["rule"] == "format"


@pytest.mark.parametrize("params, field, rule", [
    ({"limit": "101"}, "limit", "range"),
    ({"limit": "0"}, "limit", "range"),
    ({"limit": "-1"}, "limit", "range"),
    ({"status": "paid_in_gold"}, "status", "one_of"),
    ({"colour": "red"}, "colour", "unknown_parameter"),
    ({"q": "x" * 51}, "q", "string"),
    ({"template": ["iou", "receipt"]}, "template", "once"),
])
def test_bad_parameters_are_refused_by_name_and_rule(gateway, params, field, rule):
    http, services = gateway
    answer = get(http, "A", **params)
    assert answer.status_code == 422, answer.text
    assert (answer.json()["error"]["field"], answer.json()["error"]["rule"]) == (field, rule)
    assert services.asked == []  # refused before any service is asked


def test_without_a_session_the_list_is_refused(gateway):
    http, _ = gateway
    answer = http.get("/api/v1/me/files")
    assert answer.status_code == 403 and answer.json()["error"]["message"] == "session_required"
