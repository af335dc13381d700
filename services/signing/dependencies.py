"""What the signing service's workers are handed besides the database: its
keys, the evidence log, and the platform PKI material it signs and
time-stamps with."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nameko.extensions import DependencyProvider

from services.common.config import data_dir, read_secret
from services.common.database import DatabaseProvider
from services.common.outbox import utcnow
from services.common.sealing import Keyring, associated_data, from_text, to_text
from services.signing.checkpoint import NoteSigner
from services.signing.evidence_log import EvidenceLog, SqlLogStore
from services.signing.models import ServiceKey
from services.signing.tsa import TimeStampAuthority


@dataclass(frozen=True)
class SigningKeys:
    keyring: Keyring
    log_signer: NoteSigner


def load_keys(config: dict) -> SigningKeys:
    secrets = config.get("SECRETS") or {}
    generate = data_dir(config) if secrets.get("GENERATE_MISSING") else None
    kek_spec = secrets.get("KEK") or {}
    kek_id = str(kek_spec.get("id") or "kek-1")
    keyring = Keyring({kek_id: read_secret(kek_spec, "signing-kek", generate_in=generate)}, active=kek_id)
    seed = read_secret(secrets.get("LOG_KEY"), "evidence-log-key", generate_in=generate)
    origin = str((config.get("EVIDENCE_LOG") or {}).get("ORIGIN") or "esign.local/evidence-log")
    return SigningKeys(keyring, NoteSigner(origin, Ed25519PrivateKey.from_private_bytes(seed[:32])))


class Platform:
    """Per-process cache of the platform's public PKI material (from
    identity) and the time-stamp authority built from the service's own
    sealed TSA key. Built on first use, because identity may start later."""

    def __init__(self, keys: SigningKeys):
        self.keys = keys
        self._lock = threading.Lock()
        self.roots_pem: tuple[str, ...] | None = None
        self._tsa: TimeStampAuthority | None = None

    def trust_roots(self, identity) -> tuple[str, ...]:
        if self.roots_pem is None:
            self.roots_pem = (identity.pki_certificates()["root_pem"],)
        return self.roots_pem

    def tsa(self, session, identity) -> TimeStampAuthority:
        if self._tsa is not None:
            return self._tsa
        row = session.get(ServiceKey, "tsa")
        aad = associated_data("service_key", "tsa")
        if row is None:
            key = ec.generate_private_key(ec.SECP256R1())
            public_pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            issued = identity.issue_service_certificate(kind="tsa", public_key_pem=public_pem)
            key_der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
            row = ServiceKey(name="tsa", key_sealed=to_text(self.keys.keyring.seal(key_der, aad)),
                             certificate_pem=issued["certificate_pem"], chain_pem="".join(issued["chain_pem"]),
                             created_at=utcnow())
            session.add(row)
            session.commit()
        key = serialization.load_der_private_key(self.keys.keyring.open(from_text(row.key_sealed), aad), None)
        chain = x509.load_pem_x509_certificates(row.chain_pem.encode()) if row.chain_pem else []
        with self._lock:
            self._tsa = TimeStampAuthority(x509.load_pem_x509_certificate(row.certificate_pem.encode()),
                                           key, chain)
        return self._tsa


class SigningContext(DependencyProvider):
    """Hands workers the keys, the PKI cache and the evidence log."""

    def setup(self) -> None:
        self.keys = load_keys(self.container.config)
        self.platform = Platform(self.keys)
        self.tsa_url = str((self.container.config.get("TSA") or {}).get("URL") or "")
        self._log: EvidenceLog | None = None

    def _evidence_log(self) -> EvidenceLog:
        if self._log is None:
            database = next(d for d in self.container.dependencies if isinstance(d, DatabaseProvider))
            self._log = EvidenceLog(SqlLogStore(database.db.sessionmaker), self.keys.log_signer)
        return self._log

    def get_dependency(self, worker_ctx) -> "SigningContextView":
        return SigningContextView(self.keys, self.platform, self._evidence_log(), self.tsa_url)


@dataclass(frozen=True)
class SigningContextView:
    keys: SigningKeys
    platform: Platform
    log: EvidenceLog
    tsa_url: str


PENDING_TTL = timedelta(minutes=10)
