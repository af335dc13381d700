"""The platform's own time-stamp authority (RFC 3161) and the client the signer uses.

* :class:`TimeStampAuthority` answers ``TimeStampReq`` with a ``TimeStampResp``
  signed by the TSA certificate (issued by the platform CA, critical EKU
  id-kp-timeStamping as RFC 3161 §2.3 requires). The token is a CMS
  SignedData over a ``TSTInfo`` (RFC 3161 §2.4.2), built as certomancer's
  ``TimeStamper`` builds it, and signed by pyHanko through a
  :class:`~services.common.keystore.cms_signer.KeySigner`: the TSA key may be
  on a PKCS#11 token (:mod:`services.common.keystore`), which never hands out
  the key's bytes that certomancer's stamper wants.
* :class:`TimeStampApp` is the HTTP transport of RFC 3161 §3.4
  (``application/timestamp-query`` → ``application/timestamp-reply``) as a
  plain WSGI app the service can mount.
* :class:`TsaClient` is pyHanko's HTTP time stamper with failures turned into
  :class:`~services.common.errors.Unavailable` ('tsa', or the name the caller
  gives: 'document_tsa' for an external authority of document time stamps);
  there is deliberately no fallback to the local clock: a signature without a
  trusted time is refused.
* :class:`IssuedToken` hands pyHanko a token the platform TSA already issued
  (identity stamps a signature in the same RPC that makes it, see
  ``TimeStampAuthority.token``), after checking it covers the digest pyHanko
  asks about: the sign step then has no HTTP round trip to a TSA.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from asn1crypto import cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from pyhanko.sign.general import simple_cms_attribute
from pyhanko.sign.timestamps.api import TimeStamper as TimeStamper_
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

from services.common.errors import InvalidInput, Unavailable
from services.common.keystore.cms_signer import KeySigner, run_now

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"

#: UUID-based OID (ITU-T X.667, arc 2.25) naming the platform's TSA policy;
#: self-assignable without registering an enterprise number.
DEFAULT_POLICY_OID = "2.25.216742385019325917040785342431969310514"

_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True)
class TsaSettings:
    """Client-side settings of the signing service for the TSA."""

    url: str
    timeout_seconds: float = 10.0
    #: (user, password) for HTTP basic authentication, when the authority asks for it
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)


def _require_timestamping_certificate(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise InvalidInput("tsa_certificate", "eku",
                           "expected a critical extendedKeyUsage extension, found none") from None
    if not eku.critical or list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        # RFC 3161 §2.3: exactly id-kp-timeStamping, and the extension MUST be critical
        raise InvalidInput("tsa_certificate", "eku", "expected critical extendedKeyUsage = timeStamping only")
    own = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    certified = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if own != certified:
        raise InvalidInput("tsa_key", "key_mismatch", "expected the private key of the TSA certificate")


class _RejectedResp(core.Sequence):
    """TimeStampResp without a token (RFC 3161 §2.4.2: timeStampToken is
    OPTIONAL and absent unless granted); asn1crypto's class makes it mandatory."""

    _fields = [("status", tsp.PKIStatusInfo)]


def _rejection(fail_info: str, text: str) -> _RejectedResp:
    return _RejectedResp(
        {
            "status": tsp.PKIStatusInfo(
                {
                    "status": tsp.PKIStatus("rejection"),
                    "status_string": [text],
                    "fail_info": tsp.PKIFailureInfo({fail_info}),
                }
            )
        }
    )


