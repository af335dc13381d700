"""The documents service's keys, loaded once per process: the keyring that
seals document values (envelope encryption under a key-encryption key with a
recorded id, as identity does) and the HMAC key of receipt invites.

Secrets come from ``config["SECRETS"]`` through
:func:`services.common.config.read_secret` (environment variable, else file;
generated under DATA_DIR only when ``GENERATE_MISSING`` is set). A config
without a ``SECRETS`` section (one built in code) gets the embedded default
of ``config.yaml``: generated files under DATA_DIR.
"""
from __future__ import annotations

from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from services.common.config import data_dir, read_secret
from services.common.sealing import Keyring, keyring_from_secrets

EMBEDDED_DEFAULT = {"KEK": {"env": "DOCUMENTS_KEK"}, "INVITE_KEY": {"env": "ESIGN_INVITE_KEY"},
                    "GENERATE_MISSING": True}


@dataclass(frozen=True)
class DocumentKeys:
    keyring: Keyring
    invite_key: bytes

    def __repr__(self) -> str:
        return f"DocumentKeys({self.keyring!r}, invite_key=<hidden>)"


def load_keys(config: dict) -> DocumentKeys:
    secrets = config.get("SECRETS")
    if secrets is None:
        secrets = EMBEDDED_DEFAULT
    generate = data_dir(config) if secrets.get("GENERATE_MISSING") else None
    return DocumentKeys(
        keyring=keyring_from_secrets(secrets, "documents-kek", "documents-kek-1", generate),
        invite_key=read_secret(secrets.get("INVITE_KEY"), "invite", generate_in=generate),
    )


class DocumentKeysProvider(DependencyProvider):
    def setup(self) -> None:
        self.keys = load_keys(self.container.config)

    def get_dependency(self, worker_ctx) -> DocumentKeys:
        return self.keys
