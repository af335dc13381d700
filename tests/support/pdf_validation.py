"""A signed PDF validated by pyHanko directly (independent of the platform's own
services/signing/verification.py): offline, revocation data only from the
file's DSS, hard-fail, trusting only the root given."""
from __future__ import annotations

import asyncio
import io

from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import async_validate_pdf_signature, async_validate_pdf_timestamp
from pyhanko.sign.validation.dss import DocumentSecurityStore


def pyhanko_statuses(pdf: bytes, root_pem: bytes) -> list[tuple[str, object]]:
    """(field name, pyHanko's status) of every signature and document time stamp, in file order."""
    _, _, der = pem.unarmor(root_pem)
    root = asn1_x509.Certificate.load(der)
    reader = PdfFileReader(io.BytesIO(pdf))
    dss = DocumentSecurityStore.read_dss(reader)

    def context():  # a fresh context per check
        return dss.as_validation_context({"trust_roots": [root], "allow_fetching": False,
                                          "revocation_mode": "hard-fail", "retroactive_revinfo": True})

    async def run():
        out = []
        for sig in reader.embedded_signatures:
            if sig.sig_object_type == "/DocTimeStamp":
                out.append((sig.field_name, await async_validate_pdf_timestamp(sig, validation_context=context())))
            else:
                out.append((sig.field_name, await async_validate_pdf_signature(sig, context(), context())))
        return out

    return asyncio.run(run())
