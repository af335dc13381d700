"""A second, independent RFC 3161 time-stamp authority for tests, shaped like a
commercial or national TSA: nothing in it chains to the platform's test root.

its own root CA → TSA CA → TSA certificate (critical EKU id-kp-timeStamping,
RFC 3161 §2.3); :meth:`ExternalTimeAuthority.renew` issues a new TSA CA and
TSA certificate, as a vendor renewing its TSA does. The CAs publish CRLs and
the certificates under them name those CRLs (distribution points); there is
no OCSP. The TSA
(:class:`services.common.tsa.TimeStampApp`, with its own policy OID) and the
CRLs are served from their own :class:`~tests.support.pki.PkiHttpServer` on
127.0.0.1, so the code under test fetches the authority's revocation data
over real HTTP, and a test can see that a verifier fetched nothing.

Keys stay in memory; nothing here is meant for production.
"""
from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.support.pki import Issued, PkiHttpServer, issue_certificate, new_key, signed_crl

#: the external authority's TSA policy (ITU-T X.667 UUID arc), not the platform's
EXTERNAL_POLICY_OID = "2.25.104830592159917619072489536363750619473"

ROOT_NAME = "Test Time Authority Root CA"
TSA_NAME = "Test National TSA"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test National Time Service"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class ExternalTimeAuthority:
    """The running authority: ``url`` answers time-stamp queries,
    ``/crl/<name>.crl`` the CRL of each of its CAs."""

    server: PkiHttpServer
    root: Issued
    #: (user, password) the TSA asks for with HTTP basic auth; None: it asks for none
    basic_auth: tuple[str, str] | None = None
    #: False: the CRL endpoints answer 503, as a revocation server that is down
    crls_available: bool = True
    paths_requested: list[str] = field(default_factory=list)
    #: the CA that issued the current TSA certificate, and that certificate
    tsa_ca: Issued = field(init=False)
    tsa: Issued = field(init=False)
    #: CRL name (as in the certificates' distribution points) → the CA that signs it
    _crl_issuers: dict[str, Issued] = field(init=False)
    _tsa_app: Any = field(init=False)

    def __post_init__(self) -> None:
        self._crl_issuers = {"root": self.root}
        self._issue_tsa()

    @property
    def url(self) -> str:
        return f"{self.server.base_url}/tsa"

    @property
    def chain(self) -> list[x509.Certificate]:
        """The TSA certificate's intermediate(s), root excluded."""
        return [self.tsa_ca.certificate]

    def renew(self) -> None:
        """A new TSA CA and TSA certificate under the same root, as a vendor
        renews its TSA; the old ones stay valid and their CRLs stay served."""
        self._issue_tsa()

    def stop(self) -> None:
        self.server.stop()

    def _issue_tsa(self) -> None:
        from services.common.tsa import TimeStampApp, TimeStampAuthority

        base_url, n = self.server.base_url, len(self._crl_issuers)
        self.tsa_ca = issue_certificate(_name(f"Test Time Authority TSA CA {n}"), new_key(), self.root, ca=True,
                                        base_url=base_url, crl_of_issuer="root", ocsp=False,
                                        validity=dt.timedelta(days=5000))
        self.tsa = issue_certificate(_name(TSA_NAME), new_key(), self.tsa_ca, ca=False, base_url=base_url,
                                     crl_of_issuer=f"tsa-ca-{n}", ocsp=False, eku_timestamping=True,
                                     validity=dt.timedelta(days=2190))
        self._crl_issuers[f"tsa-ca-{n}"] = self.tsa_ca
        self._tsa_app = TimeStampApp(TimeStampAuthority(self.tsa.certificate, self.tsa.key, self.chain,
                                                        policy_oid=EXTERNAL_POLICY_OID))

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        self.paths_requested.append(f"{environ['REQUEST_METHOD']} {path}")
        if path == "/tsa":
            if self.basic_auth is not None and not self._authorised(environ):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                                    ("WWW-Authenticate", 'Basic realm="tsa"')])
                return [b"credentials required"]
            return self._tsa_app(environ, start_response)
        name = path[len("/crl/"):-len(".crl")] if path.startswith("/crl/") and path.endswith(".crl") else None
        if name in self._crl_issuers:
            if not self.crls_available:
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"down"]
            body = signed_crl(self._crl_issuers[name], {})
            start_response("200 OK", [("Content-Type", "application/pkix-crl"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    def _authorised(self, environ) -> bool:
        user, password = self.basic_auth
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return environ.get("HTTP_AUTHORIZATION") == expected


def start_external_tsa(basic_auth: tuple[str, str] | None = None) -> ExternalTimeAuthority:
    """Build the authority's PKI and serve it; ``stop()`` it when done."""
    server = PkiHttpServer()
    root = issue_certificate(_name(ROOT_NAME), new_key(), None, ca=True, base_url=server.base_url,
                             crl_of_issuer=None, ocsp=False, validity=dt.timedelta(days=7300))
    authority = ExternalTimeAuthority(server, root, basic_auth=basic_auth)
    server.app = authority.wsgi
    server.start()
    return authority
