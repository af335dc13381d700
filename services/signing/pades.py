"""PAdES signatures (ETSI EN 319 142-1) made with keys that never leave identity.

Each party signs at level B-T: a CAdES-detached CMS (subfilter
``ETSI.CAdES.detached``) in the signature field the documents service made,
with the handwritten signature image as the field's appearance and an RFC 3161
signature time-stamp from the platform TSA. The first party's signature is a
certification signature with DocMDP P=2 (form filling and signing allowed,
ISO 32000-1 §12.8.2.2), so the counterparty's approval signature keeps it
valid. :meth:`DocumentSigner.finalize_lta` then raises the file to B-LTA: a
DSS with certificates, OCSP responses and CRLs for every signer and TSA
certificate, and a document time-stamp over all of it.

The document time-stamp may come from a second, independent authority
(``SignerSettings.document_tsa``: a commercial or national TSA chaining to its
own root, given as ``document_tsa_roots``), so the document's time does not
rest on the platform's word alone. Its chain is validated against those roots
only, the signatures' chains against the platform roots only, and the
revocation data of both lands in the DSS.

Signing is two-phase so identity can bind a person's single-use grant to the
exact bytes it will sign:

1. :meth:`DocumentSigner.prepare` writes the signature dictionary (with a hole
   for the CMS), hashes the ``/ByteRange`` (``document_digest``), builds the
   CMS signed attributes (messageDigest = document_digest,
   signing-certificate-v2 = the party's certificate) and returns their SHA-256
   as ``digest_to_sign``.
2. identity signs ``digest_to_sign`` (``sign_digest(grant, digest)``); the
   grant is issued for that digest, so a grant can only ever produce this one
   signature over this one document state with this one certificate.
3. :meth:`DocumentSigner.complete` checks the signature against the
   certificate, obtains the signature time-stamp and fills the hole.

The chain of commitments a verifier (or identity) can re-check with
:meth:`PreparedSignature.check_binding`: ``digest_to_sign`` = SHA-256(signed
attributes) → messageDigest = SHA-256(ByteRange of ``prepared_pdf``), and
``prepared_pdf`` is ``input_sha256``'s document plus one incremental update.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import io
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from asn1crypto import cms
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from PIL import Image, ImageDraw, UnidentifiedImageError
from pyhanko.pdf_utils import layout
from pyhanko.pdf_utils.images import PdfImage
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError, as_signing_certificate_v2, simple_cms_attribute
from pyhanko.sign.signers.pdf_byterange import PreparedByteRangeDigest
from pyhanko.sign.signers.pdf_signer import PdfTBSDocument, PdfTimeStamper
from pyhanko.sign.validation.dss import DocumentSecurityStore, collect_validation_info
from pyhanko.stamp import StaticStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import (
    InsufficientRevinfoError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
)
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend
from pyhanko_certvalidator.registry import SimpleCertificateStore

from services.common.errors import Conflict, Forbidden, IntegrityError, InvalidInput, NotFound, Unavailable
from services.common.reasons import Reason
from services.common.tsa import IssuedToken, TsaCertificateChanged, TsaClient, TsaSettings
from services.signing import hex_strings, x509_names

hex_strings.install()  # a signature's 16,384 hex digits read in one slice, not one by one
x509_names.install()  # a certificate name's values prepared for comparison once, not at every comparison

log = logging.getLogger(__name__)

#: how long a worker keeps its client of the document time-stamp authority (its certificate, learnt
#: from a first token, and that token's size), checked against every token it gets meanwhile
DOCUMENT_STAMPER_SECONDS = 3600.0
#: the most a prepared signature's incremental update may inflate to (its signature image, the hole)
MAX_PREPARED_UPDATE = 16 * 1024 * 1024

#: identity's remote signing operation, bound to one grant by the caller:
#: SHA-256 digest in, DER-encoded ECDSA P-256 signature out
SignDigest = Callable[[bytes], bytes]

DIGEST_ALGORITHM = "sha256"
#: a DER ECDSA P-256 signature is at most 72 bytes (two 33-byte INTEGERs + headers)
_ECDSA_P256_MAX_SIGNATURE = 72


@dataclass(frozen=True)
class SignerSettings:
    """Settings of the PAdES signer (frozen; from the service config)."""

    tsa: TsaSettings
    #: the authority of the B-LTA document time-stamp; None: the platform TSA (``tsa``)
    document_tsa: TsaSettings | None = None
    #: hex characters reserved for the CMS in /Contents (twice its DER size);
    #: signer + issuing CA + TSA token measured 4.1 KB DER, so 8 KB leaves room
    signature_reserved_hex: int = 16_384
    document_timestamp_field: str = "DocumentTimestamp"
    revocation_timeout_seconds: float = 10.0
    #: the handwritten signature image is small; refuse anything that is not
    max_appearance_png_bytes: int = 512 * 1024
    max_appearance_pixels: int = 2_000_000


@dataclass(frozen=True)
class PartySignature:
    """What one party signs with: their certificate, chain and image."""

    field_name: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    appearance_png: bytes
    certify: bool
    reason: str | None = None
    location: str | None = None
    signing_time: dt.datetime | None = None


@dataclass(frozen=True)
class RevocationData:
    """OCSP responses and CRLs (DER) already at hand for a B-LTA finalisation: what identity's
    ``revocation_data`` answers for the parties' certificates, the TSA's and the issuing CA's."""

    ocsp: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()


