"""No private key is left where the platform stores things (issue #16's acceptance):
after two people register, sign an IOU (SMS and face willingness, time-stamped,
logged, finalised) and get its signing report with every key on the SoftHSM2
token (``KEYS.BACKEND: pkcs11``), every value of every table of the four
services' databases, every version of every object in the two buckets, and
every variable of the process environment (the services ran in this process)
is searched for a private key's encodings (PKCS#8, SEC1, PEM, a note key
string; raw, hex, base64: tests/support/key_custody.py). No platform key's
scalar can be known to the test: the development root's key is on a token of
its own too (``esign-dev-root``, checked: no key file, no passphrase file,
the key named by ``root-token.json`` signs for ``root.pem``).

The search is first shown to find what it looks for where it looks: a sealed
key's plaintext planted in a database row (inside a transaction, then rolled
back), a key's scalar planted in an object, a PEM key planted in the
environment; each is found, by place and kind, then removed."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from services.common.database import Database
from services.common.keystore.pkcs11_token import Pkcs11KeyStore
from services.common.storage import ObjectStore, S3Settings
from services.identity import ca, root_custody
from services.identity.ca_store import DEV_PASSPHRASE_FILE, DEV_ROOT_DIR, ca_settings, development_root_token
from tests.support.key_custody import (
    database_blobs,
    environment_blobs,
    find_key_material,
    keys_not_on_token,
    s3_blobs,
)
from tests.support.softhsm import services_keys
from tests.support.stack import people, signed_iou

pytestmark = pytest.mark.e2e


def _scalar(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_numbers().private_value.to_bytes(32, "big")


def test_no_private_key_is_in_a_database_an_object_or_the_environment(stack_factory, softhsm_home):
    stack = stack_factory(**services_keys("pkcs11", softhsm_home))
    lender, borrower = people(stack)
    flow_id = signed_iou(stack, lender, borrower)
    assert stack.rpc.signing.report(flow_id=flow_id)["report"]
    assert keys_not_on_token(stack.identity_config, stack.signing_config) == []

    ca_dir = ca_settings(stack.identity_config)[0]
    assert not (ca_dir / DEV_PASSPHRASE_FILE).exists() and not (ca_dir / DEV_ROOT_DIR / ca.ROOT_KEY_FILE).exists()
    root_token = development_root_token(stack.identity_config)
    root_store = Pkcs11KeyStore.open(root_token.settings, root_token.token.pin())
    try:  # the key root-token.json names is on the root's token and belongs to root.pem (else InvalidInput)
        root = root_custody.root_from_store(ca_dir / DEV_ROOT_DIR, root_store)
        root.private_key.sign(b"the root key signs", ec.ECDSA(hashes.SHA256()))
    finally:
        root_store.close()
    known: dict[str, bytes] = {}
    configs = {"identity": stack.identity_config, "documents": stack.documents_config,
               "signing": stack.signing_config, "notify": stack.notify_config}
    databases = {service: Database(config["DATABASE"]["URL"], config["DATABASE"]["SCHEMA"], service)
                 for service, config in configs.items()}
    stores = {service: ObjectStore(S3Settings.from_config(configs[service])) for service in ("documents", "signing")}
    planted = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = planted.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    try:
        # -- the search finds a planted key where it searches ...
        with databases["identity"].engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("UPDATE certificates SET certificate_pem = certificate_pem || :planted"),
                               {"planted": base64.b64encode(pkcs8).decode()})
            hits = find_key_material(database_blobs(connection, "identity"))
            transaction.rollback()
        assert {what for where, what in hits if where.startswith("identity.certificates")} >= {"PKCS#8 EC key (base64)"}
        documents = stores["documents"]
        documents.client.put_object(Bucket=documents.bucket, Key="planted/scalar", Body=_scalar(planted).hex().encode())
        try:
            hits = find_key_material(s3_blobs(documents.client, documents.bucket),
                                     {"the planted key": _scalar(planted)})
        finally:
            documents.client.delete_object(Bucket=documents.bucket, Key="planted/scalar")
        assert (f"s3://{documents.bucket}/planted/scalar", "the scalar of the planted key (hex)") in hits
        pem = planted.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        hits = find_key_material(environment_blobs(dict(os.environ, ESIGN_PLANTED=pem)))
        assert {where for where, _ in hits} == {"env ESIGN_PLANTED"}
        assert {what for _, what in hits} >= {"PEM private key", "PKCS#8 EC key (base64)"}

        # -- ... and nothing after a full flow with every key on the token
        found = []
        for service, database in databases.items():
            with database.engine.connect() as connection:
                blobs = list(database_blobs(connection, service))
                assert blobs, f"nothing read from {service}'s database"
                found += find_key_material(blobs, known)
        for service, store in stores.items():
            blobs = list(s3_blobs(store.client, store.bucket))
            assert blobs or service == "documents", f"no objects in {service}'s bucket"
            found += find_key_material(blobs, known)
        found += find_key_material(environment_blobs(), known)
        assert found == []
        # the token's PIN is nowhere either (it is in a 0600 file of the embedded token's home)
        pin = (Path(softhsm_home) / "secrets" / "softhsm-esign-pin").read_text().strip()
        assert pin and not any(pin.encode() in blob for _, blob in environment_blobs())
    finally:
        for database in databases.values():
            database.dispose()
