"""Failpoints (services/common/failpoints.py): a process dies where one is armed, once per arming."""
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PASS_IT = "from services.common.failpoints import failpoint; failpoint('notify.sms_handed_over'); print('alive')"


def run(env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ESIGN_FAILPOINTS"}
    if env_value is not None:
        env["ESIGN_FAILPOINTS"] = env_value
    return subprocess.run([sys.executable, "-c", PASS_IT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_an_armed_failpoint_kills_the_process_once_and_is_disarmed(tmp_path):
    arming = tmp_path / "arm"
    arming.touch()
    spec = f"other.point={tmp_path / 'other'}, notify.sms_handed_over={arming}"
    first = run(spec)
    assert first.returncode == -signal.SIGKILL and "alive" not in first.stdout
    assert not arming.exists()
    assert run(spec).stdout.strip() == "alive"  # fired once: the next process passes


def test_a_failpoint_does_nothing_unless_armed(tmp_path):
    assert run(None).stdout.strip() == "alive"
    assert run(f"notify.sms_handed_over={tmp_path / 'not-armed'}").stdout.strip() == "alive"
    assert run("garbage-without-a-path").stdout.strip() == "alive"
