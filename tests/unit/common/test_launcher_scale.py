"""``esign up --scale``: which processes it starts, and what it refuses (tests/e2e/test_replicas.py runs them)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.common import launcher
from services.common.errors import InvalidInput
from services.common.launcher import MAX_REPLICAS, CannotStart, UpOptions, parse_scale


def test_counts_per_service_default_one():
    options = UpOptions(scale=parse_scale("signing=2, identity=3,gateway=2"))
    assert [options.replicas(s) for s in launcher.SERVICES] == [3, 1, 2, 1, 2]
    assert parse_scale("") == {}


@pytest.mark.parametrize("text,rule", [
    ("signing", "format"), ("billing=2", "service"), ("signing=2,signing=3", "unique"),
    ("signing=two", "integer"), ("signing=0", "range"), (f"signing={MAX_REPLICAS + 1}", "range"),
])
def test_a_bad_entry_names_the_option_and_the_rule(text, rule):
    with pytest.raises(InvalidInput) as caught:
        parse_scale(text)
    assert (caught.value.field, caught.value.rule) == ("--scale", rule)


def test_a_scaled_service_on_sqlite_is_refused_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("ESIGN_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SIGNING_DATABASE_URL", raising=False)
    monkeypatch.setenv("IDENTITY_DATABASE_URL", "postgresql://esign@127.0.0.1/esign")
    with pytest.raises(CannotStart) as caught:
        launcher._refuse_scaled_sqlite(UpOptions(scale={"signing": 2, "identity": 2, "gateway": 3}))
    message = str(caught.value)
    assert "signing=2" in message and "SIGNING_DATABASE_URL" in message
    assert "identity" not in message and "gateway" not in message  # PostgreSQL, and no database at all
    launcher._refuse_scaled_sqlite(UpOptions(scale={"gateway": 3}))  # nothing to refuse


def test_a_scaled_key_holder_on_the_embedded_token_is_refused_naming_the_ways_out(monkeypatch, tmp_path):
    monkeypatch.delenv("ESIGN_KEYS_BACKEND", raising=False)  # config.yaml's default: the embedded token
    monkeypatch.delenv("ESIGN_TOKEN_EMBEDDED", raising=False)
    with pytest.raises(CannotStart) as caught:
        launcher._refuse_scaled_embedded_token(UpOptions(scale={"identity": 2, "gateway": 3}), tmp_path)
    message = str(caught.value)
    assert "identity=2" in message and "ESIGN_KEYS_BACKEND=sealed" in message and "ESIGN_TOKEN_EMBEDDED" in message
    assert "signing" not in message and "gateway" not in message
    launcher._refuse_scaled_embedded_token(UpOptions(scale={"gateway": 3, "notify": 2}), tmp_path)  # no keys
    monkeypatch.setenv("ESIGN_KEYS_BACKEND", "sealed")
    launcher._refuse_scaled_embedded_token(UpOptions(scale={"identity": 2, "signing": 2}), tmp_path)


def test_replicas_after_the_first_get_their_own_metrics_port_and_gateways_share_theirs(monkeypatch, tmp_path):
    spawned = []
    monkeypatch.setattr(launcher, "_spawn", lambda name, argv, env, logs, metrics=None, serves=None:
                        spawned.append((name, env, metrics)) or SimpleNamespace(name=name, restart=None))
    monkeypatch.setenv("SIGNING_METRICS_PORT", "9103")
    for replica in (1, 2, 3):
        launcher._spawn_service("signing", replica, 3, {"SIGNING_METRICS_PORT": "9103"}, tmp_path, "http://x")
    for replica in (1, 2):
        launcher._spawn_service("gateway", replica, 2, {}, tmp_path, "http://x")
    names = [name for name, _, _ in spawned]
    assert names == ["signing", "signing-2", "signing-3", "gateway", "gateway-2"]
    ports = [metrics for _, _, metrics in spawned[:3]]
    assert ports[0] == "http://127.0.0.1:9103/metrics" and len(set(ports)) == 3
    assert all(env.get("ESIGN_GATEWAY_REUSE_PORT") == "true" for _, env, _ in spawned[3:])
    assert "ESIGN_GATEWAY_REUSE_PORT" not in spawned[0][1]


def test_a_dead_service_process_is_started_again_three_times_a_minute(monkeypatch, tmp_path):
    class Dead:
        returncode, pid = -9, 1

    started = []
    child = launcher.Child("signing-2", Dead(), tmp_path / "signing-2.log",
                           restart=lambda: started.append(1) or Dead())
    assert [launcher._restarted(child) for _ in range(4)] == [True, True, True, False]
    assert len(started) == 3
    later = launcher.time.monotonic() + launcher.RESTART_WINDOW + 1
    monkeypatch.setattr(launcher.time, "monotonic", lambda: later)  # a minute later: again
    assert launcher._restarted(child)
    assert launcher._restarted(launcher.Child("witness-1", Dead(), tmp_path / "w.log")) is False
