"""Tables of the two small services the wiring tests run.

Revision ID: wiring_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.common.outbox import create_outbox_tables

revision = "wiring_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op)
    op.create_table("things", sa.Column("id", sa.String(36), primary_key=True),
                    sa.Column("value", sa.Integer, nullable=False, unique=True))
    op.create_table("received", sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                    sa.Column("event_id", sa.String(36), nullable=False),
                    sa.Column("value", sa.Integer, nullable=False))


def downgrade() -> None:
    pass
