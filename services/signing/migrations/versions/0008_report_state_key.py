"""A stored report says which state of its flow it was made for, so it is served
again while that state holds instead of being built per request.

Revision ID: signing_0008
Revises: signing_0007
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0008"
down_revision = "signing_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stored_objects", sa.Column("state_key", sa.String(120), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stored_objects") as batch:
        batch.drop_column("state_key")
