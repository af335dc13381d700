"""The identity service's keys, loaded once per process: the keyring that
seals person keys and personal data (envelope encryption, key ids recorded
for rotation), the blind-index key for equality look-ups, and the OTP key."""
from __future__ import annotations

from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from services.common.config import data_dir, read_secret
from services.common.sealing import BlindIndex, Keyring
from services.identity.otp import OtpSecret


@dataclass(frozen=True)
class IdentityKeys:
    keyring: Keyring
    blind_index: BlindIndex
    otp: OtpSecret


def load_keys(config: dict) -> IdentityKeys:
    secrets = config.get("SECRETS") or {}
    generate = data_dir(config) if secrets.get("GENERATE_MISSING") else None
    kek_spec = secrets.get("KEK") or {}
    kek_id = str(kek_spec.get("id") or "kek-1")
    keks = {kek_id: read_secret(kek_spec, "kek", generate_in=generate)}
    for old in secrets.get("RETIRED_KEKS") or []:  # KEKs being rotated out, still able to open
        keks[str(old["id"])] = read_secret(old, f"kek-{old['id']}")
    return IdentityKeys(
        keyring=Keyring(keks, active=kek_id),
        blind_index=BlindIndex(read_secret(secrets.get("BLIND_INDEX_KEY"), "blind-index", generate_in=generate)),
        otp=OtpSecret(read_secret(secrets.get("OTP_KEY"), "otp", generate_in=generate)),
    )


class IdentityKeysProvider(DependencyProvider):
    def setup(self) -> None:
        self.keys = load_keys(self.container.config)

    def get_dependency(self, worker_ctx) -> IdentityKeys:
        return self.keys
