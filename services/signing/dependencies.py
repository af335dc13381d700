"""What the signing service's workers are handed besides the database: its
keys (the evidence log's, which also signs reports: on the PKCS#11 token or
sealed, :mod:`.log_key`), the evidence log, and the platform root it
verifies against."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nameko.extensions import DependencyProvider

from services.common.config import read_secret, secret_generation_dir
from services.common.database import DatabaseProvider
from services.common.errors import InvalidInput
from services.common.keystore import PKCS11, KeyStore
from services.common.keystore.provider import key_store_of
from services.common.keystore.settings import KeyStoreSettings, open_key_store
from services.common.metrics import BusinessMetrics
from services.common.sealing import Keyring, keyring_from_secrets
from services.signing import log_key
from services.signing.checkpoint import NoteSigner, NoteVerifier
from services.signing.evidence_log import EvidenceLog, SqlLogStore
from services.signing.log_key import evidence_log_key
from services.signing.settings import SigningSettings
from services.signing.witnesses import Witnessing, WitnessPolicy


@dataclass(frozen=True)
class SigningKeys:
    keyring: Keyring
    log_signer: NoteSigner
    #: a key store :func:`load_keys` opened itself (none given), closed by :meth:`close`
    owned_store: KeyStore | None = None

    def close(self) -> None:
        if self.owned_store is not None:
            self.owned_store.close()


def load_keyring(config: dict) -> Keyring:
    """The signing service's KEK keyring (sealed summaries, objects in S3)."""
    secrets = config.get("SECRETS") or {}
    return keyring_from_secrets(secrets, "signing-kek", "kek-1", secret_generation_dir(config))


def load_keys(config: dict, store: KeyStore | None = None) -> SigningKeys:
    """The keyring and the evidence log's signer: its Ed25519 key on the token ``KEYS`` names
    (``store``, or one opened here when not given) or, sealed, the secret ``LOG_KEY``."""
    settings = SigningSettings.from_config(config)
    owned = None
    if KeyStoreSettings.from_config(config).backend == PKCS11:
        if store is None:
            store = owned = open_key_store(config)
        try:
            key = evidence_log_key(config, store)
        except BaseException:
            if owned is not None:
                owned.close()
            raise
    else:
        if log_key.ref_path(config).exists():
            raise InvalidInput("keys.backend", "log_key_on_token",
                               f"the evidence log's key is on the PKCS#11 token ({log_key.ref_path(config)}):"
                               " expected KEYS.BACKEND pkcs11 (a new sealed key would break the witnesses' trust)")
        secrets = config.get("SECRETS") or {}
        seed = read_secret(secrets.get("LOG_KEY"), "evidence-log-key", generate_in=secret_generation_dir(config))
        key = Ed25519PrivateKey.from_private_bytes(seed[:32])
    return SigningKeys(load_keyring(config), NoteSigner(settings.log_origin, key), owned)


def log_verifier(config: dict) -> NoteVerifier:
    """The evidence log's public key, as witnesses are given it (the key made first if need be)."""
    keys = load_keys(config)
    try:
        return keys.log_signer.verifier
    finally:
        keys.close()


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
        self.keys = load_keys(self.container.config, key_store_of(self.container).open())
        self.platform = Platform()
        self.tsa_url = self.settings.tsa_url
        self.public_url = self.settings.public_url
        self.witness_policy = WitnessPolicy.from_config(self.container.config.get("WITNESSES"))
        self._log: EvidenceLog | None = None
        self._witnessing: Witnessing | None = None

    def evidence_log(self) -> EvidenceLog:
        if self._log is None:
            database = next(d for d in self.container.dependencies if isinstance(d, DatabaseProvider))
            self._log = EvidenceLog(SqlLogStore(database.db.sessionmaker), self.keys.log_signer)
            self._witnessing = Witnessing(database.db.sessionmaker, self._log, self.witness_policy,
                                          BusinessMetrics(self.container.service_name))
        return self._log

    def get_dependency(self, worker_ctx) -> "SigningContextView":
        log = self.evidence_log()
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
