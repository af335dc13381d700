"""Outbox, processed events and the SMS delivery log.

Revision ID: notify_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.common.outbox import create_outbox_tables

revision = "notify_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op)
    op.create_table(
        "sms_messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("dedupe_key", sa.String(120), nullable=False, unique=True),
        sa.Column("template_id", sa.String(40), nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("phone_masked", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("vendor_message_id", sa.String(100), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("sent_at", sa.DateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("sms_messages")
    op.drop_table("processed_events")
    op.drop_table("outbox")
