"""Where the online CA material lives and how the identity service loads it.

``esign ca issue-ca`` (:func:`services.identity.ca_cli.issue_ca`) writes a CA
directory; the service reads it at start (config ``CA.DIR``)::

    root.pem                  the offline root's certificate (public)
    root.crl                  the root's CRL (DER; long nextUpdate, re-issued offline)
    issuing.pem               issuing CA certificate
    issuing-key.ref           its private key on the PKCS#11 token (a KeyRef's JSON), or
    issuing-key.sealed        the key sealed under the KEK (ESL1 text)
    tsa.pem, tsa-key.ref|.sealed          RFC 3161 TSA certificate (EKU timeStamping) and key
    service.pem, service-key.ref|.sealed  platform signatures (reports, checkpoints)
    ocsp.pem, ocsp-key.ref|.sealed        delegated OCSP responder (EKU OCSPSigning + ocsp-nocheck)

No private key is ever on disk in clear. With ``KEYS.BACKEND: pkcs11`` each
key is generated on the token (label ``<LABEL_PREFIX>ca/<role>/<serial>``) and
the directory holds only its ref; the CA's builders, the OCSP responder and
the TSA sign through it (:mod:`services.common.keystore.private_keys`,
:mod:`services.common.keystore.cms_signer`). With ``sealed`` each
``*.sealed`` file is an envelope-encrypted PKCS#8 blob
(services/common/sealing.py) bound to its role and certificate serial,
openable only with the KEK named in it; ``esign keys migrate --to pkcs11``
moves them onto the token. The root is not among them: it stays offline, on
a token of its own (``esign ca init``, :mod:`services.identity.root_custody`;
or a passphrase-encrypted PKCS#8 file), and signs only when an issuing CA or
the root CRL is made.

OCSP answers are signed by the delegated responder (RFC 6960 §4.2.2.2), not
by the issuing CA key: pdfsig (NSS) trusted only the first signature of a
file when answers came from the CA itself (see tests/support/pki.py).

Development default: when ``CA.DIR`` holds no issuing CA and
``CA.REQUIRE_EXISTING`` is false, :func:`ensure_development_ca` creates a root
and an issuing CA under ``<DATA_DIR>/ca``, logged loudly as development-only.
With ``KEYS.BACKEND: pkcs11`` on the embedded token, the root's key is
generated on a token of its own in the same SoftHSM2 home (label
``esign-dev-root``, its own random PIN in ``secrets/``; made with the
services' token before the process first initialises SoftHSM2:
:func:`development_tokens`), used to sign the root, the issuing CA and the
root CRL, and let go (logged out, sessions closed); ``CA.DIR/dev-root`` holds
``root.pem`` and ``root-token.json``, no key. Otherwise (``sealed``, or an HSM)
the root's key is an encrypted PKCS#8 file there, its generated passphrase in
a 0600 file beside it.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import logging
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from nameko.extensions import DependencyProvider

from services.common.config import data_dir
from services.common.errors import Conflict, IntegrityError
from services.common.keystore import EC_P256, PKCS11, TOKEN_MISSING, KeyRef, KeyStore, fault
from services.common.keystore.pkcs11_token import Pkcs11KeyStore, TokenSettings
from services.common.keystore.private_keys import StoreEcPrivateKey
from services.common.keystore.provider import key_store_of
from services.common.keystore.settings import KeyStoreSettings
from services.common.keystore.softhsm import SoftHsmToken, token_paths
from services.common.reasons import Reason
from services.common.sealing import Keyring, associated_data, from_text, to_text
from services.common.tsa import TimeStampAuthority
from services.identity import ca, root_custody
from services.identity.secrets import load_keys

log = logging.getLogger(__name__)

ISSUING_CERT_FILE = "issuing.pem"
ROOT_CRL_FILE = "root.crl"
ROLES = ("issuing", "tsa", "service", "ocsp")
ROOT_CRL_VALIDITY = _dt.timedelta(days=365)
DEV_ROOT_DIR = "dev-root"
DEV_PASSPHRASE_FILE = "dev-root-passphrase"
DEV_ROOT_TOKEN = "esign-dev-root"  #: the development root's token, in the services' embedded home


@dataclass(frozen=True)
class CaMaterial:
    """The online CA: the issuing CA with its key, the delegated OCSP
    responder, and the public certificates around them."""

    root: x509.Certificate
    issuing: ca.CertificateAuthority
    ocsp_responder: ca.CertificateAuthority
    tsa: x509.Certificate
    service: x509.Certificate
    root_crl_der: bytes | None

    def __repr__(self) -> str:
        return f"CaMaterial({self.issuing.certificate.subject.rfc4514_string()!r})"

    def platform_status(self, serial: int) -> ca.CertificateStatus | None:
        """GOOD for the platform's own certificates (TSA, service, OCSP responder)."""
        own = {c.serial_number for c in (self.tsa, self.service, self.ocsp_responder.certificate)}
        return ca.GOOD if serial in own else None


