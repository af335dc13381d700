"""The evidence log's records and proofs as values, with nothing of its storage:
what a leaf is (an event record as canonical JSON, a subset of RFC 8785), the
inclusion and consistency proofs a report carries, and their check against a
signed checkpoint. services/signing/evidence_log.py writes and proves the log;
the offline verifier (services/signing/offline_verify.py, ``esign verify``)
checks what it answered with this module alone, so a verifier imports neither
SQLAlchemy nor the services' runtime.

Record fields (:data:`RECORD_FIELDS`) and the canonical form are described in
services/signing/evidence_log.py.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from services.common.errors import InvalidInput
from services.signing import merkle
from services.signing.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from services.signing.merkle import InclusionProofError

RECORD_VERSION = 1
REQUIRED_FIELDS = ("flow_id", "event_type", "timestamp")
OPTIONAL_FIELDS = (
    "document_hash",
    "party_id",
    "certificate_serial",
    "willingness_method",
    "willingness_outcome",
)
#: filled by the log, never by the caller
LOG_FIELDS = ("prev_index", "version")
RECORD_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS + LOG_FIELDS
MAX_FLOW_ID_LENGTH = 64
MAX_EVENT_ID_LENGTH = 64
#: integers beyond this lose precision in IEEE doubles, which JCS assumes
MAX_SAFE_INTEGER = 2**53 - 1


# --- canonical JSON (RFC 8785 subset) ---------------------------------------------

_json_string = json.encoder.encode_basestring


def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 canonical JSON bytes (see the module docstring)."""
    if _flat_ascii_keyed(value):
        # a flat record with ASCII keys (every flow event): json.dumps sorts ASCII keys in code-unit
        # order and writes strings, integers, booleans and null as RFC 8785 does, in C
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    else:
        text = _canonical(value, "record")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("record", "utf8", "expected text encodable as UTF-8, found a lone surrogate") from None


def _flat_ascii_keyed(value: Any) -> bool:
    """A dict of ASCII string keys whose values are strings, safe integers, booleans or null."""
    if type(value) is not dict:
        return False
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if not (item is None or kind is str or kind is bool
                or (kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER)):
            return False
    return True


def _utf16_key(key: str, path: str) -> bytes:
    try:
        # big-endian UTF-16 bytes compare like the code-unit sequences JCS sorts by
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise InvalidInput(path, "utf8", "expected keys encodable as UTF-8, found a lone surrogate") from None


def _canonical(value: Any, path: str) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InvalidInput(path, "max_integer",
                               f"expected an integer within ±{MAX_SAFE_INTEGER}, "
                               f"found one of {value.bit_length()} bits")
        return str(value)
    if isinstance(value, str):
        # what json.dumps(ensure_ascii=False) calls: it escapes exactly '"', '\\'
        # and U+0000..U+001F (\b \t \n \f \r short, others \u00xx lower-case),
        # as RFC 8785 §3.2.2.2 requires
        return _json_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise InvalidInput(path, "type", f"expected string keys, found {type(key).__name__}")
        keys = sorted(value, key=lambda k: _utf16_key(k, f"{path}.{k}"))
        members = (_json_string(k) + ":" + _canonical(value[k], f"{path}.{k}") for k in keys)
        return "{" + ",".join(members) + "}"
    raise InvalidInput(path, "type",
                       f"expected a string, integer, boolean, null, list or object, found {type(value).__name__}")


# --- leaf records ---------------------------------------------------------------


