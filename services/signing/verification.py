"""Verification of signed PDFs: PAdES signatures and document time-stamps
(ETSI EN 319 142-1; ISO 32000-2 §12.8), offline with only the platform root
(and, for time-stamps, the roots of an external time-stamp authority).

Revocation data comes from the file's DSS (written by
:meth:`~services.signing.pades.DocumentSigner.finalize_lta`); nothing is
fetched unless the caller passes ``allow_fetching=True``. Each signature is
judged at the time its RFC 3161 signature time-stamp proves (not "now"), with
revocation data allowed to postdate that time (``retroactive_revinfo``): an
OCSP answer from the finalisation saying "good" — or "revoked since T" —
speaks about the signing time too, and certificates that expired after a
time-stamped signature do not void it. Document time-stamps are judged at
their own time; the newest one also needs its TSA certificate unexpired today
(after that the archive time-stamp must be renewed).

Party signatures must chain to ``trust_roots`` (the platform's). RFC 3161
time-stamps may also chain to ``timestamp_roots``: the root of a second,
independent authority (a commercial or national TSA) that made the document
time-stamp, trusted for time-stamps only, never for a party's signature. Each
check names the root its chain reached (``root``, ``TimestampCheck.tsa_root``),
so a reader sees which time rests on whose word.

Each signature also says the identity assurance level its signer certificate
states (a certificate policy, :mod:`services.common.assurance`), None for a
certificate that states none (issued before levels existed).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import (
    DocumentSecurityStore,
    async_validate_pdf_signature,
    async_validate_pdf_timestamp,
)
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.fetchers.requests_fetchers import RequestsFetcherBackend

from services.common.assurance import level_of_certificate
from services.common.errors import InvalidInput
from services.signing import hex_strings

hex_strings.install()  # a signature's 16,384 hex digits read in one slice, not one by one

#: modifications a later, legitimate step of a flow makes: another party's
#: signature (form filling under DocMDP P=2) or the LTA update (DSS + time-stamp)
_ACCEPTABLE_LEVELS = {ModificationLevel.NONE, ModificationLevel.LTA_UPDATES, ModificationLevel.FORM_FILLING}


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True)
class TimestampCheck:
    """An RFC 3161 token: when it says, and whether its TSA is to be believed."""

    time: str | None
    tsa: str | None
    intact: bool
    valid: bool
    trusted: bool
    #: subject of the root the TSA's certificate chains to; None: no path to a trusted root
    tsa_root: str | None = None

    @property
    def ok(self) -> bool:
        return self.intact and self.valid and self.trusted


@dataclass(frozen=True)
class SignatureCheck:
    field_name: str
    kind: str  # 'signature' or 'document_timestamp'
    signer: str | None
    intact: bool
    valid: bool
    trusted: bool
    revoked: bool
    revocation_time: str | None
    #: signer-claimed time (/M); only the time-stamp is evidence
    signing_time: str | None
    timestamp: TimestampCheck | None
    certification: str | None  # DocMDP level name if this is a certification signature
    modification_level: str | None
    docmdp_ok: bool | None
    coverage: str | None
    covers_entire_file: bool
    problems: tuple[str, ...] = ()
    #: the identity assurance level the signer certificate states; None: it states none (legacy)
    assurance_level: str | None = None
    #: subject of the root the signer's (or TSA's) certificate chains to; None: no path to a trusted root
    root: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class VerificationResult:
    signatures: tuple[SignatureCheck, ...]
    document_timestamps: tuple[SignatureCheck, ...]
    #: bytes were appended after the last signature or document time-stamp
    modified_after_last_signature: bool
    has_validation_data: bool
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        for key in ("signatures", "document_timestamps"):
            for entry, check in zip(data[key], getattr(self, key), strict=True):
                entry["ok"] = check.ok
                entry["problems"] = list(check.problems)
        data["problems"] = list(self.problems)
        return data


def _asn1(cert: x509.Certificate | asn1_x509.Certificate) -> asn1_x509.Certificate:
    if isinstance(cert, asn1_x509.Certificate):
        return cert
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _token_time(signed_data: cms.SignedData) -> dt.datetime | None:
    """genTime of an RFC 3161 token, unverified: it only chooses the moment
    to validate at; the token itself is verified by the caller."""
    content = signed_data["encap_content_info"]
    if content["content_type"].native != "tst_info":
        return None
    return content["content"].parsed["gen_time"].native


def _root_of(status) -> str | None:
    """Subject of the trust anchor pyHanko's path for ``status`` reached."""
    path = getattr(status, "validation_path", None)
    if path is None:
        return None
    return path.trust_anchor.authority.name.human_friendly


def _assurance_level(certificate: asn1_x509.Certificate) -> str | None:
    level = level_of_certificate(x509.load_der_x509_certificate(certificate.dump()))
    return level.value if level is not None else None


