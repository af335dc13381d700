"""Evidence log benchmark: append rate and proof-generation time as the tree grows.

RFC 9162 proofs need O(log n) stored subtree hashes, so proof time should grow
like log n: from 10^3 to 10^6 leaves about 2x (log 10^6 / log 10^3), not 1000x.

    .venv/bin/python bench/evidence_log.py                      # memory to 10^6, SQL to 10^5
    .venv/bin/python bench/evidence_log.py --stores memory --max-exp 5
    .venv/bin/python bench/evidence_log.py --stores postgresql --sql-max-exp 6 --concurrency 16,64
    .venv/bin/python bench/evidence_log.py --tiny                # every path once, small, for CI

For SQLite and PostgreSQL the append rate is measured on real appends (one
transaction each, the head row locked); the rest of each size step is then
bulk-loaded with the same rows an append would write (computed with the
in-memory tree), so proof times at 10^5 do not wait on 10^5 transactions.

On PostgreSQL, after the size steps, the batched path at each ``--concurrency``:
that many threads sequence flow events (``EvidenceLog.sequence``, group
commit) while an integrator in another process integrates them; reported are
the sequencing rate (every append committed) and the integrated-through rate
(until the last one is a leaf), beside the one-transaction-per-leaf append
(``EvidenceLog.append``) at the same concurrency, measured in the same run.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, event, insert, text, update  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench.timing import median_ms  # noqa: E402
from services.signing import merkle  # noqa: E402
from services.signing.checkpoint import NoteSigner  # noqa: E402
from services.signing.evidence_log import EvidenceLog, MemoryLogStore, SqlLogStore
from services.signing.log_records import leaf_record
from services.signing.models import EVIDENCE_LOG_TABLES, Base, LogHead, LogLeaf, LogNode  # noqa: E402

PG_URL = os.environ.get("ESIGN_BENCH_PG_URL", "postgresql+psycopg2://root@127.0.0.1:5432/test")
FLOWS = 1000


def record(i: int) -> dict:
    return {
        "flow_id": f"flow-{i % FLOWS:06d}",
        "event_type": "party_signed",
        "timestamp": "2024-05-01T10:00:00Z",
        "document_hash": f"{i:064x}",
        "party_id": f"person-{i % 7919}",
        "certificate_serial": f"{i * 2654435761 % 2**64:x}",
        "willingness_method": "sms",
        "willingness_outcome": "passed",
    }




class BulkLoader:
    """Writes the rows appends would write, many per transaction (benchmark only)."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions
        self.tree = merkle.MemoryTree()
        self.last_of_flow: dict[str, int] = {}

    def catch_up(self, log: EvidenceLog) -> None:
        for index in range(self.tree.size, log.size()):
            leaf = log.leaf(index)
            self.tree.append_hash(leaf.leaf_hash)
            self.last_of_flow[leaf.flow_id] = index

    def load(self, upto: int, batch: int = 5000) -> None:
        from datetime import datetime, timezone

        now = datetime.now(timezone.utc)
        while self.tree.size < upto:
            leaves, nodes = [], []
            for _ in range(min(batch, upto - self.tree.size)):
                index = self.tree.size
                rec = record(index)
                data = leaf_record(rec, self.last_of_flow.get(rec["flow_id"]))
                leaf_hash = merkle.hash_leaf(data)
                siblings = self.tree.nodes(merkle.append_plan(index))
                for (level, node_index), value in merkle.completed_nodes(index, leaf_hash, siblings):
                    nodes.append({"level": level, "node_index": node_index, "hash": value})
                self.tree.append_hash(leaf_hash)
                self.last_of_flow[rec["flow_id"]] = index
                leaves.append({"leaf_index": index, "flow_id": rec["flow_id"], "leaf_data": data,
                               "leaf_hash": leaf_hash, "created_at": now})
            with self.sessions.begin() as session:
                session.execute(insert(LogLeaf), leaves)
                session.execute(insert(LogNode), nodes)
                session.execute(update(LogHead).where(LogHead.log_id == SqlLogStore.LOG_ID).values(size=self.tree.size))