def publication_points(public_url: str) -> ca.PublicationPoints:
    """Where the platform serves the issuing CA's CRL, OCSP and certificate."""
    base = public_url.rstrip("/")
    return ca.PublicationPoints(crl_url=f"{base}/pki/crl", ocsp_url=f"{base}/pki/ocsp",
                                ca_issuers_url=f"{base}/pki/issuing.pem")


def issue_issuing_ca(root: ca.CertificateAuthority, public_url: str, subject: ca.CaSubject = ca.CaSubject(),
                     now: _dt.datetime | None = None,
                     validity: _dt.timedelta = ca.DEFAULT_ISSUING_VALIDITY,
                     key: ec.EllipticCurvePrivateKey | None = None,
                     serial: int | None = None) -> ca.CertificateAuthority:
    """As :func:`ca.issue_ca`, but with the root's CRL distribution point
    (``/pki/root.crl``) and no OCSP pointer: the offline root answers no OCSP,
    so a validator must go to its CRL (as the test PKI's issuing CA does).
    ``key``: one made for it (on the token, under a label naming ``serial``)."""
    key = key or ca.generate_key()
    crl_dp = x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(f"{public_url.rstrip('/')}/pki/root.crl")],
        relative_name=None, reasons=None, crl_issuer=None)])
    cert = ca._issue(
        root, ca._ca_name(subject, subject.issuing_common_name), key.public_key(), root.private_key,
        now or _dt.datetime.now(_dt.timezone.utc), validity,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (ca._key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
            (crl_dp, False),
        ],
        None,
        serial,
    )
    return ca.CertificateAuthority(cert, key)


