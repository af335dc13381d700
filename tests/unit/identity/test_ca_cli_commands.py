"""`esign ca init` and `esign ca issue-ca` through the real command entry point."""
import subprocess

from services.cli import main


def test_root_then_issuing_ca_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ESIGN_CA_PASSPHRASE", "correct horse battery staple")
    monkeypatch.setenv("ESIGN_DATA_DIR", str(tmp_path / "data"))
    # the issuing CA's keys sealed, as before config.yaml's default became the embedded token: a token
    # under this test's data dir would be a second SoftHSM2 home in this process (refused)
    monkeypatch.setenv("ESIGN_KEYS_BACKEND", "sealed")
    assert main(["ca", "init", "--root-dir", str(tmp_path / "root")]) == 0
    assert main(["ca", "issue-ca", "--root-dir", str(tmp_path / "root"), "--out", str(tmp_path / "ca"),
                 "--public-url", "https://esign.example.com"]) == 0
    root, issuing = tmp_path / "root" / "root.pem", tmp_path / "ca" / "issuing.pem"
    checked = subprocess.run(["openssl", "verify", "-CAfile", str(root), str(issuing)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (tmp_path / "ca" / "root-key.pem").exists()  # the root key stays with the offline root
    # a second root in the same place is refused with a clear message, not a traceback
    assert main(["ca", "init", "--root-dir", str(tmp_path / "root")]) == 2
    assert "esign:" in capsys.readouterr().err


def test_short_passphrase_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ESIGN_CA_PASSPHRASE", "short")
    assert main(["ca", "init", "--root-dir", str(tmp_path / "root")]) == 2
    assert "passphrase" in capsys.readouterr().err
