"""Every benchmark in bench/ runs once, on tiny sizes, so none can rot unnoticed.

No timing is asserted here (benchmarks measure; tests check): each must exit 0
and print the figures it promises (its report lines), which it cannot do if
the code it drives has changed under it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
REPO = Path(__file__).resolve().parents[2]
LIMIT = 480  # seconds a tiny run may take, with the platform's start and people's registration

#: (script and tiny arguments, text its output must contain, or texts it must all contain)
RUNS = [
    (["pades.py", "2"], "sign step / floor ratio"),
    (["render.py", "2"], "render / floor ="),
    (["face_engine.py", "1"], "median"),
    (["evidence_log.py", "--tiny"], "sequenced /s"),
    (["sign_step.py", "--runs", "1", "--concurrency", "1", "--per-signer", "1", "--pause", "0"],
     "ratio server time / floor"),
    # the run above has every key on the embedded SoftHSM2 token (the default, issue #16). --keys sealed
    # only sets ESIGN_KEYS_BACKEND for the platform it starts: a sealed platform signs in the e2e IOU
    # test's [sealed] case and starts in test_up's killed-outright test, not again here (46 s of the suite)
    (["full_flow.py", "--users", "1", "--seconds", "8", "--sample", "1", "--statements", "3", "--sql-trace"],
     ("SQL statements per complete flow", "as the services counted it")),
    (["my_files.py", "--drafts", "3", "--flows", "3", "--runs", "2"], "page 1 of a person with 6 documents"),
    (["keystore.py", "--runs", "5", "--keys", "3", "--threads", "2"], "sign_digest p50 pkcs11 / sealed"),
    (["sql_statement.py", "--calls", "5", "--repeats", "1"], "ORM built per call / psycopg2 ="),
]


@pytest.mark.timeout(LIMIT + 120)
@pytest.mark.parametrize("script, promised", RUNS,
                         ids=[run[0][0] + ("-sealed" if "sealed" in run[0] else "") for run in RUNS])
def test_the_benchmark_runs_on_tiny_sizes(script, promised):
    process = subprocess.Popen([sys.executable, str(REPO / "bench" / script[0]), *script[1:]], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        out, err = process.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # its finally blocks stop the platform it started
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        pytest.fail(f"{' '.join(script)} ran past {LIMIT} s\n{out[-1500:]}\n{err[-3000:]}")
    promises = (promised,) if isinstance(promised, str) else promised
    assert process.returncode == 0 and all(p in out for p in promises), \
        f"exit {process.returncode}\n{out[-1500:]}\n{err[-3000:]}"
