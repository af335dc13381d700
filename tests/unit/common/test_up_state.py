"""What a running esign up tells other commands: it runs exactly while its lock is held,
whatever file a killed one left behind, and a second one on the same data directory is refused."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import up_state

PLATFORM = up_state.RunningPlatform(
    pid=4242, data_dir="/srv/esign", gateway="http://127.0.0.1:8000", sms_outbox="/srv/esign/sms-outbox.jsonl",
    registry_file="/srv/esign/identity-registry/registry.yaml", demo=True, witness_keys=("w1+abcd+AAA",),
    processes=(up_state.Process("identity", 4243, "/srv/esign/logs/identity.log", "http://127.0.0.1:9101/metrics"),))

#: esign up as far as the lock goes: holds it, publishes, then waits to be killed
HOLDER = """
import sys, time
from pathlib import Path
from services.common import up_state
data = Path(sys.argv[1])
lock = up_state.hold(data)
up_state.publish(data, up_state.RunningPlatform.from_json(sys.argv[2]))
print("held", flush=True)
time.sleep(60)
"""


def test_the_state_reads_back_as_written(tmp_path):
    up_state.publish(tmp_path, PLATFORM)
    assert up_state.RunningPlatform.from_json((tmp_path / up_state.STATE_FILE).read_text("utf-8")) == PLATFORM
    up_state.withdraw(tmp_path)
    up_state.withdraw(tmp_path)  # twice: nothing to remove is fine
    assert not (tmp_path / up_state.STATE_FILE).exists()


def test_running_while_the_lock_is_held_and_not_after_a_kill_9(tmp_path):
    with pytest.raises(up_state.NotRunning, match="esign up is not running on"):
        up_state.running(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), PLATFORM.to_json()],
                              cwd=Path(__file__).resolve().parents[3], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert up_state.running(tmp_path) == PLATFORM
        with pytest.raises(up_state.AlreadyRunning, match=r"already running on .* \(pid 4242\)"):
            up_state.hold(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert (tmp_path / up_state.STATE_FILE).exists()  # left behind by the killed one ...
    with pytest.raises(up_state.NotRunning):  # ... and not believed
        up_state.running(tmp_path)
    with up_state.hold(tmp_path):  # the next esign up takes the directory, and has not published yet
        up_state.withdraw(tmp_path)
        with pytest.raises(up_state.NotRunning, match="still starting"):
            up_state.running(tmp_path)
