"""我的文件 over HTTP: pages of a person with many documents (issue #13).

The platform runs as deployed (bench/deployment.py: every service its own
process, on its own RabbitMQ, PostgreSQL and SeaweedFS). One person, the
lender, makes ``--drafts`` drafts and ``--flows`` IOUs sent for signing
(made, rendered and started over HTTP, 8 at a time) with three
counterparties; then each page below is read ``--runs`` times over one
keep-alive connection, one request at a time:

* floor: ``GET /api/v1/me``, the gateway's session check and one RPC, which
  every page pays;
* page 1 (20 items, drafts and flows merged), page 1 of one status (flows
  only), page 10 by the cursor;
* a search by a counterparty's name (every sealed summary of the person is
  opened until the page is full) and one that finds nothing (all are opened).

Prints p50 and p99 of each, and each p50 against the floor's. The target is
page 1 under 100 ms for a person with 1,000 documents.

    .venv/bin/python bench/my_files.py --drafts 500 --flows 500 --runs 50
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.deployment import Client, Person, bench_platform, iou_between  # noqa: E402
from bench.timing import report  # noqa: E402


def populate(client: Client, lender: Person, borrowers: list[Person], drafts: int, flows: int) -> None:
    """``drafts`` drafts and ``flows`` started IOUs of the lender's, alternating counterparties."""

    def draft(n: int) -> None:
        values = iou_between(lender, borrowers[n % len(borrowers)], amount=str(100 + n))
        client.post("/documents", {"template_id": "iou", "values": values})

    def flow(n: int) -> None:
        values = iou_between(lender, borrowers[n % len(borrowers)], amount=str(5000 + n))
        document_id = client.post("/documents", {"template_id": "iou", "values": values})["document_id"]
        client.post(f"/documents/{document_id}/render")
        client.post("/flows", {"document_id": document_id, "parties": [{"role": "出借人"}, {"role": "借款人"}]})

    started = time.perf_counter()
    pool = eventlet.GreenPool(8)
    for n in range(flows):
        pool.spawn_n(flow, n)
    for n in range(drafts):
        pool.spawn_n(draft, n)
    pool.waitall()
    print(f"populated {drafts} drafts and {flows} flows in {time.perf_counter() - started:.1f} s")


def timed(client: Client, path: str, runs: int) -> tuple[list[float], dict]:
    samples, answer = [], {}
    for _ in range(runs):
        start = time.perf_counter()
        answer = client.get(path)
        samples.append(time.perf_counter() - start)
    return samples, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drafts", type=int, default=500)
    parser.add_argument("--flows", type=int, default=500)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the platform's data directory")
    args = parser.parse_args()

    with bench_platform(people=4, keep=args.keep) as platform:
        lender, *borrowers = platform.people
        client = platform.http(lender)
        populate(client, lender, borrowers, args.drafts, args.flows)
        total = args.drafts + args.flows
        first = client.get("/me/files?limit=100")
        assert len(first["items"]) == min(100, total), len(first["items"])

        # the cursor of page 9, so "page 10" is one request
        cursor = None
        for _ in range(9):
            cursor = client.get("/me/files?" + urlencode({"limit": 20, **({"cursor": cursor} if cursor else {})}))[
                "next_cursor"]
            if cursor is None:
                break
        cases = [
            ("floor: GET /me", "/me"),
            (f"page 1 of {total}", "/me/files?limit=20"),
            ("page 1, status to_sign", "/me/files?limit=20&status=to_sign"),
            ("page 1, status draft", "/me/files?limit=20&status=draft"),
            ("page 10 by cursor", "/me/files?" + urlencode({"limit": 20, "cursor": cursor}) if cursor else None),
            ("search: a counterparty's name", "/me/files?" + urlencode({"limit": 20, "q": borrowers[0].name[1:]})),
            ("search: nothing matches (all opened)", "/me/files?" + urlencode({"limit": 20, "q": "无此人"})),
        ]
        print(f"\n{args.runs} requests each, one at a time, over one keep-alive connection")
        floor = None
        for name, path in cases:
            if path is None:
                print(f"{name:<40} skipped: fewer than 10 pages")
                continue
            samples, answer = timed(client, path, args.runs)
            p50 = report(name, samples)
            if floor is None:
                floor = p50
            else:
                print(f"{'':<40} {len(answer['items'])} items; p50 / floor = {p50 / floor:.2f}")
        page_one = statistics.median(timed(client, "/me/files?limit=20", args.runs)[0])
        print(f"\npage 1 of a person with {total} documents: p50 {page_one * 1000:.1f} ms (target < 100 ms)")


if __name__ == "__main__":
    main()
