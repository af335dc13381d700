"""The signing service's settings: the platform's minimum identity assurance, the document TSA, the
addresses, the PDF cache and the log's name, each refused by name when wrong."""
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import yaml

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.signing.settings import DocumentTimestampSettings, SigningSettings

CONFIG = Path(__file__).resolve().parents[3] / "services" / "signing" / "config.yaml"


def test_without_configuration_only_a_live_authority_face_check_may_sign():
    assert SigningSettings.from_config({}).required_assurance is AssuranceLevel.AUTHORITY_FACE_LIVENESS
    assert SigningSettings.from_config({"ASSURANCE": {"REQUIRED_LEVEL": ""}}).required_assurance \
        is AssuranceLevel.AUTHORITY_FACE_LIVENESS


def test_the_config_file_names_the_setting_and_its_default():
    text = CONFIG.read_text(encoding="utf-8")
    assert "REQUIRED_LEVEL: ${SIGNING_REQUIRED_ASSURANCE:authority_face_liveness}" in text
    assert "ASSURANCE" in yaml.safe_load(text)


@pytest.mark.parametrize("level", ["self_declared", "authority_two_element", "authority_face",
                                   "authority_face_liveness"])
def test_every_level_may_be_the_minimum(level):
    settings = SigningSettings.from_config({"ASSURANCE": {"REQUIRED_LEVEL": level}})
    assert settings.required_assurance is AssuranceLevel(level)


@pytest.mark.parametrize("config, field, rule", [
    ({"ASSURANCE": {"REQUIRED_LEVEL": "face"}}, "assurance.required_level", "allowed_values"),
    ({"ASSURANCE": {"REQUIRED_LEVEL": "AUTHORITY_FACE"}}, "assurance.required_level", "allowed_values"),
    ({"ASSURANCE": "authority_face"}, "assurance", "type"),
    ({"PUBLIC_URL": "esign.example"}, "public_url", "url"),
    ({"PUBLIC_URL": "ftp://esign.example"}, "public_url", "url"),
    ({"TSA": {"URL": "localhost:8000/tsa"}}, "tsa.url", "url"),
    ({"S3": {"PDF_CACHE_MB": "-1"}}, "s3.pdf_cache_mb", "integer"),
    ({"S3": {"PDF_CACHE_MB": "64MB"}}, "s3.pdf_cache_mb", "integer"),
    ({"S3": {"PDF_CACHE_MB": True}}, "s3.pdf_cache_mb", "integer"),
    ({"S3": ["PDF_CACHE_MB"]}, "s3", "type"),
    ({"EVIDENCE_LOG": {"ORIGIN": "esign evidence log"}}, "evidence_log.origin", "origin"),
])
def test_a_bad_value_stops_the_service_naming_the_setting(config, field, rule):
    with pytest.raises(InvalidInput) as error:
        SigningSettings.from_config(config)
    assert (error.value.field, error.value.rule) == (field, rule)


def test_addresses_cache_and_log_name_are_read_once_with_their_defaults():
    default = SigningSettings.from_config({})
    assert (default.public_url, default.tsa_url, default.pdf_cache_bytes, default.log_origin) == (
        "http://127.0.0.1:8000", "", 64 * 1024 * 1024, "esign.local/evidence-log")
    given = SigningSettings.from_config({"PUBLIC_URL": "https://esign.example/", "TSA": {"URL": "http://tsa:8000/"},
                                         "S3": {"PDF_CACHE_MB": "0"}, "EVIDENCE_LOG": {"ORIGIN": "esign.example/log"}})
    assert (given.public_url, given.tsa_url, given.pdf_cache_bytes, given.log_origin) == (
        "https://esign.example", "http://tsa:8000", 0, "esign.example/log")
    with pytest.raises(FrozenInstanceError):
        given.public_url = "http://elsewhere"


# --- TSA.DOCUMENT_*: the authority of the document time stamp ------------------------------


@pytest.fixture
def roots_file(tmp_path):
    """A PEM file of two root certificates, as a TSA vendor may ship its roots."""
    from tests.support.pki import build_pki

    path = tmp_path / "tsa-roots.pem"
    path.write_bytes(build_pki("http://127.0.0.1:1").root.pem + build_pki("http://127.0.0.1:1").root.pem)
    return path


def test_without_configuration_the_platform_tsa_stamps_the_document():
    settings = SigningSettings.from_config({"TSA": {"URL": "http://127.0.0.1:8000/tsa"}})
    assert settings.document_timestamp == DocumentTimestampSettings()
    assert settings.document_timestamp.url == "" and settings.document_timestamp.roots_pem == ()


def test_the_config_file_names_the_document_tsa_settings():
    text = CONFIG.read_text(encoding="utf-8")
    assert "DOCUMENT_URL: ${ESIGN_DOCUMENT_TSA_URL:}" in text
    assert "DOCUMENT_TRUST: ${ESIGN_DOCUMENT_TSA_ROOTS:}" in text
    tsa = yaml.safe_load(text)["TSA"]
    assert tsa["DOCUMENT_AUTH"]["USER"]["env"] == "ESIGN_DOCUMENT_TSA_USER"
    assert tsa["DOCUMENT_AUTH"]["PASSWORD"]["env"] == "ESIGN_DOCUMENT_TSA_PASSWORD"