def measure(log: EvidenceLog, grow: Callable[[int], float], sizes: list[int], samples: int) -> list[tuple]:
    rows = []
    rng = random.Random(6962)
    for size in sizes:
        rate = grow(size)
        assert log.size() == size
        inclusion = median_ms(lambda size=size: log.inclusion_proof(rng.randrange(size), size), samples)
        consistency = median_ms(lambda size=size: log.consistency_proof(rng.randrange(1, size), size), samples)
        checkpoint_start = time.perf_counter()
        log.checkpoint()
        checkpoint_ms = (time.perf_counter() - checkpoint_start) * 1000
        rows.append((size, rate, inclusion, consistency, checkpoint_ms))
        print(f"  {size:>9,d} leaves  append {rate:>9,.0f}/s  inclusion p50 {inclusion:7.3f} ms  "
              f"consistency p50 {consistency:7.3f} ms  checkpoint {checkpoint_ms:6.2f} ms", flush=True)
    return rows


def run_memory(sizes: list[int], samples: int) -> list[tuple]:
    log = EvidenceLog(MemoryLogStore(), NoteSigner.generate("bench.esign/log"))

    def grow(size: int) -> float:
        start_size, start = log.size(), time.perf_counter()
        for i in range(start_size, size):
            log.append(record(i))
        return (size - start_size) / (time.perf_counter() - start)

    return measure(log, grow, sizes, samples)


def run_sql(engine, sizes: list[int], samples: int, real_appends: int) -> list[tuple]:
    Base.metadata.create_all(engine, tables=EVIDENCE_LOG_TABLES)
    sessions = sessionmaker(engine)
    log = EvidenceLog(SqlLogStore(sessions), NoteSigner.generate("bench.esign/log"))
    loader = BulkLoader(sessions)
    measured: dict[str, float] = {}

    def grow(size: int) -> float:
        # real appends first, one transaction each; that is the rate reported
        start_size = log.size()
        count = min(real_appends, size - start_size)
        start = time.perf_counter()
        for i in range(start_size, start_size + count):
            log.append(record(i))
        measured["rate"] = count / (time.perf_counter() - start)
        loader.catch_up(log)
        loader.load(size)
        return measured["rate"]

    return measure(log, grow, sizes, samples)


def run_threads(action: Callable[[int], object], count: int, concurrency: int) -> float:
    """``action(i)`` for i in range(count) from ``concurrency`` threads; seconds taken."""
    next_index = iter(range(count))
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with guard:
                i = next(next_index, None)
            if i is None:
                return
            try:
                action(i)
            except BaseException as exc:  # reported after the run
                errors.append(exc)
                return

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def integrator_process(url: str, schema: str, stop) -> None:
    """Integrate until told to stop (another process: the appenders' GIL is not shared)."""
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    log = EvidenceLog(SqlLogStore(sessionmaker(engine)), NoteSigner.generate("bench.esign/log"))
    while not stop.is_set():
        if not log.integrate_all():
            time.sleep(0.005)
    engine.dispose()


def run_batched(engine, url: str, schema: str, concurrencies: list[int], count: int,
                baseline_count: int) -> list[tuple]:
    sessions = sessionmaker(engine, expire_on_commit=False)
    log = EvidenceLog(SqlLogStore(sessions), NoteSigner.generate("bench.esign/log"))
    run = uuid.uuid4().hex[:8]
    rows = []
    for concurrency in concurrencies:
        engine.pool.dispose()
        engine.pool._pool.maxsize = concurrency + 2  # noqa: SLF001 - one connection per appender thread
        base = log.size()
        old_seconds = run_threads(lambda i, base=base: log.append(record(base + i)), baseline_count, concurrency)
        old_rate = baseline_count / old_seconds

        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        integrator = context.Process(target=integrator_process, args=(url, schema, stop))
        integrator.start()
        base = log.size()
        start = time.perf_counter()
        sequenced_seconds = run_threads(
            lambda i, base=base, concurrency=concurrency: log.sequence(
                dict(record(base + i), event_id=f"{run}-{concurrency}-{i}")),
            count, concurrency)
        while log.size() < base + count:
            time.sleep(0.002)
        integrated_seconds = time.perf_counter() - start
        stop.set()
        integrator.join()
        assert log.pending() == 0 and log.size() == base + count
        row = (concurrency, old_rate, count / sequenced_seconds, count / integrated_seconds)
        rows.append(row)
        print(f"  {concurrency:>3d} appenders  one transaction per leaf {old_rate:8,.0f}/s   batched: sequenced "
              f"{row[2]:8,.0f}/s, integrated through {row[3]:8,.0f}/s  (x{row[3] / old_rate:.1f})", flush=True)
    return rows