class _NotEnoughKnown(Exception):
    """The revocation data given did not cover every certificate: fetch it instead."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class PreparedSignature:
    """Phase-1 result, JSON-able so it can be stored between the willingness
    check and identity's answer (minutes, possibly another replica)."""

    field_name: str
    #: SHA-256 (hex) of the PDF as it was before this signature
    input_sha256: str
    #: the PDF with the signature dictionary and a zero-filled /Contents hole
    prepared_pdf: bytes = field(repr=False)
    #: SHA-256 over the /ByteRange of ``prepared_pdf``
    document_digest: bytes
    reserved_region_start: int
    reserved_region_end: int
    #: DER of the CMS signed attributes (a SET OF Attribute)
    signed_attributes: bytes = field(repr=False)
    #: SHA-256 of ``signed_attributes``: what identity signs and the grant binds
    digest_to_sign: bytes
    certificate: bytes = field(repr=False)
    chain: tuple[bytes, ...] = field(repr=False)
    #: length of the input document when ``prepared_pdf`` begins with it (an incremental update)
    input_length: int | None = None

    def to_dict(self) -> dict:
        """JSON-able, and small: ``prepared_pdf`` is the input document plus one incremental update,
        so only the update is kept (``update``, zlib; most of it is the zero-filled hole), and
        :meth:`from_dict` puts it back behind the input document, whose SHA-256 it checks. A pending
        signature's row holds about 8 KB instead of the prepared PDF in base64 (90-120 KB for an IOU)."""
        data = {
            "field_name": self.field_name,
            "input_sha256": self.input_sha256,
            "document_digest": self.document_digest.hex(),
            "reserved_region_start": self.reserved_region_start,
            "reserved_region_end": self.reserved_region_end,
            "signed_attributes": _b64(self.signed_attributes),
            "digest_to_sign": self.digest_to_sign.hex(),
            "certificate": _b64(self.certificate),
            "chain": [_b64(c) for c in self.chain],
        }
        if self.input_length is None:  # not known to extend its input: kept whole (the older form)
            return dict(data, prepared_pdf=_b64(self.prepared_pdf))
        return dict(data, input_length=self.input_length,
                    update=_b64(zlib.compress(self.prepared_pdf[self.input_length:], 6)))

    @classmethod
    def from_dict(cls, data: dict, input_pdf: bytes | None = None) -> "PreparedSignature":
        """``data`` from :meth:`to_dict`; ``input_pdf`` the document it was prepared from (the
        flow's PDF at ``input_sha256``), needed unless ``data`` holds the whole prepared PDF."""
        if "prepared_pdf" in data:
            prepared_pdf, input_length = base64.b64decode(data["prepared_pdf"]), None
        else:
            input_length = int(data["input_length"])
            if input_pdf is None:
                raise InvalidInput("input_pdf", "required", "a prepared signature kept as an update needs "
                                   "the document it was prepared from")
            if len(input_pdf) != input_length or hashlib.sha256(input_pdf).hexdigest() != data["input_sha256"]:
                raise IntegrityError("prepared_signature", "the document given is not the one prepared from")
            inflate = zlib.decompressobj()
            update = inflate.decompress(base64.b64decode(data["update"]), MAX_PREPARED_UPDATE)
            if inflate.unconsumed_tail or not inflate.eof:
                raise IntegrityError("prepared_signature", "the prepared update is cut short or too large")
            prepared_pdf = input_pdf + update
        return cls(
            field_name=data["field_name"],
            input_sha256=data["input_sha256"],
            prepared_pdf=prepared_pdf,
            document_digest=bytes.fromhex(data["document_digest"]),
            reserved_region_start=int(data["reserved_region_start"]),
            reserved_region_end=int(data["reserved_region_end"]),
            signed_attributes=base64.b64decode(data["signed_attributes"]),
            digest_to_sign=bytes.fromhex(data["digest_to_sign"]),
            certificate=base64.b64decode(data["certificate"]),
            chain=tuple(base64.b64decode(c) for c in data["chain"]),
            input_length=input_length,
        )

    def check_binding(self) -> None:
        """Re-derive every link from ``digest_to_sign`` down to the PDF bytes;
        raise :class:`IntegrityError` on the first that does not hold."""
        if hashlib.sha256(self.signed_attributes).digest() != self.digest_to_sign:
            raise IntegrityError("prepared_signature", "digest_to_sign is not the SHA-256 of the signed attributes")
        attrs = cms.CMSAttributes.load(self.signed_attributes)
        by_type = {a["type"].native: a["values"][0] for a in attrs}
        if by_type.get("message_digest") is None or by_type["message_digest"].native != self.document_digest:
            raise IntegrityError("prepared_signature", "messageDigest attribute does not match the document digest")
        signing_cert_v2 = by_type.get("signing_certificate_v2")
        cert_hash = hashlib.sha256(self.certificate).digest()
        if signing_cert_v2 is None or signing_cert_v2["certs"][0]["cert_hash"].native != cert_hash:
            raise IntegrityError("prepared_signature", "signing-certificate-v2 does not name the party certificate")
        pdf = self.prepared_pdf
        start, end = self.reserved_region_start, self.reserved_region_end
        if not 0 < start < end <= len(pdf):
            raise IntegrityError("prepared_signature", "reserved region lies outside the prepared PDF")
        covered = hashlib.sha256()
        covered.update(pdf[:start])
        covered.update(pdf[end:])
        if covered.digest() != self.document_digest:
            raise IntegrityError("prepared_signature", "prepared PDF does not hash to the document digest")


