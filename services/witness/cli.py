"""``esign witness``: make, configure, run and inspect a checkpoint witness.

  esign witness init    --state-dir DIR --name NAME        new key; prints the verifier key
  esign witness add-log --state-dir DIR --origin ORIGIN --key LOG_VKEY
  esign witness key     --state-dir DIR                    prints the verifier key
  esign witness run     --state-dir DIR [--listen HOST:PORT]
  esign witness status  --state-dir DIR                    per log: size, root, time; misbehaviour
"""
from __future__ import annotations

import argparse
import base64
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_LISTEN = "127.0.0.1:7380"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esign witness", description="A c2sp.org/tlog-witness for the evidence log")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--state-dir", required=True, type=Path, help="the witness's directory (key, logs, state)")
        return sub

    init = command("init", "make a new witness key and state directory")
    init.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example.org/w1")
    add = command("add-log", "follow a log: trust its key for checkpoints of its origin")
    add.add_argument("--origin", required=True, help="the checkpoints' origin line")
    add.add_argument("--key", required=True, help="the log's verifier key <name>+<key id>+<base64>")
    command("key", "print the witness's verifier key (cosignature/v1, type 0x04)")
    run = command("run", "serve add-checkpoint and the monitoring API until SIGTERM")
    run.add_argument("--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT (default {DEFAULT_LISTEN}; port 0 picks one)")
    command("status", "the latest cosigned checkpoint of each log, and misbehaviour seen")
    return parser


def main(argv: list[str]) -> int:
    from services.witness.state import StateError

    args = _parser().parse_args(argv)
    command = {"init": _init, "add-log": _add_log, "key": _key, "run": _run, "status": _status}[args.command]
    try:
        return command(args)
    except StateError as exc:
        print(f"esign witness: {exc}", file=sys.stderr)
        return 2


def _init(args) -> int:
    from services.witness.config import STATE_FILE, init_state_dir
    from services.witness.state import WitnessState

    signer = init_state_dir(args.state_dir, args.name)
    WitnessState(args.state_dir / STATE_FILE).close()
    print(signer.verifier.to_key_string())
    return 0


def _add_log(args) -> int:
    from services.witness.config import add_log

    verifier = add_log(args.state_dir, args.origin, args.key)
    note = "" if verifier.name == args.origin else f" (key name {verifier.name!r} differs from the origin)"
    print(f"following {args.origin} with key {verifier.name}+{verifier.key_id:08x}{note}")
    return 0


def _key(args) -> int:
    from services.witness.config import load_signer

    print(load_signer(args.state_dir).verifier.to_key_string())
    return 0


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise SystemExit(f"esign witness: expected --listen HOST:PORT, found {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _run(args) -> int:
    from services.common.logs import configure_logging
    from services.witness.config import LOGS_FILE, STATE_FILE, LogsFile, load_signer
    from services.witness.metrics import WitnessMetrics
    from services.witness.server import WitnessServer
    from services.witness.state import WitnessState
    from services.witness.witness import Witness

    configure_logging()
    signer = load_signer(args.state_dir)
    logs = LogsFile(args.state_dir / LOGS_FILE)
    state = WitnessState(args.state_dir / STATE_FILE)
    witness = Witness(signer, logs.current, state)
    try:
        metrics = WitnessMetrics(state, lambda: logs.current().keys)  # every log it trusts, kinds at 0
        server = WitnessServer(_listen_address(args.listen), witness, metrics)
    except OSError as exc:
        state.close()
        print(f"esign witness: cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 2

    def stop(signum, _frame) -> None:
        logging.getLogger("services.witness").info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever, which runs in this (the main) thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"witness {signer.name} listening on {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        state.close()  # waits for a request that is inside its transaction
    return 0


def _status(args) -> int:
    from services.signing.checkpoint import BadSignatureError, UnknownKeyError, open_note
    from services.witness.config import LOGS_FILE, STATE_FILE, load_signer, read_logs
    from services.witness.state import WitnessState

    signer = load_signer(args.state_dir)
    logs = read_logs(args.state_dir / LOGS_FILE)
    state = WitnessState(args.state_dir / STATE_FILE)
    try:
        state.check_integrity()
        latest = {cp.origin: cp for cp in state.all_latest()}
        counts = state.misbehaviour_counts()
    finally:
        state.close()
    print(f"witness {signer.name}  key {signer.verifier.to_key_string()}")
    for origin in sorted(set(logs.keys) | set(latest)):
        cp = latest.get(origin)
        followed = "" if origin in logs.keys else "  (no longer in logs.yaml)"
        print(f"{origin}{followed}")
        if cp is None:
            print("  no checkpoint cosigned yet")
        else:
            when = datetime.fromtimestamp(cp.cosigned_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            checks = []
            for label, verifiers in (("log", logs.verifiers(origin)), ("witness", (signer.verifier,))):
                try:
                    open_note(cp.note, verifiers)
                    checks.append(f"{label} ok")
                except (UnknownKeyError, BadSignatureError):
                    checks.append(f"{label} NOT VERIFIED")
            print(f"  size          {cp.size}")
            print(f"  root          {base64.b64encode(cp.root_hash).decode()}")
            print(f"  cosigned at   {when} ({cp.cosigned_at})")
            print(f"  signatures    {', '.join(checks)}")
        kinds = {kind: n for (o, kind), n in counts.items() if o == origin}
        summary = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none"
        print(f"  misbehaviour  {sum(kinds.values())} ({summary})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
