"""KEK rotation over any table with sealed columns, in batches, and over sealed key
files; idempotent; nothing opened or changed but the wrapped data keys."""
from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, create_engine, insert, select
from sqlalchemy.orm import Session

from services.common.key_rotation import count_files, count_tables, rotate_files, rotate_tables
from services.common.sealing import Keyring, from_text, keyring_from_secrets, to_text

OLD, NEW = os.urandom(32), os.urandom(32)
metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("label", String(20)),
               Column("secret_sealed", Text), Column("maybe_sealed", Text, nullable=True))


def test_every_sealed_value_moves_to_the_new_kek_in_batches(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    metadata.create_all(engine)
    before = Keyring({"k1": OLD}, "k1")
    with Session(engine) as session:
        session.execute(insert(things), [
            {"id": i, "label": f"row {i}", "secret_sealed": to_text(before.seal(f"secret {i}".encode(), b"aad")),
             "maybe_sealed": to_text(before.seal(b"x")) if i % 3 == 0 else None} for i in range(1, 1201)])
        session.commit()
    rotating = Keyring({"k2": NEW, "k1": OLD}, "k2")
    with Session(engine) as session:
        assert count_tables(session, metadata) == {"k1": 1200 + 400}
        assert rotate_tables(session, metadata, rotating, batch=500, dry_run=True) == {
            "things.secret_sealed": 1200, "things.maybe_sealed": 400}
        assert count_tables(session, metadata) == {"k1": 1600}  # a check changes nothing
        done = rotate_tables(session, metadata, rotating, batch=500)
        assert done == {"things.secret_sealed": 1200, "things.maybe_sealed": 400}
        assert rotate_tables(session, metadata, rotating, batch=500) == {}  # again: nothing to do
        assert count_tables(session, metadata) == {"k2": 1600}
        after = Keyring({"k2": NEW}, "k2")  # the old KEK destroyed
        rows = session.execute(select(things).order_by(things.c.id)).all()
        assert [after.open(from_text(row.secret_sealed), b"aad").decode() for row in rows[:3]] == [
            "secret 1", "secret 2", "secret 3"]
        assert rows[2].maybe_sealed is not None and after.open(from_text(rows[2].maybe_sealed)) == b"x"
        assert rows[0].label == "row 1" and rows[0].maybe_sealed is None


def test_sealed_files_are_replaced_atomically_with_their_mode(tmp_path):
    before = Keyring({"k1": OLD}, "k1")
    key_file = tmp_path / "issuing-key.sealed"
    key_file.write_text(to_text(before.seal(b"private key", b"issuing")) + "\n")
    key_file.chmod(0o600)
    rotating = Keyring({"k2": NEW, "k1": OLD}, "k2")
    assert rotate_files([key_file], rotating, dry_run=True) == 1 and count_files([key_file]) == {"k1": 1}
    assert rotate_files([key_file], rotating) == 1 and rotate_files([key_file], rotating) == 0
    assert count_files([key_file]) == {"k2": 1} and oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert Keyring({"k2": NEW}, "k2").open(from_text(key_file.read_text().strip()), b"issuing") == b"private key"
    assert [p.name for p in tmp_path.iterdir()] == ["issuing-key.sealed"]  # no temporary left


def test_retired_keks_come_from_json_in_the_environment(tmp_path, monkeypatch):
    (tmp_path / "old").write_text("base64:" + __import__("base64").b64encode(OLD).decode())
    monkeypatch.setenv("TEST_NEW_KEK", "base64:" + __import__("base64").b64encode(NEW).decode())
    secrets = {"KEK": {"id": "kek-2", "env": "TEST_NEW_KEK"},
               "RETIRED_KEKS": json.dumps([{"id": "kek-1", "file": str(tmp_path / "old")}])}
    keyring = keyring_from_secrets(secrets, "kek", "kek-1")
    assert keyring.active_key_id == "kek-2" and keyring.key_ids == {"kek-1", "kek-2"}
    with pytest.raises(ValueError, match="active KEK's id"):
        keyring_from_secrets(dict(secrets, RETIRED_KEKS=json.dumps([{"id": "kek-2", "env": "TEST_NEW_KEK"}])),
                             "kek", "kek-1")
    with pytest.raises(ValueError, match="expected JSON"):
        keyring_from_secrets(dict(secrets, RETIRED_KEKS="kek-1"), "kek", "kek-1")
    assert keyring_from_secrets(dict(secrets, RETIRED_KEKS=""), "kek", "kek-1").key_ids == {"kek-2"}


def test_an_objects_key_id_is_read_from_its_first_bytes():
    from services.common.errors import IntegrityError
    from services.common.sealing import HEADER_BYTES, sealed_key_id

    blob = Keyring({"kek-1": OLD}, "kek-1").seal(b"%PDF " * 200, b"s3")
    assert sealed_key_id(blob[:HEADER_BYTES]) == "kek-1" and sealed_key_id(blob) == "kek-1"
    assert sealed_key_id(b"%PDF-1.7 stored in clear") is None
    with pytest.raises(IntegrityError):
        sealed_key_id(blob[:6])
    moved = Keyring({"kek-2": NEW, "kek-1": OLD}, "kek-2").rewrap(blob)
    assert sealed_key_id(moved[:HEADER_BYTES]) == "kek-2"
