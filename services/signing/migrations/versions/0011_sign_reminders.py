"""催签: when a flow's signer was last reminded (at most once a day a flow).

Revision ID: signing_0011
Revises: signing_0010
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0011"
down_revision = "signing_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flows", sa.Column("last_reminded_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("flows") as batch:
        batch.drop_column("last_reminded_at")