class RemoteDigestSigner(signers.Signer):
    """pyHanko signer whose raw ECDSA signature comes from ``sign_digest``
    (identity's remote key); it holds a certificate, never a private key."""

    def __init__(
        self,
        certificate: asn1_x509.Certificate,
        chain: Sequence[asn1_x509.Certificate],
        sign_digest: SignDigest | None,
    ):
        super().__init__(
            signing_cert=certificate,
            cert_registry=SimpleCertificateStore.from_certs([certificate, *chain]),
            # roots are the verifier's business; pdfsig/NSS build the path from the CMS certs
            embed_roots=False,
        )
        self._sign_digest = sign_digest

    async def async_sign_raw(self, data: bytes, digest_algorithm: str, dry_run: bool = False) -> bytes:
        if dry_run:
            return bytes(_ECDSA_P256_MAX_SIGNATURE)
        if digest_algorithm != DIGEST_ALGORITHM or self._sign_digest is None:
            raise SigningError(f"expected a {DIGEST_ALGORITHM} remote signature, got {digest_algorithm}")
        return self._sign_digest(hashlib.sha256(data).digest())


#: the content-type attribute of every PAdES signature's signed attributes (id-data), DER
_CONTENT_TYPE_DATA = simple_cms_attribute("content_type", "data").dump()


