"""The gateway's request metrics (services/gateway/app.py ``RequestMetrics``): every answered request
is counted and timed under the route the router chose (its template, not the path with ids), its
method and the status the client got: a typed error's, a validation error's, and 'unmatched' for
a path no route serves."""
from __future__ import annotations

from fastapi.testclient import TestClient

from services.common.errors import NotFound
from services.gateway.app import HTTP_LATENCY, HTTP_REQUESTS, create_app


class Services:
    def call(self, service, method, /, **kwargs):
        if method == "session_person":
            return {"person_id": "p1", "session_id": "s"}
        if method == "get_flow":
            raise NotFound("flow", kwargs.get("flow_id", ""))
        raise AssertionError((service, method))

    def close(self):
        pass


def counted(route: str, method: str, status: str) -> float:
    return HTTP_REQUESTS.labels(route=route, method=method, status=status)._value.get()


def timed(route: str, method: str) -> float:
    return next(sample.value for metric in HTTP_LATENCY.collect() for sample in metric.samples
                if sample.name.endswith("_count") and sample.labels == {"route": route, "method": method})


def test_each_request_is_counted_and_timed_under_its_route_template_and_status(tmp_path):
    app = create_app({"AMQP_URI": "memory://", "DATA_DIR": str(tmp_path),
                      "LIMITS": {"RATE_EXEMPT": "127.0.0.0/8"}}, rpc=Services())
    route = "/api/v1/flows/{flow_id}"
    before = {status: counted(route, "GET", status) for status in ("404", "403")}
    unmatched = counted("unmatched", "GET", "404")
    with TestClient(app) as client:
        headers = {"Authorization": "Bearer t"}
        assert client.get("/api/v1/flows/f-1", headers=headers).status_code == 404
        assert client.get("/api/v1/flows/f-2", headers=headers).status_code == 404
        assert client.get("/api/v1/flows/f-3").status_code == 403  # no session: refused by the route
        timed_before = timed(route, "GET")
        assert client.get("/no/such/path").status_code == 404
    assert counted(route, "GET", "404") - before["404"] == 2
    assert counted(route, "GET", "403") - before["403"] == 1
    assert counted("unmatched", "GET", "404") - unmatched == 1
    assert timed(route, "GET") == timed_before  # the unmatched path is timed under its own label
