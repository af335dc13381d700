"""Outbox, processed events and the revoked-certificate list.

Revision ID: signing_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.common.outbox import create_outbox_tables

revision = "signing_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op)
    op.create_table(
        "revoked_certificates",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_certificates")
    op.drop_table("processed_events")
    op.drop_table("outbox")
