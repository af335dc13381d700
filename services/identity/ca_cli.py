"""``esign ca``: the offline root and the issuing CA directory.

    esign ca init --root-dir DIR                 create the offline root: root.pem, its key on an embedded
                                                 SoftHSM2 token of its own under DIR (root-token.json
                                                 names it; the token's user PIN is the root passphrase)
        [--pkcs11-module PATH --token-label L]   ... on an HSM's token instead (its user PIN: the passphrase)
        [--key-file]                             ... as the encrypted PKCS#8 root-key.pem instead (no token)
    esign ca issue-ca --root-dir DIR --out DIR   issuing CA + TSA + platform service + OCSP
                                                 responder certificates, keys on the identity
                                                 service's PKCS#11 token or sealed under its KEK
    esign ca root-crl --root-dir DIR --out FILE  a fresh root CRL (DER), revoking any --revoke SERIAL

The root passphrase is read from ``$ESIGN_CA_PASSPHRASE`` or a
``--passphrase-file``, else asked for on the terminal; it is never an argument
(arguments show in ``ps``), and on a token it reaches the token over a pipe
only (services/identity/root_custody.py). ``issue-ca`` makes the new keys as the
identity config's ``KEYS`` says (on its token, or sealed with its KEK), so the
output directory can be copied to the service host as it is and named by
``CA.DIR``; the root signs through its own token, opened for the command only
(in a child process: services/identity/root_signer.py), and stays on the
offline machine. A directory made with ``root-key.pem`` keeps working.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import os
from pathlib import Path
from typing import Iterable

from cryptography import x509

from services.common.errors import InvalidInput
from services.common.sealing import Keyring
from services.identity import ca, root_custody
from services.identity.ca_store import (
    ROOT_CRL_VALIDITY,
    CaMaterial,
    PlatformKeys,
    conflict_if_exists,
    make_ca_directory,
    platform_keys,
)

PASSPHRASE_ENV = "ESIGN_CA_PASSPHRASE"


def init(root_dir: str | os.PathLike, passphrase: str | bytes, *, key_file: bool = False,
         pkcs11_module: str | None = None, token_label: str = root_custody.ROOT_TOKEN_LABEL) -> x509.Certificate:
    """Create the offline root CA in ``root_dir`` (refuses to overwrite): its key on a token of its
    own (default), on an HSM's token (``pkcs11_module``), or in a key file (``key_file``)."""
    return root_custody.init_root(root_dir, passphrase, key_file=key_file, module=pkcs11_module,
                                  token_label=token_label)


def issue_ca(
    root_dir: str | os.PathLike,
    passphrase: str | bytes,
    out_dir: str | os.PathLike,
    public_url: str | None = None,
    keyring: Keyring | None = None,
    keys: PlatformKeys | None = None,
) -> CaMaterial:
    """Issue the online CA material from the offline root into ``out_dir``.

    ``public_url`` is where the gateway serves /pki/... (default: the identity
    config's PUBLIC_URL). ``keys`` makes the keys (default: as the identity
    config's ``KEYS`` says: on its PKCS#11 token, or sealed under its KEK);
    ``keyring`` alone: sealed under it. The root is opened first (its token's child process
    starts with this process's environment as the operator gave it), identity's token after."""
    out = Path(out_dir)
    conflict_if_exists(out)
    with root_custody.open_root(root_dir, passphrase) as root:
        store = None
        try:
            if keys is None and (keyring is None or public_url is None):
                from services.common.config import load_config
                from services.common.keystore import PKCS11
                from services.common.keystore.settings import KeyStoreSettings, open_key_store
                from services.identity.secrets import load_keys

                config = load_config("identity")
                public_url = public_url or str(config.get("PUBLIC_URL") or "http://127.0.0.1:8000")
                if keyring is None:
                    keyring = load_keys(config).keyring
                    if KeyStoreSettings.from_config(config).backend == PKCS11:
                        store = open_key_store(config)
                    keys = platform_keys(config, keyring, store)
            keys = keys or PlatformKeys(keyring)
            return make_ca_directory(out, root, public_url or "http://127.0.0.1:8000", keys)
        finally:
            if store is not None:
                store.close()


