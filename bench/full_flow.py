"""Complete IOU flows over HTTP under load, with Locust (bench/locustfile.py).

Usage: .venv/bin/python bench/full_flow.py [--users 16] [--seconds 60] [--keep] [--profile bench/results
       [--profile-services signing,identity] [--profile-rate 40]]

The platform runs as deployed (bench/deployment.py). ``--users`` pairs of
registered people (one Locust user each, no think time) make, render, start
and both sign IOUs over HTTP, SMS willingness included, for ``--seconds``.
Locust runs headless in its own process; its statistics give flows/s and
the flow's p50/p99 (the event ``IOU flow``), and every route's.

After the run, the platform is audited, not trusted: every flow Locust saw
complete is completed in signing's records; no SMS sent twice (an outbox
reference twice, or a flow's notices more than once); the evidence log has
every flow's events once each and no leaf missing (leaves = tree size);
and a sample of signed PDFs is checked by pdfsig (poppler, NSS) and by
pyHanko (the platform's own verify). Prints the figures, RSS of each
process idle and under load, and where the machine's CPU went during the load:
each service (with its worker processes), PostgreSQL, RabbitMQ, SeaweedFS,
Locust itself, and the rest (the kernel), per completed flow.
"""
from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import base64  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench import profiling  # noqa: E402
from bench.deployment import (  # noqa: E402
    SIGNATURE_IMAGE,
    bench_platform,
    reset_statement_counts,
    statement_counts,
)
from bench.sign_step import cpu_seconds, new_iou, rss_mb, sign_step  # noqa: E402
from services.common import sqltrace  # noqa: E402

HERE = Path(__file__).resolve().parent


