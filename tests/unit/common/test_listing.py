"""我的文件's shared rules (services/common/listing.py): what a page request
may ask, how a searched page is collected and how two services' pages merge."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from services.common.errors import InvalidInput
from services.common.listing import MAX_PAGE, SEARCH_CHUNK, ListQuery, collect, key, merge, parse_key


@pytest.mark.parametrize("arguments, field, rule", [
    ({"limit": 0}, "limit", "range"),
    ({"limit": MAX_PAGE + 1}, "limit", "range"),
    ({"limit": True}, "limit", "range"),
    ({"limit": "20"}, "limit", "range"),
    ({"statuses": ["to_sign", "paid_in_gold"]}, "status", "one_of"),
    ({"statuses": "to_sign"}, "status", "list"),
    ({"statuses": []}, "status", "list"),
    ({"q": "李" * 51}, "q", "string"),
    ({"q": "   "}, "q", "string"),
    ({"template_id": 7}, "template_id", "string"),
    ({"before": {"at": "2026-12-06T10:00:00", "id": "x"}}, "before.at", "datetime"),
    ({"before": {"at": "yesterday", "id": "x"}}, "before.at", "datetime"),
    ({"before": {"at": "2026-12-06T10:00:00+00:00", "id": ""}}, "before.id", "string"),
    ({"before": {"at": "2026-12-06T10:00:00+00:00"}}, "before", "object"),
    ({"before": "2026-12-06"}, "before", "object"),
])
def test_a_bad_page_request_is_refused_naming_the_parameter_and_rule(arguments, field, rule):
    with pytest.raises(InvalidInput) as refused:
        ListQuery.parse("person-1", **arguments)
    assert (refused.value.field, refused.value.rule) == (field, rule)


def test_a_person_id_is_required():
    with pytest.raises(InvalidInput) as refused:
        ListQuery.parse(None)
    assert refused.value.field == "person_id"


def test_keys_round_trip_and_compare_as_text_across_whole_and_fractional_seconds():
    whole, fraction = datetime(2026, 12, 6, 10, 0, 0), datetime(2026, 12, 6, 10, 0, 0, 1)
    assert parse_key(key(whole, "a")) == (whole, "a")
    assert key(whole, "a")["at"] < key(fraction, "a")["at"]  # "…00.000000+00:00" < "…00.000001+00:00"
    # an offset other than UTC is converted
    assert parse_key({"at": "2026-12-06T18:00:00+08:00", "id": "a"}) == (whole, "a")


def test_search_text_matches_title_or_a_name_case_blind():
    query = ListQuery.parse("p", q="Li")
    assert query.matches("借条", ["王五", "li 四"]) and query.matches("LIST", [])
    assert not query.matches("借条", ["王五", None])
    assert ListQuery.parse("p").matches("anything", [])


def _rows(n: int):
    start = datetime(2026, 1, 1)
    # newest first, as the services read them
    return [(start + timedelta(minutes=n - i), f"id-{i:04d}") for i in range(n)]


def _fetcher(rows, calls):
    def fetch(after, limit):
        calls.append(limit)
        found = [r for r in rows if after is None or r < after]
        return found[:limit]
    return fetch


def test_a_page_without_search_is_one_fetch_of_one_more_than_asked():
    rows, calls = _rows(50), []
    page = collect(_fetcher(rows, calls), lambda r: {"id": r[1]}, lambda r: r, ListQuery.parse("p", limit=20))
    assert [item["id"] for item in page["items"]] == [r[1] for r in rows[:20]] and page["more"] is True
    assert calls == [21]


def test_a_search_reads_chunks_until_the_page_is_full_and_knows_whether_more_match():
    rows, calls = _rows(SEARCH_CHUNK * 2 + 30), []
    wanted = {rows[5][1], rows[SEARCH_CHUNK + 7][1], rows[-1][1]}  # the last one: in the third chunk

    def keep(row):
        return {"id": row[1]} if row[1] in wanted else None

    query = ListQuery.parse("p", limit=2, q="x")
    page = collect(_fetcher(rows, calls), keep, lambda r: r, query)
    assert [item["id"] for item in page["items"]] == [rows[5][1], rows[SEARCH_CHUNK + 7][1]]
    assert page["more"] is True and calls == [SEARCH_CHUNK, SEARCH_CHUNK, SEARCH_CHUNK]
    # the next page, after the last item's row: only the third match, and no more
    after = ListQuery.parse("p", limit=2, q="x", before=key(*rows[SEARCH_CHUNK + 7]))
    page = collect(_fetcher(rows, []), keep, lambda r: r, after)
    assert [item["id"] for item in page["items"]] == [rows[-1][1]] and page["more"] is False


def test_pages_of_two_services_merge_newest_first_and_keep_the_limit():
    def item(minute, record_id):
        return {"id": record_id, "key": key(datetime(2026, 1, 1, 0, minute), record_id)}

    drafts = {"items": [item(9, "d1"), item(5, "d2"), item(1, "d3")], "more": False}
    flows = {"items": [item(8, "f1"), item(5, "f2")], "more": False}
    merged = merge([drafts, flows], 3)
    # equal times order by id, descending, in both services and here
    assert [i["id"] for i in merged["items"]] == ["d1", "f1", "f2"] and merged["more"] is True
    assert merge([drafts, flows], 5)["more"] is False
    assert merge([{"items": [], "more": True}], 5)["more"] is True