def issue_ocsp_responder_certificate(
    issuing: ca.CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str = "esign OCSP Responder 1",
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = _dt.timedelta(days=365),
    serial: int | None = None,
) -> x509.Certificate:
    """A delegated OCSP responder (RFC 6960 §4.2.2.2): EKU id-kp-OCSPSigning
    and id-pkix-ocsp-nocheck (§4.2.2.2.1), so clients do not ask about the
    responder itself. No CRL DP or AIA: nocheck means none is consulted."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    subject = x509.Name([
        x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "esign"),
        x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name),
    ])
    ski = issuing.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    not_after = min(now + validity, issuing.certificate.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuing.certificate.subject)
        .public_key(public_key)
        .serial_number(serial or ca.random_serial())
        .not_valid_before(now - ca.CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .sign(issuing.private_key, hashes.SHA256())
    )


def build_delegated_ocsp_response(
    material: CaMaterial,
    request_der: bytes,
    lookup: ca.StatusLookup,
    now: _dt.datetime | None = None,
    next_update_in: _dt.timedelta = _dt.timedelta(hours=1),
) -> bytes:
    """RFC 6960 answer for a certificate of the issuing CA, signed by the
    delegated responder whose certificate rides in the response.
    Malformed → malformedRequest; another issuer → unauthorized; a nonce is echoed."""
    return ca.build_ocsp_response(material.issuing, request_der, lookup, now, next_update_in,
                                  responder=material.ocsp_responder)


# --- the CA's own keys -------------------------------------------------------

class PlatformKeys:
    """Where the online CA's keys are made: on the token (``store``), labelled
    ``<prefix>ca/<role>/<certificate serial>``, or in memory, to be sealed under
    ``keyring`` (``store`` None). Remembers what it made on the token, so a CA
    never written can take its keys back (:meth:`discard`)."""

    def __init__(self, keyring: Keyring | None, store: KeyStore | None = None, prefix: str = "esign/identity/"):
        self.keyring = keyring
        self.store = store
        self.prefix = prefix
        self.made: list[KeyRef] = []

    def label(self, role: str, serial: int) -> str:
        return f"{self.prefix}ca/{role}/{format(serial, 'x')}"

    def new_key(self, role: str, serial: int) -> ec.EllipticCurvePrivateKey:
        if self.store is None:
            return ca.generate_key()
        ref = self.store.generate(self.label(role, serial), EC_P256)
        self.made.append(ref)
        return StoreEcPrivateKey(self.store, ref)

    def discard(self) -> None:
        """Destroy the keys made on the token (their CA was not written); best effort."""
        made, self.made = self.made, []
        for ref in made:
            try:
                self.store.destroy(ref)
            except Exception as exc:  # noqa: BLE001 - nothing names it: harmless, and listed by label
                log.error("CA key %s (%s) not destroyed after a failed CA creation: %s", ref.key_id, ref.label,
                          type(exc).__name__)


# --- the CA directory -------------------------------------------------------

def _key_aad(role: str, cert: x509.Certificate) -> bytes:
    return associated_data("ca_key", role, format(cert.serial_number, "x"))


def key_ref_path(directory: Path, role: str) -> Path:
    return directory / f"{role}-key.ref"


def sealed_key_path(directory: Path, role: str) -> Path:
    return directory / f"{role}-key.sealed"


def write_role_key(directory: Path, role: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey,
                   keyring: Keyring) -> Path:
    """Write where ``role``'s key is: its ref (a key on the token) or the key sealed. Never overwrites."""
    if isinstance(key, StoreEcPrivateKey):
        path = key_ref_path(directory, role)
        root_custody.write_new(path, (key.ref.to_text() + "\n").encode("ascii"), 0o600)
    else:
        path = sealed_key_path(directory, role)
        sealed = ca.seal_private_key(keyring, key, _key_aad(role, cert))
        root_custody.write_new(path, (to_text(sealed) + "\n").encode("ascii"), 0o600)
    return path


def write_ca_material(directory: Path, material: CaMaterial, keyring: Keyring,
                      tsa_key: ec.EllipticCurvePrivateKey, service_key: ec.EllipticCurvePrivateKey) -> None:
    """Write every certificate and where its key is; refuses to overwrite (O_EXCL)."""
    directory.mkdir(parents=True, exist_ok=True)
    pairs = {
        "issuing": (material.issuing.certificate, material.issuing.private_key),
        "tsa": (material.tsa, tsa_key),
        "service": (material.service, service_key),
        "ocsp": (material.ocsp_responder.certificate, material.ocsp_responder.private_key),
    }
    # keys first: a directory whose issuing.pem exists is complete
    for role, (cert, key) in pairs.items():
        write_role_key(directory, role, cert, key, keyring)
    if not (directory / ca.ROOT_CERT_FILE).exists():
        root_custody.write_new(directory / ca.ROOT_CERT_FILE, ca.certificate_to_pem(material.root))
    if material.root_crl_der is not None:
        root_custody.write_new(directory / ROOT_CRL_FILE, material.root_crl_der)
    for role in ("tsa", "service", "ocsp"):
        root_custody.write_new(directory / f"{role}.pem", ca.certificate_to_pem(pairs[role][0]))
    root_custody.write_new(directory / ISSUING_CERT_FILE, ca.certificate_to_pem(material.issuing.certificate))


def has_issuing_ca(directory: Path) -> bool:
    return (directory / ISSUING_CERT_FILE).is_file()


def role_certificate(directory: Path, role: str) -> x509.Certificate:
    return ca.certificate_from_pem((directory / f"{role}.pem").read_bytes())


