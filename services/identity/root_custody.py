"""Where the offline root CA's key is kept, and how it is opened to sign
(issue #16: "the root can stay offline on its own token").

``esign ca init --root-dir DIR`` keeps the root's key in one of three places:

* **its own token** (the default): an embedded SoftHSM2 token labelled
  ``esign-root`` in a SoftHSM2 home under DIR (``DIR/softhsm/softhsm2.conf``,
  ``DIR/softhsm/tokens/``, mode 0700), apart from the services' token. Its user
  PIN is the root passphrase: the token is made with a random PIN written
  nowhere, changed at once to the passphrase by ``C_SetPIN``
  (:func:`~services.common.keystore.softhsm.init_token`), so the passphrase
  never passes on a command line and is stored nowhere. Its security
  officer's PIN is random, in ``DIR/secrets/softhsm-esign-root-so-pin`` (0600).
* **an HSM's token**: ``--pkcs11-module PATH --token-label L``, its user PIN
  the passphrase.
* **a file** (``--key-file``): the passphrase-encrypted PKCS#8
  ``root-key.pem`` of :func:`services.identity.ca.init_root`, for a machine
  without a token; root directories made so before keep working.

On a token the key is generated there (``CKM_EC_KEY_PAIR_GEN`` on P-256,
``CKA_SENSITIVE`` true, ``CKA_EXTRACTABLE`` false, for signing only: PKCS#11
v2.40 §4.9; labelled ``esign/ca/root/<serial>``) and ``root.pem`` is signed
through it. ``DIR/root-token.json`` (:class:`RootToken`) records the module,
the token's label, where an embedded token's home is, and the key's ref:
never the PIN.

:func:`open_root` opens the root for one ceremony (``esign ca issue-ca``,
``esign ca root-crl``): a :class:`~services.identity.ca.CertificateAuthority`
whose key, checked against ``root.pem``, signs on the token through a child
process that opens only the root's token
(:mod:`services.identity.root_signer`: SoftHSM2 sees one home per process,
and the ceremony may also open identity's); the session ends with the
``with`` block. A wrong passphrase is ``InvalidInput("passphrase",
"mismatch")`` whatever the custody; a token fault is the key store's
``Unavailable("key_store", reason)``.

:func:`create_root_on_store` and :func:`root_from_store` are the development
CA's (:func:`services.identity.ca_store.ensure_development_ca`): its root on a
token this process opens itself, made or reopened, then let go.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography import x509

from services.common.errors import Conflict, InvalidInput, Unavailable
from services.common.keystore import EC_P256, TOKEN_MISSING, WRONG_PIN, KeyRef, KeyStore, fault
from services.common.keystore.pkcs11_token import SOFTHSM2_MODULE
from services.common.keystore.private_keys import StoreEcPrivateKey
from services.common.keystore.softhsm import SoftHsmUnavailable, existing_token, init_token, token_paths
from services.common.reasons import Reason
from services.identity import ca
from services.identity.root_signer import RootSigner

log = logging.getLogger(__name__)

ROOT_TOKEN_LABEL = "esign-root"  #: the label of the root's embedded token
ROOT_KEY_LABEL_PREFIX = "esign/"  #: the root key's label on its own token: ``esign/ca/root/<serial>``
MAX_PIN_BYTES = 255  # SoftHSM2's longest PIN (CK_TOKEN_INFO.ulMaxPinLen)


@dataclass(frozen=True)
class TokenPlace:
    """A token: its PKCS#11 module and label, and where an embedded SoftHSM2 token's home is
    (``softhsm_dir``: the base of ``<it>/softhsm/``, relative to the root directory, ``"."`` for
    ``esign ca init``'s own, or absolute, the development root's in the services' home;
    ``None`` for an HSM's token)."""

    module: str
    token_label: str
    softhsm_dir: str | None = None


@dataclass(frozen=True)
class RootToken:
    """``root-token.json``: which token holds the root key, and which key. Never the PIN."""

    place: TokenPlace
    key: KeyRef

    def to_text(self) -> str:
        return json.dumps({"module": self.place.module, "token_label": self.place.token_label,
                           "softhsm_dir": self.place.softhsm_dir, "key": self.key.to_dict()},
                          sort_keys=True, indent=2) + "\n"

    @classmethod
    def read(cls, folder: Path) -> "RootToken":
        try:
            value = json.loads((folder / ca.ROOT_TOKEN_FILE).read_text("utf-8"))
            softhsm_dir = value.get("softhsm_dir")
            place = TokenPlace(str(value["module"]), str(value["token_label"]),
                               None if softhsm_dir is None else str(softhsm_dir))
            return cls(place, KeyRef.from_dict(value["key"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidInput("root_token", "format", f"expected {ca.ROOT_TOKEN_FILE} as esign ca init writes"
                                                       " it") from None

    def write(self, folder: Path) -> None:
        write_new(folder / ca.ROOT_TOKEN_FILE, self.to_text().encode("utf-8"))


def token_pin(passphrase: bytes | str) -> str:
    """The root passphrase as a token's user PIN: at least 8 bytes (as for a key file), UTF-8,
    at most :data:`MAX_PIN_BYTES`."""
    data = ca._passphrase(passphrase)
    if len(data) > MAX_PIN_BYTES:
        raise InvalidInput("passphrase", "max_length", f"expected at most {MAX_PIN_BYTES} bytes for a token PIN")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("passphrase", "utf8", "expected the passphrase as UTF-8 text for a token PIN") from None


# --- esign ca init ------------------------------------------------------------------------------------


def init_root(directory: str | os.PathLike, passphrase: bytes | str, subject: ca.CaSubject = ca.CaSubject(),
              now: _dt.datetime | None = None, *, key_file: bool = False, module: str | None = None,
              token_label: str = ROOT_TOKEN_LABEL) -> x509.Certificate:
    """Create the offline root in ``directory``: its key on an embedded token of its own (the
    default), on the token ``token_label`` of the PKCS#11 ``module`` (an HSM), or with
    ``key_file`` in the encrypted ``root-key.pem``. Refuses to overwrite a root (``ca_exists``)."""
    if key_file:
        if module is not None:
            raise InvalidInput("key_file", "exclusive", "expected either a key file or a PKCS#11 module")
        return ca.init_root(directory, passphrase, subject, now)
    pin = token_pin(passphrase)
    try:
        token_paths(".", token_label)
    except ValueError:
        raise InvalidInput("token_label", "format", "expected 1-32 characters of A-Z a-z 0-9 . _ -") from None
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    ca.refuse_existing_root(folder)
    if module is not None:
        place = TokenPlace(module, token_label)
        with _signer(folder, place, pin) as signer:
            return create_root_on_store(folder, signer, ROOT_KEY_LABEL_PREFIX, place, subject, now).certificate
    if token_paths(folder, token_label).token_dir.exists():
        raise Conflict(Reason.CA_EXISTS, "a root token from an unfinished init is in this directory (softhsm/):"
                                         " remove softhsm/ and secrets/ and run again")
    try:
        token, initial_pin = init_token(folder, token_label)
    except SoftHsmUnavailable as exc:
        log.error("the root's token was not made: %s", exc)
        raise fault(TOKEN_MISSING) from None
    place = TokenPlace(SOFTHSM2_MODULE, token.label, ".")
    with _signer(folder, place, pin, initial_pin) as signer:
        return create_root_on_store(folder, signer, ROOT_KEY_LABEL_PREFIX, place, subject, now).certificate


def create_root_on_store(folder: Path, store: KeyStore | RootSigner, label_prefix: str, place: TokenPlace,
                         subject: ca.CaSubject = ca.CaSubject(),
                         now: _dt.datetime | None = None) -> ca.CertificateAuthority:
    """A root whose key ``store`` (on the token ``place``) generates, labelled
    ``<label_prefix>ca/root/<serial>``: ``root.pem`` signed through it and ``root-token.json``
    naming it written in ``folder``. A failure before both are written destroys the key."""
    serial = ca.random_serial()
    ref = store.generate(f"{label_prefix}ca/root/{format(serial, 'x')}", EC_P256)
    written: list[Path] = []
    try:
        root = ca.create_root(subject, now, key=StoreEcPrivateKey(store, ref), serial=serial)
        RootToken(place, ref).write(folder)
        written.append(folder / ca.ROOT_TOKEN_FILE)
        write_new(folder / ca.ROOT_CERT_FILE, ca.certificate_to_pem(root.certificate))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        try:
            store.destroy(ref)
        except Exception as exc:  # noqa: BLE001 - the key certifies nothing; its label names the serial
            log.error("root key %s not destroyed after a failed init: %s", ref.label, type(exc).__name__)
        raise
    return root


# --- opening the root ---------------------------------------------------------------------------------


@contextmanager
def open_root(directory: str | os.PathLike, passphrase: bytes | str) -> Iterator[ca.CertificateAuthority]:
    """The offline root of ``directory``, able to sign for the ``with`` block: on its token (through
    :mod:`~services.identity.root_signer`'s child, closed at the end) or from its key file."""
    folder = Path(directory)
    if not (folder / ca.ROOT_TOKEN_FILE).is_file():
        yield ca.load_root(folder, passphrase)
        return
    recorded = RootToken.read(folder)
    pin = token_pin(passphrase)
    with _signer(folder, recorded.place, pin) as signer:
        yield root_from_store(folder, signer, recorded)


def root_from_store(folder: Path, store: KeyStore | RootSigner, recorded: RootToken | None = None
                    ) -> ca.CertificateAuthority:
    """The root of ``folder`` whose key ``store`` holds (as ``root-token.json`` names it),
    checked against ``root.pem``."""
    recorded = recorded or RootToken.read(folder)
    certificate = ca.certificate_from_pem((folder / ca.ROOT_CERT_FILE).read_bytes())
    key = StoreEcPrivateKey(store, recorded.key)
    if key.public_key() != certificate.public_key():
        raise InvalidInput("root_key", "mismatch", f"the key {ca.ROOT_TOKEN_FILE} names does not belong to root.pem")
    return ca.CertificateAuthority(certificate, key)


@contextmanager
def _signer(folder: Path, place: TokenPlace, pin: str, initial_pin: str | None = None) -> Iterator[RootSigner]:
    """The root's token opened in a child process; a PIN the token refuses is a wrong passphrase."""
    conf = storage = None
    if place.softhsm_dir is not None:
        try:
            token = existing_token(folder / place.softhsm_dir, place.token_label)
        except SoftHsmUnavailable:
            log.error("the root's token home is not under %s", folder / place.softhsm_dir)
            raise fault(TOKEN_MISSING) from None
        conf, storage = token.conf, token.token_dir
    try:
        signer = RootSigner(place.module, place.token_label, pin, softhsm_conf=conf, storage_dir=storage,
                            initial_pin=initial_pin)
    except Unavailable as exc:
        if exc.reason == WRONG_PIN:
            raise InvalidInput("passphrase", "mismatch", "the root's token does not open with this passphrase"
                               ) from None
        raise
    with signer:
        yield signer


def write_new(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file that must not exist yet (O_EXCL), synced: the CA's files are never overwritten."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
