"""The evidence log's key (which also signs reports) on the PKCS#11 token
(services/signing/log_key.py): made there once, named by a ref file, never
replaced by a new key while a sealed one exists, and what a dying start left
behind is taken back."""
from __future__ import annotations

import os

import pytest

from services.common.errors import InvalidInput, Unavailable
from services.common.keystore import ED25519
from services.common.keystore.settings import open_key_store
from services.signing import log_key
from services.signing.checkpoint import NoteVerifier, open_note, sign_note
from services.signing.dependencies import load_keys, log_verifier
from services.signing.report import sign_report, verify_report_signature
from tests.support.softhsm import pkcs11_keys


@pytest.fixture
def config(tmp_path, softhsm_home):
    made = {"DATA_DIR": str(tmp_path / "data"), "SECRETS": {"GENERATE_MISSING": True},
            "KEYS": pkcs11_keys(softhsm_home, "signing")}
    yield made
    store = open_key_store(made)
    for ref in store.list_refs(made["KEYS"]["LABEL_PREFIX"]):
        store.destroy(ref)
    store.close()


def test_the_log_key_is_made_on_the_token_once_and_signs_notes_and_reports(config, tmp_path):
    keys = load_keys(config)
    try:
        signer = keys.log_signer
        ref_file = log_key.ref_path(config)
        assert oct(ref_file.stat().st_mode & 0o777) == "0o600"
        assert ref_file.read_text().count('"backend":"pkcs11"') == 1 and "PRIVATE" not in ref_file.read_text()
        assert log_key.sealed_key_source(config) is None  # no sealed key was generated beside it
        with pytest.raises(TypeError):
            signer.to_key_string()  # the note key string would hold the seed: a key on the token has none
        note = sign_note("esign.local/evidence-log\n3\nq1Rt4yEs5ZlNxTPoYJFa9B0rxqvR0fXx8mDm0y1mV4c=\n", [signer])
        assert open_note(note, [signer.verifier]).verified
        signed = sign_report({"kind": "esign.signing_report", "flow_id": "f-1"}, signer)
        assert verify_report_signature(signed, signer.verifier.to_key_string())["flow_id"] == "f-1"
    finally:
        keys.close()
    again = log_verifier(config)  # a second start (and the launcher's witnesses) find the same key
    assert again.to_key_string() == signer.verifier.to_key_string()
    store = open_key_store(config)
    try:
        found = store.list_refs(log_key.label(config))
        assert [(r.label, r.algorithm) for r in found] == [(log_key.label(config), ED25519)]
    finally:
        store.close()


def test_a_sealed_log_key_is_never_replaced_by_a_new_one(config):
    sealed = dict(config, KEYS={"BACKEND": "sealed"})
    before = load_keys(sealed).log_signer.verifier.to_key_string()  # a log that ran sealed has its key
    with pytest.raises(InvalidInput) as refused:
        load_keys(config)
    assert (refused.value.field, refused.value.rule) == ("keys.backend", "log_key_sealed")
    assert "migrate --to pkcs11" in str(refused.value)
    assert not log_key.ref_path(config).exists()
    assert load_keys(sealed).log_signer.verifier.to_key_string() == before


def test_a_key_a_dying_start_left_without_a_ref_is_destroyed_and_a_missing_key_stops_the_start(config):
    store = open_key_store(config)
    try:
        stale = store.generate(log_key.label(config), ED25519)  # generated, then the start died
        verifier = log_verifier(config)
        assert stale.key_id not in {r.key_id for r in store.list_refs(log_key.label(config))}
        assert NoteVerifier.from_key_string(verifier.to_key_string()).name == verifier.name
        current = log_key.read_ref(log_key.ref_path(config), log_key.label(config))
        store.destroy(current)  # the token lost it (restored from an older copy, say)
        with pytest.raises(Unavailable) as missing:
            load_keys(config)
        assert (missing.value.system, missing.value.reason) == ("key_store", "key_missing")
    finally:
        store.close()
    assert os.path.exists(log_key.ref_path(config))  # the ref is kept: it is the record of which key it was
