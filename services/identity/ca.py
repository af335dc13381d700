"""The platform's certificate authority: X.509 (RFC 5280), CRL (RFC 5280 §5)
and OCSP (RFC 6960) with ECDSA P-256 / SHA-256.

Hierarchy::

    root CA   (offline; CA:TRUE pathlen 1; created by ``esign ca init``)
      └─ issuing CA   (online in the identity service; CA:TRUE pathlen 0)
           ├─ person certificates   (digitalSignature + nonRepudiation)
           ├─ TSA certificate       (EKU timeStamping, critical; RFC 3161 §2.3)
           └─ service certificates  (platform signatures on reports, checkpoints)

The root key is offline: on a PKCS#11 token of its own (the default of
``esign ca init``; :mod:`services.identity.root_custody`), or, with
``--key-file``, as the encrypted PKCS#8 file written by :func:`init_root` and
read by :func:`load_root`; the running service never holds it (its
development CA signs with its root once, at first start, and lets it go).
Every other private key is on the services' token or serialised only through
:mod:`services.common.sealing` (:func:`seal_private_key`).

A person certificate's subject is ``C=CN, CN=<name>, serialNumber=<keyed
hash of the ID number>``: the hash is computed by the caller (a blind index
with its own domain) so the certificate identifies the person uniquely
without carrying the ID number in clear.

The OCSP responder is the issuing CA itself (RFC 6960 §4.2.2.2 allows the CA
to sign directly), so no separate responder certificate is needed.
"""
from __future__ import annotations

import datetime as _dt
import enum
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.assurance import AssuranceLevel, policy_extension
from services.common.errors import Conflict, InvalidInput
from services.common.reasons import Reason
from services.common.sealing import Keyring

ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root-key.pem"  # the root key as encrypted PKCS#8 (``esign ca init --key-file``)
ROOT_TOKEN_FILE = "root-token.json"  # which token holds the root key (services/identity/root_custody.py)

DEFAULT_ROOT_VALIDITY = _dt.timedelta(days=20 * 365)
DEFAULT_ISSUING_VALIDITY = _dt.timedelta(days=8 * 365)
DEFAULT_PERSON_VALIDITY = _dt.timedelta(days=2 * 365)
DEFAULT_SERVICE_VALIDITY = _dt.timedelta(days=3 * 365)
# Certificates start a little in the past so a relying party whose clock
# lags a few minutes does not see a "not yet valid" certificate.
CLOCK_SKEW = _dt.timedelta(minutes=5)
SERIAL_BITS = 159  # positive, fits 20 DER octets (RFC 5280 §4.1.2.2)

_SIGNATURE_HASH = hashes.SHA256()
# X520SerialNumber is a PrintableString of at most 64 characters. Only hex
# of 128-256 bits is taken, so an ID number (18 characters) cannot slip in.
_SUBJECT_SERIAL = re.compile(r"[0-9a-f]{32,64}\Z")


@dataclass(frozen=True)
class CaSubject:
    """Names the CA certificates carry."""

    organization: str = "esign"
    country: str = "CN"
    root_common_name: str = "esign Root CA"
    issuing_common_name: str = "esign Issuing CA 1"


@dataclass(frozen=True)
class PublicationPoints:
    """URLs the platform serves, written into issued certificates."""

    crl_url: str
    ocsp_url: str
    ca_issuers_url: str  # where the issuing CA certificate can be fetched


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate with its private key (in memory only)."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.certificate.subject.rfc4514_string()!r})"


# --- keys and serials -----------------------------------------------------

def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def random_serial() -> int:
    """A random positive serial of at most 159 bits (CA/B BR ask >= 64)."""
    serial = 0
    while serial == 0:
        serial = secrets.randbits(SERIAL_BITS)
    return serial


def _now(now: _dt.datetime | None) -> _dt.datetime:
    return now if now is not None else _dt.datetime.now(_dt.timezone.utc)


# --- building blocks ------------------------------------------------------

def _ca_name(subject: CaSubject, common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, subject.country),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _publication_extensions(builder: x509.CertificateBuilder,
                            points: PublicationPoints | None) -> x509.CertificateBuilder:
    if points is None:
        return builder
    builder = builder.add_extension(
        x509.CRLDistributionPoints([
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(points.crl_url)],
                relative_name=None, reasons=None, crl_issuer=None,
            )
        ]),
        critical=False,
    )
    return builder.add_extension(
        x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(points.ocsp_url)),
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                   x509.UniformResourceIdentifier(points.ca_issuers_url)),
        ]),
        critical=False,
    )


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