def load_role_key(directory: Path, role: str, certificate: x509.Certificate, keyring: Keyring,
                  store: KeyStore | None) -> ec.EllipticCurvePrivateKey:
    """``role``'s private key: the key on the token its ref names (a key object that signs there),
    else its sealed copy opened with the KEK; checked against its certificate either way."""
    ref_path = key_ref_path(directory, role)
    if ref_path.is_file():
        ref = KeyRef.from_text(ref_path.read_text("ascii").strip())
        if store is None:
            log.error("the %s key of %s is on a PKCS#11 token, but KEYS.BACKEND is sealed", role, directory)
            raise fault(TOKEN_MISSING)
        private: ec.EllipticCurvePrivateKey = StoreEcPrivateKey(store, ref)
        if sealed_key_path(directory, role).exists():
            log.warning("the %s key of %s is on the token and still sealed beside it: run"
                        " 'esign keys migrate --to pkcs11' again to remove the sealed copy", role, directory)
    else:
        blob = from_text(sealed_key_path(directory, role).read_text("ascii").strip())
        private = ca.unseal_private_key(keyring, blob, _key_aad(role, certificate))
        if store is not None:
            log.warning("the %s key of %s is sealed, not on the PKCS#11 token KEYS names: run"
                        " 'esign keys migrate --to pkcs11'", role, directory)
    if private.public_key() != certificate.public_key():
        raise IntegrityError(f"{role} key", "does not belong to its certificate")
    return private


def load_ca_material(directory: Path, keyring: Keyring, store: KeyStore | None = None) -> CaMaterial:
    """Read the CA directory and reach the issuing CA and OCSP responder keys."""
    issuing_cert, ocsp_cert = role_certificate(directory, "issuing"), role_certificate(directory, "ocsp")
    crl_path = directory / ROOT_CRL_FILE
    return CaMaterial(
        root=role_certificate(directory, "root"),
        issuing=ca.CertificateAuthority(issuing_cert, load_role_key(directory, "issuing", issuing_cert, keyring,
                                                                    store)),
        ocsp_responder=ca.CertificateAuthority(ocsp_cert, load_role_key(directory, "ocsp", ocsp_cert, keyring,
                                                                        store)),
        tsa=role_certificate(directory, "tsa"),
        service=role_certificate(directory, "service"),
        root_crl_der=crl_path.read_bytes() if crl_path.is_file() else None,
    )


def create_issuing_material(
    root: ca.CertificateAuthority,
    public_url: str,
    now: _dt.datetime | None = None,
    keys: PlatformKeys | None = None,
) -> tuple[CaMaterial, ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]:
    """Issuing CA (signed by ``root``), TSA, platform service and OCSP
    responder certificates, and a fresh root CRL; their keys made by ``keys``
    (in memory when not given). Returns the material and the TSA and service
    keys (which the service does not keep in memory)."""
    keys = keys if keys is not None else PlatformKeys(None)
    serials = {role: ca.random_serial() for role in ROLES}
    issuing = issue_issuing_ca(root, public_url, now=now, key=keys.new_key("issuing", serials["issuing"]),
                               serial=serials["issuing"])
    points = publication_points(public_url)
    tsa_key, service_key = keys.new_key("tsa", serials["tsa"]), keys.new_key("service", serials["service"])
    ocsp_key = keys.new_key("ocsp", serials["ocsp"])
    tsa = ca.issue_tsa_certificate(issuing, tsa_key.public_key(), "esign Time-Stamping Authority 1", points, now=now,
                                   serial=serials["tsa"])
    service = ca.issue_service_certificate(issuing, service_key.public_key(), "esign Platform 1", points, now=now,
                                           serial=serials["service"])
    responder = issue_ocsp_responder_certificate(issuing, ocsp_key.public_key(), now=now, serial=serials["ocsp"])
    root_crl = ca.build_crl(root, [], crl_number=int((now or _dt.datetime.now(_dt.timezone.utc)).timestamp()),
                            now=now, next_update_in=ROOT_CRL_VALIDITY)
    material = CaMaterial(root=root.certificate, issuing=issuing,
                          ocsp_responder=ca.CertificateAuthority(responder, ocsp_key),
                          tsa=tsa, service=service, root_crl_der=ca.crl_to_der(root_crl))
    return material, tsa_key, service_key


