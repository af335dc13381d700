"""Files are put after an intent is recorded, which the change's own transaction
settles (services/common/object_intents.py): the intents, so the reconciler can
delete the file of a change that never committed; and the leases table, so that
reconciler runs in one replica at a time (services/common/lease.py).

Revision ID: documents_0004
Revises: documents_0003
"""
from alembic import op

from services.common.lease import create_lease_table
from services.common.object_intents import create_intent_table

revision = "documents_0004"
down_revision = "documents_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_intent_table(op)
    create_lease_table(op)


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("object_intents")
