"""PAdES signing cost on one core: one party's sign step and the B-LTA finalisation.

Usage: .venv/bin/python bench/pades.py [N]   (default N = 50 sign steps, N/5 finalisations)

* sign step = DocumentSigner.prepare + remote sign (an in-process callable
  standing in for identity's sign_digest) + complete, which asks the platform
  TSA over HTTP on 127.0.0.1 for the signature time-stamp (PAdES B-T);
* floor = the same signature made by pyHanko directly: an in-memory key
  (SimpleSigner) and the TSA called in-process, no HTTP, no two phases
  (pyHanko estimates the CMS size with a dry run, so it signs twice);
* finalize_lta = OCSP/CRL fetches over local HTTP + DSS + document time-stamp;
* signatures read = the final PDF's signature dictionaries parsed, with pyHanko's
  hex-string reader against services/signing/hex_strings.py (the same bytes).

Prints p50/p99 in milliseconds and the sign-step/floor ratio. Runs in one
process; the local HTTP server runs in a thread of the same process.
"""
from __future__ import annotations

import asyncio
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from asn1crypto import keys, tsp  # noqa: E402
from asn1crypto import x509 as asn1_x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from pyhanko.pdf_utils import generic  # noqa: E402
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter  # noqa: E402
from pyhanko.pdf_utils.reader import PdfFileReader  # noqa: E402
from pyhanko.sign import fields, signers  # noqa: E402
from pyhanko.sign.timestamps import TimeStamper  # noqa: E402
from pyhanko_certvalidator.registry import SimpleCertificateStore  # noqa: E402

from bench.timing import report  # noqa: E402
from services.common.tsa import TimeStampAuthority, TsaSettings  # noqa: E402
from services.signing import hex_strings  # noqa: E402
from services.signing.pades import DocumentSigner, PartySignature, SignerSettings  # noqa: E402
from tests.support.pki import handwritten_png, start_signing_environment, two_party_pdf  # noqa: E402


def asn1(cert) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def asn1_key(key) -> keys.PrivateKeyInfo:
    return keys.PrivateKeyInfo.load(
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


class InProcessTimeStamper(TimeStamper):
    """The platform TSA called directly, without HTTP (pyHanko's DummyTimeStamper is RSA-only)."""

    def __init__(self, authority: TimeStampAuthority):
        super().__init__()
        self.authority = authority

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        return tsp.TimeStampResp.load(self.authority.respond(req.dump()))


def main(runs: int) -> None:
    env = start_signing_environment()
    pki = env.pki
    png = handwritten_png()
    blank = two_party_pdf()
    signer = DocumentSigner(SignerSettings(tsa=TsaSettings(env.tsa_url)), [pki.root.certificate])
    party = PartySignature("Party1", pki.alice.certificate, tuple(pki.chain), png, certify=True)

    def sign_step() -> bytes:
        prepared = signer.prepare(blank, party)
        return signer.complete(prepared, pki.alice.sign_digest(prepared.digest_to_sign))

    sign_step()  # warm-up: imports, TSA connection, caches
    step_times = []
    for _ in range(runs):
        start = time.perf_counter()
        signed = sign_step()
        step_times.append(time.perf_counter() - start)

    # the floor: pyHanko in-process with the key in memory and no HTTP
    floor_signer = signers.SimpleSigner(
        signing_cert=asn1(pki.alice.certificate),
        signing_key=asn1_key(pki.alice.key),
        cert_registry=SimpleCertificateStore.from_certs([asn1(pki.issuing.certificate)]),
    )
    floor_tsa = InProcessTimeStamper(TimeStampAuthority(pki.tsa.certificate, pki.tsa.key, [pki.issuing.certificate]))
    meta = signers.PdfSignatureMetadata(
        field_name="Party1", subfilter=fields.SigSeedSubFilter.PADES, certify=True,
        docmdp_permissions=fields.MDPPerm.FILL_FORMS, md_algorithm="sha256",
    )

    async def floor_once() -> None:
        pdf_signer = signers.PdfSigner(meta, signer=floor_signer, timestamper=floor_tsa)
        await pdf_signer.async_sign_pdf(IncrementalPdfFileWriter(io.BytesIO(blank)), existing_fields_only=True)

    asyncio.run(floor_once())
    floor_times = []
    for _ in range(runs):
        start = time.perf_counter()
        asyncio.run(floor_once())
        floor_times.append(time.perf_counter() - start)

    second = signer.sign_party(signed, "Party2", pki.bob.certificate, pki.chain, pki.bob.sign_digest, png, False)
    final = signer.finalize_lta(second)  # warm-up
    lta_times = []
    for _ in range(max(3, runs // 5)):
        start = time.perf_counter()
        signer.finalize_lta(second)
        lta_times.append(time.perf_counter() - start)
    # reading the final PDF's signatures (their /Contents hex strings): services/signing/hex_strings.py
    # against pyHanko's own reader, which reads a hex string one byte at a time
    read_times = {}
    for reader_name, reader in (("pyHanko's", hex_strings._pyhanko_reader), ("one slice", hex_strings.read_hex_string)):
        generic.read_hex_string_from_stream = reader
        times = []
        for _ in range(max(5, runs // 5)):
            start = time.perf_counter()
            contents = [bytes(sig.sig_object["/Contents"])
                        for sig in PdfFileReader(io.BytesIO(final), strict=False).embedded_signatures]
            times.append(time.perf_counter() - start)
        read_times[reader_name] = (times, contents)
    hex_strings.install()
    assert read_times["pyHanko's"][1] == read_times["one slice"][1]  # the same bytes either way
    env.stop()

    print(f"PAdES on one core ({os.cpu_count()} cores on this machine)")
    step = report("sign step (prepare+remote+TSA)", step_times, width=34)
    floor = report("floor (pyHanko in-process)", floor_times, width=34)
    report("finalize_lta (DSS + doc time-stamp)", lta_times, width=34)
    print(f"sign step / floor ratio: {step / floor:.2f}")
    slow = report("signatures read, pyHanko's reader", read_times["pyHanko's"][0], width=34)
    fast = report("signatures read, one slice", read_times["one slice"][0], width=34)
    print(f"signatures read, pyHanko's / one slice: {slow / fast:.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