def make_ca_directory(directory: Path, root: ca.CertificateAuthority, public_url: str, keys: PlatformKeys,
                      now: _dt.datetime | None = None) -> CaMaterial:
    """Create the online CA material with ``keys`` and write it to ``directory``; a failure
    on the way destroys the keys it made on the token (nothing names them)."""
    try:
        material, tsa_key, service_key = create_issuing_material(root, public_url, now, keys)
        write_ca_material(directory, material, keys.keyring, tsa_key, service_key)
    except BaseException:
        keys.discard()
        raise
    keys.made = []
    return material


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Two replicas starting on one data directory create the CA once."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class DevelopmentRootToken:
    """The development root's token: a SoftHSM2 token of the services' embedded home."""

    settings: TokenSettings
    token: SoftHsmToken
    home: Path


def development_root_token(config: dict) -> DevelopmentRootToken | None:
    """Where the development root's key goes: a token of its own in the services' embedded
    SoftHSM2 home when ``KEYS`` names the embedded token, else ``None`` (a key file)."""
    settings = KeyStoreSettings.from_config(config)
    if settings.backend != PKCS11 or not settings.pkcs11.embedded:
        return None
    home = settings.pkcs11.embedded_dir or data_dir(config)
    token = token_paths(home, DEV_ROOT_TOKEN)
    services = settings.pkcs11.token
    return DevelopmentRootToken(TokenSettings(module=services.module, token_label=DEV_ROOT_TOKEN, pool_size=1,
                                              storage_dir=token.token_dir, min_free_bytes=services.min_free_bytes),
                                token, Path(home))


def development_tokens(config: dict) -> tuple[str, ...]:
    """The tokens of the embedded home identity opens itself besides the services' (for
    ``KeyStoreProvider``, which makes them before SoftHSM2 is first initialised): the development
    root's, while the service may still have to make its development CA."""
    directory, require, _ = ca_settings(config)
    if require or has_issuing_ca(directory) or development_root_token(config) is None:
        return ()
    return (DEV_ROOT_TOKEN,)


def ensure_development_ca(directory: Path, keys: PlatformKeys, public_url: str,
                          root_token: DevelopmentRootToken | None = None) -> None:
    """DEVELOPMENT ONLY: a root and issuing CA made on this machine; the root's key on
    ``root_token`` (a token of its own, let go once the CA is made), or else encrypted in a file
    with its passphrase in a 0600 file beside it. A deployment runs ``esign ca init`` on an
    offline machine and ``esign ca issue-ca``, then sets CA.REQUIRE_EXISTING."""
    with _directory_lock(directory):
        if has_issuing_ca(directory):
            return
        with _development_root(directory, keys.prefix, root_token) as root:
            make_ca_directory(directory, root, public_url, keys)
        where = "on its own token" if root_token is not None else "in a file"
        log.warning("DEVELOPMENT CA created in %s: its root key is on this machine (%s). "
                    "Not for production: run 'esign ca init' offline, 'esign ca issue-ca', "
                    "and set CA.REQUIRE_EXISTING", directory, where)