def _issue(
    issuer: CertificateAuthority | None,
    subject_name: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signing_key: ec.EllipticCurvePrivateKey,
    now: _dt.datetime,
    validity: _dt.timedelta,
    extensions: Iterable[tuple[x509.ExtensionType, bool]],
    points: PublicationPoints | None,
    serial: int | None = None,
) -> x509.Certificate:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise InvalidInput("public_key", "algorithm", "expected an ECDSA P-256 public key")
    not_before = now - CLOCK_SKEW
    not_after = now + validity
    if issuer is not None:
        # A certificate must not outlive its issuer (RFC 5280 path validation
        # would reject it after the issuer expires anyway).
        not_after = min(not_after, issuer.certificate.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name)
        .issuer_name(issuer.certificate.subject if issuer else subject_name)
        .public_key(public_key)
        .serial_number(serial or random_serial())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    builder = _publication_extensions(builder, points)
    return builder.sign(signing_key, _SIGNATURE_HASH)


# --- root and issuing CA --------------------------------------------------

def create_root(
    subject: CaSubject = CaSubject(),
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_ROOT_VALIDITY,
    key: ec.EllipticCurvePrivateKey | None = None,
    serial: int | None = None,
) -> CertificateAuthority:
    """A self-signed root: CA:TRUE pathlen 1, keyCertSign + cRLSign (critical).
    ``key``: one made for it (on a token, under a label naming ``serial``); else one in memory."""
    key = key or generate_key()
    cert = _issue(
        None, _ca_name(subject, subject.root_common_name), key.public_key(), key, _now(now), validity,
        [
            (x509.BasicConstraints(ca=True, path_length=1), True),
            (_key_usage(key_cert_sign=True, crl_sign=True), True),
        ],
        None,
        serial,
    )
    return CertificateAuthority(cert, key)


def init_root(
    directory: str | os.PathLike,
    passphrase: bytes | str,
    subject: CaSubject = CaSubject(),
    now: _dt.datetime | None = None,
) -> x509.Certificate:
    """Create the offline root with its key in a file (``esign ca init --key-file``): write
    ``root.pem`` and the encrypted ``root-key.pem`` (PKCS#8, best available PBE) into
    ``directory``. Refuses to overwrite an existing root. A root on a token of its own:
    :func:`services.identity.root_custody.init_root`."""
    passphrase = _passphrase(passphrase)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / ROOT_CERT_FILE, folder / ROOT_KEY_FILE
    refuse_existing_root(folder)
    root = create_root(subject, now)
    key_pem = root.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    # O_EXCL + 0600: never clobber, never readable by others.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    cert_path.write_bytes(certificate_to_pem(root.certificate))
    return root.certificate


def refuse_existing_root(folder: Path) -> None:
    """``Conflict(ca_exists)`` when ``folder`` holds a root (its certificate, key file or token record)."""
    if any((folder / name).exists() for name in (ROOT_CERT_FILE, ROOT_KEY_FILE, ROOT_TOKEN_FILE)):
        raise Conflict(Reason.CA_EXISTS, "a root CA already exists in this directory")


def load_root(directory: str | os.PathLike, passphrase: bytes | str) -> CertificateAuthority:
    """Load an offline root whose key is a file (for ``esign ca`` commands only). A root on a
    token signs only while its token is open: :func:`services.identity.root_custody.open_root`
    opens either kind."""
    folder = Path(directory)
    if (folder / ROOT_TOKEN_FILE).exists():
        raise InvalidInput("root_dir", "on_token", "the root key is on a PKCS#11 token: open it with"
                                                   " root_custody.open_root")
    cert = certificate_from_pem((folder / ROOT_CERT_FILE).read_bytes())
    try:
        key = serialization.load_pem_private_key((folder / ROOT_KEY_FILE).read_bytes(), _passphrase(passphrase))
    except (ValueError, TypeError):
        raise InvalidInput("passphrase", "mismatch", "the root key does not open with this passphrase") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise InvalidInput("root_key", "mismatch", "the root key does not belong to root.pem")
    return CertificateAuthority(cert, key)


def create_issuing_ca(
    root_dir: str | os.PathLike,
    passphrase: bytes | str,
    subject: CaSubject = CaSubject(),
    root_points: PublicationPoints | None = None,
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_ISSUING_VALIDITY,
) -> CertificateAuthority:
    """An issuing CA signed by the offline root: CA:TRUE pathlen 0,
    keyCertSign + cRLSign + digitalSignature (it signs OCSP responses)."""
    from services.identity.root_custody import open_root  # it builds on this module

    with open_root(root_dir, passphrase) as root:
        return issue_ca(root, subject, root_points, now, validity)


