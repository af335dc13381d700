"""A throwaway test PKI shaped like the platform's (RFC 5280 profile, ECDSA P-256).

root CA → issuing CA → persons (keyUsage digitalSignature+nonRepudiation,
critical; CA:FALSE; CRL distribution point and OCSP AIA) and the platform TSA
(critical EKU timeStamping). The issuing CA answers OCSP (RFC 6960) for what it
issued and both CAs publish CRLs, all served by :class:`PkiHttpServer` on
127.0.0.1 so the code under test fetches revocation data over real HTTP.
OCSP answers come from a delegated responder certificate (see
:meth:`TestPki.ocsp_response` for why that matters to pdfsig).

Keys stay in memory; nothing here is meant for production.
"""
from __future__ import annotations

import base64
import datetime as dt
import threading
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from urllib.parse import unquote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test E-Sign Platform"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class Issued:
    """A certificate with its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def sign_digest(self, digest: bytes) -> bytes:
        """What identity's ``sign_digest`` does: ECDSA over a SHA-256 prehash,
        DER-encoded (r, s)."""
        return self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))


@dataclass
class TestPki:
    base_url: str
    root: Issued
    issuing: Issued
    alice: Issued
    bob: Issued
    tsa: Issued
    ocsp_responder: Issued
    #: serial → (revocation time) for certificates issued by each CA
    revoked_by_issuing: dict[int, dt.datetime] = field(default_factory=dict)
    revoked_by_root: dict[int, dt.datetime] = field(default_factory=dict)
    #: count of OCSP/CRL requests answered, so tests can see fetching happened
    requests_served: int = 0
    paths_requested: list[str] = field(default_factory=list)
    #: person certificates issued after the start (issue_person), answered by OCSP like alice's
    persons: list[Issued] = field(default_factory=list)

    @property
    def chain(self) -> list[x509.Certificate]:
        """Intermediate(s) a leaf needs, root excluded."""
        return [self.issuing.certificate]

    def issue_person(self, common_name: str, extensions: tuple[x509.ExtensionType, ...] = ()) -> Issued:
        """Another person certificate like alice's, with ``extensions`` added
        (non-critical), e.g. ``assurance.policy_extension(level)``."""
        issued = issue_certificate(_name(common_name), new_key(), self.issuing, ca=False, base_url=self.base_url,
                                   crl_of_issuer="issuing", ocsp=True, extensions=extensions)
        self.persons.append(issued)
        return issued

    def revoke(self, who: Issued, at: dt.datetime | None = None) -> None:
        when = at or _utcnow() - dt.timedelta(minutes=5)
        if who.certificate.issuer == self.root.certificate.subject:
            self.revoked_by_root[who.certificate.serial_number] = when
        else:
            self.revoked_by_issuing[who.certificate.serial_number] = when

    # --- revocation services -------------------------------------------------

    def crl(self, ca: str) -> bytes:
        """DER CRL of ``ca`` ('root' or 'issuing'), fresh on each call."""
        issuer, revoked = (
            (self.root, self.revoked_by_root) if ca == "root" else (self.issuing, self.revoked_by_issuing)
        )
        return signed_crl(issuer, revoked)

    def ocsp_response(self, request_der: bytes) -> bytes:
        """Answer an OCSP request for a certificate the issuing CA issued.

        Signed by a delegated responder (EKU OCSPSigning + ocsp-nocheck, RFC
        6960 §4.2.2.2) whose certificate rides in the response: with answers
        signed by the CA key itself, pdfsig 22.12 (NSS) reported "Unknown issue
        with Certificate" for every signature after the first in a file.
        """
        request = ocsp.load_der_ocsp_request(request_der)
        known = {c.certificate.serial_number: c for c in (self.alice, self.bob, self.tsa, *self.persons)}
        subject = known.get(request.serial_number)
        if subject is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
                serialization.Encoding.DER
            )
        now = _utcnow()
        revoked_at = self.revoked_by_issuing.get(request.serial_number)
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=subject.certificate,
            issuer=self.issuing.certificate,
            algorithm=request.hash_algorithm,
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD,
            this_update=now - dt.timedelta(seconds=30),
            next_update=now + dt.timedelta(hours=1),
            revocation_time=revoked_at,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked_at else None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.ocsp_responder.certificate).certificates(
            [self.ocsp_responder.certificate]
        )
        for ext in request.extensions:
            if isinstance(ext.value, x509.OCSPNonce):
                builder = builder.add_extension(ext.value, critical=False)
        response = builder.sign(self.ocsp_responder.key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)

    def wsgi(self, environ, start_response):
        """OCSP at ``/ocsp`` (POST, and GET per RFC 6960 A.1, which NSS tries
        first), CRLs at ``/crl/root.crl`` and ``/crl/issuing.crl``."""
        path = environ.get("PATH_INFO", "")
        self.requests_served += 1
        self.paths_requested.append(f"{environ['REQUEST_METHOD']} {path[:40]}")
        if path == "/ocsp" and environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = self.ocsp_response(environ["wsgi.input"].read(length))
            content_type = "application/ocsp-response"
        elif path.startswith("/ocsp/") and environ["REQUEST_METHOD"] == "GET":
            body = self.ocsp_response(base64.b64decode(unquote(path[len("/ocsp/"):])))
            content_type = "application/ocsp-response"
        elif path in ("/crl/root.crl", "/crl/issuing.crl"):
            body = self.crl(path.rsplit("/", 1)[1].split(".")[0])
            content_type = "application/pkix-crl"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]


def signed_crl(issuer: Issued, revoked: dict[int, dt.datetime]) -> bytes:
    """DER CRL (RFC 5280 §5) of ``issuer`` listing ``revoked`` (serial → time), valid for a week."""
    now = _utcnow()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + dt.timedelta(days=7))
        .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )
    for serial, when in revoked.items():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    *,
    ca: bool,
    base_url: str,
    crl_of_issuer: str | None,
    ocsp: bool,
    eku_timestamping: bool = False,
    eku_ocsp_signing: bool = False,
    validity: dt.timedelta = dt.timedelta(days=730),
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> Issued:
    now = _utcnow()
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.certificate.subject if issuer else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False
        )
    )
    if ca:
        usage = dict(key_cert_sign=True, crl_sign=True, digital_signature=False, content_commitment=False)
    else:
        usage = dict(
            key_cert_sign=False, crl_sign=False, digital_signature=True,
            content_commitment=not (eku_timestamping or eku_ocsp_signing),
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False, **usage,
        ),
        critical=True,
    )
    if eku_timestamping:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    if eku_ocsp_signing:
        # RFC 6960 §4.2.2.2 delegated responder; id-pkix-ocsp-nocheck (§4.2.2.2.1)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    if crl_of_issuer:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(f"{base_url}/crl/{crl_of_issuer}.crl")],
                        relative_name=None, reasons=None, crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    if ocsp:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP,
                                        x509.UniformResourceIdentifier(f"{base_url}/ocsp"))]
            ),
            critical=False,
        )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def build_pki(base_url: str) -> TestPki:
    root_key = new_key()
    root = issue_certificate(_name("Test Root CA"), root_key, None, ca=True, base_url=base_url,
                             crl_of_issuer=None, ocsp=False, validity=dt.timedelta(days=3650))
    issuing = issue_certificate(_name("Test Issuing CA"), new_key(), root, ca=True, base_url=base_url,
                                crl_of_issuer="root", ocsp=False, validity=dt.timedelta(days=2920))

    def leaf(cn: str, **kw) -> Issued:
        return issue_certificate(_name(cn), new_key(), issuing, ca=False, base_url=base_url,
                                 crl_of_issuer="issuing", ocsp=True, **kw)

    return TestPki(
        base_url=base_url,
        root=root,
        issuing=issuing,
        alice=leaf("Alice Zhang"),
        bob=leaf("Bob Li"),
        # a TSA certificate outlives the person certificates it time-stamps
        tsa=leaf("Test Platform TSA", eku_timestamping=True, validity=dt.timedelta(days=2190)),
        ocsp_responder=issue_certificate(_name("Test OCSP Responder"), new_key(), issuing, ca=False,
                                         base_url=base_url, crl_of_issuer=None, ocsp=False, eku_ocsp_signing=True),
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class PkiHttpServer:
    """Serves a WSGI app on 127.0.0.1 in a background thread; the app can be
    replaced after start so certificates can name the server's real port."""

    def __init__(self) -> None:
        self.app = None
        self._server: WSGIServer = make_server(
            "127.0.0.1", 0, self._dispatch, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _dispatch(self, environ, start_response):
        return self.app(environ, start_response)

    def start(self) -> "PkiHttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._server.shutdown()
        self._server.server_close()


# --- a running environment: PKI + revocation + TSA over HTTP ------------------


@dataclass
class SigningEnvironment:
    """PKI with its OCSP/CRL endpoints and the platform TSA at ``tsa_url``,
    all served from one local HTTP server."""

    server: PkiHttpServer
    pki: TestPki

    @property
    def tsa_url(self) -> str:
        return f"{self.server.base_url}/tsa"

    def stop(self) -> None:
        self.server.stop()


def start_signing_environment() -> SigningEnvironment:
    # imported here so the PKI above stays usable without the signing package
    from services.common.tsa import TimeStampApp, TimeStampAuthority

    server = PkiHttpServer()
    pki = build_pki(server.base_url)
    tsa_app = TimeStampApp(TimeStampAuthority(pki.tsa.certificate, pki.tsa.key, [pki.issuing.certificate]))

    def route(environ, start_response):
        if environ.get("PATH_INFO") == "/tsa":
            return tsa_app(environ, start_response)
        return pki.wsgi(environ, start_response)

    server.app = route
    return SigningEnvironment(server.start(), pki)


# --- documents to sign ------------------------------------------------------------


def two_party_pdf(fields: tuple[str, ...] = ("Party1", "Party2")) -> bytes:
    """A one-page PDF (uncompressed content, so tests can find and flip a
    byte of the text) with one empty signature field per party, created the
    way the documents service does."""
    import io

    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields as pdf_fields
    from reportlab.pdfgen import canvas

    page = io.BytesIO()
    drawing = canvas.Canvas(page, pageCompression=0)
    drawing.drawString(100, 750, "IOU: Bob Li owes Alice Zhang CNY 10000.00")
    drawing.showPage()
    drawing.save()
    writer = IncrementalPdfFileWriter(io.BytesIO(page.getvalue()))
    for n, name in enumerate(fields):
        x = 60 + 250 * n
        pdf_fields.append_signature_field(writer, pdf_fields.SigFieldSpec(name, box=(x, 100, x + 180, 160)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def handwritten_png(width: int = 300, height: int = 100) -> bytes:
    """A stroke on a transparent background, like a signature pad's output."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGBA", (width, height), (255, 255, 255, 0))
    ImageDraw.Draw(image).line((10, height - 10, width - 10, 10), fill=(0, 0, 0, 255), width=5)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
