"""The ``esign`` command.

  esign up [--demo] [--monitoring]
                           start SeaweedFS and every service on this machine (and Prometheus)
  esign demo               two demo people sign an IOU on it (needs esign up --demo)
  esign run SERVICE        run one service in this process (identity, documents,
                           signing, notify, gateway)
  esign migrate [SERVICE]  bring databases to the newest schema
  esign ca init|issue-ca|root-crl
                           the offline root CA (its key on a token of its own), the identity
                           service's issuing CA, the root's CRL
  esign registry add|list  the local identity registry (the 'registry' proofing provider)
  esign verify FILE.pdf [--report REPORT.json] [--json]
                           check a signed PDF (and its signing report) offline
  esign keys rotate [--service S] [--check | --dry-run]
                           re-wrap every sealed item under the active KEK (KEK rotation)
  esign keys migrate --to pkcs11 [--service S] [--check]
                           move sealed private keys onto the PKCS#11 token (then set KEYS.BACKEND)
  esign s3 identities --out FILE
                           the S3 store's identities: documents and signing each only their bucket
  esign broker definitions|apply
                           the services' own broker users, each allowed only its RPCs and events
  esign witness init|add-log|key|run|status
                           an independent witness that cosigns the evidence log's checkpoints
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from services.common.errors import EsignError
    from services.common.logs import quiet_library_warnings

    quiet_library_warnings()
    try:
        return _main(argv)
    except EsignError as exc:
        print(f"esign: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"esign: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="esign", description="Electronic-signature platform")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start SeaweedFS and every service, embedded defaults")
    up.add_argument("--data-dir", default=None,
                    help="where every piece of state goes: databases, secrets, CA, S3 data, witnesses, logs, "
                         "caches, the SMS outbox (default $ESIGN_DATA_DIR or ./var)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health")
    up.add_argument("--monitoring", action="store_true",
                    help="also run Prometheus scraping every process, with the alert rules")
    up.add_argument("--s3-endpoint", default=None,
                    help="use the S3 server already running at this URL (keys in ESIGN_S3_ACCESS_KEY and "
                         "ESIGN_S3_SECRET_KEY) instead of starting SeaweedFS; also ESIGN_S3_ENDPOINT")
    up.add_argument("--scale", default="",
                    help="processes per service, e.g. signing=2,identity=2 (default 1 each; a scaled service "
                         "needs PostgreSQL); each has its own metrics port, all consume the same queues")
    up.add_argument("--demo", action="store_true",
                    help="for 'esign demo': a photo file stands in for a live face (certificates and reports "
                         "then state authority_face); never for real people")

    run = commands.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", choices=["identity", "documents", "signing", "notify", "gateway"])

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("service", nargs="?", choices=["identity", "documents", "signing", "notify"])

    commands.add_parser("verify", help="check a signed PDF and its report offline", add_help=False)

    commands.add_parser("demo", help="two demo people sign an IOU on the running platform (esign up --demo)",
                        add_help=False)

    commands.add_parser("ca", help="certificate authority: offline root, issuing CA", add_help=False)

    commands.add_parser("keys", help="KEK rotation; moving sealed private keys onto the PKCS#11 token",
                        add_help=False)

    commands.add_parser("s3", help="the S3 store's identities (SeaweedFS -s3.config)", add_help=False)

    commands.add_parser("broker", help="the services' broker users and permissions", add_help=False)

    commands.add_parser("witness", help="cosign the evidence log's checkpoints (c2sp.org/tlog-witness)", add_help=False)

    registry = commands.add_parser("registry", help="the local identity registry (embedded authority)")
    registry_commands = registry.add_subparsers(dest="registry_command", required=True)
    add = registry_commands.add_parser("add", help="add a person and their reference (ID) photo")
    add.add_argument("--name", required=True)
    add.add_argument("--id-number", required=True)
    add.add_argument("--photo", required=True, help="a JPEG or PNG of the person's face")
    add.add_argument("--file", default=None, help="registry file (default: identity's PROOFING.REGISTRY_FILE)")
    listing = registry_commands.add_parser("list", help="who is in the registry (masked)")
    listing.add_argument("--file", default=None)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ca":
        from services.identity import ca_cli  # imported only here: it pulls in cryptography and nameko

        ca_parser = argparse.ArgumentParser(prog="esign")
        ca_cli.add_subcommands(ca_parser.add_subparsers(dest="command", required=True))
        return ca_cli.run(ca_parser.parse_args(argv))
    if argv and argv[0] == "verify":
        from services.signing.offline_verify import main as verify_main

        return verify_main(argv[1:])
    if argv and argv[0] == "demo":
        from services.demo.cli import main as demo_main

        return demo_main(argv[1:])
    if argv and argv[0] == "keys":
        from services.common.key_rotation import main as keys_main

        return keys_main(argv[1:])
    if argv and argv[0] == "s3":
        from services.common.s3server import main as s3_main

        return s3_main(argv[1:])
    if argv and argv[0] == "broker":
        from services.common.broker_access import main as broker_main

        return broker_main(argv[1:])
    if argv and argv[0] == "witness":
        from services.witness.cli import main as witness_main

        return witness_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "up":
        from services.common.errors import InvalidInput
        from services.common.launcher import UpOptions, parse_scale
        from services.common.launcher import up as platform_up

        try:
            scale = parse_scale(args.scale)
        except InvalidInput as exc:
            print(f"esign up: {exc.field}: {exc.message}", file=sys.stderr)
            return 2
        return platform_up(UpOptions(data_dir=args.data_dir, timeout=args.timeout, s3_endpoint=args.s3_endpoint,
                                     demo=args.demo, monitoring=args.monitoring, scale=scale))
    if args.command == "run":
        if args.service == "gateway":
            from services.gateway.server import run as run_gateway

            return run_gateway()
        from services.common.runner import run as run_service

        return run_service(args.service)
    if args.command == "registry":
        return _registry(args)
    if args.command == "migrate":
        from services.common.config import load_config
        from services.common.database import Database

        for service in [args.service] if args.service else ["identity", "documents", "signing", "notify"]:
            Database.from_config(load_config(service), service).migrate()
            print(f"{service}: migrated")
        return 0
    return 2


def _registry(args) -> int:
    from pathlib import Path

    from services.common.config import load_config
    from services.common.masking import mask_id_number, mask_name
    from services.identity.proofing.registry import append_entry, read_registry
    from services.identity.settings import IdentitySettings

    path = (Path(args.file) if args.file
            else IdentitySettings.from_config(load_config("identity")).proofing.registry_file)
    if args.registry_command == "add":
        photo = Path(args.photo).resolve()
        if not photo.is_file():
            raise FileNotFoundError(2, "no such photo", str(photo))
        entry = append_entry(path, args.name, args.id_number, str(photo))
        print(f"added {mask_name(entry.name)} ({mask_id_number(entry.id_number)}) to {path}")
        return 0
    for entry in read_registry(path).values():
        print(f"{mask_name(entry.name)}  {mask_id_number(entry.id_number)}  {entry.photo or '(no photo)'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
