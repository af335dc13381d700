"""Identity assurance: account status and assurance level per person, identity
proofs, server-side sessions, face-willingness lock, certificate levels.

Persons registered before this revision proved their face against an
"ID portrait" they uploaded themselves: they are recorded as
``self_declared``, which is what that was. The ID number and the phone stay
unique among active accounts only, so a frozen account keeps its records.

Revision ID: identity_0003
Revises: identity_0002
"""
import sqlalchemy as sa
from alembic import op

revision = "identity_0003"
down_revision = "identity_0002"
branch_labels = None
depends_on = None

ACTIVE_ONLY = sa.text("status = 'active'")


def upgrade() -> None:
    person_columns = (
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.Column("assurance_level", sa.String(32), nullable=False, server_default="self_declared"),
        sa.Column("proofing_provider", sa.String(32), nullable=True),
        sa.Column("proofing_request_id", sa.String(64), nullable=True),
        sa.Column("proofed_at", sa.DateTime, nullable=True),
        sa.Column("frozen_at", sa.DateTime, nullable=True),
        sa.Column("frozen_reason", sa.String(32), nullable=True),
        sa.Column("face_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("face_failures_since", sa.DateTime, nullable=True),
        sa.Column("face_locked_until", sa.DateTime, nullable=True),
    )
    for column in person_columns:
        op.add_column("persons", column)
    for column in ("id_number_index", "phone_index"):
        op.drop_index(f"ix_persons_{column}", table_name="persons")
        op.create_index(f"ix_persons_{column}", "persons", [column])
    op.create_index("uq_persons_active_id_number", "persons", ["id_number_index"], unique=True,
                    sqlite_where=ACTIVE_ONLY, postgresql_where=ACTIVE_ONLY)
    op.create_index("uq_persons_active_phone", "persons", ["phone_index"], unique=True,
                    sqlite_where=ACTIVE_ONLY, postgresql_where=ACTIVE_ONLY)

    op.add_column("certificates", sa.Column("assurance_level", sa.String(32), nullable=False,
                                            server_default="self_declared"))
    op.add_column("certificates", sa.Column("proof_id", sa.String(36), nullable=True))
    op.add_column("liveness_challenges", sa.Column("purpose", sa.String(16), nullable=False,
                                                   server_default="proofing"))
    op.add_column("liveness_challenges", sa.Column("willingness_id", sa.String(36), nullable=True))
    op.add_column("willingness_checks", sa.Column("liveness_challenge_id", sa.String(36), nullable=True))

    op.create_table(
        "identity_proofs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("matched", sa.Boolean, nullable=False),
        sa.Column("live", sa.Boolean, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("score_kind", sa.String(16), nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("liveness_challenge_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("consumed_at", sa.DateTime, nullable=True),
        sa.Column("consumed_for", sa.String(32), nullable=True),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("person_id", sa.String(36), nullable=False, index=True),
        sa.Column("user_agent", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("last_used_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("identity_proofs")
    op.drop_column("willingness_checks", "liveness_challenge_id")
    for column in ("willingness_id", "purpose"):
        op.drop_column("liveness_challenges", column)
    for column in ("proof_id", "assurance_level"):
        op.drop_column("certificates", column)
    op.drop_index("uq_persons_active_phone", table_name="persons")
    op.drop_index("uq_persons_active_id_number", table_name="persons")
    for column in ("id_number_index", "phone_index"):
        op.drop_index(f"ix_persons_{column}", table_name="persons")
        op.create_index(f"ix_persons_{column}", "persons", [column], unique=True)
    for column in ("face_locked_until", "face_failures_since", "face_failures", "frozen_reason", "frozen_at",
                   "proofed_at", "proofing_request_id", "proofing_provider", "assurance_level", "status"):
        op.drop_column("persons", column)
