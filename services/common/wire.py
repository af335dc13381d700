"""What crosses between services: RPC arguments and answers carry bytes as
base64 text (RFC 4648 §4, padded), sizes checked before decoding; and the limits
of RPC arguments that the caller and the service called must agree on."""
from __future__ import annotations

import base64
import binascii

from services.common.errors import InvalidInput

#: people one ``identity.contacts`` call answers for at most (notify asks in chunks of this size)
CONTACTS_PER_CALL = 20


def decode_base64(value: str, field: str, max_bytes: int) -> bytes:
    """The bytes of a base64 argument, refused with ``InvalidInput(field, ...)``
    when too large (``max_bytes``, checked on the text first) or not base64."""
    if not isinstance(value, str):
        raise InvalidInput(field, "base64", "expected base64 text")
    if len(value) > (max_bytes + 2) // 3 * 4 + 4:
        raise InvalidInput(field, "max_bytes", f"expected at most {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(field, "base64", "expected base64-encoded bytes") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
