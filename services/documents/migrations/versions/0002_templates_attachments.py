"""Templates as recorded data, attachments, and what a rendering depends on.

Revision ID: documents_0002
Revises: documents_0001
"""
import sqlalchemy as sa
from alembic import op

revision = "documents_0002"
down_revision = "documents_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "templates",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("template_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("initiator_role", sa.String(32), nullable=True))
        batch.add_column(sa.Column("owner_person_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("document_date", sa.Date, nullable=True))
        batch.add_column(sa.Column("pdf_pages", sa.Integer, nullable=True))
        batch.create_index("ix_documents_owner_person_id", ["owner_person_id"])
    op.create_table(
        "attachments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.String(36), sa.ForeignKey("documents.id"), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("mime", sa.String(32), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("object_key", sa.String(200), nullable=False),
        sa.Column("thumbnail_key", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("document_id", "sha256", name="uq_attachment_document_sha256"),
    )
    op.create_index("ix_attachments_document_id", "attachments", ["document_id"])


def downgrade() -> None:
    op.drop_index("ix_attachments_document_id", table_name="attachments")
    op.drop_table("attachments")
    with op.batch_alter_table("documents") as batch:
        batch.drop_index("ix_documents_owner_person_id")
        for column in ("pdf_pages", "document_date", "owner_person_id", "initiator_role", "template_sha256"):
            batch.drop_column(column)
    op.drop_table("templates")