@lru_cache(maxsize=1024)
def _signing_certificate_v2(certificate_der: bytes) -> bytes:
    """The ESS signing-certificate-v2 attribute naming this certificate (RFC 5035), DER; one per
    certificate, so a person's next signature does not build it again."""
    return simple_cms_attribute(
        "signing_certificate_v2", as_signing_certificate_v2(asn1_x509.Certificate.load(certificate_der))).dump()


def pades_signed_attributes(document_digest: bytes, certificate_der: bytes) -> bytes:
    """DER of the signed attributes pyHanko gives a PAdES signature (content type, message
    digest, signing-certificate-v2; no signing time, which PAdES keeps in the PDF), built from
    parts made once: asn1crypto building them afresh was half of a signature's preparation.
    A SET OF is DER-sorted by its members' encodings (X.690 §11.6); tests compare the bytes
    with pyHanko's own ``signed_attrs``."""
    members = sorted((_CONTENT_TYPE_DATA, simple_cms_attribute("message_digest", document_digest).dump(),
                      _signing_certificate_v2(certificate_der)))
    body = b"".join(members)
    return b"\x31" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return _certificate(cert.public_bytes(serialization.Encoding.DER))


@lru_cache(maxsize=512)
def _certificate(der: bytes) -> asn1_x509.Certificate:
    """One parsed certificate per DER in a process. asn1crypto parses lazily and keeps what it
    parsed (issuer and serial, key hash, prepared names), and pyHanko builds a certificate store
    from the signer's chain for every prepare and complete: with a fresh object each time that
    was 7% of a PDF worker's CPU under load. The objects are only read."""
    return asn1_x509.Certificate.load(der)


#: China Standard Time: the time printed under a signature, as a person reads it
_CHINA = dt.timezone(dt.timedelta(hours=8))


@lru_cache(maxsize=4)
def _caption_font(size: int):
    from PIL import ImageFont

    from services.common.fonts import default_font_stack

    face = default_font_stack().faces[0]
    return ImageFont.truetype(face.path, size, index=face.face.subfont_index)


