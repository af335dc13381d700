"""Witnesses: the cosignatures each witness gave a checkpoint, and what the
log knows of each witness (the size it last cosigned, the last attempt).

Revision ID: signing_0007
Revises: signing_0006
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0007"
down_revision = "signing_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_cosignatures",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("witness", sa.String(200), primary_key=True),
        sa.Column("line", sa.Text, nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "log_witness_heads",
        sa.Column("witness", sa.String(200), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("log_witness_heads")
    op.drop_table("log_cosignatures")
