"""The offline root on a token of its own (issue #16, services/identity/root_custody.py):
`esign ca init` makes it on an embedded SoftHSM2 token under the root directory (or an HSM's
token, or a key file as before), and `esign ca issue-ca` / `root-crl` sign through it in a child
process while this process keeps its own SoftHSM2 home (tests/support/softhsm.py).

Each token ceremony starts one child process (about half a second): the module's root is made
once and shared by the tests that only read it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from cryptography import x509

from services.common.errors import Conflict, InvalidInput
from services.common.keystore.pkcs11_token import SOFTHSM2_MODULE
from services.common.keystore.softhsm import ensure_token, token_paths
from services.common.sealing import Keyring
from services.identity import ca, ca_cli, ca_store, root_custody

PASSPHRASE = "correct horse battery staple"
ROLES = ("issuing", "tsa", "service", "ocsp")


@pytest.fixture(scope="module")
def token_root(tmp_path_factory):
    """A root made by `esign ca init` with its defaults: its key on its own embedded token."""
    root = tmp_path_factory.mktemp("offline") / "root"
    ca_cli.init(root, PASSPHRASE)
    return root


@pytest.fixture
def keyring() -> Keyring:
    return Keyring({"kek-1": os.urandom(32)}, "kek-1")


def read_key_on_token(conf, label: str, pin: str, key_id: str) -> dict:
    """What the token says of a private key, asked from a process of its own SoftHSM2 home (this
    process's SoftHSM2 sees only the tests' home): its custody attributes, and whether CKA_VALUE reads."""
    script = textwrap.dedent("""
        import json, sys
        import pkcs11
        from pkcs11 import Attribute, ObjectClass
        from pkcs11 import exceptions as p11
        asked = json.loads(sys.stdin.readline())
        token = pkcs11.lib(asked["module"]).get_token(token_label=asked["label"])
        with token.open(user_pin=asked["pin"]) as session:
            key = session.get_key(ObjectClass.PRIVATE_KEY, id=bytes.fromhex(asked["key_id"]))
            names = ("SENSITIVE", "EXTRACTABLE", "NEVER_EXTRACTABLE", "ALWAYS_SENSITIVE", "LOCAL", "SIGN")
            held = key.get_attributes([Attribute[name] for name in names])
            try:
                key[Attribute.VALUE]
                value = "readable"
            except p11.AttributeSensitive:
                value = "sensitive"
        print(json.dumps({"value": value, **{name: bool(held[Attribute[name]]) for name in names}}))
    """)
    env = dict(os.environ, SOFTHSM2_CONF=str(conf))
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(
        {"module": SOFTHSM2_MODULE, "label": label, "pin": pin, "key_id": key_id}) + "\n",
        capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def verify_chain(out, role: str) -> None:
    result = subprocess.run(["openssl", "verify", "-CAfile", str(out / "root.pem"), "-untrusted",
                             str(out / "issuing.pem"), str(out / f"{role}.pem")], capture_output=True, text=True)
    assert result.stdout.strip().endswith(": OK"), result.stdout + result.stderr


# --- esign ca init ---------------------------------------------------------------------------------


def test_init_puts_the_root_key_on_a_token_of_its_own_where_it_cannot_be_read(token_root):
    assert sorted(p.name for p in token_root.iterdir()) == ["root-token.json", "root.pem", "secrets", "softhsm"]
    assert not (token_root / ca.ROOT_KEY_FILE).exists()
    root = x509.load_pem_x509_certificate((token_root / "root.pem").read_bytes())
    root.verify_directly_issued_by(root)
    checked = subprocess.run(["openssl", "verify", "-CAfile", str(token_root / "root.pem"),
                              str(token_root / "root.pem")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    recorded = root_custody.RootToken.read(token_root)
    assert (recorded.place.module, recorded.place.token_label, recorded.place.softhsm_dir) == (
        SOFTHSM2_MODULE, "esign-root", ".")
    assert recorded.key.label == f"esign/ca/root/{format(root.serial_number, 'x')}"
    record = (token_root / ca.ROOT_TOKEN_FILE).read_text()
    assert set(json.loads(record)) == {"module", "token_label", "softhsm_dir", "key"}
    # the security officer's PIN is random and the owner's alone; the passphrase is stored nowhere
    token = token_paths(token_root, "esign-root")
    assert oct(token.so_pin_file.stat().st_mode & 0o777) == "0o600"
    assert not token.pin_file.exists()
    for path in token_root.rglob("*"):
        if path.is_file():
            assert PASSPHRASE.encode() not in path.read_bytes(), path
    # the passphrase is the token's user PIN, and the key is held sensitive, never extractable, made there
    held = read_key_on_token(token.conf, "esign-root", PASSPHRASE, recorded.key.key_id)
    assert held == {"value": "sensitive", "SENSITIVE": True, "EXTRACTABLE": False, "NEVER_EXTRACTABLE": True,
                    "ALWAYS_SENSITIVE": True, "LOCAL": True, "SIGN": True}


def test_init_refuses_a_second_root_and_options_that_exclude_each_other(token_root, tmp_path):
    before = (token_root / "root.pem").read_bytes()
    with pytest.raises(Conflict):
        ca_cli.init(token_root, PASSPHRASE)
    with pytest.raises(Conflict):
        ca_cli.init(token_root, PASSPHRASE, key_file=True)
    assert (token_root / "root.pem").read_bytes() == before
    with pytest.raises(InvalidInput) as both:
        ca_cli.init(tmp_path / "r", PASSPHRASE, key_file=True, pkcs11_module=SOFTHSM2_MODULE)
    assert (both.value.field, both.value.rule) == ("key_file", "exclusive")
    with pytest.raises(InvalidInput) as short:
        ca_cli.init(tmp_path / "r", "short")
    assert (short.value.field, short.value.rule) == ("passphrase", "min_length")
    with pytest.raises(InvalidInput) as label:
        ca_cli.init(tmp_path / "r", PASSPHRASE, token_label="no spaces allowed")
    assert label.value.field == "token_label"
    assert not (tmp_path / "r").exists()
    (tmp_path / "unfinished" / "softhsm" / "tokens").mkdir(parents=True)  # an init that stopped half-way
    with pytest.raises(Conflict, match="unfinished"):
        ca_cli.init(tmp_path / "unfinished", PASSPHRASE)


# --- ceremonies with a token root -------------------------------------------------------------------


def test_issue_ca_from_a_token_root_for_an_identity_on_sealed_keys(token_root, tmp_path, keyring):
    out = tmp_path / "ca"
    material = ca_cli.issue_ca(token_root, PASSPHRASE, out, public_url="https://esign.example", keyring=keyring)
    assert sorted(p.name for p in out.glob("*-key.*")) == [f"{role}-key.sealed" for role in sorted(ROLES)]
    for role in ROLES:
        verify_chain(out, role)
    loaded = ca_store.load_ca_material(out, keyring)
    assert loaded.issuing.certificate == material.issuing.certificate
    root = x509.load_pem_x509_certificate((token_root / "root.pem").read_bytes())
    assert loaded.root == root
    crl = x509.load_der_x509_crl(loaded.root_crl_der)
    assert crl.is_signature_valid(root.public_key()) and len(crl) == 0


def test_issue_ca_from_a_token_root_with_identity_on_its_embedded_token_through_the_command(
        token_root, tmp_path, monkeypatch, softhsm_home, keyring, capsys):
    """Both tokens in one ceremony: identity's (this process's SoftHSM2 home) and the root's (its own
    home, in the child). Through `esign ca issue-ca` with identity's config naming its embedded token."""
    from services.cli import main
    from services.common.keystore.settings import open_key_store
    from tests.support.softhsm import pkcs11_keys

    prefix = f"esign/t{uuid.uuid4().hex[:10]}/identity/"
    monkeypatch.setenv("ESIGN_CA_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("ESIGN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ESIGN_KEYS_BACKEND", "pkcs11")
    monkeypatch.setenv("ESIGN_TOKEN_DIR", str(softhsm_home))
    monkeypatch.setenv("IDENTITY_KEYS_LABEL_PREFIX", prefix)
    out = tmp_path / "ca"
    assert main(["ca", "issue-ca", "--root-dir", str(token_root), "--out", str(out),
                 "--public-url", "https://esign.example"]) == 0
    assert sorted(p.name for p in out.glob("*-key.*")) == [f"{role}-key.ref" for role in sorted(ROLES)]
    for role in ROLES:
        verify_chain(out, role)
    store = open_key_store({"KEYS": pkcs11_keys(softhsm_home, "identity")})
    try:
        material = ca_store.load_ca_material(out, keyring, store)  # the keyring is not needed: all on the token
        points = ca_store.publication_points("https://esign.example")
        person = ca.issue_person_certificate(material.issuing, ca.generate_key().public_key(), "张三", "ab" * 32,
                                             points)
        person.verify_directly_issued_by(material.issuing.certificate)
        assert {ref.label.split("/")[-2] for ref in store.list_refs(prefix)} == set(ROLES)
    finally:
        for ref in store.list_refs(prefix):
            store.destroy(ref)
        store.close()
    assert PASSPHRASE not in "".join(capsys.readouterr())


def test_a_wrong_passphrase_is_refused_by_name_and_never_shown(token_root, tmp_path, capfd, caplog):
    with pytest.raises(InvalidInput) as wrong:
        ca_cli.issue_ca(token_root, "not the passphrase at all", tmp_path / "ca", public_url="https://x",
                        keyring=Keyring({"k": os.urandom(32)}, "k"))
    assert (wrong.value.field, wrong.value.rule) == ("passphrase", "mismatch")
    assert not (tmp_path / "ca" / "issuing.pem").exists()
    said = str(wrong.value) + caplog.text + "".join(capfd.readouterr())
    assert "not the passphrase at all" not in said and PASSPHRASE not in said


def test_the_root_crl_is_reissued_offline_through_the_token(token_root, tmp_path):
    out = tmp_path / "root.crl"
    crl = ca_cli.root_crl(token_root, PASSPHRASE, out, revoked=[0x1F])
    root = x509.load_pem_x509_certificate((token_root / "root.pem").read_bytes())
    again = x509.load_der_x509_crl(out.read_bytes())
    assert again == crl and again.is_signature_valid(root.public_key())
    assert [entry.serial_number for entry in again] == [0x1F]
    assert again.issuer == root.subject
    with pytest.raises(FileExistsError):  # never overwrites
        ca_cli.root_crl(token_root, PASSPHRASE, out)


def test_a_root_on_an_hsm_token_is_made_and_opened_with_the_passphrase_as_its_pin(softhsm_home, tmp_path,
                                                                                    keyring):
    """`--pkcs11-module PATH --token-label L`: a token the operator made (here: one more token of the
    tests' home, which this process cannot see but the child can), whose user PIN is the passphrase."""
    label = f"hsm-{uuid.uuid4().hex[:8]}"
    hsm = ensure_token(softhsm_home, label)
    passphrase = hsm.pin()
    root_dir = tmp_path / "root"
    with pytest.raises(InvalidInput) as wrong:
        ca_cli.init(root_dir, "not the token's PIN", pkcs11_module=SOFTHSM2_MODULE, token_label=label)
    assert (wrong.value.field, wrong.value.rule) == ("passphrase", "mismatch")
    root = ca_cli.init(root_dir, passphrase, pkcs11_module=SOFTHSM2_MODULE, token_label=label)
    recorded = root_custody.RootToken.read(root_dir)
    assert (recorded.place.token_label, recorded.place.softhsm_dir) == (label, None)
    assert sorted(p.name for p in root_dir.iterdir()) == ["root-token.json", "root.pem"]
    with root_custody.open_root(root_dir, passphrase) as opened:
        assert opened.certificate == root
        issuing = ca.issue_ca(opened)
    issuing.certificate.verify_directly_issued_by(root)


# --- the key file, as before -------------------------------------------------------------------------


def test_a_root_with_a_key_file_still_works(tmp_path, keyring):
    root_dir = tmp_path / "root"
    ca_cli.init(root_dir, PASSPHRASE, key_file=True)
    assert sorted(p.name for p in root_dir.iterdir()) == ["root-key.pem", "root.pem"]
    ca_cli.issue_ca(root_dir, PASSPHRASE, tmp_path / "ca", public_url="https://x", keyring=keyring)
    verify_chain(tmp_path / "ca", "issuing")
    with root_custody.open_root(root_dir, PASSPHRASE) as root:
        assert root.private_key.public_key() == root.certificate.public_key()
    with pytest.raises(InvalidInput) as wrong:
        ca_cli.root_crl(root_dir, "not the passphrase", tmp_path / "root.crl")
    assert (wrong.value.field, wrong.value.rule) == ("passphrase", "mismatch")


def test_load_root_names_a_token_root_instead_of_failing_on_a_missing_file(token_root):
    with pytest.raises(InvalidInput) as on_token:
        ca.load_root(token_root, PASSPHRASE)
    assert (on_token.value.field, on_token.value.rule) == ("root_dir", "on_token")