def with_signing_time(image: Image.Image, signed_at: dt.datetime) -> Image.Image:
    """The handwritten signature with ``签署时间 YYYY-MM-DD HH:MM:SS`` (China time) under it, as
    Tencent's signature blocks show it. Drawn into the image, which the signature covers; the
    time is the signature's own signing time (in the signed attributes' PDF /M), set at the same
    moment: the RFC 3161 time stamp follows it once willingness is confirmed, and the report and
    any validator show that one."""
    text = "签署时间 " + signed_at.astimezone(_CHINA).strftime("%Y-%m-%d %H:%M:%S")
    size = max(12, image.height // 6)
    font = _caption_font(size)
    left, top, right, bottom = font.getbbox(text)
    gap = size // 3
    width = max(image.width, right - left + 2)
    out = Image.new("RGBA", (width, image.height + gap + (bottom - top) + 2), (255, 255, 255, 0))
    out.paste(image.convert("RGBA"), ((width - image.width) // 2, 0))
    ImageDraw.Draw(out).text(((width - (right - left)) // 2 - left, image.height + gap - top), text,
                             font=font, fill=(0, 0, 0, 255))
    return out


def _appearance(png: bytes, settings: SignerSettings, signed_at: dt.datetime | None = None) -> StaticStampStyle:
    """The handwritten signature as an image-only stamp (one image XObject); with ``signed_at``,
    the signing time printed under it (:func:`with_signing_time`)."""
    if len(png) > settings.max_appearance_png_bytes:
        raise InvalidInput(
            "appearance_png", "max_size",
            f"expected at most {settings.max_appearance_png_bytes} bytes, found {len(png)}",
        )
    try:
        image = Image.open(io.BytesIO(png))
        if image.format != "PNG":
            raise InvalidInput("appearance_png", "image_format", f"expected PNG, found {image.format}")
        if image.width * image.height > settings.max_appearance_pixels:
            raise InvalidInput(
                "appearance_png", "max_pixels",
                f"expected at most {settings.max_appearance_pixels} pixels, found {image.width * image.height}",
            )
        image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise InvalidInput("appearance_png", "image_format", "expected a readable PNG image") from exc
    if signed_at is not None:
        image = with_signing_time(image, signed_at)
    return StaticStampStyle(
        background=PdfImage(image),
        border_width=0,
        background_opacity=1.0,
        background_layout=layout.SimpleBoxLayoutRule(
            x_align=layout.AxisAlignment.ALIGN_MID,
            y_align=layout.AxisAlignment.ALIGN_MID,
            margins=layout.Margins.uniform(0),
            inner_content_scaling=layout.InnerScaling.SHRINK_TO_FIT,
        ),
    )


def _run(coro):
    # pyHanko's API is asyncio; the signer itself is called synchronously
    return asyncio.run(coro)


class DocumentSigner:
    """Signs documents for the signing service. Build one per process and keep
    it: it holds the TSA client of signature time-stamps (which caches the
    TSA's certificates and a size-estimation token) and the parsed trust roots.

    ``trust_roots`` are the platform's: every signature and signature
    time-stamp must chain to them. ``document_tsa_roots`` are those of
    ``settings.document_tsa`` (empty: the platform's), trusted for the
    document time-stamp's authority only.
    """

    def __init__(
        self,
        settings: SignerSettings,
        trust_roots: Sequence[x509.Certificate],
        *,
        time_stamper: TsaClient | None = None,
        fetcher_backend=None,
        document_tsa_roots: Sequence[x509.Certificate] = (),
    ):
        self.settings = settings
        self.time_stamper = time_stamper or TsaClient(settings.tsa)
        self._trust_roots = [_asn1(c) for c in trust_roots]
        self._document_tsa_roots = [_asn1(c) for c in document_tsa_roots] or self._trust_roots
        self._fetcher_backend = fetcher_backend or RequestsFetcherBackend(
            per_request_timeout=settings.revocation_timeout_seconds
        )
        self._document_stamper: TsaClient | None = None
        self._document_stamper_made = 0.0

    # --- one party ------------------------------------------------------------

    def sign_party(
        self,
        pdf_bytes: bytes,
        field_name: str,
        certificate: x509.Certificate,
        chain: Sequence[x509.Certificate],
        sign_digest: SignDigest,
        appearance_png: bytes,
        certify: bool,
        reason: str | None = None,
        location: str | None = None,
        signing_time: dt.datetime | None = None,
    ) -> bytes:
        """Prepare, have ``sign_digest`` sign, and complete in one call."""
        prepared = self.prepare(
            pdf_bytes,
            PartySignature(field_name, certificate, tuple(chain), appearance_png, certify, reason, location,
                           signing_time),
        )
        return self.complete(prepared, sign_digest(prepared.digest_to_sign))

    def prepare(self, pdf_bytes: bytes, party: PartySignature) -> PreparedSignature:
        """Phase 1: put the document in its final pre-signing state and
        compute the digest identity must sign (see the module docstring)."""
        return _run(self._prepare(pdf_bytes, party))

    async def _prepare(self, pdf_bytes: bytes, party: PartySignature) -> PreparedSignature:
        # one moment for the signing time in the signature and the one printed under the handwriting
        signed_at = party.signing_time or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        stamp = _appearance(party.appearance_png, self.settings, signed_at)
        cert, chain = _asn1(party.certificate), [_asn1(c) for c in party.chain]
        signer = RemoteDigestSigner(cert, chain, sign_digest=None)
        meta = signers.PdfSignatureMetadata(
            field_name=party.field_name,
            md_algorithm=DIGEST_ALGORITHM,
            subfilter=fields.SigSeedSubFilter.PADES,
            certify=party.certify,
            docmdp_permissions=fields.MDPPerm.FILL_FORMS,
            reason=party.reason,
            location=party.location,
        )
        pdf_signer = signers.PdfSigner(meta, signer=signer, stamp_style=stamp)
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf_bytes), strict=False)
            self._require_empty_field(writer.prev, party)
            session = pdf_signer.init_signing_session(writer, existing_fields_only=True)
            session.system_time = signed_at
            tbs = session.prepare_tbs_document(
                validation_info=None, bytes_reserved=self.settings.signature_reserved_hex
            )
            prepared_digest, output = tbs.digest_tbs_document()
        except SigningError as exc:
            raise Conflict(Reason.FIELD_NOT_SIGNABLE, f"cannot sign field {party.field_name}: {exc}") from exc
        except PdfError as exc:
            raise InvalidInput("pdf", "pdf_syntax", f"expected a readable PDF: {exc}") from exc
        signed_attrs_der = pades_signed_attributes(prepared_digest.document_digest, cert.dump())
        prepared_pdf = output.getvalue()
        return PreparedSignature(
            field_name=party.field_name,
            input_sha256=hashlib.sha256(pdf_bytes).hexdigest(),
            prepared_pdf=prepared_pdf,
            document_digest=prepared_digest.document_digest,
            reserved_region_start=prepared_digest.reserved_region_start,
            reserved_region_end=prepared_digest.reserved_region_end,
            signed_attributes=signed_attrs_der,
            digest_to_sign=hashlib.sha256(signed_attrs_der).digest(),
            certificate=cert.dump(),
            chain=tuple(c.dump() for c in chain),
            input_length=len(pdf_bytes) if prepared_pdf.startswith(pdf_bytes) else None,
        )

    @staticmethod
    def _require_empty_field(reader: PdfFileReader, party: PartySignature) -> None:
        existing = {name: value for name, value, _ in fields.enumerate_sig_fields(reader, filled_status=None)}
        if party.field_name not in existing:
            raise NotFound("signature_field", party.field_name)
        if existing[party.field_name] is not None:
            raise Conflict(Reason.FIELD_ALREADY_SIGNED, f"signature field {party.field_name}")
        already_signed = any(value is not None for value in existing.values())
        if party.certify and already_signed:
            # ISO 32000-1 §12.8.1: a certification signature must be the first one
            raise Conflict(Reason.CERTIFICATION_NOT_FIRST, "a certification signature must be the document's first")

    def complete(self, prepared: PreparedSignature, signature: bytes, timestamp_token: bytes | None = None) -> bytes:
        """Phase 2: embed identity's ``signature`` over ``digest_to_sign``
        with a signature time-stamp (B-T): ``timestamp_token`` when identity
        stamped the signature as it made it, else one asked of the TSA.
        Raises :class:`Unavailable` if the TSA fails or the token covers
        anything but this signature; nothing is signed without a trusted time."""
        prepared.check_binding()
        public_key = x509.load_der_x509_certificate(prepared.certificate).public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidInput("certificate", "key_type", "expected an ECDSA P-256 certificate")
        try:
            public_key.verify(signature, prepared.digest_to_sign, ec.ECDSA(Prehashed(hashes.SHA256())))
        except (InvalidSignature, ValueError) as exc:
            raise IntegrityError("signature", "remote signature does not verify against the party certificate") from exc
        stamper = IssuedToken(timestamp_token) if timestamp_token is not None else self.time_stamper
        return _run(self._complete(prepared, signature, stamper))

    async def _complete(self, prepared: PreparedSignature, signature: bytes, stamper) -> bytes:
        certificate = _certificate(prepared.certificate)
        chain = [_certificate(c) for c in prepared.chain]
        signer = RemoteDigestSigner(certificate, chain, sign_digest=lambda _digest: signature)
        signed_data = await signer.async_sign_prescribed_attributes(
            DIGEST_ALGORITHM,
            cms.CMSAttributes.load(prepared.signed_attributes),
            timestamper=stamper,
        )
        room = (prepared.reserved_region_end - prepared.reserved_region_start - 2) // 2
        if len(signed_data.dump()) > room:
            # only a much longer chain than the platform's gets here; raise the setting
            raise InvalidInput(
                "certificate_chain", "max_size",
                f"expected a CMS of at most {room} bytes (signature_reserved_hex), found {len(signed_data.dump())}",
            )
        output = io.BytesIO(prepared.prepared_pdf)
        await PdfTBSDocument.async_finish_signing(
            output,
            PreparedByteRangeDigest(
                document_digest=prepared.document_digest,
                reserved_region_start=prepared.reserved_region_start,
                reserved_region_end=prepared.reserved_region_end,
            ),
            signed_data,
        )
        return output.getvalue()

    # --- long-term validation ---------------------------------------------------

    def revocation_context(self, trust_roots: Sequence[asn1_x509.Certificate] | None = None,
                           known: RevocationData | None = None) -> ValidationContext:
        """A fresh validation context that fetches OCSP/CRLs online, trusting
        ``trust_roots`` (default: the platform roots); with ``known``, one that
        uses those answers and fetches nothing.

        Fresh per document on purpose: a context caches revocation answers,
        and a status cached for one document must not vouch for a later one.
        """
        roots = self._trust_roots if trust_roots is None else list(trust_roots)
        if known is not None:
            return ValidationContext(
                trust_roots=roots, allow_fetching=False, revocation_mode="hard-fail",
                ocsps=[asn1_ocsp.OCSPResponse.load(der) for der in known.ocsp],
                crls=[asn1_crl.CertificateList.load(der) for der in known.crls],
            )
        return ValidationContext(
            trust_roots=roots,
            allow_fetching=True,
            fetcher_backend=self._fetcher_backend,
            revocation_mode="hard-fail",
        )

    def finalize_lta(self, pdf_bytes: bytes, known: RevocationData | None = None) -> bytes:
        """Raise every signature to PAdES B-LTA: one incremental update with a
        DSS (certificates, OCSP responses, CRLs for every signer and TSA
        certificate, the document time-stamp authority's included) and a
        document time-stamp covering it.

        ``known``: revocation data already at hand (identity's, one RPC); what
        it does not cover is then fetched online, the whole set again.

        Raises :class:`Unavailable` ('tsa' or 'document_tsa': the authority
        of the document time-stamp did not answer; 'revocation_info': an
        OCSP/CRL server did not), :class:`Forbidden` for a revoked signer and
        :class:`IntegrityError` for a chain that does not reach its roots.
        """
        try:
            return self._finalize_lta_once(pdf_bytes, known)
        except TsaCertificateChanged:
            # the authority renewed its certificate since this worker's stamper learnt it: the DSS
            # just made lacks the new one's validation data, so all of it again with a fresh stamper
            log.info("B-LTA: the document time-stamp authority's certificate changed; finalising again")
            self._document_stamper = None
        try:
            return self._finalize_lta_once(pdf_bytes, known)
        except TsaCertificateChanged as exc:
            raise Unavailable(exc.system, "the time-stamp authority's certificate changed twice while stamping"
                              ) from exc

    def _finalize_lta_once(self, pdf_bytes: bytes, known: RevocationData | None) -> bytes:
        if known is not None:
            try:
                return _run(self._finalize_lta(pdf_bytes, self.revocation_context(known=known), offline=True))
            except _NotEnoughKnown as exc:
                log.warning("B-LTA: the revocation data given does not cover %s; fetching it", exc)
        return _run(self._finalize_lta(pdf_bytes, self.revocation_context()))

    async def _finalize_lta(self, pdf_bytes: bytes, context: ValidationContext, offline: bool = False) -> bytes:
        reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
        signatures = reader.embedded_regular_signatures
        if not signatures:
            raise Conflict(Reason.NO_SIGNATURES, "nothing to preserve in PAdES B-LTA")
        paths = []
        for embedded in signatures:
            try:
                paths.extend(await collect_validation_info(embedded, context))
            except RevokedError as exc:
                raise Forbidden(Reason.CERTIFICATE_REVOKED, f"signature field {embedded.field_name}") from exc
            except PathBuildingError as exc:
                raise IntegrityError("certificate_chain",
                                     f"field {embedded.field_name}: no path to a trust root") from exc
            except InsufficientRevinfoError as exc:
                if offline:
                    raise _NotEnoughKnown(f"field {embedded.field_name}") from exc
                # hard-fail mode: an OCSP/CRL server that did not answer lands here
                raise Unavailable("revocation_info", f"field {embedded.field_name}: {exc}") from exc
            except PathValidationError as exc:
                raise IntegrityError("certificate_chain", f"field {embedded.field_name}: {exc}") from exc
        document_context = (
            context if self._document_tsa_roots is self._trust_roots
            else self.revocation_context(self._document_tsa_roots)
        )
        stamper = self._document_time_stamper()
        try:
            paths += await self._document_tsa_paths(stamper, document_context)
        except Unavailable as exc:
            if offline and document_context is context and exc.system == "revocation_info":
                raise _NotEnoughKnown("the document time-stamp authority's certificate") from exc
            raise
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf_bytes), strict=False)
        # DSS in the same revision as the time-stamp: no unsigned update
        # trails the file, and the time-stamp covers the DSS (pyHanko's
        # update_before_ts, written here because it takes a single context)
        DocumentSecurityStore.supply_dss_in_writer(
            writer,
            sig_contents=None,
            paths=paths,
            # the DSS skips an answer it already holds (same DER)
            ocsps=[*context.ocsps, *document_context.ocsps],
            crls=[*context.crls, *document_context.crls],
        )
        output = io.BytesIO()
        await PdfTimeStamper(stamper, field_name=self._timestamp_field_name(reader)).async_timestamp_pdf(
            writer, DIGEST_ALGORITHM, output=output
        )
        return output.getvalue()

    def _document_time_stamper(self) -> TsaClient:
        """The client of the document time-stamp authority, kept for documents to come (at most
        ``DOCUMENT_STAMPER_SECONDS``): pyHanko learns the authority's certificate, whose
        validation data goes into the DSS, from the client's first token (one request more), and
        sizes the signature's room by it. The certificate must be the one that stamps the
        document: a token signed by another (the authority renewed it) is
        :class:`TsaCertificateChanged`, and :meth:`finalize_lta` starts again with a fresh client."""
        now = time.monotonic()
        if self._document_stamper is None or now - self._document_stamper_made > DOCUMENT_STAMPER_SECONDS:
            if self.settings.document_tsa is not None:
                self._document_stamper = TsaClient(self.settings.document_tsa, system="document_tsa",
                                                   one_certificate=True)
            else:
                self._document_stamper = TsaClient(self.settings.tsa, one_certificate=True)
            self._document_stamper_made = now
        return self._document_stamper

    @staticmethod
    async def _document_tsa_paths(stamper: TsaClient, context: ValidationContext) -> list:
        """Validation paths of the document time-stamp authority's certificate
        (from a first token it issues, which pyHanko also uses to size the
        signature hole), against its own roots, revocation data fetched."""
        what = "document time-stamp authority certificate"
        try:
            return [path async for path in stamper.validation_paths(context)]
        except InsufficientRevinfoError as exc:
            raise Unavailable("revocation_info", f"{what}: {exc}") from exc
        except PathBuildingError as exc:
            raise IntegrityError("certificate_chain", f"{what}: no path to its trust roots") from exc
        except PathValidationError as exc:
            raise IntegrityError("certificate_chain", f"{what}: {exc}") from exc

    def _timestamp_field_name(self, reader: PdfFileReader) -> str:
        taken = {name for name, _, _ in fields.enumerate_sig_fields(reader, filled_status=None)}
        base = self.settings.document_timestamp_field
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}{n}"
        return name


__all__ = [
    "DocumentSigner",
    "PartySignature",
    "PreparedSignature",
    "RemoteDigestSigner",
    "SignDigest",
    "SignerSettings",
]
