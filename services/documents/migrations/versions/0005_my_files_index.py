"""我的文件: a person's drafts, newest first, as one index range.

Revision ID: documents_0005
Revises: documents_0004
"""
from alembic import op

revision = "documents_0005"
down_revision = "documents_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_documents_owner_updated", "documents", ["owner_person_id", "updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_documents_owner_updated", "documents")
