"""Every benchmark in bench/ runs once, on tiny sizes, so none can rot unnoticed.

No timing is asserted here (benchmarks measure; tests check): each must exit 0
and print the figures it promises (its report lines), which it cannot do if
the code it drives has changed under it. Two run at a time: most of a run
is waiting on processes it started.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
REPO = Path(__file__).resolve().parents[2]

#: (script and tiny arguments, text its output must contain)
RUNS = [
    (["pades.py", "2"], "sign step / floor ratio"),
    (["render.py", "2"], "p50"),
    (["face_engine.py", "1"], "p50"),
    (["evidence_log.py", "--tiny"], "sequenced /s"),
    (["sign_step.py", "--runs", "1", "--concurrency", "1", "--per-signer", "1"], "ratio server time / floor"),
    (["full_flow.py", "--users", "1", "--seconds", "8", "--sample", "1"], "complete IOU flows"),
]


def run(script: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / script[0]), *script[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def test_every_benchmark_runs_on_tiny_sizes():
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda entry: (entry, run(entry[0])), RUNS))
    failures = []
    for (script, promised), done in results:
        if done.returncode != 0 or promised not in done.stdout:
            failures.append(f"{' '.join(script)}: exit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    assert not failures, "\n\n".join(failures)