def root_crl(root_dir: str | os.PathLike, passphrase: str | bytes, out: str | os.PathLike,
             revoked: Iterable[int] = (), now: _dt.datetime | None = None) -> x509.CertificateRevocationList:
    """A fresh root CRL (RFC 5280 §5; DER in ``out``, which it does not overwrite) revoking the
    issuing CAs ``revoked`` names by serial, valid :data:`ROOT_CRL_VALIDITY`; its CRL number is
    the time in seconds, so it grows with each. Serve it as ``CA.DIR/root.crl``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if os.path.lexists(out):  # before the ceremony, as well as when writing
        raise FileExistsError(17, "the CRL file exists already", str(out))
    with root_custody.open_root(root_dir, passphrase) as root:
        crl = ca.build_crl(root, [ca.Revocation(serial, now) for serial in revoked], crl_number=int(now.timestamp()),
                           now=now, next_update_in=ROOT_CRL_VALIDITY)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(ca.crl_to_der(crl))
    return crl


# --- argparse wiring (called from services/cli.py) ---------------------------

def add_subcommands(commands: argparse._SubParsersAction) -> None:
    """Add ``esign ca init``, ``issue-ca`` and ``root-crl`` to the top-level parser."""
    parser = commands.add_parser("ca", help="certificate authority: offline root, issuing CA")
    sub = parser.add_subparsers(dest="ca_command", required=True)
    init_cmd = sub.add_parser("init", help="create the offline root CA")
    init_cmd.add_argument("--root-dir", required=True,
                          help="directory for root.pem and the root's token (or its encrypted key file)")
    init_cmd.add_argument("--passphrase-file",
                          help=f"file holding the root passphrase (else ${PASSPHRASE_ENV} or a prompt)")
    custody = init_cmd.add_mutually_exclusive_group()
    custody.add_argument("--pkcs11-module", help="an HSM's PKCS#11 module: the root key on its token"
                                                 " --token-label (user PIN: the passphrase)")
    custody.add_argument("--key-file", action="store_true",
                         help="the root key as the passphrase-encrypted PKCS#8 root-key.pem (no token)")
    init_cmd.add_argument("--token-label", default=root_custody.ROOT_TOKEN_LABEL,
                          help=f"the root's token (default {root_custody.ROOT_TOKEN_LABEL})")
    issue = sub.add_parser("issue-ca", help="issue the online CA material from the root")
    issue.add_argument("--root-dir", required=True)
    issue.add_argument("--out", required=True, help="CA directory for the identity service (CA.DIR)")
    issue.add_argument("--public-url", help="base URL serving /pki/crl, /pki/ocsp (default: identity PUBLIC_URL)")
    issue.add_argument("--passphrase-file")
    crl = sub.add_parser("root-crl", help="re-issue the root's CRL")
    crl.add_argument("--root-dir", required=True)
    crl.add_argument("--out", required=True, help="the CRL file to write (DER)")
    crl.add_argument("--revoke", action="append", default=[], metavar="SERIAL",
                     help="an issuing CA's serial (hex) to list as revoked; repeat for more")
    crl.add_argument("--passphrase-file")


def run(args: argparse.Namespace) -> int:
    try:
        serials = [int(serial, 16) for serial in getattr(args, "revoke", [])]
    except ValueError:
        raise InvalidInput("revoke", "format", "expected certificate serials in hex") from None
    passphrase = read_passphrase(args.passphrase_file, confirm=args.ca_command == "init")
    if args.ca_command == "init":
        cert = init(args.root_dir, passphrase, key_file=args.key_file, pkcs11_module=args.pkcs11_module,
                    token_label=args.token_label)
        where = ("in root-key.pem" if args.key_file else
                 f"on the token {args.token_label!r}" + ("" if args.pkcs11_module else " under the directory"))
        print(f"root CA created in {args.root_dir}: {cert.subject.rfc4514_string()}; its key is {where}")
        print("keep this directory offline; copy only root.pem to the service hosts")
        return 0
    if args.ca_command == "root-crl":
        crl = root_crl(args.root_dir, passphrase, args.out, serials)
        print(f"root CRL written to {args.out}: {len(crl)} revoked, next update {crl.next_update_utc:%Y-%m-%d}")
        return 0
    material = issue_ca(args.root_dir, passphrase, args.out, public_url=args.public_url)
    print(f"issuing CA written to {args.out}: {material.issuing.certificate.subject.rfc4514_string()}")
    print(f"set CA.DIR={args.out} and CA.REQUIRE_EXISTING=true in the identity config")
    return 0


def read_passphrase(path: str | None, confirm: bool = False) -> bytes:
    if path:
        return Path(path).read_bytes().strip()
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV].encode("utf-8")
    first = getpass.getpass("root CA passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise SystemExit("passphrases differ")
    return first.encode("utf-8")
