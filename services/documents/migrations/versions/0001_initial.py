"""Outbox, processed events and documents.

Revision ID: documents_0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

from services.common.outbox import create_outbox_tables

revision = "documents_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_tables(op)
    op.create_table(
        "documents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("template_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content_sealed", sa.Text, nullable=True),
        sa.Column("pdf_key", sa.String(200), nullable=True),
        sa.Column("pdf_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("locked_at", sa.DateTime, nullable=True),
        sa.Column("locked_by_flow", sa.String(36), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("documents")
    op.drop_table("processed_events")
    op.drop_table("outbox")
