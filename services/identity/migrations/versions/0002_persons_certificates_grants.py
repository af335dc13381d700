"""Persons, certificates, CRL numbers, liveness challenges, willingness
checks, signing grants and the append-only audit trail.

Revision ID: identity_0002
Revises: identity_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "identity_0002"
down_revision = "identity_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name_sealed", sa.Text, nullable=False),
        sa.Column("name_masked", sa.String(64), nullable=False),
        sa.Column("id_number_index", sa.String(64), nullable=False),
        sa.Column("id_number_sealed", sa.Text, nullable=False),
        sa.Column("id_masked", sa.String(32), nullable=False),
        sa.Column("phone_index", sa.String(64), nullable=False),
        sa.Column("phone_sealed", sa.Text, nullable=False),
        sa.Column("phone_masked", sa.String(16), nullable=False),
        sa.Column("phone_challenge_id", sa.String(36), nullable=False),
        sa.Column("face_encoding_sealed", sa.Text, nullable=True),
        sa.Column("face_verified_at", sa.DateTime, nullable=True),
        sa.Column("liveness_passed_at", sa.DateTime, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_persons_id_number_index", "persons", ["id_number_index"], unique=True)
    op.create_index("ix_persons_phone_index", "persons", ["phone_index"], unique=True)
    op.create_index("ix_persons_phone_challenge_id", "persons", ["phone_challenge_id"], unique=True)

    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("certificate_pem", sa.Text, nullable=False),
        sa.Column("private_key_sealed", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("not_before", sa.DateTime, nullable=False),
        sa.Column("not_after", sa.DateTime, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
    )
    op.create_table(
        "crl_numbers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("issued_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "liveness_challenges",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("actions", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
    )
    op.create_table(
        "willingness_checks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
        sa.Column("document_digest", sa.String(64), nullable=False),
        sa.Column("document_title", sa.String(64), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("otp_challenge_id", sa.String(36), nullable=True, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("confirmed_at", sa.DateTime, nullable=True),
    )
    op.create_table(
        "signing_grants",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("willingness_id", sa.String(36), nullable=False),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
        sa.Column("document_digest", sa.String(64), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("used_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_signing_grants_willingness_id", "signing_grants", ["willingness_id"], unique=True)
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime, nullable=False, index=True),
        sa.Column("person_id", sa.String(36), nullable=True, index=True),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("method", sa.String(16), nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("refs", sa.Text, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Append-only: the audit trail is evidence; no role of the service may rewrite it.
        op.execute(
            "CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_records is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records "
            "FOR EACH ROW EXECUTE FUNCTION audit_records_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_records_append_only ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS audit_records_append_only()")
    for table in ("audit_records", "signing_grants", "willingness_checks", "liveness_challenges",
                  "crl_numbers", "certificates", "persons"):
        op.drop_table(table)