def check_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise InvalidInput("record", "type", f"expected an object, found {type(record).__name__}")
    for name in LOG_FIELDS:
        if name in record:
            raise InvalidInput(name, "log_managed", f"expected no {name}: the log sets it")
    for name in REQUIRED_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value:
            raise InvalidInput(name, "required", f"expected a non-empty string, found {type(value).__name__}")
    if len(record["flow_id"]) > MAX_FLOW_ID_LENGTH:
        raise InvalidInput("flow_id", "max_length",
                           f"expected at most {MAX_FLOW_ID_LENGTH} characters, found {len(record['flow_id'])}")
    try:
        moment = datetime.fromisoformat(record["timestamp"])
    except ValueError:
        raise InvalidInput("timestamp", "rfc3339", "expected an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        raise InvalidInput("timestamp", "rfc3339", "expected a date-time with a UTC offset, found none")
    event_id = record.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not event_id):
        raise InvalidInput("event_id", "type", f"expected a non-empty string or none, found {type(event_id).__name__}")
    if event_id is not None and len(event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidInput("event_id", "max_length",
                           f"expected at most {MAX_EVENT_ID_LENGTH} characters, found {len(event_id)}")
    full = {name: None for name in OPTIONAL_FIELDS}
    full.update(record)
    return full


def leaf_record(record: Mapping[str, Any], prev_index: int | None) -> bytes:
    """The leaf bytes of ``record`` once the log has chained it to ``prev_index``."""
    full = check_record(record)
    full["prev_index"] = prev_index
    full["version"] = RECORD_VERSION
    return canonical_json(full)


def utc_timestamp(moment: datetime) -> str:
    """An aware datetime as the RFC 3339 UTC form records use (``...Z``)."""
    if moment.tzinfo is None:
        raise InvalidInput("timestamp", "rfc3339", "expected an aware datetime, found a naive one")
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


# --- proofs as values -------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str, field_name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise InvalidInput(field_name, "base64", "expected standard base64") from None


@dataclass(frozen=True)
class LeafReceipt:
    index: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class SequencedRecord:
    """A record as sequenced: the caller's fields as canonical JSON (no
    ``prev_index`` yet), waiting to be integrated into the tree."""

    flow_id: str
    event_id: str | None
    record: bytes
    created_at: datetime

    @classmethod
    def of(cls, record: Mapping[str, Any], created_at: datetime) -> "SequencedRecord":
        check_record(record)
        return cls(record["flow_id"], record.get("event_id"), canonical_json(record), created_at)

    def leaf_data(self, prev_index: int | None) -> bytes:
        # canonical JSON holds only strings, safe integers, booleans, null,
        # lists and objects, so it parses back to the same value
        return leaf_record(json.loads(self.record), prev_index)


@dataclass(frozen=True, slots=True)
class StoredLeaf:
    index: int
    flow_id: str
    data: bytes
    leaf_hash: bytes
    created_at: datetime

    def record(self) -> dict[str, Any]:
        return json.loads(self.data)


@dataclass(frozen=True)
class InclusionProof:
    """Audit path of one leaf against one tree size (RFC 9162 §2.1.3)."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"leaf_index": self.leaf_index, "tree_size": self.tree_size, "hashes": [_b64(h) for h in self.hashes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "InclusionProof":
        return cls(int(data["leaf_index"]), int(data["tree_size"]), tuple(_unb64(h, "hashes") for h in data["hashes"]))


@dataclass(frozen=True)
class ConsistencyProof:
    """Proof that the tree of ``old_size`` is a prefix of that of ``new_size`` (§2.1.4)."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"old_size": self.old_size, "new_size": self.new_size, "hashes": [_b64(h) for h in self.hashes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConsistencyProof":
        return cls(int(data["old_size"]), int(data["new_size"]), tuple(_unb64(h, "hashes") for h in data["hashes"]))


# --- offline verification (esign verify) ------------------------------------------


def verify_inclusion(leaf_bytes: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise :class:`InclusionProofError` unless ``leaf_bytes`` is leaf ``index``
    of the tree of ``size`` leaves whose root is ``root``. Needs no store."""
    merkle.verify_inclusion(merkle.hash_leaf(leaf_bytes), index, size, proof, root)


def verify_checkpointed_inclusion(
    leaf_bytes: bytes, proof: InclusionProof, checkpoint_note: str, verifier: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Check a checkpoint's signature, then the leaf's proof against its root."""
    checkpoint = open_checkpoint(checkpoint_note, verifier, origin)
    if checkpoint.size != proof.tree_size:
        raise InclusionProofError(f"expected a proof for the checkpoint's tree size {checkpoint.size}, "
                                  f"found one for {proof.tree_size}")
    verify_inclusion(leaf_bytes, proof.leaf_index, proof.tree_size, proof.hashes, checkpoint.root_hash)
    return checkpoint