def test_the_service_config_as_loaded_has_no_document_tsa(monkeypatch):
    from services.common.config import load_config

    for name in ("ESIGN_DOCUMENT_TSA_URL", "ESIGN_DOCUMENT_TSA_ROOTS", "ESIGN_DOCUMENT_TSA_USER",
                 "ESIGN_DOCUMENT_TSA_PASSWORD", "ESIGN_DOCUMENT_TSA_USER_FILE", "ESIGN_DOCUMENT_TSA_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert SigningSettings.from_config(load_config(CONFIG)).document_timestamp == DocumentTimestampSettings()


def test_an_external_document_tsa_with_its_roots(roots_file):
    settings = SigningSettings.from_config(
        {"TSA": {"DOCUMENT_URL": "http://tsa.example.cn/tsa", "DOCUMENT_TRUST": str(roots_file)}}
    ).document_timestamp
    assert settings.url == "http://tsa.example.cn/tsa"
    assert len(settings.roots_pem) == 2 and all(p.startswith("-----BEGIN CERTIFICATE-----") for p in settings.roots_pem)
    assert settings.basic_auth is None


def test_roots_without_a_url_are_kept_for_verification(roots_file):
    settings = DocumentTimestampSettings.from_config({"DOCUMENT_TRUST": str(roots_file)})
    assert settings.url == "" and len(settings.roots_pem) == 2


def test_basic_auth_comes_from_secrets_and_is_never_printed(roots_file, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_TSA_USER", "esign")
    (tmp_path / "password").write_text("s3cret\n")
    settings = DocumentTimestampSettings.from_config({
        "DOCUMENT_URL": "https://tsa.example.cn/tsa", "DOCUMENT_TRUST": str(roots_file),
        "DOCUMENT_AUTH": {"USER": {"env": "TEST_TSA_USER", "file": None},
                          "PASSWORD": {"env": "TEST_TSA_PASSWORD", "file": str(tmp_path / "password")}},
    })
    assert settings.basic_auth == ("esign", "s3cret")
    assert "s3cret" not in repr(settings)


def test_unset_auth_secrets_mean_no_auth(roots_file, monkeypatch):
    monkeypatch.delenv("TEST_TSA_USER", raising=False)
    settings = DocumentTimestampSettings.from_config({
        "DOCUMENT_URL": "https://tsa.example.cn/tsa", "DOCUMENT_TRUST": str(roots_file),
        "DOCUMENT_AUTH": {"USER": {"env": "TEST_TSA_USER", "file": ""}, "PASSWORD": {"env": "TEST_TSA_USER"}},
    })
    assert settings.basic_auth is None


@pytest.mark.parametrize("tsa, field, rule", [
    ({"DOCUMENT_URL": "tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}"}, "tsa.document_url", "url"),
    ({"DOCUMENT_URL": "ftp://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}"}, "tsa.document_url", "url"),
    ({"DOCUMENT_URL": "http://tsa.example.cn/tsa"}, "tsa.document_trust", "required"),
    ({"DOCUMENT_URL": "http://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{missing}"}, "tsa.document_trust", "file"),
    ({"DOCUMENT_URL": "http://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{not_pem}"}, "tsa.document_trust", "pem"),
    ({"DOCUMENT_URL": "https://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}",
      "DOCUMENT_AUTH": {"USER": {"env": "TEST_TSA_USER"}}}, "tsa.document_auth", "required"),
    ({"DOCUMENT_URL": "http://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}",
      "DOCUMENT_AUTH": {"USER": {"env": "TEST_TSA_USER"}, "PASSWORD": {"env": "TEST_TSA_USER"}}},
     "tsa.document_auth", "https_required"),
    ({"DOCUMENT_URL": "https://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}",
      "DOCUMENT_AUTH": {"USER": {"env": "TEST_TSA_USER"}, "PASSWORD": {"file": "{missing}"}}},
     "tsa.document_auth.password", "secret_missing"),
    ({"DOCUMENT_URL": "https://tsa.example.cn/tsa", "DOCUMENT_TRUST": "{roots}", "DOCUMENT_AUTH": "esign:s3cret"},
     "tsa.document_auth", "type"),
])
def test_a_bad_document_tsa_setting_stops_the_service_naming_it(tsa, field, rule, roots_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TSA_USER", "esign")
    (tmp_path / "not.pem").write_text("not a certificate")
    paths = {"roots": roots_file, "missing": tmp_path / "missing.pem", "not_pem": tmp_path / "not.pem"}

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value.format(**paths) if isinstance(value, str) else value

    with pytest.raises(InvalidInput) as error:
        SigningSettings.from_config({"TSA": fill(tsa)})
    assert (error.value.field, error.value.rule) == (field, rule)


def test_identity_stamps_signatures_unless_told_to_ask_the_url():
    assert SigningSettings.from_config({}).stamps_in_identity
    assert "SIGNATURE_STAMPS: ${ESIGN_TSA_SIGNATURE_STAMPS:identity}" in CONFIG.read_text(encoding="utf-8")
    by_url = SigningSettings.from_config({"TSA": {"URL": "http://tsa.example/tsa", "SIGNATURE_STAMPS": "URL"}})
    assert by_url.signature_stamps == "url" and not by_url.stamps_in_identity


@pytest.mark.parametrize("tsa, field, rule", [
    ({"SIGNATURE_STAMPS": "both"}, "tsa.signature_stamps", "allowed_values"),
    ({"SIGNATURE_STAMPS": "url"}, "tsa.url", "required"),
    ({"SIGNATURE_STAMPS": "url", "URL": "  "}, "tsa.url", "required"),
])
def test_a_bad_signature_stamps_setting_stops_the_service(tsa, field, rule):
    with pytest.raises(InvalidInput) as err:
        SigningSettings.from_config({"TSA": tsa})
    assert (err.value.field, err.value.rule) == (field, rule)
