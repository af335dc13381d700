"""The signing service's settings, read once from its nameko config.

``ASSURANCE.REQUIRED_LEVEL`` is the platform's minimum identity assurance
(:mod:`services.common.assurance`) for every flow: a party signs, or consents
to a void, only with a certificate stating at least the level its flow
requires. A flow may require more, never less.

``TSA.DOCUMENT_URL``, ``TSA.DOCUMENT_TRUST`` and ``TSA.DOCUMENT_AUTH`` name a
second, independent RFC 3161 authority for the document time-stamp that makes
a finished PDF PAdES B-LTA (:class:`DocumentTimestampSettings`); signature
time-stamps stay with the platform TSA: stamped by identity in the same RPC
that signs (``TSA.SIGNATURE_STAMPS: identity``, the default), or asked of
the authority at ``TSA.URL`` over HTTP (``url``).

``PUBLIC_URL`` is where people and the platform reach the gateway (the
links in events, the signing report's verify link); ``TSA.URL`` the
platform TSA over HTTP; ``S3.PDF_CACHE_MB`` how much of the flows' PDFs a
process keeps in memory by hash (0: none); ``EVIDENCE_LOG.ORIGIN`` the
evidence log's name in its checkpoints (C2SP signed note origin).

A bad value raises :class:`~services.common.errors.InvalidInput` naming the
setting, so a misconfigured replica stops at start-up instead of letting
weaker identities sign or finalising against the wrong authority.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.common.assurance import LEVELS, AssuranceLevel
from services.common.config import REPO_ROOT, SecretMissing, read_secret
from services.common.errors import InvalidInput

#: without configuration, only people an authority proofed with a live face check may sign
DEFAULT_REQUIRED_LEVEL = AssuranceLevel.AUTHORITY_FACE_LIVENESS


@dataclass(frozen=True)
class DocumentTimestampSettings:
    """The authority of the document time-stamp (a commercial or national
    TSA chaining to its own root), so a document's time does not rest on the
    platform's word alone.

    ``url`` empty: the platform TSA stamps the document too (``roots_pem``,
    if given, are still trusted for time-stamps when verifying, so files
    stamped while an external authority was configured keep verifying).
    """

    url: str = ""
    #: PEM of each root certificate the authority's certificate chains to; trusted for time-stamps only
    roots_pem: tuple[str, ...] = ()
    #: (user, password) for HTTP basic authentication; only over https
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, tsa: Mapping[str, Any]) -> "DocumentTimestampSettings":
        url = str(tsa.get("DOCUMENT_URL") or "").strip()
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidInput("tsa.document_url", "url",
                                   f"expected an http(s) URL of an RFC 3161 authority, found {url!r}")
        trust = str(tsa.get("DOCUMENT_TRUST") or "").strip()
        roots = _roots_pem(trust) if trust else ()
        if url and not roots:
            raise InvalidInput("tsa.document_trust", "required",
                               "expected a PEM file of the document TSA's root certificate(s) with TSA.DOCUMENT_URL, "
                               "found none")
        return cls(url=url, roots_pem=roots, basic_auth=_basic_auth(tsa.get("DOCUMENT_AUTH"), url) if url else None)


#: where a party's signature time-stamp comes from
SIGNATURE_STAMPS = ("identity", "url")


DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_LOG_ORIGIN = "esign.local/evidence-log"
DEFAULT_PDF_CACHE_MB = 64


@dataclass(frozen=True)
class SigningSettings:
    required_assurance: AssuranceLevel = DEFAULT_REQUIRED_LEVEL
    document_timestamp: DocumentTimestampSettings = DocumentTimestampSettings()
    #: "identity": the platform TSA stamps each signature inside identity.sign_digest;
    #: "url": the signer asks the RFC 3161 authority at TSA.URL
    signature_stamps: str = "identity"
    public_url: str = DEFAULT_PUBLIC_URL  # no trailing slash
    tsa_url: str = ""
    pdf_cache_bytes: int = DEFAULT_PDF_CACHE_MB * 1024 * 1024
    log_origin: str = DEFAULT_LOG_ORIGIN

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "SigningSettings":
        tsa = _section(config, "TSA")
        return cls(
            required_assurance=_required_level(_section(config, "ASSURANCE")),
            document_timestamp=DocumentTimestampSettings.from_config(tsa),
            signature_stamps=_signature_stamps(tsa),
            public_url=_http_url(config.get("PUBLIC_URL") or DEFAULT_PUBLIC_URL, "public_url"),
            tsa_url=_http_url(tsa.get("URL"), "tsa.url") if str(tsa.get("URL") or "").strip() else "",
            pdf_cache_bytes=_cache_bytes(_section(config, "S3").get("PDF_CACHE_MB", DEFAULT_PDF_CACHE_MB)),
            log_origin=_log_origin(_section(config, "EVIDENCE_LOG").get("ORIGIN") or DEFAULT_LOG_ORIGIN),
        )

    @property
    def stamps_in_identity(self) -> bool:
        return self.signature_stamps == "identity"


def _signature_stamps(tsa: Mapping[str, Any]) -> str:
    value = str(tsa.get("SIGNATURE_STAMPS") or "identity").strip().lower()
    if value not in SIGNATURE_STAMPS:
        raise InvalidInput("tsa.signature_stamps", "allowed_values",
                           f"expected one of {', '.join(SIGNATURE_STAMPS)}, found {value!r}")
    if value == "url" and not str(tsa.get("URL") or "").strip():
        raise InvalidInput("tsa.url", "required", "expected the authority's URL with TSA.SIGNATURE_STAMPS: url")
    return value


def _http_url(value: Any, key: str) -> str:
    url = str(value).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(key, "url", f"expected an http(s) URL, found {url!r}")
    return url


def _cache_bytes(megabytes: Any) -> int:
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, str)) or not str(megabytes).strip().isdigit():
        raise InvalidInput("s3.pdf_cache_mb", "integer",
                           f"expected a whole number of MB ≥ 0 (0: off), found {megabytes!r}")
    return int(megabytes) * 1024 * 1024


def _log_origin(value: Any) -> str:
    origin = str(value)
    # a signed note's first line: printable, no spaces (c2sp.org/signed-note)
    if not origin or any(c.isspace() or not c.isprintable() for c in origin):
        raise InvalidInput("evidence_log.origin", "origin", f"expected a log name without spaces, found {origin!r}")
    return origin


def _section(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = config.get(name) or {}
    if not isinstance(section, Mapping):
        raise InvalidInput(name.lower(), "type", "expected a mapping")
    return section


def _required_level(assurance: Mapping[str, Any]) -> AssuranceLevel:
    value = assurance.get("REQUIRED_LEVEL")
    if value is None or value == "":
        return DEFAULT_REQUIRED_LEVEL
    try:
        return AssuranceLevel(value)
    except ValueError:
        raise InvalidInput("assurance.required_level", "allowed_values",
                           f"expected one of {', '.join(LEVELS)}, found {value!r}") from None


def _roots_pem(path_text: str) -> tuple[str, ...]:
    path = Path(path_text)
    if not path.is_absolute():
        path = REPO_ROOT / path  # as secret files are
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput("tsa.document_trust", "file",
                           f"expected a readable PEM file, cannot read {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidInput("tsa.document_trust", "pem",
                           f"expected PEM certificates (-----BEGIN CERTIFICATE-----) in {path}") from None
    return tuple(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def _secret_is_set(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    return bool(spec.get("file")) or bool(spec.get("env") and os.environ.get(str(spec["env"])))


def _basic_auth(auth: Any, url: str) -> tuple[str, str] | None:
    if auth is None:
        return None
    if not isinstance(auth, Mapping):
        raise InvalidInput("tsa.document_auth", "type", "expected a mapping {USER, PASSWORD} of secret specs")
    specs = {"user": auth.get("USER"), "password": auth.get("PASSWORD")}
    given = [name for name, spec in specs.items() if _secret_is_set(spec)]
    if not given:
        return None
    if len(given) == 1:
        raise InvalidInput("tsa.document_auth", "required",
                           f"expected both a user and a password, found only the {given[0]}")
    if urlsplit(url).scheme != "https":
        # basic auth sends the password as it is: never over plain http
        raise InvalidInput("tsa.document_auth", "https_required",
                           "expected an https TSA.DOCUMENT_URL to send credentials to, found http")
    values = {}
    for name, spec in specs.items():
        try:
            values[name] = read_secret(spec, f"document-tsa-{name}").decode("utf-8")
        except SecretMissing as exc:
            raise InvalidInput(f"tsa.document_auth.{name}", "secret_missing", str(exc)) from None
        except UnicodeDecodeError:
            raise InvalidInput(f"tsa.document_auth.{name}", "utf8", "expected UTF-8 text") from None
    return values["user"], values["password"]
