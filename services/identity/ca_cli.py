"""``esign ca``: the offline root and the issuing CA directory.

    esign ca init --root-dir DIR                 create the offline root (root.pem, root-key.pem)
    esign ca issue-ca --root-dir DIR --out DIR   issuing CA + TSA + platform service + OCSP
                                                 responder certificates, keys on the identity
                                                 service's PKCS#11 token or sealed under its KEK

The root passphrase is read from ``$ESIGN_CA_PASSPHRASE`` or a
``--passphrase-file``, else asked for on the terminal; it is never an argument
(arguments show in ``ps``). ``issue-ca`` seals the new keys with the identity
service's KEK (its config's ``SECRETS``), so the output directory can be
copied to the service host as it is and named by ``CA.DIR``; the root key
stays on the offline machine.
"""
from __future__ import annotations

import argparse
import getpass
import os
from pathlib import Path

from cryptography import x509

from services.common.sealing import Keyring
from services.identity import ca
from services.identity.ca_store import (
    CaMaterial,
    PlatformKeys,
    conflict_if_exists,
    make_ca_directory,
    platform_keys,
)

PASSPHRASE_ENV = "ESIGN_CA_PASSPHRASE"


def init(root_dir: str | os.PathLike, passphrase: str | bytes) -> x509.Certificate:
    """Create the offline root CA in ``root_dir`` (refuses to overwrite)."""
    return ca.init_root(root_dir, passphrase)


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
    ``keyring`` alone: sealed under it."""
    out = Path(out_dir)
    conflict_if_exists(out)
    store = None
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
    try:
        root = ca.load_root(root_dir, passphrase)
        return make_ca_directory(out, root, public_url or "http://127.0.0.1:8000", keys)
    finally:
        if store is not None:
            store.close()


# --- argparse wiring (called from services/cli.py) ---------------------------

def add_subcommands(commands: argparse._SubParsersAction) -> None:
    """Add ``esign ca init`` and ``esign ca issue-ca`` to the top-level parser."""
    parser = commands.add_parser("ca", help="certificate authority: offline root, issuing CA")
    sub = parser.add_subparsers(dest="ca_command", required=True)
    init_cmd = sub.add_parser("init", help="create the offline root CA")
    init_cmd.add_argument("--root-dir", required=True, help="directory for root.pem and the encrypted root key")
    init_cmd.add_argument("--passphrase-file",
                          help=f"file holding the root passphrase (else ${PASSPHRASE_ENV} or a prompt)")
    issue = sub.add_parser("issue-ca", help="issue the online CA material from the root")
    issue.add_argument("--root-dir", required=True)
    issue.add_argument("--out", required=True, help="CA directory for the identity service (CA.DIR)")
    issue.add_argument("--public-url", help="base URL serving /pki/crl, /pki/ocsp (default: identity PUBLIC_URL)")
    issue.add_argument("--passphrase-file")


def run(args: argparse.Namespace) -> int:
    passphrase = read_passphrase(args.passphrase_file, confirm=args.ca_command == "init")
    if args.ca_command == "init":
        cert = init(args.root_dir, passphrase)
        print(f"root CA created in {args.root_dir}: {cert.subject.rfc4514_string()}")
        print("keep this directory offline; copy only root.pem to the service hosts")
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
