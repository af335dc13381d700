"""The signing service's settings: the platform's minimum identity assurance."""
from pathlib import Path

import pytest
import yaml

from services.common.assurance import AssuranceLevel
from services.common.errors import InvalidInput
from services.signing.settings import SigningSettings

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
])
def test_a_bad_value_stops_the_service_naming_the_setting(config, field, rule):
    with pytest.raises(InvalidInput) as error:
        SigningSettings.from_config(config)
    assert (error.value.field, error.value.rule) == (field, rule)
