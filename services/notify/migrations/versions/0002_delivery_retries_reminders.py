"""Delivery retries (sealed recipient, next attempt, claim), reminders,
the scheduler lease and rate-limit counters.

Revision ID: notify_0002
Revises: notify_0001
"""
import sqlalchemy as sa
from alembic import op

from services.common.lease import create_lease_table

revision = "notify_0002"
down_revision = "notify_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sms_messages", sa.Column("ref_type", sa.String(20), nullable=True))
    op.add_column("sms_messages", sa.Column("ref_id", sa.String(64), nullable=True))
    op.add_column("sms_messages", sa.Column("recipient_sealed", sa.Text, nullable=True))
    op.add_column("sms_messages", sa.Column("next_attempt_at", sa.DateTime, nullable=True))
    op.add_column("sms_messages", sa.Column("claimed_until", sa.DateTime, nullable=True))
    op.create_index("ix_sms_messages_next_attempt_at", "sms_messages", ["next_attempt_at"])

    op.create_table(
        "reminders",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("person_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("send_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("flow_id", "person_id", "kind", name="uq_reminders_flow_person_kind"),
    )
    op.create_index("ix_reminders_flow_id", "reminders", ["flow_id"])
    op.create_index("ix_reminders_send_at", "reminders", ["send_at"])
    op.create_index("ix_reminders_status", "reminders", ["status"])

    create_lease_table(op)
    op.create_table(
        "sms_rate_keys",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "sms_rate_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(80), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_sms_rate_events_key_at", "sms_rate_events", ["key", "at"])


def downgrade() -> None:
    op.drop_table("sms_rate_events")
    op.drop_table("sms_rate_keys")
    op.drop_table("leases")
    op.drop_table("reminders")
    op.drop_index("ix_sms_messages_next_attempt_at", table_name="sms_messages")
    with op.batch_alter_table("sms_messages") as batch:
        for column in ("claimed_until", "next_attempt_at", "recipient_sealed", "ref_id", "ref_type"):
            batch.drop_column(column)