def _signature_timestamp_time(embedded: EmbeddedPdfSignature) -> dt.datetime | None:
    """genTime of the signature's time-stamp token (an unsigned attribute)."""
    unsigned = embedded.signer_info["unsigned_attrs"]
    if not unsigned:
        return None
    for attr in unsigned:
        if attr["type"].native == "signature_time_stamp_token":
            return _token_time(attr["values"][0]["content"])
    return None


class PdfVerifier:
    """Checks every signature and document time-stamp of a PDF: signers
    against ``trust_roots``, time-stamp authorities against those and
    ``timestamp_roots``."""

    def __init__(
        self,
        trust_roots: Sequence[x509.Certificate | asn1_x509.Certificate],
        *,
        timestamp_roots: Sequence[x509.Certificate | asn1_x509.Certificate] = (),
        allow_fetching: bool = False,
    ):
        self._trust_roots = [_asn1(c) for c in trust_roots]
        self._timestamp_roots = [*self._trust_roots, *(_asn1(c) for c in timestamp_roots)]
        self._allow_fetching = allow_fetching

    def verify(self, pdf_bytes: bytes, *, now: dt.datetime | None = None) -> VerificationResult:
        return asyncio.run(self._verify(pdf_bytes, now))

    def _context(
        self, dss: DocumentSecurityStore | None, moment: dt.datetime | None, *, timestamps: bool = False
    ) -> ValidationContext:
        kwargs = dict(
            trust_roots=self._timestamp_roots if timestamps else self._trust_roots,
            allow_fetching=self._allow_fetching,
            # requests, not aiohttp: plain sockets behave under eventlet's monkey-patching
            fetcher_backend=RequestsFetcherBackend() if self._allow_fetching else None,
            revocation_mode="hard-fail",
            retroactive_revinfo=True,
            moment=moment,
        )
        # a fresh context per check: contexts cache path and revocation results
        return dss.as_validation_context(kwargs) if dss is not None else ValidationContext(**kwargs)

    async def _verify(self, pdf_bytes: bytes, now: dt.datetime | None) -> VerificationResult:
        try:
            reader = PdfFileReader(io.BytesIO(pdf_bytes), strict=False)
            embedded = list(reader.embedded_signatures)
        except (PdfError, ValueError) as exc:
            raise InvalidInput("pdf", "pdf_syntax", f"expected a readable PDF: {exc}") from exc
        try:
            dss = DocumentSecurityStore.read_dss(reader)
        except (KeyError, ValueError, PdfError):
            dss = None
        now = now or dt.datetime.now(dt.timezone.utc)

        ts_checks = [
            await self._check_document_timestamp(e, dss, now, newest=e is embedded[-1])
            for e in embedded
            if e.sig_object_type == "/DocTimeStamp"
        ]
        sig_checks = [await self._check_signature(e, dss, now) for e in embedded if e.sig_object_type == "/Sig"]

        last = embedded[-1] if embedded else None
        modified_after = last is not None and last.evaluate_signature_coverage() != SignatureCoverageLevel.ENTIRE_FILE
        problems = []
        if not sig_checks:
            problems.append("document carries no signature")
        problems += [f"{c.field_name}: {p}" for c in (*sig_checks, *ts_checks) for p in c.problems]
        if modified_after:
            problems.append("document was modified after the last signature or time-stamp")
        return VerificationResult(
            signatures=tuple(sig_checks),
            document_timestamps=tuple(ts_checks),
            modified_after_last_signature=modified_after,
            has_validation_data=dss is not None,
            problems=tuple(problems),
        )

    async def _check_signature(
        self, embedded: EmbeddedPdfSignature, dss: DocumentSecurityStore | None, now: dt.datetime
    ) -> SignatureCheck:
        moment = _signature_timestamp_time(embedded) or now
        try:
            status = await async_validate_pdf_signature(
                embedded,
                signer_validation_context=self._context(dss, moment),
                ts_validation_context=self._context(dss, moment, timestamps=True),
            )
        except (SignatureValidationError, ValueError, PdfError) as exc:
            return _broken(embedded, "signature", f"cannot be validated: {exc}")
        ts = status.timestamp_validity
        timestamp = (
            TimestampCheck(
                time=_iso(ts.timestamp), tsa=ts.signing_cert.subject.human_friendly,
                intact=ts.intact, valid=ts.valid, trusted=ts.trusted, tsa_root=_root_of(ts),
            )
            if ts is not None
            else None
        )
        level = status.modification_level
        revocation = status.revocation_details
        problems = _common_problems(status.intact, status.valid, status.trusted)
        if revocation is not None:
            who = "a CA certificate" if revocation.ca_revoked else "the signer certificate"
            problems.append(f"{who} was revoked at {revocation.revocation_date.isoformat()}")
        if timestamp is None:
            problems.append("no signature time-stamp")
        elif not timestamp.ok:
            problems.append("signature time-stamp is not valid and trusted")
        if level not in _ACCEPTABLE_LEVELS:
            problems.append(f"modified after signing beyond what is allowed ({level.name if level else 'unknown'})")
        if status.docmdp_ok is False:
            problems.append("changes after signing violate the certification (DocMDP) permissions")
        certification = embedded.docmdp_level
        return SignatureCheck(
            field_name=embedded.field_name,
            kind="signature",
            signer=embedded.signer_cert.subject.human_friendly,
            intact=status.intact,
            valid=status.valid,
            trusted=status.trusted,
            revoked=revocation is not None,
            revocation_time=_iso(revocation.revocation_date) if revocation else None,
            signing_time=_iso(status.signer_reported_dt),
            timestamp=timestamp,
            certification=certification.name if certification is not None else None,
            modification_level=level.name if level else None,
            docmdp_ok=status.docmdp_ok,
            coverage=status.coverage.name if status.coverage else None,
            covers_entire_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
            problems=tuple(problems),
            assurance_level=_assurance_level(embedded.signer_cert),
            root=_root_of(status),
        )

    async def _check_document_timestamp(
        self, embedded: EmbeddedPdfSignature, dss: DocumentSecurityStore | None, now: dt.datetime, newest: bool
    ) -> SignatureCheck:
        moment = _token_time(embedded.signed_data) or now
        try:
            status = await async_validate_pdf_timestamp(
                embedded, validation_context=self._context(dss, moment, timestamps=True)
            )
        except (SignatureValidationError, ValueError, PdfError) as exc:
            return _broken(embedded, "document_timestamp", f"cannot be validated: {exc}")
        level = status.modification_level
        problems = _common_problems(status.intact, status.valid, status.trusted)
        tsa_expiry = embedded.signer_cert["tbs_certificate"]["validity"]["not_after"].native
        if newest and now > tsa_expiry:
            # the newest time-stamp vouches for everything before it only while
            # its TSA certificate is valid; it must be renewed before then
            problems.append(f"newest document time-stamp's TSA certificate expired at {tsa_expiry.isoformat()}")
        if level not in _ACCEPTABLE_LEVELS:
            problems.append("modified after time-stamping beyond what is allowed "
                            f"({level.name if level else 'unknown'})")
        check = SignatureCheck(
            field_name=embedded.field_name,
            kind="document_timestamp",
            signer=embedded.signer_cert.subject.human_friendly,
            intact=status.intact,
            valid=status.valid,
            trusted=status.trusted,
            revoked=status.revocation_details is not None,
            revocation_time=_iso(status.revocation_details.revocation_date) if status.revocation_details else None,
            signing_time=None,
            timestamp=TimestampCheck(
                time=_iso(status.timestamp), tsa=status.signing_cert.subject.human_friendly,
                intact=status.intact, valid=status.valid, trusted=status.trusted, tsa_root=_root_of(status),
            ),
            certification=None,
            modification_level=level.name if level else None,
            docmdp_ok=status.docmdp_ok,
            coverage=status.coverage.name if status.coverage else None,
            covers_entire_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
            problems=tuple(problems),
            root=_root_of(status),
        )
        return check


