"""The signing service's settings, read once from its nameko config.

``ASSURANCE.REQUIRED_LEVEL`` is the platform's minimum identity assurance
(:mod:`services.common.assurance`) for every flow: a party signs, or consents
to a void, only with a certificate stating at least the level its flow
requires. A flow may require more, never less. A bad value raises
:class:`~services.common.errors.InvalidInput` naming the setting, so a
misconfigured replica stops at start-up instead of letting weaker identities
sign.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from services.common.assurance import LEVELS, AssuranceLevel
from services.common.errors import InvalidInput

#: without configuration, only people an authority proofed with a live face check may sign
DEFAULT_REQUIRED_LEVEL = AssuranceLevel.AUTHORITY_FACE_LIVENESS


@dataclass(frozen=True)
class SigningSettings:
    required_assurance: AssuranceLevel = DEFAULT_REQUIRED_LEVEL

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SigningSettings":
        assurance = config.get("ASSURANCE") or {}
        if not isinstance(assurance, Mapping):
            raise InvalidInput("assurance", "type", "expected a mapping")
        value = assurance.get("REQUIRED_LEVEL")
        if value is None or value == "":
            return cls()
        try:
            level = AssuranceLevel(value)
        except ValueError:
            raise InvalidInput("assurance.required_level", "allowed_values",
                               f"expected one of {', '.join(LEVELS)}, found {value!r}") from None
        return cls(required_assurance=level)
