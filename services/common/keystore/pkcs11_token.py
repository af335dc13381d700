"""The ``pkcs11`` key store: keys generated and used on a PKCS#11 token
(OASIS PKCS#11 v2.40 base specification) through python-pkcs11.

Keys
----
A key pair is made by ``C_GenerateKeyPair`` on the token (``CKM_EC_KEY_PAIR_GEN``
on P-256, ``CKM_EC_EDWARDS_KEY_PAIR_GEN`` on Ed25519) with the ref's id as
``CKA_ID`` and its label as ``CKA_LABEL``; the private key with ``CKA_TOKEN``,
``CKA_PRIVATE``, ``CKA_SENSITIVE`` true and ``CKA_EXTRACTABLE`` false, and
with ``CKA_SIGN`` as its only use. The attributes are read back after
generation: a token that did not honour them gets the key destroyed and an
:class:`~services.common.errors.IntegrityError`. Keys are found by ``CKA_ID``.
:meth:`Pkcs11KeyStore.import_private_key` puts a key made elsewhere (a sealed
key being migrated) on the token the same way, by ``C_CreateObject``.

Sessions and threads
--------------------
python-pkcs11 releases the GIL inside each PKCS#11 call, so OS threads
(``eventlet.tpool``) run them at once. A PKCS#11 session is not for two
threads at a time, so sessions are leased from a pool: a thread holds one for
a whole operation (find, check, sign) and gives it back. Logging in is per
process and token (PKCS#11 v2.40 §5.6, C_Login: every session of an
application shares the login), so one login session per token and process,
kept by a shared :class:`_Token`, logs the pool in; stores opened twice on
one token share it.

python-pkcs11 calls ``C_Initialize(NULL_PTR)``, which tells a module that the
application will *not* call it from several threads at once; SoftHSM2 then
turns its own locks off (``SoftHSM::C_Initialize``: "No concurrent access by
multiple threads"). So by default (``parallel=False``) every call into a
module is serialised by a process-wide lock per module path, held for the
whole operation. ``parallel=True`` drops that lock and is for modules that
document thread safety without ``CKF_OS_LOCKING_OK`` (most network-HSM
clients); settings refuse it for SoftHSM2. Without that lock, eight threads
signing at once crash SoftHSM2 2.6.1 with a segmentation fault (tried: the
concurrency test does, with the lock removed). Locks are the operating
system's (eventlet's originals), and nothing yields to the hub while holding
one. PKCS#11 state does not survive ``fork``: a child process opens its own
store (the platform's worker pools start processes by ``spawn``).

Looking a key up by ``CKA_ID`` is a linear scan on SoftHSM2 (about 10 ms at
600 objects, measured), so each pooled session remembers the handles it
found; before a remembered handle is used its ``CKA_ID`` is read again (one
call), so a handle the token reused for another object after a destroy
elsewhere can never sign with the wrong key (it costs about 60 µs of a
150 µs signature on SoftHSM2, bench/keystore.py).

Faults
------
Every PKCS#11 error becomes ``Unavailable("key_store", reason)``
(:data:`~services.common.keystore.FAULTS`). A lost session
(``CKR_SESSION_HANDLE_INVALID``, ``CKR_SESSION_CLOSED``, ``CKR_DEVICE_REMOVED``,
``CKR_USER_NOT_LOGGED_IN``, ``CKR_CRYPTOKI_NOT_INITIALIZED``) drops the pool and
the login; an idempotent call (sign, read, destroy, list) is tried once more on
a fresh session, generation is not (a key made before the loss is the
reconciler's). A refused PIN is latched: the store never offers that PIN to
the token again (a real HSM locks the PIN after a few wrong tries), and says
``wrong_pin`` until it is reopened with another. The PIN never appears in a
message, a ``repr`` or a log line.

Token full: PKCS#11 reports ``CKR_DEVICE_MEMORY``. SoftHSM2 2.6.1 never does
(no path in its source returns it), and when its file system is full it
answers success while writing a truncated object file that no later process
can read (tried with ``RLIMIT_FSIZE``). For that case the store takes a
``storage_dir`` and ``min_free_bytes``: below that free space, ``generate``
refuses with ``token_full`` before asking the token.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pkcs11
from asn1crypto.core import ObjectIdentifier, OctetString
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from services.common.errors import IntegrityError, InvalidInput, Unavailable
from services.common.keystore import (
    EC_P256,
    ED25519,
    KEY_ID_BYTES,
    KEY_MISSING,
    PIN_LOCKED,
    PKCS11,
    SESSION_LOST,
    TOKEN_BUSY,
    TOKEN_ERROR,
    TOKEN_FULL,
    TOKEN_MISSING,
    UNSUPPORTED_ALGORITHM,
    WRONG_PIN,
    KeyRef,
    PublicKey,
    check_algorithm,
    check_digest,
    check_label,
    fault,
    new_key_id,
    require_backend,
)

try:  # OS-level locks even when eventlet has monkey-patched threading (tpool threads call the store)
    from eventlet.patcher import original as _original

    _threading = _original("threading")
    _time = _original("time")
except ImportError:  # pragma: no cover - eventlet is always installed here
    import threading as _threading
    import time as _time

log = logging.getLogger(__name__)

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
_P256_PARAMS = encode_named_curve_parameters("secp256r1")
_ED25519_PARAMS = ObjectIdentifier("1.3.101.112").dump()  # id-Ed25519 (RFC 8410 §3)
_P256_POINT_BYTES = 65  # 0x04 || X || Y
_ED25519_KEY_BYTES = 32
#: reads of the slots for the configured label before it is ``token_missing`` (:meth:`_Token._find_token`)
FIND_TOKEN_READS = 10
FIND_TOKEN_PAUSE = 0.02
_HANDLES_PER_SESSION = 8192  # ~1.5 MB of handle objects; a miss costs a scan of the token
_PUBLIC_KEYS_KEPT = 4096

T = TypeVar("T")


@dataclass(frozen=True)
class TokenSettings:
    """Which token, and how the store talks to it."""

    module: str = SOFTHSM2_MODULE  # path of the PKCS#11 module (shared library)
    token_label: str = "esign"
    # The pool is the process's, shared by every store on this module and label: the first store opened
    # sets these three.
    pool_size: int = 4  # sessions open at most, per token and process
    parallel: bool = False  # calls into the module may overlap (see the module docstring)
    acquire_timeout: float = 10.0  # seconds to wait for a free session before ``token_busy``
    storage_dir: Path | None = None  # where a file-backed token keeps its objects (SoftHSM2's tokendir)
    min_free_bytes: int = 0  # ``generate`` refuses (token_full) when storage_dir has less free

    def __post_init__(self):
        if not 1 <= self.pool_size <= 64:
            raise InvalidInput("keys.pkcs11.pool_size", "range", "expected 1 to 64 sessions")
        if not self.token_label or len(self.token_label.encode()) > 32:
            raise InvalidInput("keys.pkcs11.token_label", "length", "expected 1-32 bytes (CK_TOKEN_INFO.label)")


# --- errors ---------------------------------------------------------------------------

#: PKCS#11 errors after which the session (or every session) is gone
_LOST = (p11.SessionHandleInvalid, p11.SessionClosed, p11.DeviceRemoved, p11.UserNotLoggedIn,
         p11.TokenNotPresent)
_REASONS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    ((p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange), WRONG_PIN),
    ((p11.PinLocked, p11.PinExpired), PIN_LOCKED),
    ((p11.NoSuchToken, p11.TokenNotRecognised, p11.SlotIDInvalid), TOKEN_MISSING),
    (p11.TokenNotPresent, TOKEN_MISSING),
    (_LOST, SESSION_LOST),
    (p11.DeviceMemory, TOKEN_FULL),
    (p11.SessionCount, TOKEN_BUSY),
    ((p11.MechanismInvalid, p11.MechanismParamInvalid, p11.DomainParamsInvalid, p11.KeyTypeInconsistent),
     UNSUPPORTED_ALGORITHM),
    ((p11.ObjectHandleInvalid, p11.KeyHandleInvalid), KEY_MISSING),
)


def _not_initialized(exc: Exception) -> bool:
    # python-pkcs11 maps CKR_CRYPTOKI_NOT_INITIALIZED to a bare PKCS11Error with this text
    return type(exc) is p11.PKCS11Error and "not initialized" in str(exc)


def reason_of(exc: Exception) -> str:
    """The key-store fault a PKCS#11 error means."""
    if _not_initialized(exc):
        return SESSION_LOST
    for kinds, reason in _REASONS:
        if isinstance(exc, kinds):
            return reason
    return TOKEN_ERROR


