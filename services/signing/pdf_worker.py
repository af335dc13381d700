"""PDF signing work as it runs inside the signing service's worker processes
(:class:`services.common.offload.WorkerPool`): PAdES prepare and complete,
B-LTA finalisation and verification.

Each worker process keeps one :class:`~services.signing.pades.DocumentSigner`
per (TSA URL, trust roots, document TSA) alive across calls, so key material is
parsed and the TSA's certificates are fetched once, not per signature.

The document time-stamp of :func:`finalize` may come from a second authority
(``document_tsa_url``, chaining to ``document_tsa_roots_pem``); verification
then trusts those roots for time-stamps only (``tsa_roots_pem``).
"""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography import x509

from services.common.tsa import TsaSettings
from services.signing.pades import (
    DocumentSigner,
    PartySignature,
    PreparedSignature,
    RevocationData,
    SignerSettings,
)
from services.signing.verification import verify_pdf


def _certs(pems: tuple[str, ...]) -> list[x509.Certificate]:
    """Every certificate of ``pems`` (one PEM text may hold several)."""
    return [cert for pem in pems for cert in x509.load_pem_x509_certificates(pem.encode())]


@lru_cache(maxsize=4)
def _signer(tsa_url: str, roots_pem: tuple[str, ...], document_tsa_url: str = "",
            document_tsa_roots_pem: tuple[str, ...] = (),
            document_tsa_auth: tuple[str, str] | None = None) -> DocumentSigner:
    document_tsa = TsaSettings(document_tsa_url, basic_auth=document_tsa_auth) if document_tsa_url else None
    return DocumentSigner(SignerSettings(tsa=TsaSettings(tsa_url), document_tsa=document_tsa), _certs(roots_pem),
                          document_tsa_roots=_certs(document_tsa_roots_pem))


def prepare(tsa_url: str, roots_pem: tuple[str, ...], pdf: bytes, field_name: str, certificate_pem: str,
            chain_pem: tuple[str, ...], appearance_png: bytes, certify: bool, reason: str) -> dict:
    party = PartySignature(
        field_name=field_name,
        certificate=x509.load_pem_x509_certificate(certificate_pem.encode()),
        chain=tuple(_certs(chain_pem)),
        appearance_png=appearance_png,
        certify=certify,
        reason=reason,
    )
    return _signer(tsa_url, roots_pem).prepare(pdf, party).to_dict()


def complete(tsa_url: str, roots_pem: tuple[str, ...], prepared: dict, signature: bytes,
             timestamp_token: bytes | None = None, input_pdf: bytes | None = None) -> bytes:
    """``prepared`` from :func:`prepare`, which keeps only the update to ``input_pdf``, the document
    it was prepared from (see :meth:`PreparedSignature.to_dict`)."""
    return _signer(tsa_url, roots_pem).complete(PreparedSignature.from_dict(prepared, input_pdf), signature,
                                                timestamp_token)


def finalize(tsa_url: str, roots_pem: tuple[str, ...], pdf: bytes, *, document_tsa_url: str = "",
             document_tsa_roots_pem: tuple[str, ...] = (),
             document_tsa_auth: tuple[str, str] | None = None, revocation: dict | None = None) -> bytes:
    """PAdES B-LTA. The document time-stamp comes from ``document_tsa_url``
    (empty: the platform TSA at ``tsa_url``), whose certificate must chain to
    ``document_tsa_roots_pem``; ``document_tsa_auth`` is (user, password) for
    HTTP basic auth. Raises ``Unavailable('document_tsa')`` when that
    authority does not answer (``Unavailable('tsa')`` for the platform's).
    ``revocation``: ``{"ocsp": (DER, ...), "crls": (DER, ...)}`` identity gave
    for the platform's certificates (:class:`~services.signing.pades.RevocationData`)."""
    known = RevocationData(tuple(revocation["ocsp"]), tuple(revocation["crls"])) if revocation else None
    if not document_tsa_url:
        return _signer(tsa_url, roots_pem).finalize_lta(pdf, known)
    return _signer(tsa_url, roots_pem, document_tsa_url, tuple(document_tsa_roots_pem),
                   tuple(document_tsa_auth) if document_tsa_auth else None).finalize_lta(pdf, known)


def verify(roots_pem: tuple[str, ...], pdf: bytes, tsa_roots_pem: tuple[str, ...] = ()) -> dict:
    """Verification report of ``pdf``; ``tsa_roots_pem`` are further roots
    trusted for time-stamps only (an external document time-stamp authority's)."""
    result = verify_pdf(pdf, _certs(roots_pem), timestamp_roots=_certs(tuple(tsa_roots_pem)))
    report = result.to_dict()
    report["ok"] = result.ok
    report["sha256"] = hashlib.sha256(pdf).hexdigest()
    return report


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def report_signatures(roots_pem: tuple[str, ...], pdf: bytes, field_to_person: dict,
                      tsa_roots_pem: tuple[str, ...] = ()) -> list[dict]:
    """The report's signature entries (time, time-stamp, TSA) from the final PDF."""
    from services.signing.report import signature_entries

    return signature_entries(verify_pdf(pdf, _certs(roots_pem), timestamp_roots=_certs(tuple(tsa_roots_pem))),
                             field_to_person)


def render_report(report: dict) -> bytes:
    from services.signing.report import render_report_pdf

    return render_report_pdf(report)


def validation_data(pdf: bytes) -> dict:
    """The revocation data a B-LTA PDF carries (its DSS, ISO 32000-2 §12.8.4.3):
    CRLs, OCSP responses and certificates as DER, for the evidence package."""
    import io

    from pyhanko.pdf_utils.reader import PdfFileReader

    reader = PdfFileReader(io.BytesIO(pdf), strict=False)
    try:
        dss = reader.root["/DSS"]
    except KeyError:
        return {"crls": [], "ocsps": [], "certs": []}

    def streams(key: str) -> list[bytes]:
        return [ref.get_object().data for ref in (dss.get(key) or [])]

    return {"crls": streams("/CRLs"), "ocsps": streams("/OCSPs"), "certs": streams("/Certs")}
