"""The platform's public HTTP API (``/api/v1`` on the gateway) as a client
uses it: JSON in and out, a session as ``Authorization: Bearer``, every
refusal the gateway's ``{"error": {...}}`` body raised as :class:`ApiError`."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """The gateway refused a call (or could not be reached: ``status`` 0)."""

    def __init__(self, method: str, path: str, status: int, code: str, message: str,
                 field: str | None = None, retry_after: int | None = None):
        self.method, self.path, self.status = method, path, status
        self.code, self.message, self.field, self.retry_after = code, message, field, retry_after
        where = f"{field}: " if field else ""
        super().__init__(f"{method} {path}: {status} {code}: {where}{message}")


@dataclass(frozen=True)
class ApiClient:
    """The API at ``base_url`` (the gateway, no path), as the person whose session ``token`` is (or nobody)."""

    base_url: str
    token: str | None = None
    timeout: float = 60.0

    def as_session(self, token: str) -> "ApiClient":
        return ApiClient(self.base_url, token, self.timeout)

    def json(self, method: str, path: str, body: dict | None = None) -> Any:
        """``path`` under ``/api/v1``, its JSON answer."""
        return json.loads(self.raw(method, "/api/v1" + path, body))

    def raw(self, method: str, path: str, body: dict | None = None) -> bytes:
        """``path`` on the gateway (``/api/v1/flows/…/pdf``, ``/pki/root.pem``), its answer's bytes."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as refused:
            raise _api_error(method, path, refused) from None
        except OSError as exc:  # refused connection, timeout: the gateway is not there
            raise ApiError(method, path, 0, "unreachable", f"{self.base_url}: {type(exc).__name__}") from None

    def healthy(self) -> bool:
        """Whether the gateway answers ``/healthz`` with every service ok."""
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=10) as answer:
                return answer.status == 200
        except OSError:
            return False


def _api_error(method: str, path: str, refused: urllib.error.HTTPError) -> ApiError:
    try:
        error = json.loads(refused.read()).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    retry = refused.headers.get("Retry-After")
    detail = error.get("detail")
    message = str(error.get("message") or refused.reason) + (f" ({detail})" if detail else "")
    return ApiError(method, path, refused.code, str(error.get("code") or "http_error"), message,
                    error.get("field"), int(retry) if retry and retry.isdigit() else None)