def issue_ca(
    root: CertificateAuthority,
    subject: CaSubject = CaSubject(),
    root_points: PublicationPoints | None = None,
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_ISSUING_VALIDITY,
) -> CertificateAuthority:
    key = generate_key()
    cert = _issue(
        root, _ca_name(subject, subject.issuing_common_name), key.public_key(), root.private_key, _now(now), validity,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), True),
        ],
        root_points,
    )
    return CertificateAuthority(cert, key)


# --- end-entity certificates ---------------------------------------------

def issue_person_certificate(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    subject_serial: str,
    points: PublicationPoints,
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_PERSON_VALIDITY,
    assurance: AssuranceLevel | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """A person's signing certificate. ``name`` is the validated name;
    ``subject_serial`` the keyed hash of the ID number (32-64 lower-case
    hex characters, e.g. a :class:`~services.common.sealing.BlindIndex`
    digest in its own domain), never the number itself. ``assurance`` is
    stated as a certificate policy (:mod:`services.common.assurance`).
    ``serial``: one :func:`random_serial` chose before (the key's label names it)."""
    if not name or len(name) > 64:
        raise InvalidInput("name", "max_length", "expected 1-64 characters for the certificate common name")
    if not _SUBJECT_SERIAL.match(subject_serial or ""):
        raise InvalidInput("subject_serial", "format", "expected 32-64 lower-case hex characters (a keyed hash)")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.SERIAL_NUMBER, subject_serial),
    ])
    return _issue(
        ca, subject, public_key, ca.private_key, _now(now), validity,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            # nonRepudiation is "content_commitment" in X.509 (2005) terms.
            (_key_usage(digital_signature=True, content_commitment=True), True),
        ] + ([(policy_extension(assurance), False)] if assurance is not None else []),
        points,
        serial,
    )


def issue_tsa_certificate(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    points: PublicationPoints,
    subject: CaSubject = CaSubject(),
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_SERVICE_VALIDITY,
    serial: int | None = None,
) -> x509.Certificate:
    """A time-stamping authority certificate: RFC 3161 §2.3 requires the
    extendedKeyUsage extension with only id-kp-timeStamping, marked critical."""
    return _issue(
        ca, _ca_name(subject, common_name), public_key, ca.private_key, _now(now), validity,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), True),
        ],
        points,
        serial,
    )


def issue_service_certificate(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    points: PublicationPoints,
    subject: CaSubject = CaSubject(),
    now: _dt.datetime | None = None,
    validity: _dt.timedelta = DEFAULT_SERVICE_VALIDITY,
    serial: int | None = None,
) -> x509.Certificate:
    """A certificate for the platform's own signatures (signing reports,
    evidence-log checkpoints): digitalSignature + nonRepudiation, no EKU."""
    return _issue(
        ca, _ca_name(subject, common_name), public_key, ca.private_key, _now(now), validity,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(digital_signature=True, content_commitment=True), True),
        ],
        points,
        serial,
    )


# --- revocation: CRL and OCSP ---------------------------------------------

class RevocationReason(enum.Enum):
    """The RFC 5280 §5.3.1 reasons the platform uses."""

    unspecified = "unspecified"
    key_compromise = "key_compromise"  # reported loss of the phone / account
    affiliation_changed = "affiliation_changed"
    superseded = "superseded"  # re-registration issued a new certificate
    cessation_of_operation = "cessation_of_operation"  # account closed
    certificate_hold = "certificate_hold"
    privilege_withdrawn = "privilege_withdrawn"  # admin action

    @property
    def flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags[self.value]


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: _dt.datetime
    reason: RevocationReason = RevocationReason.unspecified


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[Revocation],
    crl_number: int,
    now: _dt.datetime | None = None,
    next_update_in: _dt.timedelta = _dt.timedelta(days=1),
) -> x509.CertificateRevocationList:
    """A full CRL signed by ``ca``. ``crl_number`` must increase with each
    CRL issued (RFC 5280 §5.2.3); the caller keeps the counter."""
    now = _now(now)
    ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate.subject)
        .last_update(now)
        .next_update(now + next_update_in)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    for entry in revoked:
        revoked_cert = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        if entry.reason is not RevocationReason.unspecified:
            # RFC 5280 §5.3.1: omit the reason code rather than use unspecified.
            revoked_cert = revoked_cert.add_extension(x509.CRLReason(entry.reason.flag), critical=False)
        builder = builder.add_revoked_certificate(revoked_cert.build())
    return builder.sign(ca.private_key, _SIGNATURE_HASH)


