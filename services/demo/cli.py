"""``esign demo [--data-dir DIR] [--out DIR]``: needs ``esign up --demo`` running
on the same data directory; prints the paths of the signed PDF and the report.
Exit status 0 when the IOU was signed by both and its report saved, 1 when a
step failed, 2 when there is no platform to run it on."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from services.common import up_state
from services.common.config import REPO_ROOT
from services.demo.walkthrough import DemoError, Walkthrough


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="esign demo", description="two demo people sign an IOU on the "
                                     "running platform (esign up --demo)")
    parser.add_argument("--data-dir", default=None, help="esign up's data directory (default $ESIGN_DATA_DIR "
                                                         "or ./var)")
    parser.add_argument("--out", default=None, help="where to save the signed PDF and the report "
                                                    "(default <data dir>/demo)")
    args = parser.parse_args(argv)
    data = Path(args.data_dir or os.environ.get("ESIGN_DATA_DIR") or REPO_ROOT / "var").resolve()
    try:
        platform = up_state.running(data)
    except up_state.NotRunning as exc:
        print(f"esign demo: {exc}. Start the platform first: './dev up --demo' (or '.venv/bin/esign up --demo"
              f"{'' if data == (REPO_ROOT / 'var').resolve() else ' --data-dir ' + str(data)}') and wait for "
              f"'esign is up.'", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        walkthrough = Walkthrough(platform, Path(args.out).resolve() if args.out else data / "demo")
    except DemoError as exc:
        print(f"esign demo: {exc}", file=sys.stderr)
        return 2
    try:
        result = walkthrough.run()
    except DemoError as exc:
        print(f"esign demo: {exc}", file=sys.stderr)
        return 1
    print(f"\nThe IOU is signed by both parties (flow {result.flow_id}, {time.monotonic() - started:.1f} s).")
    print(f"  signed PDF:      {result.signed_pdf}")
    print(f"  signing report:  {result.report_json}")
    print(f"                   {result.report_pdf}")
    print(f"  platform root:   {result.root}")
    print("Check them offline, without the platform (signatures, time stamps, report, log proofs, witnesses):")
    print(f"  {result.verify_command}", flush=True)
    return 0