def locust(host: str, users: int, seconds: int, config: Path, out: Path, completed: Path) -> None:
    env = dict(os.environ, ESIGN_BENCH_PEOPLE=str(config), ESIGN_BENCH_COMPLETED=str(completed))
    command = [str(Path(sys.executable).parent / "locust"), "-f", str(HERE / "locustfile.py"), "--headless",
               "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host, "--csv", str(out),
               "--only-summary", "--stop-timeout", "60"]
    subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (every core; /proc/stat: user, nice, system,
    irq, softirq; not idle, iowait, or steal, the time the hypervisor gave to other machines)."""
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def infrastructure_pids(processes) -> dict[str, int]:
    """The platform's own PostgreSQL (postmaster; its backends are its children), RabbitMQ node and S3."""
    found = {}
    try:
        found["postgresql"] = int((processes.postgres.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if processes.rabbit.pid():
        found["rabbitmq"] = processes.rabbit.pid()
    if getattr(processes.s3, "process", None) is not None:
        found["s3 (seaweedfs)"] = processes.s3.process.pid
    return found


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stats(prefix: Path) -> dict[str, dict]:
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as f:
        return {f"{row['Type']} {row['Name']}": row for row in csv.DictReader(f)}


def entrypoint_calls(env: dict) -> Counter:
    """Every service's ``esign_entrypoint_calls_total`` (all outcomes), by (service, kind, entrypoint),
    scraped from each process's metrics port."""
    counts: Counter = Counter()
    for service in ("identity", "documents", "signing", "notify", "gateway"):
        port = env.get(f"{service.upper()}_METRICS_PORT")
        if not port:
            continue
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            if family.name != "esign_entrypoint_calls":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    counts[(labels["service"], labels["kind"], labels["entrypoint"])] += sample.value
    return counts


def pdfsig(pdf: bytes, root_pem: str, workdir: Path) -> str:
    nss = workdir / "nss"
    if not nss.exists():
        nss.mkdir(parents=True)
        (workdir / "root.pem").write_text(root_pem)
        subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"], check=True, capture_output=True)
        subprocess.run(["certutil", "-A", "-n", "esign-root", "-t", "C,C,C", "-i", str(workdir / "root.pem"),
                        "-d", f"sql:{nss}"], check=True, capture_output=True)
    path = workdir / "signed.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(path)], capture_output=True, text=True).stdout


def audit(platform, completed: list[str], sample: int, workdir: Path) -> dict:
    pg, rpc = platform.deployed.processes.postgres, platform.deployed.rpc
    # the load has stopped: wait for every event to be published and every flow event to be in the tree
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        waiting = sum(pg.query(f"SELECT count(*) FROM {s}.outbox WHERE published_at IS NULL")[0][0]
                      for s in ("identity", "documents", "signing", "notify"))
        if waiting == 0 and pg.query("SELECT count(*) FROM signing.log_sequenced")[0][0] == 0:
            break
        time.sleep(0.5)
    found = {}
    if completed:
        rows = pg.query("SELECT id, state FROM signing.flows WHERE id = ANY(%s)", completed)
        found = dict(rows)
    not_completed = [f for f in completed if found.get(f) != "completed"]
    lines = platform.deployed.processes.sms()
    references_twice = sum(n - 1 for n in Counter(m.get("reference") for m in lines if m.get("reference")).values()
                           if n > 1)
    notices = Counter((m["template"], m["params"].get("link", "")) for m in lines
                      if m["template"] in ("sign_request", "flow_completed"))
    notices_twice = sum(1 for (template, link), n in notices.items() if n > 2)  # one per party at most
    leaves = pg.query("SELECT flow_id, leaf_data FROM signing.log_leaves WHERE flow_id = ANY(%s)", completed) \
        if completed else []
    per_flow = Counter(flow_id for flow_id, _ in leaves)
    event_ids = Counter(json.loads(bytes(data))["event_id"] for _, data in leaves)
    total_leaves = pg.query("SELECT count(*) FROM signing.log_leaves")[0][0]
    tree_size = pg.query("SELECT coalesce(max(size), 0) FROM signing.log_head")[0][0]
    root_pem = urllib.request.urlopen(platform.url + "/pki/root.pem", timeout=30).read().decode()
    checked, pdfsig_ok, pyhanko_ok = 0, 0, 0
    for flow_id in random.Random(5).sample(completed, min(sample, len(completed))):
        pdf = base64.b64decode(rpc.signing.get_signed_pdf(flow_id=flow_id)["pdf"])
        checked += 1
        out = pdfsig(pdf, root_pem, workdir)
        if out.count("Signature is Valid.") >= 2 and "Certificate is Trusted." in out:
            pdfsig_ok += 1
        report = rpc.signing.verify(pdf=base64.b64encode(pdf).decode())
        if report.get("ok"):
            pyhanko_ok += 1
    return {
        "flows_reported_completed": len(completed), "not_completed_in_signing": len(not_completed),
        "sms_references_twice": references_twice, "flows_with_notices_twice": notices_twice,
        "leaves_per_flow": dict(Counter(per_flow.values())),
        "flows_without_leaves": len(set(completed) - set(per_flow)),
        "event_leaves_twice": sum(n - 1 for n in event_ids.values() if n > 1),
        "leaves_missing_from_tree": tree_size - total_leaves if tree_size > total_leaves else 0,
        "tree_size": tree_size, "leaves": total_leaves,
        "pdfs_checked": checked, "pdfsig_valid": pdfsig_ok, "pyhanko_valid": pyhanko_ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=16, help="concurrent Locust users (pairs of people)")
    parser.add_argument("--seconds", type=int, default=60, help="how long Locust runs")
    parser.add_argument("--sample", type=int, default=5, help="signed PDFs checked by pdfsig and pyHanko")
    parser.add_argument("--keep", action="store_true", help="keep the platform's folder and logs")
    parser.add_argument("--profile", type=Path, help="write py-spy flame graphs and collapsed stacks of the load here")
    parser.add_argument("--profile-services", help="profile only these services (comma-separated; default all: on "
                                                   "2 cores ten samplers take most of the machine)")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy samples only threads holding the GIL")
    parser.add_argument("--statements", type=int, default=0, metavar="N",
                        help="PostgreSQL counts its statements (pg_stat_statements): print the N most called, per flow")
    parser.add_argument("--sql-trace", type=Path, metavar="DIR", nargs="?", const=Path(),
                        help="each service counts its statements and transactions by entry point and caller "
                             "(services/common/sqltrace.py) into DIR (default: the run's folder); print the "
                             "most frequent, per flow")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="esign-full-flow-"))
    if args.sql_trace == Path():
        args.sql_trace = workdir / "sql-trace"
    if args.sql_trace:
        os.environ[sqltrace.ENVIRONMENT] = str(args.sql_trace.resolve())
    try:
        run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def print_sql_trace(traced, flows: int) -> None:
    """Statements and transactions per flow: by service, by entry point, and the most frequent callers."""
    per = max(1, flows)
    print(f"\nSQL per complete flow, as the services counted it: {sum(traced.values()) / per:.1f} statements "
          f"and transaction ends, {sum(n for k, n in traced.items() if k[3] == 'BEGIN') / per:.1f} transactions")
    by_entry: dict[tuple[str, str], Counter] = {}
    for (service, entry, _caller, what), n in traced.items():
        by_entry.setdefault((service, entry), Counter())[what] += n
    for (service, entry), kinds in sorted(by_entry.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(kinds.values())
        if total / per < 0.5:
            continue
        top = ", ".join(f"{what} {n / per:.1f}" for what, n in kinds.most_common(6))
        print(f"  {service + '.' + entry:<44} {total / per:6.1f}  ({top})")
    print("  the most frequent (service, entry point, caller, statement):")
    for (service, entry, caller, what), n in traced.most_common(40):
        print(f"    {n / per:6.2f}  {service}.{entry}  {caller}  {what}")


def run(args, workdir: Path) -> None:
    print(f"starting the platform and registering {2 * args.users} people ...", flush=True)
    began = time.perf_counter()
    with bench_platform(people=2 * args.users, keep=args.keep, statements=bool(args.statements)) as platform:
        print(f"  ready in {time.perf_counter() - began:.0f} s", flush=True)
        pids = platform.pids()
        # warm-up: one complete flow, so worker processes and caches are up
        lender, borrower = platform.people[0], platform.people[1]
        flow_id = new_iou(platform, lender, borrower)
        sign_step(platform, platform.http(lender), flow_id)
        sign_step(platform, platform.http(borrower), flow_id)
        rss_idle = {name: rss_mb(pid) for name, pid in pids.items()}
        config = workdir / "people.json"
        config.write_text(json.dumps({
            "people": [vars(p) for p in platform.people], "outbox": str(platform.deployed.processes.sms_outbox),
            "signature_image": SIGNATURE_IMAGE}, ensure_ascii=False), "utf-8")
        completed_file = workdir / "completed.json"
        peak = {name: 0.0 for name in pids}

        def sample_rss() -> None:
            while True:
                for name, pid in pids.items():
                    peak[name] = max(peak[name], rss_mb(pid))
                eventlet.sleep(2)

        sampler = eventlet.spawn(sample_rss)
        infra = infrastructure_pids(platform.deployed.processes)
        cpu_before = {name: cpu_seconds(pid) for name, pid in {**pids, **infra}.items()}
        calls_before = entrypoint_calls(platform.deployed.processes.env)
        if args.statements:
            reset_statement_counts(platform)
        if args.sql_trace:
            eventlet.sleep(1.5)  # each process rewrites its counts at most once a second
            traced_before = sqltrace.load(args.sql_trace)
        machine_before, locust_before = machine_cpu_seconds(), children_cpu_seconds()
        profiled = {name: pid for name, pid in pids.items()
                    if not args.profile_services or name in args.profile_services.split(",")}
        profilers = profiling.start(args.profile, "full_flow", profiled, rate=args.profile_rate,
                                     gil=args.profile_gil) if args.profile else []
        started = time.perf_counter()
        locust(platform.url, args.users, args.seconds, config, workdir / "locust", completed_file)
        wall = time.perf_counter() - started
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in {**pids, **infra}.items()}
        cpu["locust (the load)"] = children_cpu_seconds() - locust_before  # py-spy's counts once it is stopped
        profiling.stop(profilers)
        cpu["the rest (kernel, other processes" + (", py-spy)" if profilers else ")")] = (
            machine_cpu_seconds() - machine_before) - sum(cpu.values())
        sampler.kill()
        calls = entrypoint_calls(platform.deployed.processes.env) - calls_before
        statements = statement_counts(platform) if args.statements else []
        if args.sql_trace:
            eventlet.sleep(1.5)
            traced = sqltrace.load(args.sql_trace) - traced_before
        completed = json.loads(completed_file.read_text()) if completed_file.exists() else []
        table = stats(workdir / "locust")
        result = audit(platform, completed, args.sample, workdir)

    flow_row = table.get("FLOW IOU flow", {})
    flows_ok = int(flow_row.get("Request Count", 0)) - int(flow_row.get("Failure Count", 0))
    print(f"\n{args.users} users, {args.seconds} s (locust ran {wall:.0f} s incl. ramp and stop), "
          f"{os.cpu_count()} cores")
    print(f"{'request':<40} {'count':>6} {'fail':>5} {'p50 ms':>8} {'p99 ms':>8} {'per s':>7}")
    for name, row in sorted(table.items()):
        if name.startswith("None Aggregated") or not row.get("Request Count"):
            continue
        print(f"{name:<40} {row['Request Count']:>6} {row['Failure Count']:>5} {row['50%']:>8} {row['99%']:>8} "
              f"{float(row['Requests/s']):>7.2f}")
    print(f"\ncomplete IOU flows: {flows_ok} ({flows_ok / args.seconds:.2f} flows/s over {args.seconds} s; "
          f"target >= 5), failed {flow_row.get('Failure Count', '?')}, p50 {flow_row.get('50%', '?')} ms, "
          f"p99 {flow_row.get('99%', '?')} ms")
    print("audit:", json.dumps(result, ensure_ascii=False))
    broken = {k: result[k] for k in ("not_completed_in_signing", "sms_references_twice", "flows_with_notices_twice",
                                     "flows_without_leaves", "event_leaves_twice", "leaves_missing_from_tree")
              if result[k]}
    if result["pdfsig_valid"] != result["pdfs_checked"] or result["pyhanko_valid"] != result["pdfs_checked"]:
        broken["pdfs_invalid"] = result["pdfs_checked"] - min(result["pdfsig_valid"], result["pyhanko_valid"])
    print("\nRSS (MB, with worker processes)   idle    peak under load")
    for name in pids:
        print(f"  {name:<30} {rss_idle[name]:7.0f} {peak[name]:9.0f}")
    cores = os.cpu_count() or 1
    print(f"\nCPU during the load ({wall:.0f} s, {cores} cores: {wall * cores:.0f} CPU s available)")
    print(f"  {'':<44} {'CPU s':>7} {'% of the machine':>17} {'ms per flow':>12}")
    for name, seconds in cpu.items():
        print(f"  {name:<44} {seconds:7.1f} {seconds / (wall * cores) * 100:16.0f}% "
              f"{seconds / max(1, flows_ok) * 1000:12.0f}")
    print(f"\nentrypoint calls per complete flow ({flows_ok} flows; health checks and timers included)")
    for kind in sorted({k for _, k, _ in calls}):
        rows = sorted(((n, s, e) for (s, k, e), n in calls.items() if k == kind and n), reverse=True)
        print(f"  {kind}: {sum(n for n, _, _ in rows) / max(1, flows_ok):.1f}")
        for n, service, entrypoint in rows:
            print(f"    {service + '.' + entrypoint:<50} {n / max(1, flows_ok):6.2f}")
    if statements:
        print(f"\nSQL statements per complete flow: {sum(n for n, _, _ in statements) / max(1, flows_ok):.1f} "
              f"({sum(ms for _, ms, _ in statements) / max(1, flows_ok):.1f} ms executing); the most called:")
        for n, ms, text in statements[:args.statements]:
            print(f"  {n / max(1, flows_ok):6.2f} {ms / max(1, n):6.2f} ms  {text[:150]}")
    if args.sql_trace:
        print_sql_trace(traced, flows_ok)
    if flows_ok == 0 or int(flow_row.get("Failure Count", 0)) or broken:
        print(f"NOT CLEAN: {flows_ok} flows completed, {flow_row.get('Failure Count', '?')} failed, {broken}")
        sys.exit(1)


if __name__ == "__main__":
    main()
