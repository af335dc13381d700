"""What the signing service's workers are handed besides the database: its
keys, the evidence log, and the platform root it verifies against."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nameko.extensions import DependencyProvider

from services.common.config import read_secret, secret_generation_dir
from services.common.database import DatabaseProvider
from services.common.metrics import BusinessMetrics
from services.common.sealing import Keyring, keyring_from_secrets
from services.signing.checkpoint import NoteSigner
from services.signing.evidence_log import EvidenceLog, SqlLogStore
from services.signing.settings import SigningSettings
from services.signing.witnesses import Witnessing, WitnessPolicy


@dataclass(frozen=True)
class SigningKeys:
    keyring: Keyring
    log_signer: NoteSigner


def load_keys(config: dict) -> SigningKeys:
    secrets = config.get("SECRETS") or {}
    generate = secret_generation_dir(config)
    keyring = keyring_from_secrets(secrets, "signing-kek", "kek-1", generate)
    seed = read_secret(secrets.get("LOG_KEY"), "evidence-log-key", generate_in=generate)
    origin = SigningSettings.from_config(config).log_origin
    return SigningKeys(keyring, NoteSigner(origin, Ed25519PrivateKey.from_private_bytes(seed[:32])))


class Platform:
    """Per-process cache of the platform root certificate (from identity),
    fetched on first use because identity may start later."""

    def __init__(self):
        self.roots_pem: tuple[str, ...] | None = None

    def trust_roots(self, identity) -> tuple[str, ...]:
        if self.roots_pem is None:
            self.roots_pem = (identity.pki_certificates()["root_pem"],)
        return self.roots_pem


class SigningContext(DependencyProvider):
    """Hands workers the keys, the settings, the PKI cache and the evidence log."""

    def setup(self) -> None:
        self.settings = SigningSettings.from_config(self.container.config)  # a bad value stops the start here
        self.keys = load_keys(self.container.config)
        self.platform = Platform()
        self.tsa_url = self.settings.tsa_url
        self.public_url = self.settings.public_url
        self.witness_policy = WitnessPolicy.from_config(self.container.config.get("WITNESSES"))
        self._log: EvidenceLog | None = None
        self._witnessing: Witnessing | None = None

    def _evidence_log(self) -> EvidenceLog:
        if self._log is None:
            database = next(d for d in self.container.dependencies if isinstance(d, DatabaseProvider))
            self._log = EvidenceLog(SqlLogStore(database.db.sessionmaker), self.keys.log_signer)
            self._witnessing = Witnessing(database.db.sessionmaker, self._log, self.witness_policy,
                                          BusinessMetrics(self.container.service_name))
        return self._log

    def get_dependency(self, worker_ctx) -> "SigningContextView":
        log = self._evidence_log()
        return SigningContextView(self.keys, self.platform, log, self.tsa_url, self.public_url, self.settings,
                                  self._witnessing)


@dataclass(frozen=True)
class SigningContextView:
    keys: SigningKeys
    platform: Platform
    log: EvidenceLog
    tsa_url: str
    public_url: str
    settings: SigningSettings
    witnesses: Witnessing

    # the document time stamp's authority (TSA.DOCUMENT_*): pdf_worker.finalize's keyword arguments
    @property
    def document_tsa_url(self) -> str:
        """Empty: the platform TSA (``tsa_url``) stamps the document too."""
        return self.settings.document_timestamp.url

    @property
    def document_tsa_roots_pem(self) -> tuple[str, ...]:
        """Roots of the document TSA: for finalising, and for verifying time stamps."""
        return self.settings.document_timestamp.roots_pem

    @property
    def document_tsa_auth(self) -> tuple[str, str] | None:
        return self.settings.document_timestamp.basic_auth


PENDING_TTL = timedelta(minutes=10)
