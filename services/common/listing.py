"""我的文件: a person's records, newest first, a page at a time.

Each service answers for its own records about a person (documents: the
drafts they made; signing: the flows they are a party to) with the same
RPC, ``list_files``, and the gateway merges the pages
(services/gateway/my_files.py). Everything is ordered by ``(updated_at, id)``
descending, so the pages of two services merge by comparing keys, and the
page after a key is a keyset range (:func:`before_clause`): as fast on page
50 as on page 1, and stable while records change.

Search (``q``) matches the title or a counterparty's name. Names are
personal data and stored sealed, so a search opens the person's records a
chunk at a time (:func:`collect`) until the page is full; a person's own
records are at most a few thousand, and opening one is microseconds.

Every refusal is an ``InvalidInput`` naming the parameter and the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from sqlalchemy import and_, or_, true

from services.common.clock import aware, naive
from services.common.errors import InvalidInput

DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_TEXT_CHARS = 50
MAX_ID_CHARS = 64
#: rows opened at a time while searching
SEARCH_CHUNK = 200

#: what a person sees a record as, across services (the web pages say each in Chinese)
STATUSES = (
    "draft",           # 草稿: a document not sent for signing (documents)
    "to_sign",         # 待我签署
    "waiting_others",  # 待对方签署
    "completed",       # 已生效
    "void_requested",  # 作废中
    "voided",          # 已作废
    "declined",        # 已拒签
    "expired",         # 已过期
    "cancelled",       # 已撤销 (a party's identity was disputed while it was being signed)
    "disputed",        # 身份争议 (an ended flow a dispute marked)
    "part_repaid",     # 部分还款: a signed IOU some of which the lender confirmed repaid
    "repaid",          # 已还清
    "overdue",         # 已逾期: a signed IOU past its repayment date, not repaid (a matter of the day)
)

Row = TypeVar("Row")


@dataclass(frozen=True)
class ListQuery:
    """One page request of one person's records, checked."""

    person_id: str
    limit: int = DEFAULT_PAGE
    statuses: frozenset[str] | None = None  # None: all
    template_id: str | None = None
    text: str | None = None  # casefolded
    before: tuple[datetime, str] | None = None  # the last key of the previous page

    @classmethod
    def parse(cls, person_id: object, limit: object = DEFAULT_PAGE, statuses: object = None,
              template_id: object = None, q: object = None, before: object = None) -> "ListQuery":
        if not isinstance(person_id, str) or not 0 < len(person_id) <= MAX_ID_CHARS:
            raise InvalidInput("person_id", "string", "expected a person id")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput("limit", "range", f"expected 1 to {MAX_PAGE}")
        return cls(person_id, limit, parse_statuses(statuses), _optional_text("template_id", template_id, MAX_ID_CHARS),
                   (_optional_text("q", q, MAX_TEXT_CHARS) or "").casefold() or None, parse_key(before))

    def wants(self, status: str) -> bool:
        return self.statuses is None or status in self.statuses

    def matches(self, title: str, names: Iterable[str | None]) -> bool:
        """Whether the search (if any) finds the title or one of the names."""
        if self.text is None:
            return True
        return self.text in title.casefold() or any(name and self.text in name.casefold() for name in names)


def parse_statuses(statuses: object) -> frozenset[str] | None:
    if statuses is None:
        return None
    if not isinstance(statuses, (list, tuple)) or not statuses or not all(isinstance(s, str) for s in statuses):
        raise InvalidInput("status", "list", "expected one or more statuses")
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        raise InvalidInput("status", "one_of", f"unknown status {unknown[0][:20]!r}; expected one of "
                           + ", ".join(STATUSES))
    return frozenset(statuses)


def _optional_text(field: str, value: object, limit: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit or not value.strip():
        raise InvalidInput(field, "string", f"expected text of at most {limit} characters")
    return value.strip()


def key(at: datetime, record_id: str) -> dict:
    """A record's place in the order, as RPC carries it (the time always to the
    microsecond, so keys of any service compare as text)."""
    return {"at": aware(at).astimezone(timezone.utc).isoformat(timespec="microseconds"), "id": record_id}


def parse_key(value: object) -> tuple[datetime, str] | None:
    """``{"at": ISO time, "id": id}`` (from :func:`key`) as a naive UTC time and an id."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"at", "id"}:
        raise InvalidInput("before", "object", "expected {at, id}")
    at, record_id = value["at"], value["id"]
    if not isinstance(record_id, str) or not 0 < len(record_id) <= MAX_ID_CHARS:
        raise InvalidInput("before.id", "string", "expected a record id")
    try:
        moment = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise InvalidInput("before.at", "datetime", "expected an ISO 8601 time with its offset")
    return naive(moment), record_id


def before_clause(at_column, id_column, before: tuple[datetime, str] | None):
    """Rows after ``before`` in the order ``(at, id)`` descending (None: every row)."""
    if before is None:
        return true()
    at, record_id = before
    return or_(at_column < at, and_(at_column == at, id_column < record_id))


def collect(fetch: Callable[[tuple[datetime, str] | None, int], Sequence[Row]],
            keep: Callable[[Row], dict | None], row_key: Callable[[Row], tuple[datetime, str]],
            query: ListQuery) -> dict:
    """A page: rows fetched in order after ``query.before`` (``fetch(after,
    n)`` answers up to n rows), each turned into an item or dropped by
    ``keep``, until ``query.limit`` items and one more are found or the rows
    run out. Answers ``{"items", "more"}``; with no search, one fetch."""
    items: list[dict] = []
    chunk = query.limit + 1 if query.text is None else max(SEARCH_CHUNK, query.limit + 1)
    for item in _kept(fetch, keep, row_key, query.before, chunk):
        if len(items) == query.limit:
            return {"items": items, "more": True}
        items.append(item)
    return {"items": items, "more": False}


def _kept(fetch, keep, row_key, after, chunk) -> Iterator[dict]:
    while True:
        rows = fetch(after, chunk)
        for row in rows:
            item = keep(row)
            if item is not None:
                yield item
        if len(rows) < chunk:
            return
        after = row_key(rows[-1])


def merge(pages: Iterable[dict], limit: int) -> dict:
    """Pages of several services (each ``{"items", "more"}`` in the order)
    as one: the newest ``limit`` items, and whether any service has more."""
    items = sorted((item for page in pages for item in page["items"]),
                   key=lambda item: (item["key"]["at"], item["key"]["id"]), reverse=True)
    more = len(items) > limit or any(page["more"] for page in pages)
    return {"items": items[:limit], "more": more}