@contextmanager
def _development_root(directory: Path, label_prefix: str,
                      root_token: DevelopmentRootToken | None) -> Iterator[ca.CertificateAuthority]:
    """The development root, made or (after a start that stopped half-way) reopened, for the block."""
    root_dir = directory / DEV_ROOT_DIR
    made = (root_dir / ca.ROOT_CERT_FILE).is_file()
    if made and (root_dir / ca.ROOT_KEY_FILE).is_file():  # a key file (made so before): as it was made
        root_token = None
    elif made and root_token is None:
        log.error("the development root of %s is on a token, but KEYS does not name the embedded token", directory)
        raise fault(TOKEN_MISSING)
    if root_token is None:
        passphrase_path = directory / DEV_PASSPHRASE_FILE
        if not passphrase_path.exists():
            root_custody.write_new(passphrase_path, secrets.token_urlsafe(32).encode("ascii"), 0o600)
        passphrase = passphrase_path.read_bytes().strip()
        if not made:
            ca.init_root(root_dir, passphrase)
        yield ca.load_root(root_dir, passphrase)
        return
    try:
        pin = root_token.token.pin()
    except FileNotFoundError:
        log.error("the development root's token %r is not in %s (made before the first key store opened?)",
                  DEV_ROOT_TOKEN, root_token.home)
        raise fault(TOKEN_MISSING) from None
    store = Pkcs11KeyStore.open(root_token.settings, pin)
    try:
        if made:
            yield root_custody.root_from_store(root_dir, store)
        else:
            root_dir.mkdir(parents=True, exist_ok=True)
            (root_dir / ca.ROOT_TOKEN_FILE).unlink(missing_ok=True)  # of a start that stopped before root.pem
            place = root_custody.TokenPlace(root_token.settings.module, DEV_ROOT_TOKEN, str(root_token.home))
            yield root_custody.create_root_on_store(root_dir, store, label_prefix, place)
    finally:
        store.close()  # the last store on the root's token: its sessions close and it is logged out


class CaNotConfigured(RuntimeError):
    """CA.REQUIRE_EXISTING is set and CA.DIR holds no issuing CA."""


def ca_settings(config: dict) -> tuple[Path, bool, str]:
    settings = config.get("CA") or {}
    directory = settings.get("DIR")
    path = Path(directory) if directory else data_dir(config) / "ca"
    require = str(settings.get("REQUIRE_EXISTING", False)).lower() in ("1", "true", "yes")
    public_url = str(config.get("PUBLIC_URL") or "http://127.0.0.1:8000")
    return path, require, public_url


def open_ca(config: dict, keyring: Keyring, store: KeyStore | None = None) -> CaMaterial:
    """The online CA of ``CA.DIR`` (a development one made there first, unless
    CA.REQUIRE_EXISTING), its keys on ``store`` or sealed under ``keyring``."""
    directory, require, public_url = ca_settings(config)
    if not has_issuing_ca(directory):
        if require:
            raise CaNotConfigured(
                f"CA.REQUIRE_EXISTING is set and {directory} holds no issuing CA: "
                "run 'esign ca issue-ca' and point CA.DIR at its output")
        ensure_development_ca(directory, platform_keys(config, keyring, store), public_url,
                              development_root_token(config) if store is not None else None)
    return load_ca_material(directory, keyring, store)


def platform_keys(config: dict, keyring: Keyring, store: KeyStore | None) -> PlatformKeys:
    return PlatformKeys(keyring, store, KeyStoreSettings.from_config(config).label_prefix)


def load_tsa_authority(directory: Path, keyring: Keyring, material: CaMaterial,
                       store: KeyStore | None = None) -> TimeStampAuthority:
    """The platform's RFC 3161 time-stamp authority, from the TSA certificate
    and its key (on the token, or sealed) in the CA directory."""
    key = load_role_key(directory, "tsa", material.tsa, keyring, store)
    return TimeStampAuthority(material.tsa, key, [material.issuing.certificate])


class CaProvider(DependencyProvider):
    """Loads the online CA and the time-stamp authority once per process; the
    service refuses to start without a CA when CA.REQUIRE_EXISTING is set. Their
    keys are on the service's key store (``KEYS``) or sealed under its KEK."""

    def setup(self) -> None:
        config = self.container.config
        keyring = load_keys(config).keyring
        store = key_store_of(self.container).open()
        self.material = open_ca(config, keyring, store)
        self.points = publication_points(ca_settings(config)[2])
        self.tsa = load_tsa_authority(ca_settings(config)[0], keyring, self.material, store)

    def get_dependency(self, worker_ctx) -> "CaAccess":
        return CaAccess(self.material, self.points, self.tsa)


@dataclass(frozen=True)
class CaAccess:
    material: CaMaterial
    points: ca.PublicationPoints
    tsa: TimeStampAuthority


def conflict_if_exists(directory: Path) -> None:
    if has_issuing_ca(directory):
        raise Conflict(Reason.CA_EXISTS, "an issuing CA already exists in this directory")