class TimeStampAuthority:
    """Issues RFC 3161 time-stamp tokens with the TSA certificate and its key
    (a ``cryptography`` EC private key: in memory, or one that signs on a token)."""

    def __init__(
        self,
        certificate: x509.Certificate,
        private_key: ec.EllipticCurvePrivateKey,
        chain: Sequence[x509.Certificate] = (),
        policy_oid: str = DEFAULT_POLICY_OID,
    ):
        _require_timestamping_certificate(certificate, private_key)
        self.certificate = certificate
        # pyHanko works in asn1crypto: convert once, not per request
        self._signer = KeySigner(certificate, private_key, chain)
        self._tsa_name = asn1_x509.GeneralName(name="directory_name", value=self._signer.signing_cert.subject)
        self._policy = tsp.ObjectIdentifier(policy_oid)
        self._signing_certificate = simple_cms_attribute("signing_certificate", tsp.SigningCertificate(
            {"certs": [tsp.ESSCertID({"cert_hash": hashlib.sha1(self._signer.signing_cert.dump()).digest()})]}))

    def respond(self, request_der: bytes) -> bytes:
        """DER ``TimeStampResp`` for a DER ``TimeStampReq``; malformed or
        unsupported requests get a 'rejection' status (RFC 3161 §2.4.2)."""
        try:
            request = tsp.TimeStampReq.load(request_der)
            version = int(request["version"])
            imprint = request["message_imprint"]
            algorithm = imprint["hash_algorithm"]["algorithm"].native
            hashed = imprint["hashed_message"].native
        except (ValueError, TypeError, KeyError):
            return _rejection("bad_data_format", "request is not a DER TimeStampReq").dump()
        if version != 1:
            return _rejection("bad_request", f"expected version 1, found {version}").dump()
        if algorithm not in _DIGEST_SIZES:
            return _rejection("bad_alg", f"expected one of {sorted(_DIGEST_SIZES)}, found {algorithm}").dump()
        if len(hashed) != _DIGEST_SIZES[algorithm]:
            return _rejection(
                "bad_data_format", f"expected a {_DIGEST_SIZES[algorithm]}-byte {algorithm} digest, found {len(hashed)}"
            ).dump()
        return tsp.TimeStampResp({"status": tsp.PKIStatusInfo({"status": tsp.PKIStatus("granted")}),
                                  "time_stamp_token": self._token(request)}).dump()

    def token(self, digest: bytes, algorithm: str = "sha256") -> bytes:
        """DER ``TimeStampToken`` (a CMS ContentInfo) over ``digest``, as the
        answer to a request for it would carry: for a caller in this process."""
        if _DIGEST_SIZES.get(algorithm) != len(digest):
            raise InvalidInput("digest", "length", f"expected a {algorithm} digest")
        request = tsp.TimeStampReq({
            "version": 1,
            "message_imprint": {"hash_algorithm": {"algorithm": algorithm}, "hashed_message": digest},
            "nonce": core.Integer(int.from_bytes(os.urandom(8), "big")),
            "cert_req": True,
        })
        return self._token(request).dump()

    def _token(self, request: tsp.TimeStampReq) -> cms.ContentInfo:
        """The TimeStampToken for a checked request (certReq is taken as true: the TSA's
        certificate and chain always ride along)."""
        moment = datetime.now(tz=timezone.utc)
        info = {"version": "v1", "policy": self._policy, "message_imprint": request["message_imprint"],
                "serial_number": int.from_bytes(os.urandom(16), "big") >> 1, "gen_time": moment,
                "tsa": self._tsa_name}
        if isinstance(request["nonce"], core.Integer):
            info["nonce"] = request["nonce"]
        tst_info = tsp.TSTInfo(info).dump()
        signed_attrs = cms.CMSAttributes([
            simple_cms_attribute("content_type", "tst_info"),
            simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(moment)})),
            self._signing_certificate,
            simple_cms_attribute("message_digest", hashlib.sha256(tst_info).digest()),
        ])
        return run_now(self._signer.async_sign_prescribed_attributes(
            "sha256", signed_attrs, cms_version="v3",
            encap_content_info={"content_type": "tst_info", "content": cms.ParsableOctetString(tst_info)}))


class TimeStampApp:
    """WSGI app: POST ``application/timestamp-query`` → ``application/timestamp-reply``."""

    #: a TimeStampReq with a SHA-512 imprint and a nonce is well under 200 bytes
    max_request_bytes = 4096

    def __init__(self, authority: TimeStampAuthority):
        self.authority = authority

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            return self._plain(start_response, "405 Method Not Allowed", "POST a timestamp query", [("Allow", "POST")])
        content_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if content_type != QUERY_CONTENT_TYPE:
            return self._plain(start_response, "415 Unsupported Media Type", f"expected {QUERY_CONTENT_TYPE}")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= self.max_request_bytes:
            return self._plain(start_response, "400 Bad Request", f"expected 1..{self.max_request_bytes} bytes")
        body = self.authority.respond(environ["wsgi.input"].read(length))
        start_response("200 OK", [("Content-Type", REPLY_CONTENT_TYPE), ("Content-Length", str(len(body)))])
        return [body]

    @staticmethod
    def _plain(start_response, status: str, text: str, extra=()):
        body = text.encode()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *extra])
        return [body]


