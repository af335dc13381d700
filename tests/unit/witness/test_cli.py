"""``esign witness`` init / add-log / key / status, and the state directory they keep."""
from __future__ import annotations

import os
import stat

import pytest

from services.cli import main as esign
from services.signing.checkpoint import NoteSigner
from services.witness.config import (
    KEY_FILE,
    LOGS_FILE,
    STATE_FILE,
    LogsFile,
    WitnessConfigError,
    load_signer,
    read_logs,
    write_logs,
)
from services.witness.cosignature import CosignatureVerifier
from services.witness.protocol import InconsistentCheckpoint, format_add_checkpoint
from tests.unit.witness.vectors import M_INIT, M_PK, ToyLog


def test_init_makes_a_private_key_and_prints_the_verifier_key(tmp_path, capsys):
    directory = tmp_path / "w"
    assert esign(["witness", "init", "--state-dir", str(directory), "--name", "witness.example.org/w1"]) == 0
    vkey = capsys.readouterr().out.strip()
    verifier = CosignatureVerifier.from_key_string(vkey)
    assert verifier.name == "witness.example.org/w1"
    assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert (directory / KEY_FILE).read_text().startswith("PRIVATE+KEY+witness.example.org/w1+")
    assert read_logs(directory / LOGS_FILE).keys == {}
    assert (directory / STATE_FILE).is_file()
    assert esign(["witness", "key", "--state-dir", str(directory)]) == 0
    assert capsys.readouterr().out.strip() == vkey


def test_init_refuses_to_overwrite_a_key(tmp_path, capsys):
    directory = tmp_path / "w"
    esign(["witness", "init", "--state-dir", str(directory), "--name", "w1"])
    key = (directory / KEY_FILE).read_text()
    capsys.readouterr()
    assert esign(["witness", "init", "--state-dir", str(directory), "--name", "w2"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (directory / KEY_FILE).read_text() == key


def test_init_refuses_a_name_that_is_not_a_key_name(tmp_path, capsys):
    assert esign(["witness", "init", "--state-dir", str(tmp_path / "w"), "--name", "has space"]) == 2
    assert not (tmp_path / "w" / KEY_FILE).exists()


def test_add_log_keeps_keys_per_origin_and_refuses_bad_keys(tmp_path, capsys):
    directory = tmp_path / "w"
    esign(["witness", "init", "--state-dir", str(directory), "--name", "w1"])
    assert esign(["witness", "add-log", "--state-dir", str(directory), "--origin", "monkeys", "--key", M_PK]) == 0
    other = NoteSigner.generate("monkeys").verifier.to_key_string()
    assert esign(["witness", "add-log", "--state-dir", str(directory), "--origin", "monkeys", "--key", other]) == 0
    assert esign(["witness", "add-log", "--state-dir", str(directory), "--origin", "monkeys", "--key", M_PK]) == 0
    assert read_logs(directory / LOGS_FILE).key_strings() == {"monkeys": [M_PK, other]}
    capsys.readouterr()
    assert esign(["witness", "add-log", "--state-dir", str(directory), "--origin", "x", "--key", M_PK[:-2] + "AA"]) == 2
    assert "log key" in capsys.readouterr().err
    assert esign(["witness", "add-log", "--state-dir", str(directory), "--origin", "a\nb", "--key", M_PK]) == 2


def test_a_key_file_readable_by_others_is_refused(tmp_path):
    directory = tmp_path / "w"
    esign(["witness", "init", "--state-dir", str(directory), "--name", "w1"])
    os.chmod(directory / KEY_FILE, 0o644)
    with pytest.raises(WitnessConfigError, match="chmod 600"):
        load_signer(directory)


def test_logs_file_is_reread_when_changed_and_a_broken_edit_keeps_the_old_list(tmp_path):
    write_logs(tmp_path, {"monkeys": [M_PK]})
    logs = LogsFile(tmp_path / LOGS_FILE)
    assert [v.to_key_string() for v in logs.current().verifiers("monkeys")] == [M_PK]
    other = NoteSigner.generate("bananas").verifier.to_key_string()
    write_logs(tmp_path, {"monkeys": [M_PK], "bananas": [other]})
    assert logs.current().verifiers("bananas")
    (tmp_path / LOGS_FILE).write_text("logs: [this is: not a map\n")
    assert logs.current().verifiers("bananas")


def test_status_shows_size_root_time_signatures_and_misbehaviour(state_dir, witness, capsys):
    signer = NoteSigner.generate("esign.test/log")
    esign(["witness", "add-log", "--state-dir", str(state_dir), "--origin", signer.name,
           "--key", signer.verifier.to_key_string()])
    honest, forked = ToyLog(signer).grow(3), ToyLog(signer, salt="x").grow(3)
    witness.add_checkpoint(format_add_checkpoint(0, [], M_INIT))
    witness.add_checkpoint(format_add_checkpoint(0, [], honest.checkpoint()))
    with pytest.raises(InconsistentCheckpoint):
        witness.add_checkpoint(format_add_checkpoint(3, [], forked.checkpoint()))
    capsys.readouterr()
    assert esign(["witness", "status", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("witness witness  key witness+")
    assert "monkeys\n  size          5\n  root          41smjBUiAU70EtKlT6lIOIYtRTYxYXsDB+XHfcvu/BE=\n" in out
    assert "signatures    log ok, witness ok" in out
    assert "esign.test/log\n  size          3\n" in out
    assert "misbehaviour  1 (fork 1)" in out
    assert "misbehaviour  0 (none)" in out


def test_init_refuses_a_directory_whose_state_belongs_to_a_lost_key(tmp_path, capsys):
    directory = tmp_path / "w"
    esign(["witness", "init", "--state-dir", str(directory), "--name", "w1"])
    (directory / KEY_FILE).unlink()
    assert esign(["witness", "init", "--state-dir", str(directory), "--name", "w1"]) == 2
    assert "use a new state directory" in capsys.readouterr().err
    assert not (directory / KEY_FILE).exists()


def test_run_reports_a_busy_port_in_one_line(state_dir, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert esign(["witness", "run", "--state-dir", str(state_dir), "--listen", f"127.0.0.1:{port}"]) == 2
    assert "cannot listen on" in capsys.readouterr().err
