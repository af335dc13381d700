"""A receipt opened from a QR invite shows the inviter's ID number and phone masked:
the person fields to mask in renderings are recorded with the document.

Revision ID: documents_0003
Revises: documents_0002
"""
import sqlalchemy as sa
from alembic import op

revision = "documents_0003"
down_revision = "documents_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("documents", sa.Column("masked_persons", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("masked_persons")
