"""Outbox, processed events and phone-code challenges.

Revision ID: identity_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.common.outbox import create_outbox_tables

revision = "identity_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op)
    op.create_table(
        "otp_challenges",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("phone_index", sa.String(64), nullable=False, index=True),
        sa.Column("phone_sealed", sa.Text, nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(128), nullable=False),
        sa.Column("code_sealed", sa.Text, nullable=True),
        sa.Column("wrong_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False, index=True),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("locked_until", sa.DateTime, nullable=True),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.Column("used_at", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("otp_challenges")
    op.drop_table("processed_events")
    op.drop_table("outbox")
