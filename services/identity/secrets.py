"""The identity service's keys, loaded once per process: the keyring that
seals person keys and personal data (envelope encryption, key ids recorded
for rotation), the blind-index key for equality look-ups, and the OTP key."""
from __future__ import annotations

from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from services.common.config import read_secret, secret_generation_dir
from services.common.sealing import BlindIndex, Keyring, keyring_from_secrets
from services.identity.otp import OtpSecret


@dataclass(frozen=True)
class IdentityKeys:
    keyring: Keyring
    blind_index: BlindIndex
    otp: OtpSecret


def load_keys(config: dict) -> IdentityKeys:
    secrets = config.get("SECRETS") or {}
    generate = secret_generation_dir(config)
    return IdentityKeys(
        keyring=keyring_from_secrets(secrets, "kek", "kek-1", generate),
        blind_index=BlindIndex(read_secret(secrets.get("BLIND_INDEX_KEY"), "blind-index", generate_in=generate)),
        otp=OtpSecret(read_secret(secrets.get("OTP_KEY"), "otp", generate_in=generate)),
    )


class IdentityKeysProvider(DependencyProvider):
    def setup(self) -> None:
        self.keys = load_keys(self.container.config)

    def get_dependency(self, worker_ctx) -> IdentityKeys:
        return self.keys
