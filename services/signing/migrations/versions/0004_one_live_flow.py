"""One live flow per document: a partial unique index, so two concurrent
starts on the same document cannot both succeed.

Revision ID: signing_0004
Revises: signing_0003
"""
import sqlalchemy as sa
from alembic import op

revision = "signing_0004"
down_revision = "signing_0003"
branch_labels = None
depends_on = None

LIVE_FLOW = "state NOT IN ('declined', 'expired', 'voided')"


def upgrade() -> None:
    op.create_index("uq_flows_live_document", "flows", ["document_id"], unique=True,
                    postgresql_where=sa.text(LIVE_FLOW), sqlite_where=sa.text(LIVE_FLOW))


def downgrade() -> None:
    op.drop_index("uq_flows_live_document", table_name="flows")
