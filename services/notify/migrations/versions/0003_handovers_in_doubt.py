"""Handovers in doubt: when an attempt was handed to the vendor, and how a
doubt about it was settled.

Revision ID: notify_0003
Revises: notify_0002
"""
import sqlalchemy as sa
from alembic import op

revision = "notify_0003"
down_revision = "notify_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sms_messages", sa.Column("in_flight_since", sa.DateTime, nullable=True))
    op.add_column("sms_messages", sa.Column("recovery", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sms_messages") as batch:  # SQLite rebuilds the table
        batch.drop_column("recovery")
        batch.drop_column("in_flight_since")
