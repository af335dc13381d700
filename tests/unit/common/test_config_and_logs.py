"""Configuration loading, secrets, and masking of personal data in logs."""
from __future__ import annotations

import logging
import os
import stat

import pytest

from services.common.config import SecretMissing, load_config, read_secret
from services.common.logs import RedactingFilter, redact


def test_service_config_takes_values_from_environment(monkeypatch):
    monkeypatch.setenv("IDENTITY_DATABASE_URL", "postgresql://esign@db/esign")
    monkeypatch.setenv("IDENTITY_METRICS_PORT", "9911")
    config = load_config("identity")
    assert config["DATABASE"]["URL"] == "postgresql://esign@db/esign"
    assert config["METRICS"]["PORT"] == 9911
    assert config["DATABASE"]["SCHEMA"] == "identity"


@pytest.mark.parametrize("service", ["identity", "documents", "signing", "notify", "gateway"])
def test_every_service_config_loads_without_secrets_in_it(service):
    text = open(f"services/{service}/config.yaml", encoding="utf-8").read()
    assert "base64:" not in text
    config = load_config(service)
    assert config["AMQP_URI"].startswith("pyamqp://")


def test_secret_from_env_wins_over_file(tmp_path, monkeypatch):
    path = tmp_path / "kek"
    path.write_text("base64:" + "QUFB" * 8)
    monkeypatch.setenv("TEST_KEK", "from-env")
    assert read_secret({"env": "TEST_KEK", "file": str(path)}, "kek") == b"from-env"
    monkeypatch.delenv("TEST_KEK")
    assert read_secret({"env": "TEST_KEK", "file": str(path)}, "kek") == b"AAA" * 8


def test_missing_secret_is_an_error_that_names_where_to_put_it(tmp_path):
    with pytest.raises(SecretMissing) as error:
        read_secret({"env": "NO_SUCH_VAR", "file": str(tmp_path / "absent")}, "kek")
    assert "NO_SUCH_VAR" in str(error.value)


def test_generated_secret_is_private_and_stable(tmp_path):
    spec = {"file": str(tmp_path / "secrets" / "kek")}
    first = read_secret(spec, "kek", generate_in=tmp_path)
    assert len(first) == 32
    assert stat.S_IMODE(os.stat(spec["file"]).st_mode) == 0o600
    assert read_secret(spec, "kek", generate_in=tmp_path) == first


def test_redact_masks_id_numbers_and_phones():
    line = "person 11010519491231002X phone +86 13800138000 amount 10005"
    cleaned = redact(line)
    assert "11010519491231002X" not in cleaned and "1101**********002X" in cleaned
    assert "13800138000" not in cleaned and "138****8000" in cleaned
    assert "10005" in cleaned


def test_log_records_and_tracebacks_are_masked(caplog):
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("registering %s", "440524188001010014")
        try:
            raise ValueError("bad phone 13912345678")
        except ValueError:
            logger.exception("failed")
    text = caplog.text
    assert "440524188001010014" not in text and "13912345678" not in text
    assert "4405**********0014" in text and "139****5678" in text


def test_loading_config_leaves_other_yaml_untouched(monkeypatch):
    """docker-compose files and templates use ${...} too; only service configs substitute."""
    import yaml

    monkeypatch.setenv("SOME_VAR", "substituted")
    load_config("identity")
    assert yaml.safe_load("key: ${SOME_VAR:?set it}") == {"key": "${SOME_VAR:?set it}"}