def sqlite_engine(path: str):
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _wal(conn, _record):
        conn.execute("PRAGMA journal_mode=WAL")

    return engine


def ratio_line(name: str, rows: list[tuple]) -> None:
    first, last = rows[0], rows[-1]
    import math

    log_ratio = math.log(last[0]) / math.log(first[0])
    print(f"{name}: {last[0]:,d} vs {first[0]:,d} leaves: inclusion x{last[2] / first[2]:.2f}, "
          f"consistency x{last[3] / first[3]:.2f} (log ratio {log_ratio:.2f}, size ratio {last[0] / first[0]:,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="memory,sqlite,postgresql")
    parser.add_argument("--max-exp", type=int, default=6, help="memory store up to 10^N leaves")
    parser.add_argument("--sql-max-exp", type=int, default=5, help="SQL stores up to 10^N leaves")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--real-appends", type=int, default=1000, help="real SQL appends per size step")
    parser.add_argument("--concurrency", default="16,64", help="PostgreSQL batched appends: appender threads per run")
    parser.add_argument("--batched-appends", type=int, default=20000, help="sequenced appends per concurrency")
    parser.add_argument("--baseline-appends", type=int, default=500,
                        help="one-transaction-per-leaf appends per concurrency (the baseline)")
    parser.add_argument("--tiny", action="store_true", help="every path on tiny sizes, quickly (CI; no figures)")
    args = parser.parse_args()
    if args.tiny:
        args.max_exp, args.sql_max_exp, args.samples, args.real_appends = 3, 3, 20, 20
        args.concurrency, args.batched_appends, args.baseline_appends = "4", 200, 20
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    stores = args.stores.split(",")
    results: dict[str, list[tuple]] = {}
    batched: list[tuple] = []

    if "memory" in stores:
        print("memory store", flush=True)
        results["memory"] = run_memory([10**e for e in range(3, args.max_exp + 1)], args.samples)
    sql_sizes = [10**e for e in range(3, args.sql_max_exp + 1)]
    if "sqlite" in stores:
        print("SQLite store (WAL, file)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            engine = sqlite_engine(os.path.join(tmp, "bench.db"))
            results["sqlite"] = run_sql(engine, sql_sizes, max(args.samples // 5, 50), args.real_appends)
            engine.dispose()
    if "postgresql" in stores:
        print("PostgreSQL store", flush=True)
        schema = "bench_evidence_log_" + uuid.uuid4().hex[:8]
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
        try:
            results["postgresql"] = run_sql(engine, sql_sizes, max(args.samples // 5, 50), args.real_appends)
            if concurrencies:
                print("PostgreSQL batched appends (sequence + integrate)", flush=True)
                batched = run_batched(engine, PG_URL, schema, concurrencies, args.batched_appends,
                                      args.baseline_appends)
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    print()
    print(f"{'store':<11} {'leaves':>10} {'append/s':>10} {'incl p50 ms':>12} {'cons p50 ms':>12} {'ckpt ms':>8}")
    for name, rows in results.items():
        for size, rate, inclusion, consistency, checkpoint_ms in rows:
            print(f"{name:<11} {size:>10,d} {rate:>10,.0f} {inclusion:>12.3f} {consistency:>12.3f} "
                  f"{checkpoint_ms:>8.2f}")
    print()
    for name, rows in results.items():
        if len(rows) > 1:
            ratio_line(name, rows)
    if batched:
        print()
        print(f"{'appenders':>9} {'1 tx/leaf /s':>13} {'sequenced /s':>13} {'integrated /s':>14} {'ratio':>6}")
        for concurrency, old_rate, sequenced, integrated in batched:
            print(f"{concurrency:>9d} {old_rate:>13,.0f} {sequenced:>13,.0f} {integrated:>14,.0f} "
                  f"{integrated / old_rate:>6.1f}")


if __name__ == "__main__":
    main()