def _common_problems(intact: bool, valid: bool, trusted: bool) -> list[str]:
    if not intact:
        return ["signed bytes were changed (digest mismatch)"]
    if not valid:
        return ["cryptographic signature does not verify"]
    if not trusted:
        return ["certificate chain is not trusted up to the root at the time proven (or revocation data is missing)"]
    return []


def _broken(embedded: EmbeddedPdfSignature, kind: str, problem: str) -> SignatureCheck:
    return SignatureCheck(
        field_name=embedded.field_name, kind=kind, signer=None, intact=False, valid=False, trusted=False,
        revoked=False, revocation_time=None, signing_time=None, timestamp=None, certification=None,
        modification_level=None, docmdp_ok=None, coverage=None, covers_entire_file=False, problems=(problem,),
    )


def verify_pdf(
    pdf_bytes: bytes,
    trust_roots: Sequence[x509.Certificate | asn1_x509.Certificate],
    *,
    timestamp_roots: Sequence[x509.Certificate | asn1_x509.Certificate] = (),
    allow_fetching: bool = False,
    now: dt.datetime | None = None,
) -> VerificationResult:
    """Check every signature, time-stamp and chain of ``pdf_bytes`` against
    ``trust_roots`` (time-stamps also against ``timestamp_roots``); offline
    unless ``allow_fetching``. ``now`` lets a caller (or a test) ask how the
    file will verify at a later date."""
    return PdfVerifier(trust_roots, timestamp_roots=timestamp_roots, allow_fetching=allow_fetching).verify(
        pdf_bytes, now=now
    )


__all__ = ["PdfVerifier", "SignatureCheck", "TimestampCheck", "VerificationResult", "verify_pdf"]
