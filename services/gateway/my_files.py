"""我的文件 at the gateway: one list composed of two services' pages.

documents answers for a person's drafts and signing for the flows they are
a party to (each ``list_files``, services/common/listing.py). The gateway
asks both for a page after the same key, at once, and keeps the newest
``limit`` of the two (:func:`services.common.listing.merge`); a status
filter that only one service can match asks only that one.

The cursor of the next page is the last item's key, opaque to the client
and bound to its person and filters: a cursor from another person, or with
other filters, is refused (422 ``cursor``) rather than followed. It grants
nothing (each service only ever reads the session person's rows), so it is
not signed.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from services.common.errors import InvalidInput
from services.common.listing import ListQuery, merge

#: the query parameters of GET /me/files
PARAMETERS = frozenset({"status", "template", "q", "cursor", "limit"})
MAX_CURSOR_CHARS = 400


def _tag(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _filters(query: ListQuery) -> str:
    return _tag("filters", sorted(query.statuses or ()), query.template_id, query.text)


def encode_cursor(query: ListQuery, last_key: dict) -> str:
    data = {"p": _tag("person", query.person_id), "f": _filters(query), "k": last_key}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode("utf-8")).decode("ascii")


def decode_cursor(person_id: str, query: ListQuery, cursor: str) -> dict:
    """The key a cursor continues after, if it was made for this person and these filters."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if not isinstance(data, dict) or set(data) != {"p", "f", "k"}:
            raise ValueError
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput("cursor", "format", "expected the next_cursor of a previous page") from None
    if data["p"] != _tag("person", person_id):
        raise InvalidInput("cursor", "other_person", "this cursor belongs to another person's list")
    if data["f"] != _filters(query):
        raise InvalidInput("cursor", "same_filters", "this cursor was made with other filters: start from page 1")
    return data["k"]


def parse(person_id: str, params: Any) -> ListQuery:
    """The page asked for by GET /me/files's query (``params``: the request's
    query parameters, a multi-dict), refused by parameter and rule."""
    for name in params.keys():
        if name not in PARAMETERS:
            raise InvalidInput(name, "unknown_parameter", "expected one of " + ", ".join(sorted(PARAMETERS)))
    for name in PARAMETERS - {"status"}:
        if len(params.getlist(name)) > 1:
            raise InvalidInput(name, "once", "give this parameter once")
    statuses = [s for given in params.getlist("status") for s in given.split(",") if s] or None
    limit = params.get("limit", "20")
    if not limit.isdigit():
        raise InvalidInput("limit", "range", "expected 1 to 100")
    query = ListQuery.parse(person_id, int(limit), statuses, params.get("template"), params.get("q"))
    cursor = params.get("cursor")
    if cursor:
        query = ListQuery.parse(person_id, query.limit, statuses, query.template_id, params.get("q"),
                                decode_cursor(person_id, query, cursor))
    return query


def page(rpc, query: ListQuery) -> dict:
    """The page: drafts and flows merged, newest first, and the next page's cursor (None: the last page)."""
    arguments = {"person_id": query.person_id, "limit": query.limit,
                 "statuses": sorted(query.statuses) if query.statuses is not None else None,
                 "template_id": query.template_id, "q": query.text,
                 "before": _key(query)}
    calls = []
    if query.wants("draft"):
        calls.append(("documents", "list_files", arguments))
    if query.statuses is None or query.statuses - {"draft"}:
        calls.append(("signing", "list_files", arguments))
    merged = merge(rpc.call_all(*calls), query.limit)
    items = merged["items"]
    cursor = encode_cursor(query, items[-1]["key"]) if merged["more"] and items else None
    return {"items": [{k: v for k, v in item.items() if k != "key"} for item in items], "next_cursor": cursor}


def _key(query: ListQuery) -> dict | None:
    if query.before is None:
        return None
    at, record_id = query.before
    return {"at": at.isoformat(timespec="microseconds") + "+00:00", "id": record_id}