class TsaCertificateChanged(Unavailable):
    """A token signed by another certificate than the one the client learnt from its first
    token (the authority renewed it): validation data gathered for the first does not cover it."""


class TsaClient(RequestsHTTPTimeStamper):
    """pyHanko time stamper for the platform TSA that fails loudly.

    Kept alive for the life of the signer: pyHanko caches the TSA's
    certificates and a dummy token (for size estimates) on this object.

    ``one_certificate``: every token must be signed by a certificate the first token
    (pyHanko's dummy) named, else :class:`TsaCertificateChanged`; for a caller that puts
    validation data for those certificates next to the token (a B-LTA document time-stamp).
    """

    def __init__(self, settings: TsaSettings, *, system: str = "tsa", one_certificate: bool = False):
        super().__init__(settings.url, timeout=settings.timeout_seconds, auth=settings.basic_auth)
        #: the name :class:`Unavailable` gives the authority, so a caller can tell which one failed
        self.system = system
        self.one_certificate = one_certificate

    async def async_timestamp(self, message_digest, md_algorithm) -> cms.ContentInfo:
        try:
            token = await super().async_timestamp(message_digest, md_algorithm)
            tst_info = token["content"]["encap_content_info"]["content"].parsed
            imprint = tst_info["message_imprint"]["hashed_message"].native
        except (TimestampRequestError, OSError, ValueError, KeyError, TypeError) as exc:
            # requests' exceptions are OSErrors; asn1crypto raises ValueError on junk
            raise Unavailable(self.system, f"time stamp request failed: {type(exc).__name__}") from exc
        if imprint != message_digest:
            raise Unavailable(self.system, "time stamp token covers a different digest than requested")
        if self.one_certificate and self._certs and not _signers(token) <= {
                (cert.issuer.dump(), cert.serial_number) for cert in self._certs.values()}:
            raise TsaCertificateChanged(self.system, "the token is signed by a certificate the first one did not name")
        return token


def _signers(token: cms.ContentInfo) -> set[tuple[bytes, int] | None]:
    """(issuer DER, serial) of each signer of a token; None for a signer named otherwise."""
    named = set()
    for signer in token["content"]["signer_infos"]:
        sid = signer["sid"].chosen
        named.add((sid["issuer"].dump(), sid["serial_number"].native) if isinstance(sid, cms.IssuerAndSerialNumber)
                  else None)
    return named


class IssuedToken(TimeStamper_):
    """pyHanko time stamper that answers with one token already issued.

    The token must cover exactly the digest pyHanko asks to stamp (the
    signature value's SHA-256); anything else is refused as
    :class:`Unavailable`, as a TSA answering for a different digest is.
    """

    def __init__(self, token_der: bytes, *, system: str = "tsa"):
        super().__init__(include_nonce=False)
        self.system = system
        try:
            self._token = cms.ContentInfo.load(token_der)
            tst_info = self._token["content"]["encap_content_info"]["content"].parsed
            imprint = tst_info["message_imprint"]
            self._covers = (imprint["hash_algorithm"]["algorithm"].native, imprint["hashed_message"].native)
        except (ValueError, TypeError, KeyError) as exc:
            raise Unavailable(system, f"time stamp token unreadable: {type(exc).__name__}") from exc

    async def async_timestamp(self, message_digest, md_algorithm) -> cms.ContentInfo:
        if self._covers != (md_algorithm, message_digest):
            raise Unavailable(self.system, "time stamp token covers a different digest than requested")
        return self._token

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        raise Unavailable(self.system, "an issued token answers only for its own digest")


__all__ = [
    "IssuedToken",
    "TsaCertificateChanged",
    "QUERY_CONTENT_TYPE",
    "REPLY_CONTENT_TYPE",
    "TimeStampApp",
    "TimeStampAuthority",
    "TsaClient",
    "TsaSettings",
]