@dataclass(frozen=True)
class CertificateStatus:
    """What the certificate store knows about a serial issued by this CA:
    good when ``revocation`` is ``None``, revoked otherwise."""

    revocation: Revocation | None = None

    @property
    def revoked(self) -> bool:
        return self.revocation is not None


GOOD = CertificateStatus()


#: Looks up a serial number; ``None`` means "not issued by this CA" (unknown).
StatusLookup = Callable[[int], "CertificateStatus | None"]


def build_ocsp_response(
    ca: CertificateAuthority,
    request_der: bytes,
    lookup: StatusLookup,
    now: _dt.datetime | None = None,
    next_update_in: _dt.timedelta = _dt.timedelta(hours=1),
    responder: CertificateAuthority | None = None,
) -> bytes:
    """Answer a DER OCSP request (RFC 6960) for a certificate of ``ca``.

    Signed by ``ca`` itself, or by a delegated ``responder`` (an OCSPSigning
    certificate ``ca`` issued), whose certificate then rides in the response.
    A malformed request gets ``malformedRequest``; a request about another
    issuer gets ``unauthorized`` (RFC 5019 §2.2.3). A nonce in the request
    is echoed so clients that ask for one accept the answer."""
    now = _now(now)
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        cert_id = (request.issuer_name_hash, request.issuer_key_hash, request.serial_number, request.hash_algorithm)
        extensions = list(request.extensions)
    except Exception:  # noqa: BLE001 - any parse failure is a malformed request
        return ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER)
    issuer_name_hash, issuer_key_hash, serial, algorithm = cert_id
    if (issuer_name_hash, issuer_key_hash) != _issuer_hashes(ca.certificate, algorithm):
        return ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)

    status = lookup(serial)
    revocation_time = revocation_reason = None
    if status is None:
        cert_status = ocsp.OCSPCertStatus.UNKNOWN
    elif status.revocation is not None:
        cert_status = ocsp.OCSPCertStatus.REVOKED
        revocation_time = status.revocation.revoked_at
        if status.revocation.reason is not RevocationReason.unspecified:
            revocation_reason = status.revocation.reason.flag
    else:
        cert_status = ocsp.OCSPCertStatus.GOOD

    signer = responder or ca
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(issuer_name_hash, issuer_key_hash, serial, algorithm, cert_status,
                              now, now + next_update_in, revocation_time, revocation_reason)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
    )
    if responder is not None:
        builder = builder.certificates([responder.certificate])
    for ext in extensions:
        if isinstance(ext.value, x509.OCSPNonce):
            builder = builder.add_extension(ext.value, critical=False)
    return builder.sign(signer.private_key, _SIGNATURE_HASH).public_bytes(serialization.Encoding.DER)


def _issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """RFC 6960 §4.1.1 CertID hashes of the issuer's DER name and public key
    bit string (not the SubjectPublicKeyInfo)."""
    name_hash = hashes.Hash(algorithm)
    name_hash.update(issuer.subject.public_bytes())
    key_hash = hashes.Hash(algorithm)
    key_hash.update(issuer.public_key().public_bytes(serialization.Encoding.X962,
                                                     serialization.PublicFormat.UncompressedPoint))
    return name_hash.finalize(), key_hash.finalize()


# --- serialisation --------------------------------------------------------

def certificate_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certificate_to_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_from_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def certificate_from_der(data: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(data)


def crl_to_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def crl_to_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def public_key_to_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_from_pem(data: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidInput("public_key", "algorithm", "expected an EC public key")
    return key


def seal_private_key(keyring: Keyring, key: ec.EllipticCurvePrivateKey, aad: bytes) -> bytes:
    """The only way a private key leaves memory: PKCS#8 DER sealed under the
    keyring's active KEK, bound to ``aad`` (e.g. the key's record id)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return keyring.seal(der, aad)


def unseal_private_key(keyring: Keyring, blob: bytes, aad: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(keyring.open(blob, aad), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput("private_key", "algorithm", "expected an EC private key")
    return key


def _passphrase(passphrase: bytes | str) -> bytes:
    data = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    if len(data) < 8:
        raise InvalidInput("passphrase", "min_length", "expected at least 8 bytes")
    return data