def _session_lost(exc: Exception) -> bool:
    return isinstance(exc, _LOST) or _not_initialized(exc)


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except p11.PKCS11Error:  # already gone with its token or the module's state: nothing to release
        pass


# --- the shared token: module, login, session pool -----------------------------------------

_MODULE_LOCKS: dict[str, Any] = {}
_MODULE_LOCKS_GUARD = _threading.Lock()
_TOKENS: dict[tuple[str, str], "_Token"] = {}
_REGISTRY = _threading.Lock()


def _module_lock(module: str):
    """The lock that serialises calls into one module (by real path), across every token on it."""
    with _MODULE_LOCKS_GUARD:
        return _MODULE_LOCKS.setdefault(os.path.realpath(module), _threading.RLock())


@dataclass
class _PooledSession:
    session: Any
    generation: int
    handles: OrderedDict = field(default_factory=OrderedDict)  # key id -> private key object


class _Token:
    """One token as this process sees it: the module, the login, the idle sessions.

    Lock order: session slots, then the module lock (serial mode), then ``_state``."""

    def __init__(self, settings: TokenSettings, pin: str):
        self.settings = settings
        self._pin = pin
        self._pin_digest = hashlib.sha256(pin.encode()).digest()
        self._state = _threading.Lock()
        self._slots = _threading.BoundedSemaphore(settings.pool_size)
        self._calls = None if settings.parallel else _module_lock(settings.module)
        self._lib: Any = None
        self._token: Any = None
        self._login: Any = None
        self._idle: list[_PooledSession] = []
        self._generation = 0
        self._refused: str | None = None
        self.users = 0

    def __repr__(self) -> str:
        return f"_Token({self.settings.token_label!r}, module={self.settings.module!r})"

    def same_pin(self, pin: str) -> bool:
        return hmac.compare_digest(self._pin_digest, hashlib.sha256(pin.encode()).digest())

    @contextmanager
    def _serial(self) -> Iterator[None]:
        if self._calls is None:
            yield
            return
        with self._calls:
            yield

    @contextmanager
    def session(self) -> Iterator[_PooledSession]:
        """Lease a logged-in session for one operation; PKCS#11 errors pass through."""
        if not self._slots.acquire(timeout=self.settings.acquire_timeout):
            raise fault(TOKEN_BUSY)
        try:
            with self._serial():
                pooled = self._take()
                keep = True
                try:
                    yield pooled
                except p11.PKCS11Error as exc:
                    keep = not _session_lost(exc)
                    raise
                finally:
                    self._give_back(pooled, keep)
        finally:
            self._slots.release()

    def _take(self) -> _PooledSession:
        with self._state:
            self._connect()
            while self._idle:
                pooled = self._idle.pop()
                if pooled.generation == self._generation:
                    return pooled
                _close_quietly(pooled.session)
            generation, token = self._generation, self._token
        return _PooledSession(token.open(rw=True), generation)

    def _give_back(self, pooled: _PooledSession, keep: bool) -> None:
        with self._state:
            if keep and pooled.generation == self._generation and self.users > 0:
                self._idle.append(pooled)
                return
        _close_quietly(pooled.session)

    def _connect(self) -> None:
        """Load the module, find the token, log in: each once, again after a reset (holds ``_state``)."""
        if self._refused:
            raise fault(self._refused)
        if self._lib is None:
            try:
                self._lib = pkcs11.lib(self.settings.module)
            except p11.PKCS11Error:
                # the message names the path and the loader's reason, never a secret; the path is configuration
                log.error("key store: PKCS#11 module %s does not load", self.settings.module)
                raise fault(TOKEN_MISSING) from None
        if self._token is None:
            try:
                self._token = self._find_token()
            except p11.MultipleTokensReturned:
                log.error("key store: more than one token is labelled %r", self.settings.token_label)
                raise fault(TOKEN_ERROR) from None
        if self._login is None:
            self._login = self._log_in()

    def _find_token(self) -> Any:
        """The token labelled as configured. A file-backed token (SoftHSM2) that another process is
        logging in to may be read without its label for an instant (services/common/keystore/softhsm.py
        ``_token_present``), or fail to be read (CKR_GENERAL_ERROR: 164 of 23,724 reads while another
        process logged in and out): it is looked for a few more times before either is the answer."""
        for attempt in range(FIND_TOKEN_READS):
            try:
                return self._lib.get_token(token_label=self.settings.token_label)
            except (p11.NoSuchToken, p11.GeneralError):
                if attempt == FIND_TOKEN_READS - 1:
                    raise
                _time.sleep(FIND_TOKEN_PAUSE)  # under _state, maybe in a tpool thread: the OS's sleep

    def _log_in(self) -> Any:
        """A session whose ``C_Login`` logs in every session of this process; a refusal is latched."""
        try:
            return self._token.open(rw=True, user_pin=self._pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            self._refused = WRONG_PIN
            raise fault(WRONG_PIN) from None
        except (p11.PinLocked, p11.PinExpired):
            self._refused = PIN_LOCKED
            raise fault(PIN_LOCKED) from None
        except p11.UserAlreadyLoggedIn:
            # Sessions of ours outlived a lost login session, so the process is still logged in
            # (with this PIN, which the token accepted before). python-pkcs11 does not close the
            # session it opened for the refused C_Login; it goes with the module's next reset.
            return self._token.open(rw=True)

    def reset(self, reinitialize: bool) -> None:
        """Forget every session and the login (the token or module lost them); with
        ``reinitialize`` also ``C_Finalize`` + ``C_Initialize`` the module."""
        with self._serial(), self._state:
            self._generation += 1
            idle, self._idle = self._idle, []
            login, self._login, self._token = self._login, None, None
            for pooled in idle:
                _close_quietly(pooled.session)
            if login is not None:
                _close_quietly(login)
            if reinitialize and self._lib is not None:
                try:
                    self._lib.finalize()
                except p11.PKCS11Error:  # it was finalized under us: that is why we are here
                    pass
                try:
                    self._lib.initialize()
                except p11.PKCS11Error:  # the next _connect reports what is wrong
                    self._lib = None

    def shut(self) -> None:
        """Close the pool and log out (the last store on this token closed)."""
        with self._serial(), self._state:
            idle, self._idle = self._idle, []
            login, self._login = self._login, None
            for pooled in idle:
                _close_quietly(pooled.session)
            if login is not None:
                _close_quietly(login)  # C_Logout, then C_CloseSession


def _shared_token(settings: TokenSettings, pin: str) -> _Token:
    """The process's :class:`_Token` for this module and label, made on first use."""
    key = (os.path.realpath(settings.module), settings.token_label)
    with _REGISTRY:
        token = _TOKENS.get(key)
        if token is None:
            token = _TOKENS[key] = _Token(settings, pin)
        elif not token.same_pin(pin):
            # one PIN per token and process: the one already logged in is the one the token accepted
            raise fault(WRONG_PIN)
        token.users += 1
        return token


def _release_token(token: _Token) -> None:
    # under the registry's lock: a store opened meanwhile must not log in before this one logs out
    with _REGISTRY:
        token.users -= 1
        if token.users > 0:
            return
        key = (os.path.realpath(token.settings.module), token.settings.token_label)
        if _TOKENS.get(key) is token:
            del _TOKENS[key]
        token.shut()


def change_pin(settings: TokenSettings, old_pin: str, new_pin: str) -> None:
    """``C_Login`` with ``old_pin``, then ``C_SetPIN`` to ``new_pin`` (PKCS#11 v2.40 §5.6), while no
    store of this process has the token open: for a token just made with a PIN only its maker knew
    (:func:`~services.common.keystore.softhsm.init_token`), given the one its owner holds. A refusal
    is the store's fault (``wrong_pin`` for a PIN of a length the token never takes, ...)."""
    with _module_lock(settings.module):
        try:
            lib = pkcs11.lib(settings.module)
        except p11.PKCS11Error:
            raise fault(TOKEN_MISSING) from None
        try:
            with lib.get_token(token_label=settings.token_label).open(rw=True, user_pin=old_pin) as session:
                session.set_pin(old_pin, new_pin)
        except p11.PKCS11Error as exc:
            raise fault(reason_of(exc)) from None


# --- the store ----------------------------------------------------------------------------


class Pkcs11KeyStore:
    """:class:`~services.common.keystore.KeyStore` on a PKCS#11 token. Open with :meth:`open`."""

    backend = PKCS11

    def __init__(self, token: _Token, settings: TokenSettings):
        self._token = token
        self._settings = settings
        self._public: OrderedDict[str, PublicKey] = OrderedDict()
        self._public_lock = _threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, settings: TokenSettings, pin: str) -> "Pkcs11KeyStore":
        """Connect and log in now, so a missing token or a wrong PIN stops a service at start."""
        if not isinstance(pin, str) or not pin:
            raise InvalidInput("keys.pkcs11.pin", "required", "expected the token's user PIN as text")
        token = _shared_token(settings, pin)
        store = cls(token, settings)
        try:
            store._call(lambda pooled: None, idempotent=True)
        except BaseException:
            store.close()
            raise
        return store

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(token={self._token.settings.token_label!r})"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_token(self._token)

    # -- the interface

    def generate(self, label: str, algorithm: str) -> KeyRef:
        check_label(label)
        check_algorithm(algorithm)
        self._require_room()
        for attempt in (1, 2):
            ref = KeyRef(PKCS11, algorithm, label, new_key_id())
            try:
                with self._token_files_locked():
                    public = self._call(lambda pooled, ref=ref: self._generate(pooled, ref), idempotent=False)
                break
            except Unavailable as exc:
                # the session went away (the module was finalised under this store, the HSM dropped it):
                # once more under a new id; a key the lost session may have made under the old one is
                # named by nothing, and the reconciler's
                if exc.reason != SESSION_LOST or attempt == 2:
                    raise
                log.warning("key store: session lost while generating under %s; again with a new id", label)
        self._remember_public(ref.key_id, public)
        return ref

    def import_private_key(self, label: str, private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                           ) -> KeyRef:
        """Put an existing key on the token (``C_CreateObject``), held as a generated one is:
        sensitive, non-extractable, for signing only. For ``esign keys migrate --to pkcs11``,
        which moves sealed keys here: the token marks such a key ``CKA_ALWAYS_SENSITIVE`` and
        ``CKA_NEVER_EXTRACTABLE`` false, as it was outside once. The caller still holds the
        key object; it should drop it and its sealed copy once the token's copy has signed."""
        check_label(label)
        if isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name == "secp256r1":
            algorithm = EC_P256
            value = private_key.private_numbers().private_value.to_bytes(32, "big")
            point = private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        elif isinstance(private_key, ed25519.Ed25519PrivateKey):
            algorithm = ED25519
            value = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            point = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        else:
            raise InvalidInput("private_key", "algorithm", "expected an EC P-256 or an Ed25519 private key")
        self._require_room()
        ref = KeyRef(PKCS11, algorithm, label, new_key_id())
        with self._token_files_locked():
            public = self._call(lambda pooled: self._import(pooled, ref, value, point), idempotent=False)
        if public != private_key.public_key():
            self.destroy(ref)
            raise IntegrityError("token key", "the imported key's public half differs from the key given")
        self._remember_public(ref.key_id, public)
        return ref

    def public_key(self, ref: KeyRef) -> PublicKey:
        require_backend(PKCS11, ref)
        with self._public_lock:
            known = self._public.get(ref.key_id)
        if known is not None:
            return known
        public = self._call(lambda pooled: self._read_public(pooled, ref), idempotent=True)
        self._remember_public(ref.key_id, public)
        return public

    def sign_digest(self, ref: KeyRef, digest: bytes, algorithm: str = "sha256") -> bytes:
        require_backend(PKCS11, ref, EC_P256)
        digest = check_digest(digest, algorithm)
        raw = self._call(lambda pooled: self._private_key(pooled, ref).sign(digest, mechanism=Mechanism.ECDSA),
                         idempotent=True)
        if len(raw) != 64:
            raise IntegrityError("token signature", f"expected 64 bytes of r || s, found {len(raw)}")
        return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))

    def sign(self, ref: KeyRef, data: bytes) -> bytes:
        require_backend(PKCS11, ref, ED25519)
        data = bytes(data)
        signature = self._call(lambda pooled: self._private_key(pooled, ref).sign(data, mechanism=Mechanism.EDDSA),
                               idempotent=True)
        if len(signature) != 64:
            raise IntegrityError("token signature", f"expected a 64-byte Ed25519 signature, found {len(signature)}")
        return signature

    def destroy(self, ref: KeyRef) -> bool:
        require_backend(PKCS11, ref)
        with self._token_files_locked():
            destroyed = self._call(lambda pooled: self._destroy(pooled, ref), idempotent=True)
        with self._public_lock:
            self._public.pop(ref.key_id, None)
        return destroyed

    def list_refs(self, prefix: str) -> list[KeyRef]:
        return self._call(lambda pooled: self._list(pooled, prefix), idempotent=True)

    def ping(self) -> None:
        """One cheap call the token answers (``C_GenerateRandom``), for a health check."""
        self._call(lambda pooled: pooled.session.generate_random(64), idempotent=True)

    # -- calls, retries and errors

    def _call(self, action: Callable[[_PooledSession], T], *, idempotent: bool) -> T:
        if self._closed:
            raise InvalidInput("key_store", "closed", "expected an open key store")
        for attempt in (1, 2):
            try:
                with self._token.session() as pooled:
                    return action(pooled)
            except p11.PKCS11Error as exc:
                reason = reason_of(exc)
                if _session_lost(exc):
                    self._token.reset(reinitialize=_not_initialized(exc))
                    if idempotent and attempt == 1:
                        log.warning("key store: %s on token %r; retrying once on a fresh session",
                                    type(exc).__name__, self._token.settings.token_label)
                        continue
                elif reason == TOKEN_ERROR:
                    log.error("key store: token %r failed: %s", self._token.settings.token_label, type(exc).__name__)
                raise fault(reason) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _token_files_locked(self) -> Iterator[None]:
        """For a file-backed token (SoftHSM2's, ``storage_dir``): one process at a time adds or
        removes its objects. Two processes making keys on one new token at once (identity its CA
        keys, signing its log key, at a first start) once read back a key's attributes wrong
        (``_kept`` refused it) and once saw two tokens of one label; an HSM orders its own writes.
        The lock is the operating system's (fcntl), held for one key's few milliseconds."""
        directory = self._settings.storage_dir
        if directory is None:
            yield
            return
        # beside the token directory, not in it: SoftHSM2 takes every entry of its tokendir for a token
        with open(Path(directory).parent / f".{Path(directory).name}-writes.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _require_room(self) -> None:
        settings = self._settings
        if settings.storage_dir is None or settings.min_free_bytes <= 0:
            return
        try:
            stats = os.statvfs(settings.storage_dir)
        except OSError:
            raise fault(TOKEN_MISSING) from None
        if stats.f_bavail * stats.f_frsize < settings.min_free_bytes:
            log.error("key store: %s has less than %d bytes free; refusing to generate keys",
                      settings.storage_dir, settings.min_free_bytes)
            raise fault(TOKEN_FULL)

    # -- operations on one leased session

    @staticmethod
    def _generate(pooled: _PooledSession, ref: KeyRef) -> PublicKey:
        key_type, params = ((KeyType.EC, _P256_PARAMS) if ref.algorithm == EC_P256
                            else (KeyType.EC_EDWARDS, _ED25519_PARAMS))
        public, private = pooled.session.generate_keypair(
            key_type, store=True, id=ref.id_bytes, label=ref.label,
            public_template={Attribute.EC_PARAMS: params, Attribute.TOKEN: True, Attribute.PRIVATE: False,
                             Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False,
                             Attribute.DERIVE: False},
            private_template={Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                              Attribute.EXTRACTABLE: False, Attribute.SIGN: True, Attribute.DECRYPT: False,
                              Attribute.UNWRAP: False, Attribute.DERIVE: False},
        )
        return Pkcs11KeyStore._kept(pooled, ref, private, public)

    @staticmethod
    def _import(pooled: _PooledSession, ref: KeyRef, value: bytes, point: bytes) -> PublicKey:
        key_type, params = ((KeyType.EC, _P256_PARAMS) if ref.algorithm == EC_P256
                            else (KeyType.EC_EDWARDS, _ED25519_PARAMS))
        common = {Attribute.TOKEN: True, Attribute.KEY_TYPE: key_type, Attribute.EC_PARAMS: params,
                  Attribute.ID: ref.id_bytes, Attribute.LABEL: ref.label}
        public = pooled.session.create_object({
            **common, Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.PRIVATE: False, Attribute.VERIFY: True,
            Attribute.ENCRYPT: False, Attribute.WRAP: False, Attribute.DERIVE: False,
            Attribute.EC_POINT: OctetString(point).dump()})
        try:
            private = pooled.session.create_object({
                **common, Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True,
                Attribute.DECRYPT: False, Attribute.UNWRAP: False, Attribute.DERIVE: False, Attribute.VALUE: value})
        except BaseException:
            public.destroy()
            raise
        return Pkcs11KeyStore._kept(pooled, ref, private, public)

    @staticmethod
    def _kept(pooled: _PooledSession, ref: KeyRef, private: Any, public: Any) -> PublicKey:
        """A key just made or imported, if the token keeps it sensitive and non-extractable (else both
        halves destroyed): remembered for this session, its public key answered."""
        held = private.get_attributes([Attribute.TOKEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE])
        if not (held[Attribute.TOKEN] and held[Attribute.SENSITIVE] and not held[Attribute.EXTRACTABLE]):
            private.destroy()
            public.destroy()
            raise IntegrityError("token key", "the token did not keep the key sensitive and non-extractable")
        Pkcs11KeyStore._remember_handle(pooled, ref, private)
        return _public_key(ref.algorithm, public.get_attributes([Attribute.EC_PARAMS, Attribute.EC_POINT]))

    @staticmethod
    def _remember_handle(pooled: _PooledSession, ref: KeyRef, key: Any) -> None:
        """Keep a key object this session made: its first signature then needs no scan of the token."""
        pooled.handles[ref.key_id] = key
        if len(pooled.handles) > _HANDLES_PER_SESSION:
            pooled.handles.popitem(last=False)

    @staticmethod
    def _private_key(pooled: _PooledSession, ref: KeyRef) -> Any:
        """The private key object of ``ref`` in this session: remembered, after its CKA_ID is read
        again, or else looked up by CKA_ID and checked against the ref's label and algorithm."""
        key = pooled.handles.get(ref.key_id)
        if key is not None:
            try:
                if key[Attribute.ID] == ref.id_bytes:
                    pooled.handles.move_to_end(ref.key_id)
                    return key
            except (p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
                pass
            del pooled.handles[ref.key_id]
        found = list(pooled.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: ref.id_bytes}))
        if not found:
            raise fault(KEY_MISSING)
        if len(found) > 1:
            raise IntegrityError("token key", "two private keys share one CKA_ID")
        key = found[0]
        _check_matches(ref, key.get_attributes([Attribute.LABEL, Attribute.KEY_TYPE]))
        Pkcs11KeyStore._remember_handle(pooled, ref, key)
        return key

    @staticmethod
    def _read_public(pooled: _PooledSession, ref: KeyRef) -> PublicKey:
        found = list(pooled.session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: ref.id_bytes}))
        if len(found) != 1:
            raise fault(KEY_MISSING) if not found else IntegrityError("token key", "two public keys share one CKA_ID")
        attributes = found[0].get_attributes([Attribute.LABEL, Attribute.KEY_TYPE, Attribute.EC_PARAMS,
                                              Attribute.EC_POINT])
        _check_matches(ref, attributes)
        return _public_key(ref.algorithm, attributes)

    @staticmethod
    def _destroy(pooled: _PooledSession, ref: KeyRef) -> bool:
        objects = [obj for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
                   for obj in pooled.session.get_objects({Attribute.CLASS: cls, Attribute.ID: ref.id_bytes})]
        for obj in objects:  # check every one before destroying any
            if obj[Attribute.LABEL] != ref.label:
                raise IntegrityError("token key", "the key under this CKA_ID has another label than the ref")
        for obj in objects:
            obj.destroy()
        pooled.handles.pop(ref.key_id, None)
        return bool(objects)

    @staticmethod
    def _list(pooled: _PooledSession, prefix: str) -> list[KeyRef]:
        refs = []
        for key in list(pooled.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
            attributes = key.get_attributes([Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE, Attribute.EC_PARAMS])
            label, key_id = attributes.get(Attribute.LABEL) or "", attributes.get(Attribute.ID) or b""
            algorithm = _algorithm_of(attributes)
            if not label.startswith(prefix) or len(key_id) != KEY_ID_BYTES or algorithm is None:
                continue  # not a key this store made
            try:
                refs.append(KeyRef(PKCS11, algorithm, label, key_id.hex()))
            except InvalidInput:  # a label this store would not have written
                continue
        return refs

    def _remember_public(self, key_id: str, public: PublicKey) -> None:
        with self._public_lock:
            self._public[key_id] = public
            if len(self._public) > _PUBLIC_KEYS_KEPT:
                self._public.popitem(last=False)


def _algorithm_of(attributes: dict) -> str | None:
    key_type, params = attributes.get(Attribute.KEY_TYPE), attributes.get(Attribute.EC_PARAMS)
    if key_type == KeyType.EC and params == _P256_PARAMS:
        return EC_P256
    if key_type == KeyType.EC_EDWARDS:
        return ED25519
    return None


def _check_matches(ref: KeyRef, attributes: dict) -> None:
    if attributes.get(Attribute.LABEL) != ref.label:
        raise IntegrityError("token key", "the key under this CKA_ID has another label than the ref")
    expected = KeyType.EC if ref.algorithm == EC_P256 else KeyType.EC_EDWARDS
    if attributes.get(Attribute.KEY_TYPE) != expected:
        raise IntegrityError("token key", f"the key under this CKA_ID is not an {ref.algorithm} key")


def _unwrap_point(value: bytes, size: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING (PKCS#11 v2.40 Current Mechanisms §2.3.3); some give it bare."""
    if len(value) == size:
        return value
    try:
        return bytes(OctetString.load(value).native)
    except ValueError:
        raise IntegrityError("token public key", "CKA_EC_POINT is neither DER nor a bare point") from None


def _public_key(algorithm: str, attributes: dict) -> PublicKey:
    point = attributes[Attribute.EC_POINT]
    if algorithm == EC_P256:
        if attributes.get(Attribute.EC_PARAMS) != _P256_PARAMS:
            raise IntegrityError("token public key", "expected the P-256 curve")
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _unwrap_point(point, _P256_POINT_BYTES))
    return ed25519.Ed25519PublicKey.from_public_bytes(_unwrap_point(point, _ED25519_KEY_BYTES))
